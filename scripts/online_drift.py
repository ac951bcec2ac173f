"""How far a run's written oracle share moves online from its replay, and how far a calibrated
value's share moves from one set of problems to another (issue 19's calibration).

    python scripts/online_drift.py          # replay, write DRIFT_FILE, print both tables

A calibration replays base-only traces: no consult changes the text there. Online, each consult
does, and the answer that follows is not the base trace any more (shorter when a loop is
broken, longer when the base wanders off the oracle's start). For each committed MATH-500 run
here: its written share online (oracle tokens over all tokens, summed over problems), and the
share its own config spends in a replay of the same problems' base-only traces (the committed
MATH-500 divergence file). Their ratio is the drift a replay target must allow for; the study
calibrates ``verify`` with that ratio (``frontier_study.DRIFT_SOURCE``; ``guided calibrate --drift``).

The replay is ``replay.replay``, the one the calibration uses; only the problems the run graded
are replayed (a partial run compares like with like). The ratio's 95% CI resamples problems
(``N_BOOT``, seed 0), online and replayed tokens of a problem together.

Transfer: each calibration of the study made on the default split (``frontier_study.CAL_DIV``,
100 MATH problems outside MATH-500; files without ``_math500``), replayed on those traces and on
MATH-500's, with each share's bootstrap SD over problems: the spread one 100-problem set has.

Writes ``DRIFT_FILE`` (JSON: ``runs``, one record per run; ``transfer``, one per calibration);
``scripts/docs_tables.py`` renders them through ``frontier_study``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

EVAL_DIV = "results/math500-first100/divergence_0.5B_1.5B.jsonl"  # MATH-500's base traces, teacher-forced
DRIFT_FILE = "results/calibration/study/online_drift.json"
N_BOOT = 2000
# Committed online runs of the first 100 MATH-500 problems whose code path is today's: the
# calibrated entropy run of issue 9 (same policy, the 30-problem calibration), random p=0.1,
# verify with the fixed rules (issue 18's "v2"), and top_prob calibrated on the default split
# (stopped after 15 problems when the study moved to transductive calibration: a pilot). The
# study's own MATH-500 runs are added as they get rows (``runs()``).
RUNS = ("results/math500-first100/math500_0.5B_1.5B_entropy_share0.1_c20_k10.jsonl",
        "results/math500-first100/math500_0.5B_1.5B_random_p0.1_c20_k10.jsonl",
        "results/math500-first100/math500_0.5B_1.5B_verify_share0.1_c20_k10_v2.jsonl",
        "results/math500-first100/math500_0.5B_1.5B_top_prob_share0.1_c20_k10_cal100.jsonl")


def runs() -> list[str]:
    """``RUNS`` and every calibrated study run on MATH-500 that has rows (a run that has just
    started has an empty file)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import frontier_study

    study = [r.path for r in frontier_study.study_runs() if r.calibration and not r.heldout
             and (ROOT / r.path).exists() and (ROOT / r.path).stat().st_size > 0]
    return [*RUNS, *(p for p in study if p not in RUNS)]


def run_config(row: dict):
    from guided_inference.config import GenerationConfig

    given = dict(row["config"])
    given["stop"] = tuple(given.get("stop") or ())  # JSON keeps the tuple as a list
    return GenerationConfig(**given)


def traces(path: str, evaluation: bool) -> dict:
    """A divergence file's base-only traces as the calibration replays them, by ``unique_id``."""
    from guided_inference.evaluation.calibrate import divergence_rows, recorded_traces
    from guided_inference.model_pair import load_pair

    pair = load_pair("0.5B", "1.5B")  # the oracle's scores too: verify replays its checks
    rows = divergence_rows(str(ROOT / path), pair, True, evaluation=evaluation)
    return {r.unique_id: r for r in recorded_traces(rows, pair, True, divergence=True, what=path)}


def base_traces() -> dict:
    """MATH-500's (``EVAL_DIV``)."""
    return traces(EVAL_DIV, True)


def _boot(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """sum(num) / sum(den) over ``N_BOOT`` resamples of the problems (seed 0)."""
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(num), size=(N_BOOT, len(num)))
    return num[idx].sum(axis=1) / den[idx].sum(axis=1)


def _replayed(config, recs) -> tuple[np.ndarray, np.ndarray]:
    """Per problem: oracle tokens and all tokens of a replay of ``config``."""
    from guided_inference.policies import POLICIES
    from guided_inference.replay import replay

    policy = POLICIES[config.policy].build(config)
    done = [replay(policy, config, rec) for rec in recs]
    return np.array([r.oracle_tokens for r in done], float), np.array([r.n for r in done], float)


def drift(path: str, traces: dict) -> dict:
    """One run's record: online share against the replay of its config on the same problems."""
    from guided_inference.evaluation.results import read_rows
    from guided_inference.reporting.report import is_graded, latest

    rows = [r for r in latest(read_rows(ROOT / path)) if is_graded(r)]
    config = run_config(rows[0])
    on_o = np.array([r["oracle_tokens"] for r in rows], float)
    on_n = np.array([r["total_tokens_generated"] for r in rows], float)
    re_o, re_n = _replayed(config, [traces[r["unique_id"]] for r in rows])
    on, re = on_o.sum() / on_n.sum(), re_o.sum() / re_n.sum()
    record = {"file": path, "policy": config.policy, "n": len(rows), "online_share": float(on),
              "replay_share": float(re), "ratio": float(on / re) if re else None, "ratio_ci": None}
    if re:  # _boot draws the same resamples for both (seed 0): the ratio is paired by problem
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = _boot(on_o, on_n) / _boot(re_o, re_n)
        # A resample whose replay wrote no oracle token has no ratio (a few problems of a rare
        # policy): then there is no CI yet, rather than a NaN in the file.
        if np.isfinite(ratios).all():
            record["ratio_ci"] = [float(x) for x in np.percentile(ratios, [2.5, 97.5])]
    return record


def ratio_cell(record: dict) -> str:
    """A record's ratio and its 95% CI as the tables print it ("-" without a ratio)."""
    if record["ratio"] is None:
        return "-"
    ci = record["ratio_ci"]
    return f"{record['ratio']:.3f} " + (f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "(no CI: a resample without a replayed consult)")


def transfer(default: dict, evaluation: dict) -> list[dict]:
    """Each default-split calibration of the study: its share and bootstrap SD on both sets."""
    from guided_inference.config import GenerationConfig

    sys.path.insert(0, str(ROOT / "scripts"))
    import frontier_study

    out = []
    for run in frontier_study.study_runs():
        if not run.calibration or run.heldout:
            continue
        path = frontier_study.default_split_calibration(run)
        if not (ROOT / path).exists():
            continue
        cal = json.loads((ROOT / path).read_text())
        config = GenerationConfig(policy=run.policy, c=cal["c"], k=cal["k"], step_size=cal["step_size"],
                                  max_new_tokens=cal["max_new_tokens"], **{cal["param"]: cal["value"]})
        record = {"calibration": path, "policy": run.policy, "value": cal["value"]}
        for name, recs in (("default", default), ("math500", evaluation)):
            o, n = _replayed(config, list(recs.values()))
            record[f"{name}_share"], record[f"{name}_sd"] = float(o.sum() / n.sum()), float(np.std(_boot(o, n)))
        out.append(record)
    return out


def main() -> int:
    sys.path.insert(0, str(ROOT / "scripts"))
    import frontier_study

    evaluation = base_traces()
    records = [drift(p, evaluation) for p in runs()]
    moved = transfer(traces(frontier_study.CAL_DIV, False), evaluation)
    (ROOT / DRIFT_FILE).write_text(json.dumps({"divergence_file": EVAL_DIV, "n_boot": N_BOOT, "runs": records,
                                               "transfer": moved}, indent=1) + "\n")
    for r in records:
        print(f"{r['policy']:>15} n={r['n']:3d} online {100 * r['online_share']:.2f}% "
              f"replay {100 * r['replay_share']:.2f}% ratio {ratio_cell(r)}  {r['file']}")
    for t in moved:
        print(f"{t['calibration']}: default split {100 * t['default_share']:.2f}% (SD {100 * t['default_sd']:.2f}), "
              f"MATH-500 {100 * t['math500_share']:.2f}% (SD {100 * t['math500_sd']:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
