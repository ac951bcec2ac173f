"""Where each study policy would first change the base's answer, before any online run (issue 19).

    python scripts/first_change.py          # replay, write CHANGE_FILE, print the table

With greedy decoding a consult writes the oracle's top-1 tokens; until one of them differs from
the base's token, the online text *is* the base trace. So, replaying a policy over MATH-500's
teacher-forced base traces (``EVAL_DIV``), the first consult that changes the text is exact
(``replay.first_change``), and with it: on which problems the answer can differ from the base's
at all (elsewhere the run returns the base's answer, right or wrong), how many of those the base
got wrong (the most the policy can fix) or right (what it can break), and how many oracle tokens
it writes before anything changes (spent for nothing). Each calibrated 10% run of group 1 (its
``_math500`` calibration) and random p=0.1 (its committed run's config).

Check: for every committed online run among them, the problems predicted unchanged must have
returned the base-only run's tokens exactly, and the others must differ; the file records the
count that agree (``checked``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

import frontier_study as study  # noqa: E402

CHANGE_FILE = "results/calibration/study/first_change.json"


def configs() -> list[tuple[str, object, str | None]]:
    """(label, config, online file or None) of each group-1 run at 10% (c=20, k=10)."""
    from guided_inference.config import GenerationConfig
    from guided_inference.evaluation.results import read_rows
    from online_drift import run_config

    out = []
    for run in study.study_runs():
        if run.group != 1:
            continue
        online = run.path if (ROOT / run.path).exists() else None
        if run.calibration:
            cal = json.loads((ROOT / run.calibration).read_text())
            config = GenerationConfig(policy=run.policy, c=run.c, k=run.k, step_size=10, max_new_tokens=1024,
                                      **{cal["param"]: cal["value"]})
        else:
            config = run_config(read_rows(ROOT / run.path)[0])
        out.append((run.label, config, online))
    return out


def record(label: str, config, online: str | None, traces: dict, base: dict) -> dict:
    from guided_inference.evaluation.results import read_rows
    from guided_inference.policies import POLICIES
    from guided_inference.replay import first_change, replay
    from guided_inference.reporting.report import is_graded, latest

    policy = POLICIES[config.policy].build(config)
    at, wasted, changed = [], 0, {}
    for uid, rec in traces.items():
        where, before = first_change(rec, replay(policy, config, rec))
        changed[uid] = where is not None
        wasted += before
        if where is not None:
            at.append(where)
    n_changed = sum(changed.values())
    out = {"run": label, "policy": config.policy, "n": len(traces), "changed": n_changed,
           "changed_base_wrong": sum(1 for u, c in changed.items() if c and not base[u]["correct"]),
           "changed_base_right": sum(1 for u, c in changed.items() if c and base[u]["correct"]),
           "median_first_change": float(np.median(at)) if at else None,
           "oracle_tokens_before_change": wasted, "online": online, "checked": None}
    if online:
        rows = {r["unique_id"]: r for r in latest(read_rows(ROOT / online)) if is_graded(r)}
        agree = sum((rows[u]["token_ids"] != base[u]["token_ids"]) == changed[u] for u in rows)
        out["checked"] = [agree, len(rows)]
    return out


def main() -> int:
    from guided_inference.evaluation.results import read_rows
    from online_drift import traces as load_traces

    base = {r["unique_id"]: r for r in read_rows(ROOT / study.REFERENCES[0].path)}
    traces = load_traces(study.EVAL_DIV, True)
    records = [record(label, config, online, traces, base) for label, config, online in configs()]
    (ROOT / CHANGE_FILE).write_text(json.dumps({"divergence_file": study.EVAL_DIV,
                                                "base_file": study.REFERENCES[0].path,
                                                "runs": records}, indent=1) + "\n")
    for r in records:
        print(f"{r['run']:>40}: changes {r['changed']}/{r['n']} answers ({r['changed_base_wrong']} the base got wrong), "
              f"median first change at token {r['median_first_change']}, "
              f"{r['oracle_tokens_before_change']} oracle tokens before it; checked {r['checked']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
