"""Served throughput against `guided eval` on the same GSM8K problems (a benchmark, not a test).

    python bench/serve_throughput.py --problems 5 --max_new_tokens 128 --policy verify

1. `guided eval --dataset gsm8k --num_samples N` in a subprocess; its time is the sum of the
   rows' ``generation_s`` (model load and grading excluded).
2. `guided serve` with the same flags in a subprocess; once it is up (models loaded), the N
   problems are sent one after another as chat requests with guided eval's user message;
   its time is the client's wall clock from the first request to the last reply (HTTP, JSON,
   the chat template and each request's cold-cache prompt read included).
Both at temperature 0; the script checks that both sides produced the same texts and prints
one JSON line and one Markdown row. Set GUIDED_THREADS as for any run.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=5)
    ap.add_argument("--max_new_tokens", type=int, default=128)
    ap.add_argument("--base_model", default="0.5B")
    ap.add_argument("--oracle_model", default="1.5B")
    ap.add_argument("--policy", default="verify")
    ap.add_argument("--extra", default="", help="more generation flags for both sides, space-separated")
    a = ap.parse_args()
    flags = ["--base_model", a.base_model, "--oracle_model", a.oracle_model, "--policy", a.policy,
             "--max_new_tokens", str(a.max_new_tokens), "--temperature", "0", *a.extra.split()]
    cli = [sys.executable, "-m", "guided_inference.cli"]

    from guided_inference.tasks.gsm8k import GSM8K

    problems = GSM8K.load()[: a.problems]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eval.jsonl"
        subprocess.run([*cli, "eval", *flags, "--dataset", "gsm8k", "--num_samples", str(a.problems),
                        "--output_file", str(out), "--no_progress"], check=True, capture_output=True)
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    eval_s = sum(r["timings"]["generation_s"] for r in rows)
    eval_tokens = sum(r["total_tokens_generated"] for r in rows)

    port = free_port()
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    server = subprocess.Popen([*cli, "serve", *flags, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        replies = []
        t = time.perf_counter()
        for p in problems:
            r = httpx.post(url + "/v1/chat/completions", timeout=1200,
                           json={"messages": [{"role": "user", "content": GSM8K.prompt(p)}]})
            r.raise_for_status()
            replies.append(r.json())
        served_s = time.perf_counter() - t
    finally:
        os.killpg(server.pid, 9)
        server.wait()
    served_tokens = sum(r["usage"]["completion_tokens"] for r in replies)
    same = [r["choices"][0]["message"]["content"] for r in replies] == [row["result"] for row in rows]
    load = os.getloadavg()[0]
    result = {"problems": a.problems, "flags": flags, "eval_s": round(eval_s, 2), "eval_tokens": eval_tokens,
              "served_s": round(served_s, 2), "served_tokens": served_tokens, "same_texts": same,
              "eval_tok_s": round(eval_tokens / eval_s, 2), "served_tok_s": round(served_tokens / served_s, 2),
              "served_over_eval": round((served_tokens / served_s) / (eval_tokens / eval_s), 3),
              "load_average_1min": load, "threads": os.environ.get("GUIDED_THREADS")}
    print(json.dumps(result))
    print(f"| {a.base_model} + {a.oracle_model}, {a.policy}, {a.problems} GSM8K problems, {a.max_new_tokens} tokens "
          f"| guided eval {result['eval_tok_s']} tok/s ({eval_s:.1f} s) | served {result['served_tok_s']} tok/s "
          f"({served_s:.1f} s) | {result['served_over_eval']:.2f}x | same texts: {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
