"""Cost of one sampled token's nucleus (top_p) step: full argsort versus ``nucleus``.

    python bench/sampling.py --model qwen2.5-coder-0.5b --tokens 64 --temperature 0.7 --top_p 0.95

Generates ``--tokens`` tokens greedily with the real base on a MATH-500 prompt and keeps
each position's logits (the distributions sampling actually meets), then times, on the
same logits and interleaved so that machine load hits both alike: the old step (argsort
of the whole vocabulary, as ``sample_token`` did before) and ``nucleus`` (partition, then
sort only the head). Checks that both keep the same tokens. Prints one markdown row per
method: median and mean microseconds per token, and the nucleus sizes met. Not a test.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np

from guided_inference.backends import load_backend
from guided_inference.backends.cached import nucleus
from guided_inference.prompts import chat_prompt, prompt_ids
from guided_inference.tasks import get_task


def full_sort(p: np.ndarray, top_p: float) -> np.ndarray:
    order = np.argsort(-p, kind="stable")
    cum = np.cumsum(p[order])
    return order[: int(np.searchsorted(cum, top_p)) + 1]


def collect_logits(model: str, n: int) -> list[np.ndarray]:
    backend = load_backend(model)
    task = get_task("math500")
    ids = prompt_ids(backend, chat_prompt(backend, task.prompt(task.load()[0])))
    out = []
    backend.sync(ids)
    for _ in range(n):
        logits = np.array(backend.logits(), dtype=np.float32)
        out.append(logits)
        ids.append(int(np.argmax(logits)))
        backend.sync(ids)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top_p", type=float, default=0.95)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rows = collect_logits(args.model, args.tokens)
    times = {"argsort (before)": [], "nucleus (now)": []}
    sizes = []
    for logits in rows:
        x = logits.astype(np.float64) / args.temperature
        p = np.exp(x - x.max())
        p /= p.sum()
        for _ in range(args.repeats):
            t = time.perf_counter()
            a = full_sort(p, args.top_p)
            times["argsort (before)"].append(time.perf_counter() - t)
            t = time.perf_counter()
            b = nucleus(p, args.top_p)
            times["nucleus (now)"].append(time.perf_counter() - t)
        if not np.array_equal(a, b):
            raise SystemExit("nucleus differs from the full sort: a bug")
        sizes.append(len(b))
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}; model {args.model}; "
          f"{args.tokens} positions x {args.repeats}; temperature {args.temperature}, top_p {args.top_p}; "
          f"nucleus size median {int(statistics.median(sizes))}, max {max(sizes)}")
    print("| method | median us/token | mean us/token |")
    print("|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {1e6 * statistics.median(ts):.0f} | {1e6 * statistics.mean(ts):.0f} |")


if __name__ == "__main__":
    main()
