"""Overhead of the guided loop over llama.cpp's own work (a benchmark, not a test).

    python bench/overhead.py [--repeats 3] [--max_new_tokens 300] [--policies never,random,entropy,verify]
    python bench/overhead.py --profile entropy      # cProfile of one run: where our time goes

For each policy, runs a guided generation on the Qwen pair (c=10, k=10, step_size=10;
entropy at threshold 2.5, verify with top-1 disagreement) and records every llama.cpp
evaluation each model did: each batch read (prompt, catch-up, verify's scoring reads with
their per-position logits) with its position, and each decoded token. The floor replays
exactly those evaluations through the backend's own ``evaluate`` (one ``llama_decode``
per batch), in the same order and at the same positions, the two models' work interleaved
as in the run, with nothing of the loop around them. overhead = wall / floor.

(Until 29 Nov 2026 the floor was timed per chunk size at one mid-sequence position, and
decode as the best of 7 single tokens; comparing a minimum of single tokens with a sum
over every real token put ``never`` at 1.20x. The replay compares like with like. Its
first version replayed all base work, then all oracle work, and came out 7-9% slower
than the runs that consult; it now keeps the run's order across the two models.)

The guided run and its replay alternate, and the minimum of each over the repeats is
used, so a busy machine inflates both sides alike.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

from guided_inference.config import GenerationConfig
from guided_inference.engine import guided_generate
from guided_inference.prompts import chat_prompt
from guided_inference.model_pair import load_pair

PROBLEM = ("Let $f(x) = 3x^2 - 5x + 2$. Find all real $x$ such that $f(f(x)) = 2$, "
           "and explain each step. Put the final answer in \\boxed{}.")


class Recorder:
    """Wraps a real backend and logs what llama.cpp evaluated in each call to ``log``, a
    list shared by both models so that it keeps the run's order: (the backend, the full
    token sequence, where the batch read started, logits rows asked for, the tokens then
    decoded one at a time)."""

    def __init__(self, inner, log: list):
        self.inner, self.calls = inner, log

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, context, *args, **kw):
        chunk = self.inner.generate(context, *args, **kw)
        self.calls.append((self.inner, list(context), len(context) - chunk.prefill_tokens, None, list(chunk.tokens)))
        return chunk

    def score(self, context, tokens, **kw):
        scores = self.inner.score(context, tokens, **kw)
        full = list(context) + list(tokens)
        start = len(full) - scores.prefill_tokens
        self.calls.append((self.inner, full, start, len(context) - 1 - start, []))
        return scores


def replay_seconds(calls) -> float:
    """Seconds llama.cpp needs to redo exactly these evaluations: the same batch reads at
    the same positions (with the same logits rows for verify's scoring), then each decoded
    token on its own, in the same order across both models, from cold caches. Nothing else
    of ours runs: no sampling, statistics, policy or bookkeeping, so wall / replay is what
    our loop adds."""
    total = 0.0
    backends = {id(call[0]): call[0] for call in calls}.values()
    for backend in backends:
        backend.keep(0)
    for backend, full, start, logits_from, decoded in calls:
        backend.keep(start)
        t = time.perf_counter()
        if start < len(full):
            backend.evaluate(full[start:], logits_from=logits_from)
        for tok in decoded:
            backend.evaluate([tok])
        total += time.perf_counter() - t
    for backend in backends:
        backend._logits_at = -1  # the cache now holds the replay, not the run
    return total


POLICY_CONFIGS = {
    "never": dict(policy="never"),
    "random": dict(policy="random"),
    "entropy": dict(policy="entropy", threshold=2.5),
    "verify": dict(policy="verify"),
}


def run_policy(pair, prompt: str, name: str, args) -> dict:
    config = GenerationConfig(c=10, k=10, step_size=10, max_new_tokens=args.max_new_tokens, seed=0,
                              **POLICY_CONFIGS[name])
    walls, floors = [], []
    for _ in range(args.repeats):
        log: list = []
        base, oracle = Recorder(pair.base, log), Recorder(pair.oracle, log)
        for b in (pair.base, pair.oracle):  # cold caches: every run reads its prompt
            b.llm.n_tokens, b._logits_at = 0, -1
        trace = guided_generate(prompt, base, oracle, config)
        walls.append(trace.timings.generation_s)
        floors.append(replay_seconds(log))
    wall, floor = min(walls), min(floors)
    n = trace.total_tokens_generated
    return {"policy": name, "tokens": n, "oracle_tokens": trace.oracle_tokens, "consults": len(trace.cheat_positions),
            "rejected": trace.rejected_tokens, "wall_s": round(wall, 3), "floor_s": round(floor, 3),
            "overhead": round(wall / floor, 3), "ms_per_token": round(1e3 * wall / n, 1),
            "walls": [round(w, 2) for w in walls], "floors": [round(f, 2) for f in floors]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max_new_tokens", type=int, default=300)
    ap.add_argument("--policies", default="never,random,entropy,verify")
    ap.add_argument("--profile", default=None, help="cProfile one run of this policy instead")
    args = ap.parse_args()

    pair = load_pair("0.5B", "1.5B")
    prompt = chat_prompt(pair.base, PROBLEM)
    if args.profile:
        import cProfile
        import pstats

        config = GenerationConfig(c=10, k=10, step_size=10, max_new_tokens=args.max_new_tokens, seed=0,
                                  **POLICY_CONFIGS[args.profile])
        prof = cProfile.Profile()
        prof.enable()
        guided_generate(prompt, pair.base, pair.oracle, config)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)
        return
    rows = []
    for name in args.policies.split(","):  # each row as it finishes: a cut-short run keeps what it measured
        rows.append(run_policy(pair, prompt, name, args))
        print(json.dumps(rows[-1]), flush=True)
    report = {"machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {__import__('os').cpu_count()} cores",
              "threads": pair.base.llm.n_threads if hasattr(pair.base.llm, "n_threads") else None,
              "repeats": args.repeats, "max_new_tokens": args.max_new_tokens, "runs": rows}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
