"""Markdown tables of the studies, and the section writer for ``docs/findings.md``.

Pure functions over divergence lines (``divergence.py``) and PRM800K step records
(``prm800k.py``): they compute, they do not read files. ``write_section`` replaces one
``## Heading`` section of a markdown file and leaves every other section as it was
(several studies write to the same findings file).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from ..atomic import write_atomic
from ..intervals import bootstrap_ci, fmt_ci
from ..evaluation.recorded import features_from_row
from ..study.divergence import LABELS, label, statistics
from ..study.metrics import auroc, auroc_ci, pooled, precision_at_share

SHARES = (0.01, 0.05, 0.10)


def _source(source: str | None) -> str:
    """'results F' (how divergence lines name their origin) -> 'results `F`'."""
    kind, _, path = (source or "?").partition(" ")
    return f"{kind} `{path}`" if path else f"`{kind}`"


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}%"


def _rate_ci(groups: list, n_boot: int) -> str:
    est, lo, hi = bootstrap_ci(groups, pooled(lambda s, y: float(y.mean()) if y.size else math.nan), n_boot=n_boot)
    return f"{_pct(est)} ({_pct(lo)}-{_pct(hi)})"


def signal_table(problems: list[dict[str, np.ndarray]], labels: list[np.ndarray], *, n_boot: int) -> list[tuple]:
    """Rows (statistic, (auroc, lo, hi), precision at each of SHARES) for one label.
    ``problems`` holds each problem's oriented statistics, ``labels`` its label array."""
    out = []
    for name in problems[0]:
        groups = [(p[name], y) for p, y in zip(problems, labels)]
        ci = auroc_ci(groups, n_boot=n_boot)
        s, y = np.concatenate([g[0] for g in groups]), np.concatenate([g[1] for g in groups])
        out.append((name, ci, [precision_at_share(s, y, q) for q in SHARES]))
    return out


def format_signal_table(rows: list[tuple], base_rate: float) -> str:
    head = "| statistic | AUROC (95% CI) | " + " | ".join(f"precision at {100 * q:g}%" for q in SHARES) + " |"
    lines = [head, "|" + "---|" * (2 + len(SHARES))]
    for name, ci, precs in sorted(rows, key=lambda r: -np.nan_to_num(r[1][0], nan=-1)):
        lines.append(f"| {name} | {fmt_ci(*ci)} | " + " | ".join(_pct(p) for p in precs) + " |")
    lines.append("| (base rate: any rule) | 0.500 | " + " | ".join(_pct(base_rate) for _ in SHARES) + " |")
    return "\n".join(lines)


def divergence_report(rows: list[dict], *, n_boot: int = 1000, command: str = "") -> str:
    """The "Divergence labels" section: rates overall/by level/by correctness, then per
    label the AUROC and precision-at-share table of every statistic."""
    feats = [features_from_row(r) for r in rows]
    stats = [statistics(f) for f in feats]
    n_tokens = sum(f.n for f in feats)
    lab = {name: [label(f, name) for f in feats] for name in LABELS}
    r0 = rows[0]
    out = [f"Base `{r0['base_model_id']}` (sha256 {str(r0['base_sha256'])[:12]}), oracle `{r0['oracle_model_id']}` "
           f"(sha256 {str(r0['oracle_sha256'])[:12]}), version {r0.get('version')}; source `{r0.get('source')}`; "
           f"n = {len(rows)} problems, {n_tokens} base tokens. CIs: 95% percentile bootstrap over problems "
           f"({n_boot} resamples)." + (f"\n\n```\n{command}\n```" if command else "")]
    groups = {name: [(np.zeros(y.size), y) for y in lab[name]] for name in LABELS}
    agree = 1 - sum(int(y.sum()) for y in lab["disagree"]) / max(1, n_tokens)
    out.append("\n**Rates.** " + "; ".join(f"`{name}`: {_rate_ci(groups[name], n_boot)} of tokens" for name in LABELS)
               + f". The oracle's top-1 equals the base's token at {_pct(agree)} of positions; R2R (arXiv 2505.21600) "
               "reports about 89% identical, 6% different but harmless and 5% divergent for its pairs. Our "
               "`disagree` counts both of R2R's non-identical kinds, and `oracle_p_lt_0.1` is closer to its divergent.")
    out.append("\n| level | problems | tokens | disagree | oracle_p < 0.1 |\n|---|---|---|---|---|")
    levels = sorted({r.get("level") for r in rows}, key=lambda v: (v is None, v))
    for lv in levels:
        idx = [i for i, r in enumerate(rows) if r.get("level") == lv]
        out.append(f"| {lv} | {len(idx)} | {sum(feats[i].n for i in idx)} | "
                   + " | ".join(_rate_ci([groups[name][i] for i in idx], n_boot) for name in LABELS) + " |")
    out.append("\n| final answer | problems | tokens | disagree | oracle_p < 0.1 |\n|---|---|---|---|---|")
    for verdict in (True, False):
        idx = [i for i, r in enumerate(rows) if r.get("correct") is verdict]
        if idx:
            out.append(f"| {'correct' if verdict else 'wrong'} | {len(idx)} | {sum(feats[i].n for i in idx)} | "
                       + " | ".join(_rate_ci([groups[name][i] for i in idx], n_boot) for name in LABELS) + " |")
    graded = [i for i, r in enumerate(rows) if r.get("correct") is not None]
    per_problem = [(np.array([lab["disagree"][i].mean() if feats[i].n else math.nan]),
                    np.array([not rows[i]["correct"]])) for i in graded]
    out.append("\nAUROC of a problem's disagreement rate for predicting a wrong final answer: "
               f"{fmt_ci(*auroc_ci(per_problem, n_boot=n_boot))} (n = {len(graded)} problems).")
    for name in LABELS:
        base_rate = sum(int(y.sum()) for y in lab[name]) / max(1, n_tokens)
        table = signal_table(stats, lab[name], n_boot=n_boot)
        out.append(f"\n**Label `{name}`** (base rate {_pct(base_rate)}). Statistics are oriented so that higher means "
                   "consult (`-top_prob` is minus the top-1 probability); precision at x% is the share of label hits "
                   "among the x% of tokens with the highest score, what a policy firing on that share would hit.\n")
        out.append(format_signal_table(table, base_rate))
    return "\n".join(out) + "\n"


KEEP = "<!-- generated above; the text below is kept when the section is rewritten -->"


def write_section(path: str | Path, heading: str, body: str) -> None:
    """Replace (or append) the generated part of the ``## heading`` section of a markdown
    file, atomically. The section ends with the ``KEEP`` line, and what a person wrote
    after it (the reading of the numbers) survives a rewrite; every other section stays
    byte for byte."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Findings\n"
    block = f"## {heading}\n\n{body.strip()}\n\n{KEEP}\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)

    def replace(m: re.Match) -> str:
        old = m.group(0)
        kept = old.split(KEEP + "\n", 1)[1] if KEEP + "\n" in old else "\n" if old.endswith("\n\n") else ""
        return block + kept

    if pattern.search(text):
        text = pattern.sub(replace, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)


def router_report(router, eval_rows: list[dict], *, n_boot: int = 1000, command: str = "",
                  train_source: str = "") -> str:
    """The "Learned router" section: held-out AUROC of the router's probability beside
    every single statistic on the same problems and label, and the paired bootstrap
    difference between the router and the best single statistic."""
    feats = [features_from_row(r) for r in eval_rows]
    labels = [label(f, router.label) for f in feats]
    problems = [dict(statistics(f), router=router.predict_features(f)) for f in feats]
    table = signal_table(problems, labels, n_boot=n_boot)
    base_rate = float(np.concatenate(labels).mean())
    # token_prob is known only after the token is written: not a signal a policy can read first.
    singles = [r for r in table if r[0] not in ("router", "-token_prob")]
    best = max(singles, key=lambda r: np.nan_to_num(r[1][0], nan=-1))[0]

    def diff(groups):
        s_r = np.concatenate([g[0] for g in groups])
        s_b = np.concatenate([g[1] for g in groups])
        y = np.concatenate([g[2] for g in groups])
        return auroc(s_r, y) - auroc(s_b, y)

    d = bootstrap_ci([(p["router"], p[best], y) for p, y in zip(problems, labels)], diff, n_boot=n_boot)
    m = router.meta
    weights = ", ".join(f"{n} {w:+.2f}" for n, w in zip(router.features, router.weights))
    out = [f"Router fitted on {len(m.get('training_problems', []))} problems ({m.get('n_tokens')} tokens, "
           f"label `{router.label}` rate {_pct(m.get('positive_rate', math.nan))}) from `{train_source}`; "
           f"evaluated on {len(eval_rows)} held-out problems ({sum(f.n for f in feats)} tokens) made from "
           f"{_source(eval_rows[0].get('source'))}. Standardised weights: {weights}; bias {router.bias:+.2f}. "
           f"CIs: 95% bootstrap over problems ({n_boot} resamples)." + (f"\n\n```\n{command}\n```" if command else ""),
           "", format_signal_table(table, base_rate),
           f"\nRouter minus the best single statistic a policy can read before the token (`{best}`), paired "
           f"over the same resampled problems: AUROC {d[0]:+.3f} (95% CI {d[1]:+.3f} to {d[2]:+.3f})."]
    return "\n".join(out) + "\n"


def prm_report(lines: list[dict], *, n_boot: int = 1000, command: str = "", entropy_threshold: float = 2.5) -> str:
    """The "PRM800K" section: per statistic, AUROC for bad (-1) versus good (+1) steps
    with a bootstrap CI over problems and Spearman correlation with the rating (-1, 0, 1),
    then how often the ``entropy`` policy at ``entropy_threshold`` would fire inside bad
    and good steps."""
    from ..study.metrics import spearman
    from ..study.prm800k import ORIENT, STEP_STATS

    per = [[s for s in line["steps"]] for line in lines]
    steps = [s for p in per for s in p]
    count = {v: sum(1 for s in steps if s["rating"] == v) for v in (-1, 0, 1)}
    r0 = lines[0]
    out = [f"Base `{r0['base_model_id']}` (sha256 {str(r0['base_sha256'])[:12]}), version {r0.get('version')}; "
           f"`{r0.get('source')}`; n = {len(lines)} problems, {len(steps)} rated steps (bad {count[-1]}, neutral "
           f"{count[0]}, good {count[1]}). Statistics oriented so that higher means \"bad\" (AUROC > 0.5: the signal "
           f"points at the steps humans rated -1); Spearman is of the raw statistic with the rating. CIs: 95% "
           f"bootstrap over problems ({n_boot} resamples)." + (f"\n\n```\n{command}\n```" if command else ""),
           "", "| statistic | AUROC bad vs good (95% CI) | Spearman with rating (95% CI) |", "|---|---|---|"]
    rows = []
    orient = dict(ORIENT, n_tokens=1)  # step length: a control, since max/min over a step grow with it
    for name in (*STEP_STATS, "n_tokens"):
        groups = [(np.array([orient[name] * s[name] for s in p if s["rating"] != 0]),
                   np.array([s["rating"] == -1 for s in p if s["rating"] != 0])) for p in per]
        a = auroc_ci(groups, n_boot=n_boot)
        sp_groups = [(np.array([s[name] for s in p], dtype=float), np.array([s["rating"] for s in p], dtype=float))
                     for p in per]
        sp = bootstrap_ci(sp_groups, pooled(spearman), n_boot=n_boot)
        rows.append((name, a, sp))
    for name, a, sp in sorted(rows, key=lambda r: -np.nan_to_num(r[1][0], nan=-1)):
        out.append(f"| {name + (' (control: step length)' if name == 'n_tokens' else '')} | {fmt_ci(*a)} | "
                   f"{fmt_ci(*sp)} |")
    fire = {v: [s["max_entropy"] > entropy_threshold for s in steps if s["rating"] == v] for v in (-1, 1)}
    out.append(f"\nThe `entropy` policy at its default threshold ({entropy_threshold} bits) would fire inside "
               f"{_pct(np.mean(fire[-1]) if fire[-1] else math.nan)} of bad steps and "
               f"{_pct(np.mean(fire[1]) if fire[1] else math.nan)} of good steps (max entropy over the step above it).")
    return "\n".join(out) + "\n"
