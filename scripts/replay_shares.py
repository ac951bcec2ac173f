"""Offline evidence for the consult policies of issue 19: how often each fires, and what share
of the written tokens it would hand the oracle, replayed over committed base-only traces.

    PYTHONPATH=src python scripts/replay_shares.py \\
        --divergence results/math500-first100/divergence_0.5B_1.5B.jsonl \\
        --results results/math500-first100/math500_0.5B_1.5B_never_c0_k10.jsonl > replay_shares.md

The base-only results file holds token ids but no per-token statistics (it was run without
--save_stats); the divergence file holds the same 100 traces teacher-forced (the base's
statistics, the oracle's scores), so the replay reads that. Each token's bytes come from the
base's tokenizer (the GGUF loaded with vocab_only: no weights), so step boundaries and
``\\boxed{`` are read anew from the text. Every number is a replay of the policy objects
themselves (``calibration.replay``) with the text held fixed: what a policy would spend if
a consult did not change what follows (the same estimate calibration makes).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from guided_inference.replay import choose_value, realised_share, recorded_from_features, replay
from guided_inference.config import GenerationConfig
from guided_inference.steps import boundary_flags
from guided_inference.models import resolve
from guided_inference.policies import make_policy
from guided_inference.evaluation.recorded import features_from_row, read_divergence
from guided_inference.teacher import token_texts

BUDGET = dict(c=20, k=10, step_size=10, cooldown=10, max_new_tokens=1024)  # the runs


class Vocab:
    """A tokenizer only (llama.cpp vocab_only): what token_texts needs."""

    def __init__(self, name: str):
        import llama_cpp

        self.llm = llama_cpp.Llama(str(resolve(name)[0]), vocab_only=True, verbose=False)

    def detokenize(self, ids) -> bytes:
        return self.llm.detokenize(list(ids))


def fires(policy_name: str, recs, **kw) -> dict:
    """Share, consults per trace, traces with at least one consult."""
    config = GenerationConfig(policy=policy_name, **{**BUDGET, **kw})
    policy = make_policy(config)
    runs = [replay(policy, config, r) for r in recs]
    spent, total = sum(r.oracle_tokens for r in runs), sum(r.n for r in runs)
    return {"share": spent / total, "consults": sum(len(r.consults) for r in runs) / len(runs),
            "traces": sum(bool(r.consults) for r in runs), "first": [r.consults[0] if r.consults else None
                                                                   for r in runs]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--divergence", required=True)
    ap.add_argument("--results", required=True, help="the base-only results file the divergence file was made from")
    ap.add_argument("--tokenizer", default="qwen2.5-coder-0.5b")
    ap.add_argument("--calibration_dir", default="results/calibration",
                    help="replay the thresholds of these calibration files on the traces too")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    vocab = Vocab(args.tokenizer)
    results = {r["unique_id"]: r for r in map(json.loads, Path(args.results).read_text().splitlines())}
    rows = read_divergence(args.divergence)
    recs, old_flags, new_flags = [], 0, 0
    for row in rows:
        feats = features_from_row(row)
        pieces = token_texts(vocab, [int(t) for t in feats.token_ids])
        recs.append(recorded_from_features(row["unique_id"], feats, pieces))
        old_flags += int(np.sum(feats.boundary))
        new_flags += int(np.sum(boundary_flags(pieces)))
    n_tokens = sum(r.n for r in recs)
    cut = [results[r.unique_id].get("finish_reason") == "length" for r in recs]
    out = print
    out(f"# Replayed shares on {len(recs)} base-only traces ({n_tokens} tokens), "
        f"c={BUDGET['c']} k={BUDGET['k']} step {BUDGET['step_size']} cooldown {BUDGET['cooldown']}\n")
    out(f"Source: `{args.divergence}` (teacher-forced statistics of `{args.results}`; that file has no "
        "token_stats). Text held fixed: a consult does not change what follows.\n")
    out("## Step boundaries\n")
    out(f"- old rule (stored in the divergence file): {old_flags} boundaries; new reading: {new_flags}\n")

    out("## New policies\n")
    out("| policy | setting | share | consults / trace | traces with a consult |")
    out("|---|---|---:|---:|---:|")
    for m in (10, 25, 50, 100):
        f = fires("prefix", recs, prefix_tokens=m)
        out(f"| prefix | prefix_tokens={m} | {100 * f['share']:.1f}% | {f['consults']:.2f} | {f['traces']} |")
    rep_rows = {}
    for n in (8, 16, 32, 64):
        f = fires("repetition", recs, ngram=n)
        rep_rows[n] = f
        out(f"| repetition | ngram={n} | {100 * f['share']:.1f}% | {f['consults']:.2f} | {f['traces']} |")
    for k in (10, 20):
        f = fires("answer", recs, k=k)
        out(f"| answer | k={k} | {100 * f['share']:.1f}% | {f['consults']:.2f} | {f['traces']} |")
    out("")
    out("Repetition and the token limit (traces cut at max_new_tokens are the base's loops):\n")
    out("| ngram | cut traces that fire | other traces that fire | median first consult (cut / other) |")
    out("|---|---:|---:|---|")
    for n, f in rep_rows.items():
        a = [p for p, c in zip(f["first"], cut) if c and p is not None]
        b = [p for p, c in zip(f["first"], cut) if not c and p is not None]
        med = lambda x: f"{int(np.median(x))}" if x else "-"  # noqa: E731
        out(f"| {n} | {len(a)} of {sum(cut)} | {len(b)} of {len(cut) - sum(cut)} | {med(a)} / {med(b)} |")
    out("")

    out("## Calibrated to 10% on these traces (replay; the value a calibration on them would pick)\n")
    out("| policy | field | value | replayed share |")
    out("|---|---|---:|---:|")
    for name in ("prefix", "repetition", "boundary", "top_prob", "rolling_entropy", "entropy", "random"):
        config = GenerationConfig(policy=name, **BUDGET)
        value, share, _ = choose_value(config, recs, 0.10)
        field = {"prefix": "prefix_tokens", "repetition": "ngram", "random": "p"}.get(name, "threshold")
        out(f"| {name} | {field} | {value:.6g} | {100 * share:.2f}% |")
    out("")

    cal_dir = Path(args.calibration_dir)
    if cal_dir.is_dir():
        out("## Committed calibration files, replayed on these traces (dry run)\n")
        out("| file | threshold | calibration expected | dry-run share here |")
        out("|---|---:|---:|---:|")
        for path in sorted(cal_dir.glob("*.json")):
            rec = json.loads(path.read_text())
            config = GenerationConfig(policy=rec["policy"], threshold=rec["threshold"], c=rec["c"], k=rec["k"],
                                      step_size=rec["step_size"], cooldown=rec["cooldown"], window=rec["window"],
                                      max_new_tokens=BUDGET["max_new_tokens"])
            share = realised_share(make_policy(config), config, recs)
            out(f"| {path.name} | {rec['threshold']:.6g} | {100 * rec['expected_share']:.1f}% | {100 * share:.1f}% |")
        out("")
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
