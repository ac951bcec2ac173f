"""Speculative decoding on this CPU: which way of getting the oracle's answer is fastest?

    python bench/speculative.py --problems 10 --max_new_tokens 512 --threads 2

Same MATH-500 prompts (the first ``--problems``), greedy, ``--max_new_tokens`` each, one
stream, 2 threads, one run after another on a quiet machine:
  1. ``oracle alone``: the 1.5B generating by itself (embedded llama.cpp);
  2. ``llama-server``: llama.cpp's server with the 1.5B alone, then ``llama-server draft``:
     ``--model-draft`` with the 0.5B (built from the same sources as our llama-server);
  3. ``speculative``: our policy (draft = ``--step_size`` base tokens, top-1 rule with
     correction and bonus token);
  4. ``verify``: our verify at the calibrated threshold (c=20, k=10; not lossless).
Per mode: generated tokens, wall seconds, tokens/s, and the acceptance rate (drafted base
tokens kept / drafted). Prints one markdown table. Not a test.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import LlamaCppServer, llama_server_binary  # noqa: E402

from guided_inference.config import GenerationConfig  # noqa: E402
from guided_inference.engine import guided_generate  # noqa: E402
from guided_inference.model_pair import load_pair  # noqa: E402
from guided_inference.prompts import chat_prompt  # noqa: E402
from guided_inference.tasks import get_task  # noqa: E402

VERIFY_THRESHOLD = 0.04152713467839196  # calibration/verify_c20_k10_share0.1_0.5B.json (issue 9)


def prompts(pair, n: int) -> list[str]:
    task = get_task("math500")
    return [chat_prompt(pair.base, task.prompt(p)) for p in task.load()[:n]]


def ours(pair, texts, config: GenerationConfig) -> dict:
    tokens = drafted = kept = 0
    t = time.perf_counter()
    for text in texts:
        trace = guided_generate(text, pair.base, pair.oracle, config)
        tokens += trace.total_tokens_generated
        cost = getattr(trace, "cost", None) or {}
        base = cost.get("base") or {}
        drafted += base.get("written") or 0
        kept += base.get("kept") or 0
    wall = time.perf_counter() - t
    return {"tokens": tokens, "wall_s": wall, "accept": kept / drafted if drafted else None}


def server(texts, args, draft: bool) -> dict:
    if llama_server_binary() is None:
        raise SystemExit("llama-server is not built: run scripts/build_llama_server.sh")
    srv = LlamaCppServer(args.oracle, n_ctx=4096, threads=args.threads)
    if draft:  # the 0.5B drafts up to step_size tokens, greedy, every draft checked
        base = srv.command
        # This llama.cpp names the flags --spec-*; without --spec-type the draft model is loaded but unused.
        srv.command = lambda: base() + ["-md", str(LlamaCppServer(args.base).path), "--spec-type", "draft-simple",
                                        "--spec-draft-n-max", str(args.step_size), "--spec-draft-n-min", "1",
                                        "-td", str(args.threads)]
    srv.start()
    try:
        tokens = drafted = accepted = 0
        t = time.perf_counter()
        for text in texts:
            r = httpx.post(srv.url + "/completion", json={"prompt": text, "n_predict": args.max_new_tokens,
                                                           "temperature": 0, "cache_prompt": False}, timeout=3600)
            r.raise_for_status()
            body = r.json()
            tokens += body["timings"]["predicted_n"]
            drafted += body["timings"].get("draft_n", 0)
            accepted += body["timings"].get("draft_n_accepted", 0)
        wall = time.perf_counter() - t
    finally:
        srv.stop()
    return {"tokens": tokens, "wall_s": wall, "accept": accepted / drafted if drafted else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="qwen2.5-coder-0.5b")
    ap.add_argument("--oracle", default="qwen2.5-coder-1.5b")
    ap.add_argument("--problems", type=int, default=10)
    ap.add_argument("--max_new_tokens", type=int, default=512)
    ap.add_argument("--step_size", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modes", default="oracle,server,server_draft,speculative,verify")
    args = ap.parse_args()
    os.environ["GUIDED_THREADS"] = str(args.threads)
    pair = load_pair(args.base, args.oracle, n_ctx=4096)
    texts = prompts(pair, args.problems)
    common = dict(max_new_tokens=args.max_new_tokens, step_size=args.step_size)
    runs = {
        "oracle": ("oracle alone (embedded)", lambda: ours(pair, texts, GenerationConfig(policy="always", c=10**6,
                                                                                         k=args.max_new_tokens, **common))),
        "server": ("llama-server, 1.5B alone", lambda: server(texts, args, draft=False)),
        "server_draft": ("llama-server --model-draft 0.5B", lambda: server(texts, args, draft=True)),
        "speculative": ("ours: speculative", lambda: ours(pair, texts, GenerationConfig(policy="speculative", **common))),
        "verify": ("ours: verify c=20 k=10 (calibrated)", lambda: ours(pair, texts, GenerationConfig(
            policy="verify", c=20, k=10, threshold=VERIFY_THRESHOLD, **common))),
    }
    load = os.getloadavg()[0]
    print(f"{args.problems} MATH-500 prompts, greedy, {args.max_new_tokens} new tokens, {args.threads} threads, "
          f"load {load:.2f} before")
    print("| mode | tokens | wall s | tokens/s | acceptance |\n|---|---|---|---|---|")
    for key in args.modes.split(","):
        label, fn = runs[key]
        r = fn()
        acc = "-" if r["accept"] is None else f"{100 * r['accept']:.1f}%"
        print(f"| {label} | {r['tokens']} | {r['wall_s']:.0f} | {r['tokens'] / r['wall_s']:.2f} | {acc} |", flush=True)
    print(f"load {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
