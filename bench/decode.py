"""Prefill and decode speed of each model with the installed llama.cpp build (issue 17).

    python bench/decode.py --models qwen2.5-coder-0.5b,qwen2.5-coder-1.5b --tokens 128 --repeats 3

Per model: the first MATH-500 prompt in its chat template is evaluated in one batch
(prefill tokens/s), then ``--tokens`` greedy tokens one at a time (decode tokens/s), from an
empty cache each repeat; the best of ``--repeats`` is reported (load from other jobs only
slows a run down). Prints one markdown row per model with the build (llama.cpp's system
info), the CPU model and its vector flags, threads and the 1-minute load average before
the run, and writes the same as JSON with ``--json FILE``. Not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import time

from guided_inference import buildinfo
from guided_inference.backends.llama_cpp import LlamaCppBackend
from guided_inference.doctor import _cpu_flags, _cpu_model
from guided_inference.models import resolve
from guided_inference.prompts import chat_prompt, prompt_ids
from guided_inference.tasks import get_task


def measure(name: str, tokens: int, repeats: int, threads: int) -> dict:
    path, model_id, sha = resolve(name)
    backend = LlamaCppBackend(path, name=name, sha256=sha, n_ctx=2048, n_threads=threads)
    task = get_task("math500")
    ids = prompt_ids(backend, chat_prompt(backend, task.prompt(task.load()[0])))
    best_prefill, best_decode = 0.0, 0.0
    for _ in range(repeats):
        backend.keep(0)
        t = time.perf_counter()
        backend.evaluate(ids)
        best_prefill = max(best_prefill, len(ids) / (time.perf_counter() - t))
        t = time.perf_counter()
        for _ in range(tokens):
            backend.evaluate([int(backend.logits().argmax())])
        best_decode = max(best_decode, tokens / (time.perf_counter() - t))
    return {"model": name, "sha256": sha, "prompt_tokens": len(ids), "decode_tokens": tokens,
            "prefill_tok_s": round(best_prefill, 1), "decode_tok_s": round(best_decode, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="qwen2.5-coder-0.5b,qwen2.5-coder-1.5b")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    rows = [measure(m, args.tokens, args.repeats, args.threads) for m in args.models.split(",")]
    info = buildinfo.system_info().strip()
    out = {"build": buildinfo.current_variant(), "system_info": info, "cpu": _cpu_model(), "cpu_flags": _cpu_flags(),
           "threads": args.threads, "load_1min_before": load, "rows": rows}
    print(f"build {out['build']}: {info}\nCPU {out['cpu']}; flags {' '.join(out['cpu_flags'])}; "
          f"{args.threads} threads; load {load:.2f} before")
    print("| model | build | prompt tokens | prefill tok/s | decode tok/s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {out['build']} | {r['prompt_tokens']} | {r['prefill_tok_s']} | {r['decode_tok_s']} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
