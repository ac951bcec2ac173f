"""Means with 95% CIs of the eight statistics over an analysis file: pure functions, no I/O.

    groups = position_groups(rows)                 # {"correct, consults": [...], ...}
    print(format_summary(summarize_groups(groups)))

Positions of one line are not independent (one trace, one problem), so the 95% CI of a
mean is cluster-robust with the line as cluster (``intervals.mean_ci``). Each group
reports n (positions) and its number of lines.
"""
from __future__ import annotations

import math

from ..intervals import MeanCI, mean_ci
from ..study.attention_stats import FIELDS

CORRECT, WRONG = "correct", "wrong"


def position_groups(rows: list[dict]) -> dict[str, list[tuple[int, dict]]]:
    """(line index, analysis item) per group: consult positions of correct and of wrong lines, and,
    where other positions were analysed (``--positions all``), consult versus other positions."""
    groups: dict[str, list] = {f"{CORRECT}, consults": [], f"{WRONG}, consults": [], "all lines, consults": [],
                               "all lines, other positions": []}
    for i, row in enumerate(rows):
        if row.get("error") is not None:
            continue
        consults = set(row.get("cheat_positions") or [])
        verdict = CORRECT if row.get("correct") else WRONG
        for item in row.get("analysis_result") or []:
            if item["position"] in consults:
                groups[f"{verdict}, consults"].append((i, item))
                groups["all lines, consults"].append((i, item))
            else:
                groups["all lines, other positions"].append((i, item))
    if not groups["all lines, other positions"]:  # consults only: the split adds nothing
        del groups["all lines, consults"], groups["all lines, other positions"]
    return groups


def summarize_groups(groups: dict[str, list[tuple[int, dict]]]) -> dict[str, dict[str, MeanCI]]:
    """{statistic: {group: MeanCI}} for every statistic in ``FIELDS``."""
    return {stat: {name: mean_ci([it[stat] for _, it in items], [i for i, _ in items])
                   for name, items in groups.items()} for stat in FIELDS}


def _fmt(c: MeanCI) -> str:
    if c.n == 0:
        return "-"
    ci = "" if math.isnan(c.low) else f" [{c.low:.3g}, {c.high:.3g}]"
    return f"{c.mean:.3g}{ci}"


def format_summary(table: dict[str, dict[str, MeanCI]]) -> str:
    """A text table: one row per statistic, one column per group (mean [95% CI]), n in the header."""
    first = next(iter(table.values()))
    names = list(first)
    header = ["statistic"] + [f"{g} (n={c.n}, lines={c.lines})" for g, c in first.items()]
    body = [[stat] + [_fmt(cols[g]) for g in names] for stat, cols in table.items()]
    widths = [max(len(r[j]) for r in [header] + body) for j in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in [header] + body]
    return "\n".join(lines[:1] + ["-" * len(lines[0])] + lines[1:])
