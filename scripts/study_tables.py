"""The frontier study's tables (issue 19), written into docs/findings.md by ``scripts/docs_tables.py``
from the runs ``frontier_study.load`` reads: the 10% comparison, the budget curve, c and k, the
held-out table, the calibrations and their drift, the frontier per cost model (table and words),
and the figure's block. Every number comes from ``reporting/report.py`` and
``reporting/frontier.py`` over the committed files; a run not made yet reads "not run yet".
"""
from __future__ import annotations

from pathlib import Path

from frontier_study import (FIGURE, RANDOM10, ROOT, StudyRun, _drift_records, _within, default_split_calibration,
                            figure_command)
from guided_inference.reporting.frontier import line_point, point_cells, verdict
from guided_inference.reporting.report import compare, pct, summarize


def table(header, rows) -> str:
    """A Markdown table (docs_tables.py writes its own tables with it too)."""
    line = lambda cells: "| " + " | ".join(cells) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, rows)]) + "\n"


def _paired(a: list[dict], b: list[dict]) -> str:
    """b - a on the problems both graded, with the paired bootstrap CI (10,000, seed 0)."""
    if not a or not b:
        return "-"
    c = compare(a, b, n_boot=10_000, seed=0)
    return f"{100 * c.diff:+.1f} [{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}] (n={c.shared})"


def _accuracy_rows(runs: dict[StudyRun, list[dict]], chosen: list[StudyRun], against) -> list[tuple[str, ...]]:
    rows = []
    for run in chosen:
        got = runs[run]
        if not got:
            rows.append((run.label, "0", "not run yet", *("-" * 5)))
            continue
        s, target = summarize(got), run.share  # aimed at online (the replay may aim at share / drift)
        within = "-" if target is None else "yes" if _within(s.oracle_share, target) else "**no**"
        ref = against(run)
        rows.append((run.label, str(s.n), f"**{pct(s.accuracy)}**", f"{pct(s.ci_low)}-{pct(s.ci_high)}",
                     "-" if target is None else pct(target), pct(s.oracle_share), within,
                     "-" if ref is None or ref == run else _paired(runs[ref], got)))
    return rows


ACC_HEADER = ("run", "n", "accuracy", "95% CI (Wilson)", "target share", "realised share", "within 1 point",
              "− random at that share and (c, k), points [95% CI]")


def share10(runs: dict[StudyRun, list[dict]]) -> str:
    """Group 1: every policy at 10% written share, against random p=0.1 on the same problems."""
    chosen = [r for r in runs if r.group == 1]
    return table(ACC_HEADER, _accuracy_rows(runs, chosen, lambda run: RANDOM10))


def _random_at(runs, run: StudyRun) -> StudyRun | None:
    if run.share == 0.1 and (run.c, run.k) == (20, 10):
        return RANDOM10
    return next((r for r in runs if r.group == run.group and r.policy == "random" and r.share == run.share
                 and (r.c, r.k) == (run.c, run.k)), None)


def _best(runs: dict[StudyRun, list[dict]]) -> str | None:
    """The best takeover policy the runs were listed with (``study_runs(best)``): group 2's other policy."""
    return next((r.policy for r in runs if r.group == 2 and r.policy != "random"), None)


def budget(runs: dict[StudyRun, list[dict]]) -> str:
    """Group 2: random and the best takeover policy at 5%, 10% and 20% (the 10% rows are group 1's)."""
    chosen = [r for r in runs if r.group == 2 or (r.group == 1 and r.policy in ("random", _best(runs)))]
    chosen.sort(key=lambda r: (r.policy != "random", r.share))
    return table(ACC_HEADER, _accuracy_rows(runs, chosen, lambda run: _random_at(runs, run)))


def c_and_k(runs: dict[StudyRun, list[dict]]) -> str:
    """Group 3 (the original's TODO 3): random and the best at 10% with (c, k) = (100, 1), (20, 10), (2, 50)."""
    chosen = [r for r in runs if r.group == 3 or (r.group == 1 and r.policy in ("random", _best(runs)))]
    chosen.sort(key=lambda r: (r.policy != "random", -r.c))
    return table(ACC_HEADER, _accuracy_rows(runs, chosen, lambda run: _random_at(runs, run)))


def heldout(runs: dict[StudyRun, list[dict]]) -> str:
    """Group 4: the held-out problems, each run against held-out random at its (c, k) (p=0.1 at
    (20, 10))."""
    chosen = [r for r in runs if r.group == 4]
    rand = {(r.c, r.k): r for r in reversed(chosen) if r.policy == "random"}  # the first at each (c, k)
    against = lambda run: rand.get((run.c, run.k)) if run.share is not None else None  # noqa: E731
    return table(ACC_HEADER, _accuracy_rows(runs, chosen, against))


def _ends(runs: dict[StudyRun, list[dict]], heldout: bool) -> tuple[list[dict], list[dict]]:
    """(base rows, oracle rows) on the MATH-500 problems (group 0) or the held-out ones (group 4)."""
    group = 4 if heldout else 0
    base, oracle = (next((runs[r] for r in runs if r.group == group and r.policy == p), []) for p in ("never", "always"))
    return base, oracle


def heldout_ends(runs: dict[StudyRun, list[dict]]) -> str:
    """Group 4: each held-out run against the held-out base and oracle on the same problems (paired):
    what it adds to the base, what it loses to the oracle (speculative should lose nothing)."""
    base, oracle = _ends(runs, heldout=True)
    rows = [(r.label, str(len(got)), _paired(base, got), _paired(oracle, got))
            for r, got in runs.items() if r.group == 4 and r.policy not in ("never", "always") and got]
    return table(("held-out run", "n", "− base only, points [95% CI]", "− oracle only, points [95% CI]"), rows)


def calibrations(runs: dict[StudyRun, list[dict]], root: Path = ROOT) -> str:
    """Each calibrated MATH-500 run: what its replay aimed at, the value set on the evaluation set's
    own base traces and what the replay spends there, beside the value set on the default split
    for the same target and its share on MATH-500 (bootstrap SD over problems, ``DRIFT_FILE``),
    and the share the run realised online."""
    import json

    moved = {t["calibration"]: t for t in _drift_records(root).get("transfer", [])}
    sd = lambda t, name: f"{pct(t[name + '_share'])} (SD {100 * t[name + '_sd']:.2f})"  # noqa: E731
    rows = []
    for run in runs:
        if not run.calibration or run.heldout:
            continue
        mine = json.loads((root / run.calibration).read_text()) if (root / run.calibration).exists() else None
        other = default_split_calibration(run)
        t = moved.get(other)
        got = runs[run]
        rows.append((run.label, "-" if mine is None else pct(mine.get("replay_target", mine["target_share"])),
                     "-" if mine is None else f"{mine['value']:.4g}",
                     "-" if mine is None else pct(mine["expected_share"]),
                     "-" if t is None else f"{t['value']:.4g}",
                     "-" if t is None else sd(t, "default"), "-" if t is None else sd(t, "math500"),
                     f"{pct(summarize(got).oracle_share)} (n={len(got)})" if got else "not run yet"))
    return table(("run", "replay aims at", "value set on MATH-500's base traces", "replayed share there",
                  "value set on 100 other MATH problems", "its share there", "its share on MATH-500",
                  "realised online"), rows)


def drift_table(root: Path = ROOT) -> str:
    """``DRIFT_FILE`` (``scripts/online_drift.py``): each committed run's share online against a replay
    of its own config on the same problems' base traces, with the ratio's bootstrap CI."""
    from online_drift import ratio_cell

    return table(("run (file)", "n", "written share online", "replayed share", "online / replayed [95% CI]"),
                 [(f"{r['policy']} (`{Path(r['file']).name}`)", str(r["n"]), pct(r["online_share"]),
                   pct(r["replay_share"]), ratio_cell(r)) for r in _drift_records(root)["runs"]])


def first_change_table(root: Path = ROOT) -> str:
    """``CHANGE_FILE`` (``scripts/first_change.py``): per group-1 policy, the answers a greedy run can
    change at all, the base's record on them, where the first change falls, the oracle tokens
    written before it, and the check against the committed online run where there is one."""
    from first_change import CHANGE_FILE
    import json

    rows = []
    for r in json.loads((root / CHANGE_FILE).read_text())["runs"]:
        checked = "-" if r["checked"] is None else f"{r['checked'][0]} of {r['checked'][1]} agree"
        median = "-" if r["median_first_change"] is None else f"{r['median_first_change']:.0f}"
        rows.append((r["run"], f"{r['changed']} of {r['n']}", str(r["changed_base_wrong"]), str(r["changed_base_right"]),
                     median, str(r["oracle_tokens_before_change"]), checked))
    return table(("run", "answers it changes", "of them wrong for the base", "right for the base",
                  "median token of the first change", "oracle tokens written before any change",
                  "online run: changed or not as predicted"), rows)


def _points(runs: dict[StudyRun, list[dict]], deployments) -> list[tuple[str, StudyRun, object]]:
    """(deployment, run, ``frontier.LinePoint``) for every run with rows and a base and an oracle
    on its problems: group 0's on MATH-500, group 4's own on the held-out problems."""
    ends = {h: _ends(runs, h) for h in (False, True)}
    out = []
    for where, s in deployments:
        for run, got in runs.items():
            base, oracle = ends[run.heldout]
            if not got or run.policy in ("never", "always") or not (base and oracle):
                continue
            p = line_point(got, base, oracle, s)
            if p is not None:
                out.append((where, run, p))
    return out


def _name(run: StudyRun) -> str:
    return ("held out: " if run.heldout else "") + run.label


def frontier(runs: dict[StudyRun, list[dict]], deployments) -> str:
    """Every study run under each deployment's cost model (``deployments``: (name, CostSettings)
    pairs): its cost, its distance to the straight line with the paired CI, and the verdict of
    ``reporting/frontier.py``."""
    rows = []
    for where, run, p in _points(runs, deployments):
        cost, _, gap, judged = point_cells(p)
        rows.append((where, _name(run), str(p.n), cost, gap, judged))
    if not rows:
        return "(no study run yet)\n"
    return table(("deployment", "run", "n", "cost (oracle alone = 1.00)", "accuracy − straight line, points [95% CI]",
                   "worth running instead of the oracle alone?"), rows)


SUMMARY_GROUPS = (("lossless", "**worth it** (cheaper, no significant loss to the oracle)"),
                  ("above", "**above the line** (cheaper, less accurate, a better trade than mixing answers)"),
                  ("on", "on the line (no gain shown)"), ("below", "below the line"),
                  ("dearer", "at least the oracle's cost"), ("na", "cannot run there"),
                  ("few", "too few problems yet"), ("none", "no figure"))


def summary(runs: dict[StudyRun, list[dict]], deployments) -> str:
    """The frontier in words, per deployment: the runs grouped by verdict, each with its distance
    to the straight line [95% CI] and its cost; generated, so it cannot drift from the files."""
    points = _points(runs, deployments)
    if not points:
        return "(no study run yet)\n"
    lines = []
    for where, _ in deployments:
        parts = []
        for key, words in SUMMARY_GROUPS:
            hits = [(run, p) for w, run, p in points if w == where and verdict(p) == key]
            if hits:
                cells = [(run, point_cells(p)) for run, p in hits]
                said = [_name(run) if key in ("na", "none") else f"{_name(run)} ({c[2]} points at cost {c[0]})"
                        for run, c in cells]
                parts.append(f"{words[0].upper()}{words[1:]}: " + "; ".join(said))
        if parts:
            lines.append(f"- {where}: " + ". ".join(parts) + ".")
    return "\n".join(lines) + "\n"


def figure_block(runs: dict[StudyRun, list[dict]]) -> str:
    """The findings' figure with the command that draws it (run it after the tables change)."""
    return (f"```bash\n{figure_command(runs)}\n```\n\n"
            "![the study's MATH-500 runs: accuracy against normalized cost, one panel per cost model]"
            f"({Path(FIGURE).relative_to('docs')})\n")
