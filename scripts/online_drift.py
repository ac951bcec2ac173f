"""How far a run's written oracle share moves online from its replay (issue 19's calibration).

    python scripts/online_drift.py          # replay the runs below, write DRIFT_FILE, print the table

A calibration replays base-only traces: no consult changes the text there. Online, each consult
does, and the answer that follows is not the base trace any more (shorter when a loop is
broken, longer when the base wanders off the oracle's start). For each committed MATH-500 run
here: its written share online (oracle tokens over all tokens, summed over problems), and the
share its own config spends in a replay of the same problems' base-only traces (the committed
MATH-500 divergence file). Their ratio is the drift a replay target must allow for; the study
calibrates ``verify`` to 10% / its ratio (``frontier_study.replay_target``).

The replay is ``replay.replay``, the one the calibration uses; only the problems the run graded
are replayed (a partial run compares like with like). Writes ``DRIFT_FILE`` (JSON: one record per
run with its file, n, online and replay shares, ratio); ``scripts/docs_tables.py`` renders it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

EVAL_DIV = "results/math500-first100/divergence_0.5B_1.5B.jsonl"  # MATH-500's base traces, teacher-forced
DRIFT_FILE = "results/calibration/study/online_drift.json"
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
    """``RUNS`` and every calibrated study run on MATH-500 that has a file."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import frontier_study

    study = [r.path for r in frontier_study.study_runs() if r.calibration and not r.heldout
             and (ROOT / r.path).exists()]
    return [*RUNS, *(p for p in study if p not in RUNS)]


def run_config(row: dict):
    from guided_inference.config import GenerationConfig

    given = dict(row["config"])
    given["stop"] = tuple(given.get("stop") or ())  # JSON keeps the tuple as a list
    return GenerationConfig(**given)


def base_traces() -> dict:
    """MATH-500's base-only traces as the calibration replays them, by ``unique_id``."""
    from guided_inference.evaluation.calibrate import divergence_rows, recorded_traces
    from guided_inference.model_pair import load_pair

    pair = load_pair("0.5B", "1.5B")  # the oracle's scores too: verify replays its checks
    rows = divergence_rows(str(ROOT / EVAL_DIV), pair, True, evaluation=True)
    return {r.unique_id: r for r in recorded_traces(rows, pair, True, divergence=True, what=EVAL_DIV)}


def drift(path: str, traces: dict) -> dict:
    """One run's record: online share against the replay of its config on the same problems."""
    from guided_inference.evaluation.results import read_rows
    from guided_inference.policies import POLICIES
    from guided_inference.replay import replay
    from guided_inference.reporting.report import is_graded, latest

    rows = [r for r in latest(read_rows(ROOT / path)) if is_graded(r)]
    config = run_config(rows[0])
    policy = POLICIES[config.policy].build(config)
    online = sum(r["oracle_tokens"] for r in rows), sum(r["total_tokens_generated"] for r in rows)
    replays = [replay(policy, config, traces[r["unique_id"]]) for r in rows]
    again = sum(x.oracle_tokens for x in replays), sum(x.n for x in replays)
    on, re = online[0] / online[1], again[0] / again[1]
    return {"file": path, "policy": config.policy, "n": len(rows), "online_share": on, "replay_share": re,
            "ratio": on / re if re else None}


def main() -> int:
    traces = base_traces()
    records = [drift(p, traces) for p in runs()]
    (ROOT / DRIFT_FILE).write_text(json.dumps({"divergence_file": EVAL_DIV, "runs": records}, indent=1) + "\n")
    for r in records:
        print(f"{r['policy']:>10} n={r['n']:3d} online {100 * r['online_share']:.2f}% "
              f"replay {100 * r['replay_share']:.2f}% ratio {r['ratio']:.3f}  {r['file']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
