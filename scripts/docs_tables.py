"""Write the results tables of README.md, docs/results.md and docs/findings.md from the results files.

    python scripts/docs_tables.py           # rewrite the tables in place
    python scripts/docs_tables.py --check   # exit 1, naming each table that differs; write nothing

Each generated block sits between ``<!-- table:NAME -->`` and ``<!-- /table -->`` (Markdown
does not show the comments); everything outside the markers is left exactly as it is. Every
number comes from ``reporting/report.py`` over ``results/math500-first100/*.jsonl``: the same
``summarize``, ``breakdown`` and ``compare`` (10,000 paired bootstrap resamples, seed 0) that
``guided report`` and ``guided compare`` print, so the docs cannot drift from the evidence.
``tests/test_docs_tables.py`` fails when a committed table differs from what this writes.

To add a run (e.g. a re-run of a policy), add it to ``RUNS`` (and to ``PAIRS`` for its
paired comparisons), run this script, commit the docs and the results file together.
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # this tree's package, not whichever one is installed

from guided_inference.reporting.report import (Summary, breakdown, compare, cost_row, is_graded, latest,  # noqa: E402
                                                oracle_reads, pct, summarize)
from guided_inference.reporting.cost_report import cost_lines  # noqa: E402
from guided_inference.reporting.costs import NA, CostSettings  # noqa: E402
from guided_inference.reporting.frontier import line_point, point_cells  # noqa: E402
sys.path.insert(0, str(ROOT / "scripts"))
import frontier_study  # noqa: E402  (issue 19's runs)
import study_tables  # noqa: E402  (and their tables)
from guided_inference.evaluation.results import read_rows  # noqa: E402

RESULTS = "results/math500-first100"
DOCS = ("README.md", "docs/results.md", "docs/findings.md")
MARKER = re.compile(r"<!-- table:([a-z0-9-]+) -->\n(.*?)<!-- /table -->", re.S)


@dataclass(frozen=True)
class Run:
    key: str
    file: str  # under RESULTS
    readme_label: str
    label: str  # docs/results.md


RUNS = (
    Run("base", "math500_0.5B_1.5B_never_c0_k10.jsonl", "base only", "base only (0.5B)"),
    Run("random", "math500_0.5B_1.5B_random_c20_k10.jsonl", "random consults, c=20 k=10", "guided, random p=0.5"),
    Run("oracle", "math500_0.5B_1.5B_always_c103_k10.jsonl", "oracle only", "oracle only (1.5B)"),
)
# (label, run A, run B): the difference is B - A, as `guided compare A B` prints it.
PAIRS = (
    ("guided − base only", "base", "random"),
    ("oracle only − guided", "random", "oracle"),
    ("oracle only − base only", "base", "oracle"),
)
LEVEL_COLUMNS = (("base", "base only"), ("random", "guided c=20 k=10"), ("oracle", "oracle only"))
# The random c=20 k=10 run again, with per-problem consult schedules (issue 8 §1); it may be partial.
RESEEDED = Run("reseeded", "math500_0.5B_1.5B_random_c20_k10_perproblem.jsonl", "",
               "random p=0.5, per-problem schedules")


# Issue 9: when to consult, at about 10% oracle share (c=20 k=10); each may be partial.
POLICY_RUNS = (
    Run("p-random", "math500_0.5B_1.5B_random_p0.1_c20_k10.jsonl", "", "random, p=0.1"),
    Run("p-entropy", "math500_0.5B_1.5B_entropy_share0.1_c20_k10.jsonl", "", "entropy, calibrated"),
    Run("p-boundary", "math500_0.5B_1.5B_boundary_share0.1_c20_k10.jsonl", "", "boundary, calibrated"),
    Run("p-verify", "math500_0.5B_1.5B_verify_share0.1_c20_k10.jsonl", "", "verify, calibrated"),
)

# Issue 18: the lossless anchor and verify with the fixed rules (cost record in every line); may be partial.
COST_RUNS = (
    Run("c-verify2", "math500_0.5B_1.5B_verify_share0.1_c20_k10_v2.jsonl", "", "verify, calibrated, fixed rules"),
    Run("c-speculative", "math500_0.5B_1.5B_speculative_s10.jsonl", "", "speculative (draft 10)"),
)
COST_MODELS = ("tokens", "compute", "cpu", "gpu", "api")  # cpu only with the committed rates file (RATES)
RATES = "results/rates/rates_epyc_2threads.json"  # guided bench rates on this machine, quiet; cpu when present
# Issue 18's deployments: the cost model that stands for each, in the order the findings give them.
DEPLOYMENTS = (("cpu", "this CPU (cpu: seconds at the measured rates)"),
               ("compute", "compute-bound hardware (compute: parameters x tokens)"),
               ("gpu", "a GPU server (gpu: memory-bound model, not measured)"),
               ("api", "an API (api: input 1x, cached 0.1x, output 4x)"))


STUDY = "study"  # load()'s key for frontier_study.load(): {StudyRun: rows}


def load(root: Path = ROOT) -> dict[str, list[dict]]:
    runs = {r.key: latest(read_rows(root / RESULTS / r.file)) for r in RUNS}
    for r in (RESEEDED, *POLICY_RUNS, *COST_RUNS):
        path = root / RESULTS / r.file
        runs[r.key] = latest(read_rows(path)) if path.exists() else []
    runs[STUDY] = frontier_study.load(root)
    return runs


def _deployment_settings() -> list:
    return [(where, settings(m)) for m, where in DEPLOYMENTS if settings(m)]


def study_frontier(runs) -> str:
    """Issue 19: every study run under each deployment's cost model, against the straight line."""
    return study_tables.frontier(runs[STUDY], _deployment_settings())


def study_summary(runs) -> str:
    """Issue 19: the same, in words: per deployment, the runs grouped by verdict."""
    return study_tables.summary(runs[STUDY], _deployment_settings())


def policy_ids(runs: dict[str, list[dict]]) -> set[str]:
    """The problems every present policy run has graded (runs grow at different speeds)."""
    sets = [{r["unique_id"] for r in runs[p.key] if is_graded(r)} for p in POLICY_RUNS if runs[p.key]]
    return set.intersection(*sets) if sets else set()


def policies(runs: dict[str, list[dict]]) -> str:
    """Issue 9's first look: each policy at about 10% oracle share on the same problems, its
    cost (realised share beside the calibration's target), then paired differences against
    random at the same share, base only and oracle only."""
    ids = policy_ids(runs)
    if not ids:
        return "(no policy runs yet)\n"
    pick = lambda key: [r for r in runs[key] if r["unique_id"] in ids]  # noqa: E731
    rows = []
    for key, label in (("base", "base only"), *((p.key, p.label) for p in POLICY_RUNS if runs[p.key]),
                       ("oracle", "oracle only")):
        s, cost = summarize(pick(key), key), cost_row(label, pick(key))
        reads = oracle_reads([r for r in pick(key) if is_graded(r)])
        # The oracle's reads (prefill tokens) per problem: verify's check of every base step
        # costs reading, which the written share does not show.
        rows.append((label, cost[2], str(s.n), f"**{pct(s.accuracy)}**", ci(s), cost[3], share(s.oracle_share),
                     cost[5], f"{reads / s.n:.0f}", cost[8], f"{s.generation_s / s.n:.0f} s"))
    out = table(("run (same problems)", "threshold", "n", "accuracy", "95% CI (Wilson)", "target share",
                 "realised share", "consults/problem", "oracle reads/problem", "rejected base tokens",
                 "time/problem"), rows)
    pairs = []
    for p in POLICY_RUNS[1:]:
        if not runs[p.key]:
            continue
        for label, a in ((f"{p.label} − random p=0.1", "p-random"), (f"{p.label} − base only", "base"),
                         (f"{p.label} − oracle only", "oracle")):
            if not runs[a]:
                continue
            c = compare(pick(a), pick(p.key), n_boot=10_000, seed=0)
            pairs.append((label, str(c.shared), f"{100 * c.diff:+.1f} points",
                          f"[{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}]", f"{c.a_wins} / {c.b_wins}"))
    return out + "\n" + table(("comparison", "shared", "difference", "95% CI (paired bootstrap)",
                                "right only in A / only in B"), pairs)


def costs(runs: dict[str, list[dict]]) -> str:
    """Issue 18: every run's cost under each cost model, normalized to the oracle-only run on the
    same problems (= 1.00), beside its accuracy on those problems; and the straight line: the
    accuracy that mixing base and oracle answers in proportion to compute would give at that cost
    (base + (oracle - base) x (cost - base cost) / (1 - base cost), on the same problems)."""
    order = [("base", "base only"), *((p.key, p.label) for p in (*POLICY_RUNS, *COST_RUNS)), ("oracle", "oracle only")]
    present = [(label, runs[key]) for key, label in order if runs.get(key)]
    oracle = ("oracle only", runs["oracle"])
    models = [m for m in COST_MODELS if settings(m) is not None]
    per_model = {m: {line.label: line for line in cost_lines(present, settings(m), oracle)} for m in models}
    rows = []
    for label, _ in present:
        line = per_model["compute"][label]
        cells = []
        for m in models:
            ratio = per_model[m][label].ratio
            derived = per_model[m][label].cost.derived
            cells.append("?" if ratio is None else NA if ratio == NA else f"{ratio:.2f}" + ("*" if derived else ""))
        # the straight line at the run's compute cost, on the problems all three graded (frontier.py)
        at = line_point(runs[next(k for k, lab in order if lab == label)], runs["base"], runs["oracle"],
                        CostSettings("compute"), n_boot=1)
        line_acc = "-" if at is None or at.line is None else f"{pct(at.line)} ({100 * at.gap:+.1f})"
        rows.append((label, str(line.summary.n), f"**{pct(line.summary.accuracy)}**", ci(line.summary), *cells,
                     line_acc))
    return table(("run", "n (with oracle only)", "accuracy", "95% CI (Wilson)",
                  *(f"{m} cost" for m in models), "straight line at its compute cost (run − line)"), rows)


def speculative(runs: dict[str, list[dict]]) -> str:
    """Issue 18: speculative (greedy) against the oracle alone on their shared problems: accuracy,
    the paired difference, and how often the two greedy paths split (the first token where
    their ids differ: batched and one-token llama.cpp passes round differently at near-ties)."""
    spec = {r["unique_id"]: r for r in runs["c-speculative"] if is_graded(r)}
    orc = {r["unique_id"]: r for r in runs["oracle"] if is_graded(r)}
    ids = [i for i in spec if i in orc]
    if not ids:
        return "(no speculative run yet)\n"
    splits = []
    for i in ids:
        a, b = spec[i].get("token_ids") or [], orc[i].get("token_ids") or []
        first = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if first is None and len(a) != len(b):
            first = min(len(a), len(b))
        splits.append(first)
    c = compare([orc[i] for i in ids], [spec[i] for i in ids], n_boot=10_000, seed=0)
    same = sum(x is None for x in splits)
    at = sorted(x for x in splits if x is not None)
    where = f"median first split at token {at[len(at) // 2]}" if at else "-"
    rows = [("speculative − oracle only", str(len(ids)), f"{100 * c.diff:+.1f} points",
             f"[{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}]", f"{c.a_wins} / {c.b_wins}",
             f"{same} of {len(ids)}", where)]
    if runs["c-verify2"]:  # the lossy check against the lossless one
        v = compare(runs["c-speculative"], runs["c-verify2"], n_boot=10_000, seed=0)
        rows.append(("verify, fixed rules − speculative", str(v.shared), f"{100 * v.diff:+.1f} points",
                     f"[{100 * v.ci_low:+.1f}, {100 * v.ci_high:+.1f}]", f"{v.a_wins} / {v.b_wins}", "-", "-"))
    return table(("comparison", "shared", "difference", "95% CI (paired bootstrap)", "right only in A / only in B",
                  "identical token ids", "paths that split"), rows)


def settings(model: str, root: Path = ROOT) -> CostSettings | None:
    """CostSettings for ``model``; cpu only with the committed rates file (None without it)."""
    if model != "cpu":
        return CostSettings(model)
    if not (root / RATES).exists():
        return None
    from guided_inference.evaluation.rates import load_rates

    return CostSettings("cpu", rates=load_rates(str(root / RATES)), rates_file=RATES)


def deployments(runs: dict[str, list[dict]]) -> str:
    """Issue 18's summary: each policy run under each deployment's cost model, against the oracle
    alone and against the straight line (reporting/frontier.py: paired bootstrap, 10,000
    resamples, seed 0), with the verdict of ``frontier.verdict``."""
    rows = []
    for model, where in DEPLOYMENTS:
        s = settings(model)
        if s is None:
            continue
        for run in (*POLICY_RUNS, *COST_RUNS):
            if not runs[run.key]:
                continue
            p = line_point(runs[run.key], runs["base"], runs["oracle"], s)
            if p is None:  # nothing graded in all three yet
                continue
            cost, vs, gap, judged = point_cells(p)
            rows.append((where, run.label, str(p.n), cost, vs, gap, judged))
    return table(("deployment (cost model)", "run", "n", "cost (oracle alone = 1.00)", "accuracy − oracle, points [95% CI]",
                  "accuracy − straight line, points [95% CI]", "worth running instead of the oracle alone?"), rows)


def reseeded(runs: dict[str, list[dict]]) -> str:
    """The fixed-schedule and per-problem random runs side by side, on the problems both
    graded, with paired differences (per-problem minus fixed, and minus base only)."""
    new = [r for r in runs["reseeded"] if r.get("error") is None]
    ids = {r["unique_id"] for r in new}
    rows = []
    for key, label in (("base", "base only"), ("random", "random, one schedule for all problems"),
                       ("reseeded", RESEEDED.label), ("oracle", "oracle only")):
        s = summarize([r for r in runs[key] if r["unique_id"] in ids], key)
        rows.append((label, str(s.n), pct(s.accuracy), ci(s), share(s.oracle_share)))
    out = table(("run (same problems)", "n", "accuracy", "95% CI (Wilson)", "oracle-token share"), rows)
    pairs = []
    for label, a in (("per-problem − one schedule", "random"), ("per-problem − base only", "base")):
        c = compare(runs[a], new, n_boot=10_000, seed=0)
        pairs.append((label, str(c.shared), f"{100 * c.diff:+.1f} points",
                      f"[{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}]", f"{c.a_wins} / {c.b_wins}"))
    return out + "\n" + table(("comparison", "shared", "difference", "95% CI (paired bootstrap)",
                                "right only in A / only in B"), pairs)


def share(x: float) -> str:
    """Oracle-token share: the two ends are exact (no oracle token at all, or nothing but)."""
    return "0%" if x == 0 else "100%" if x == 1 else pct(x)


table = study_tables.table


def ci(s: Summary) -> str:
    return f"{pct(s.ci_low)}-{pct(s.ci_high)}"


BEST_KEY = "study-best"


def readme_first100(runs: dict[str, list[dict]], best: str | None = frontier_study.BEST) -> str:
    """The README's first table: accuracy, written share, and compute and gpu cost (issue 18;
    normalized to the oracle-only run on the same problems), with the partial issue-18 rows; once
    the study's ``BEST`` is set, its 10% run in place of random c=20 k=10."""
    listed = [(r.readme_label, r.key) for r in RUNS]
    if best:  # issue 19: the study's best consult moment replaces random c=20 k=10 (and its re-run)
        run = next(r for r in runs[STUDY] if r.group == 1 and r.policy == best)
        runs = dict(runs, **{BEST_KEY: runs[STUDY][run]})
        listed[1] = (f"{best} at 10% oracle share (the frontier study's best consult moment)", BEST_KEY)
    elif runs[RESEEDED.key]:  # the corrected re-run beside the random one
        listed.insert(2, ("random consults, c=20 k=10, per-problem schedules", RESEEDED.key))
    listed[-1:-1] = [(r.label, r.key) for r in (POLICY_RUNS[-1], *COST_RUNS) if runs[r.key]]
    present = [(label, runs[key]) for label, key in listed]
    oracle = ("oracle only", runs["oracle"])
    cost = {m: {line.label: line for line in cost_lines(present, CostSettings(m), oracle)} for m in ("compute", "gpu")}
    rows = []
    for label, key in listed:
        s = summarize(runs[key], key)
        name = label if s.n == 100 else f"{label} (n = {s.n})"
        cells = []
        for m in ("compute", "gpu"):
            line = cost[m][label]
            ratio = line.ratio
            cells.append("?" if ratio is None else NA if ratio == NA else f"{ratio:.2f}" + ("*" if line.cost.derived else ""))
        rows.append((name, pct(s.accuracy), ci(s), share(s.oracle_share), *cells))
    return table(("run", "accuracy", "95% CI", "oracle-token share", "compute cost", "gpu cost (model)"), rows)


def first100(runs: dict[str, list[dict]]) -> str:
    rows = []
    for r in RUNS:
        s = summarize(runs[r.key], r.key)
        k = "–" if s.policy == "never" else str(s.k)
        c = f"{s.c} (every step)" if s.policy == "always" else str(s.c)
        rows.append((r.label, k, c, str(s.n), f"**{pct(s.accuracy)}**", ci(s), share(s.oracle_share),
                     f"{s.mean_tokens:.0f}", pct(s.truncated), f"{s.generation_s:,.0f} s"))
    max_new = {row["config"]["max_new_tokens"] for key, rows in runs.items() if key != STUDY for row in rows}
    assert len(max_new) == 1, f"runs with different max_new_tokens: {sorted(max_new)}"
    return table(("run", "k", "c", "n", "accuracy", "95% CI (Wilson)", "oracle-token share", "mean tokens",
                  f"truncated ({max_new.pop():,})", "generation time (sum)"), rows)


def guided_usage(runs: dict[str, list[dict]]) -> str:
    rows = [r for r in runs["random"] if r.get("error") is None]
    n, c = len(rows), rows[0]["c"]
    consults = sum(len(r["cheat_positions"]) for r in rows) / n
    oracle = sum(r["oracle_tokens"] for r in rows) / n
    base = sum(r["base_tokens"] for r in rows) / n
    return (f"The guided run used {consults:.1f} consults per problem on average (of {c} allowed; shorter answers\n"
            f"end first): {oracle:.0f} oracle tokens and {base:.0f} base tokens per problem.\n")


def paired(runs: dict[str, list[dict]]) -> str:
    rows = []
    for label, a, b in PAIRS:
        c = compare(runs[a], runs[b], n_boot=10_000, seed=0)
        rows.append((label, str(c.shared), f"**{100 * c.diff:+.1f} points**",
                     f"[{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}]", f"{c.a_wins} / {c.b_wins}"))
    return table(("comparison", "shared", "difference", "95% CI (paired bootstrap)", "right only in A / only in B"), rows)


def by_level(runs: dict[str, list[dict]]) -> str:
    columns = [{level: s for level, s in breakdown(runs[key], "level")} for key, _ in LEVEL_COLUMNS]
    levels = list(columns[0])
    rows = []
    for level in levels:
        ns = {col[level].n for col in columns}
        assert len(ns) == 1, f"level {level}: the runs graded different numbers of problems {sorted(ns)}"
        rows.append((str(level), str(ns.pop()), *(pct(col[level].accuracy) for col in columns)))
    return table(("level", "n", *(title for _, title in LEVEL_COLUMNS)), rows)


TABLES = {
    "readme-first100": readme_first100,
    "first100": first100,
    "guided-usage": guided_usage,
    "paired": paired,
    "by-level": by_level,
    "reseeded": reseeded,
    "policies": policies,
    "costs": costs,
    "speculative": speculative,
    "deployments": deployments,
    "study-share10": lambda runs: study_tables.share10(runs[STUDY]),
    "study-budget": lambda runs: study_tables.budget(runs[STUDY]),
    "study-ck": lambda runs: study_tables.c_and_k(runs[STUDY]),
    "study-heldout": lambda runs: study_tables.heldout(runs[STUDY]),
    "study-heldout-ends": lambda runs: study_tables.heldout_ends(runs[STUDY]),
    "study-frontier": study_frontier,
    "study-calibration": lambda runs: study_tables.calibrations(runs[STUDY]),
    "study-drift": lambda runs: study_tables.drift_table(),
    "study-first-change": lambda runs: study_tables.first_change_table(),
    "study-figure": lambda runs: study_tables.figure_block(runs[STUDY]),
    "study-summary": study_summary,
}


def render(text: str, runs: dict[str, list[dict]]) -> str:
    """``text`` with every marked block regenerated; KeyError for a block name not in TABLES."""
    def block(m: re.Match) -> str:
        name = m.group(1)
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r} (known: {', '.join(TABLES)})")
        return f"<!-- table:{name} -->\n{TABLES[name](runs)}<!-- /table -->"

    return MARKER.sub(block, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="report differences, write nothing")
    args = ap.parse_args(argv)
    runs = load()
    stale = []
    for doc in DOCS:
        path = ROOT / doc
        old = path.read_text(encoding="utf-8")
        new = render(old, runs)
        if new == old:
            continue
        stale += [f"{doc}: table:{a.group(1)}" for a, b in zip(MARKER.finditer(old), MARKER.finditer(new))
                  if a.group(0) != b.group(0)]
        if not args.check:
            path.write_text(new, encoding="utf-8")
    for s in stale:
        print(f"{'differs' if args.check else 'rewrote'}: {s}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
