"""Overhead of the guided loop over llama.cpp's own work (a benchmark, not a test).

    python bench/overhead.py [--repeats 3] [--max_new_tokens 300] [--policies never,random,entropy,verify]
    python bench/overhead.py --profile entropy      # cProfile of one run: where our time goes

For each policy, runs a guided generation on the Qwen pair (c=10, k=10, step_size=10;
entropy at threshold 2.5, verify with top-1 disagreement) and records every backend call: how
many tokens each model read in a batch (prompt, catch-up) and how many it
generated. The floor is that same work done one call after another at
llama.cpp's own speed, measured here with raw ``Llama.eval`` on the same
models: each batch read at the rate llama.cpp achieves for a batch of *that
size* (chunk sizes matter: small catch-ups run far below prompt-sized rates),
each generated token at the single-token decode rate; verify's scoring reads (the
oracle teacher-forcing each base step) count at the batch rate of their size.
overhead = wall / floor.

The guided run and the floor measurements alternate, and the minimum of each
over the repeats is used, so a busy machine inflates both sides alike.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from collections import Counter

from guided_inference.config import GenerationConfig
from guided_inference.engine import guided_generate
from guided_inference.prompts import chat_prompt
from guided_inference.pair import load_pair

PROBLEM = ("Let $f(x) = 3x^2 - 5x + 2$. Find all real $x$ such that $f(f(x)) = 2$, "
           "and explain each step. Put the final answer in \\boxed{}.")


class Recorder:
    """Wraps a real backend and logs (prefill_tokens, decode_tokens) of each call."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, *args, **kw):
        chunk = self.inner.generate(*args, **kw)
        self.calls.append((chunk.prefill_tokens, chunk.decode_tokens))
        return chunk

    def score(self, *args, **kw):
        scores = self.inner.score(*args, **kw)
        self.calls.append((scores.prefill_tokens, 0))
        return scores


def eval_time(backend, prefix: list[int], new: list[int], reps: int = 3) -> float:
    """Best-of-reps seconds for raw llama.cpp to read ``new`` after ``prefix`` in one batch."""
    llm = backend.llm
    best = float("inf")
    if llm.input_ids[: llm.n_tokens].tolist()[: len(prefix)] != prefix or llm.n_tokens < len(prefix):
        llm.n_tokens = 0
        llm.eval(prefix)
    for _ in range(reps):
        llm.n_tokens = len(prefix)  # roll back to the prefix: eval() drops the rest of the cache
        t = time.perf_counter()
        llm.eval(new)
        best = min(best, time.perf_counter() - t)
    backend._logits_at = -1  # we moved its cache behind its back
    return best


def floor_seconds(backend, calls, context: list[int]) -> tuple[float, dict]:
    """Seconds llama.cpp needs for these calls' reads and decodes, at their chunk sizes.

    The first read of each model starts at position 0 (prompt plus whatever the other
    model wrote before); later reads are timed mid-sequence, where catch-ups happen."""
    first, rest = calls[0][0], Counter(n for n, _ in calls[1:] if n)
    mid = context[: len(context) // 2]
    per_size = {n: eval_time(backend, mid, context[len(mid): len(mid) + n]) for n in rest}
    decode = eval_time(backend, mid, context[len(mid): len(mid) + 1], reps=7)
    first_s = eval_time(backend, [], context[:first], reps=2) if first else 0.0
    total = first_s + sum(per_size[n] * count for n, count in rest.items()) + decode * sum(d for _, d in calls)
    rates = {"first_read": f"{first} tok at {first / first_s:.0f} tok/s" if first else "none"}
    rates.update({n: round(n / s, 1) for n, s in sorted(per_size.items())})
    return total, {"decode_ms": round(decode * 1e3, 2), "prefill_tok_s": rates}


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
        base, oracle = Recorder(pair.base), Recorder(pair.oracle)
        for b in (pair.base, pair.oracle):  # cold caches: every run reads its prompt
            b.llm.n_tokens, b._logits_at = 0, -1
        trace = guided_generate(prompt, base, oracle, config)
        walls.append(trace.timings.generation_s)
        context = pair.base.tokenize(prompt, add_bos=True) + trace.token_ids
        fb, _ = floor_seconds(pair.base, base.calls, context)
        fo, _ = floor_seconds(pair.oracle, oracle.calls, context) if oracle.calls else (0.0, None)
        floors.append(fb + fo)
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
