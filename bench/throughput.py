"""Throughput of `guided eval` over HTTP: 1 vs N problems in flight against llama.cpp servers.

    python bench/throughput.py --problems 40 --max_new_tokens 256            # llama-server, 4 slots
    python bench/throughput.py --server python --problems 8                  # llama-cpp-python's server
    python bench/throughput.py --ceiling --threads 2                         # the server alone, no engine

For each mode (base only: policy never, c=0; guided: policy random, c=20, k=10) and
each concurrency (1, then --slots), it starts fresh servers for the base and the
oracle on 127.0.0.1 (so no run inherits another's cache), points two aliases at them
(a temporary models.toml), runs the real `guided eval --dataset math500` in a
subprocess, and reads the results file: problems/hour and generated tokens/s over the
wall-clock time of the eval (model load excluded: the servers are up before it starts).
Prints one markdown table. Not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import LlamaCppServer, LlamaServer, llama_server_binary  # noqa: E402

MODES = {"base only": ["--policy", "never", "--c", "0"], "guided c=20 k=10": ["--policy", "random", "--c", "20", "--k", "10"]}


def start(kind: str, model: str, slots: int, threads: int, n_ctx: int):
    if kind == "llama-server":
        return LlamaCppServer(model, parallel=slots, n_ctx=n_ctx, threads=threads).start()
    return LlamaServer(model, n_ctx=n_ctx, threads=threads).start()


def run_once(args, mode: str, concurrency: int, workdir: Path) -> dict:
    base = start(args.server, args.base, args.slots, args.threads, args.n_ctx)
    oracle = start(args.server, args.oracle, args.slots, args.threads, args.n_ctx)
    try:
        kind = "llama.cpp" if args.server == "llama-server" else "llama-cpp-python"
        models = workdir / "models.toml"
        models.write_text("".join(
            f'[models.{name}]\nbackend = "openai_http"\nurls = ["{srv.url}"]\nserver = "{kind}"\n'
            f'tokenizer = "{model}"\ntokenizer_family = "qwen2.5"\ntop_logprobs = 0\n\n'
            for name, srv, model in (("bench-base", base, args.base), ("bench-oracle", oracle, args.oracle))))
        out = workdir / f"{mode.split()[0]}-c{concurrency}.jsonl"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "guided_inference.cli", "eval", "--base_model", "bench-base",
               "--oracle_model", "bench-oracle", "--dataset", "math500", "--num_samples", str(args.problems),
               "--max_new_tokens", str(args.max_new_tokens), "--concurrency", str(concurrency), "--no_stats",
               "--no_progress", "--output_file", str(out), *MODES[mode]]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "GUIDED_MODELS_FILE": str(models)})
        wall = time.perf_counter() - t
        if proc.returncode not in (0, 1):
            raise SystemExit(f"eval failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    finally:
        base.stop()
        oracle.stop()
    ok = [r for r in rows if not r.get("error")]
    tokens = sum(r["total_tokens_generated"] for r in ok)
    oracle_tokens = sum(r["oracle_tokens"] for r in ok)
    return {"mode": mode, "concurrency": concurrency, "problems": len(ok), "errors": len(rows) - len(ok),
            "wall_s": wall, "problems_per_hour": 3600 * len(ok) / wall, "tokens_per_s": tokens / wall,
            "tokens": tokens, "oracle_share": oracle_tokens / tokens if tokens else 0.0,
            "accuracy": sum(bool(r.get("correct")) for r in ok) / len(ok) if ok else 0.0}


def server_ceiling(args) -> None:
    """The server alone: aggregate decode tokens/s of 1 vs --slots concurrent raw requests
    (same prompt length, greedy, --max_new_tokens each), no engine, no handoffs. What
    continuous batching can give this machine at most."""
    import httpx
    from concurrent.futures import ThreadPoolExecutor

    srv = start(args.server, args.base, args.slots, args.threads, args.n_ctx)
    try:
        def one(i: int) -> int:
            body = {"prompt": f"Problem {i}: write a long, careful proof that the square root of {i + 2} is irrational.",
                    "n_predict": args.max_new_tokens, "max_tokens": args.max_new_tokens, "temperature": 0,
                    "ignore_eos": True, "cache_prompt": False}
            path = "/completion" if args.server == "llama-server" else "/v1/completions"
            r = httpx.post(srv.url + path, json=body, timeout=3600).json()
            return int(r.get("tokens_predicted") or r.get("usage", {}).get("completion_tokens", 0))

        rows = []
        for n in (1, args.slots):
            t = time.perf_counter()
            with ThreadPoolExecutor(n) as pool:
                tokens = sum(pool.map(one, range(n)))
            rows.append((n, tokens, time.perf_counter() - t))
    finally:
        srv.stop()
    print(f"\nserver ceiling: {args.server}, {args.base}, {args.threads} threads, {args.slots} slots, load average "
          f"{os.getloadavg()[0]:.1f}\n\n| sequences in flight | tokens | wall s | tokens/s | speed-up |\n|---|---|---|---|---|")
    for n, tokens, wall in rows:
        print(f"| {n} | {tokens} | {wall:.1f} | {tokens / wall:.1f} | {tokens / wall / (rows[0][1] / rows[0][2]):.2f}x |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", choices=["llama-server", "python"], default="llama-server")
    p.add_argument("--base", default="qwen2.5-coder-0.5b")
    p.add_argument("--oracle", default="qwen2.5-coder-1.5b")
    p.add_argument("--problems", type=int, default=40)
    p.add_argument("--max_new_tokens", type=int, default=256)
    p.add_argument("--slots", type=int, default=4, help="server slots, and problems in flight for the second run")
    p.add_argument("--threads", type=int, default=2, help="threads per server")
    p.add_argument("--n_ctx", type=int, default=2048, help="context per slot")
    p.add_argument("--modes", default=",".join(MODES), help="comma list of: " + ", ".join(MODES))
    p.add_argument("--json", default=None, help="also write the rows here")
    p.add_argument("--ceiling", action="store_true", help="only the server alone: raw concurrent requests")
    args = p.parse_args()
    if args.server == "llama-server" and llama_server_binary() is None:
        raise SystemExit("llama-server is not built: run scripts/build_llama_server.sh")
    if args.ceiling:
        return server_ceiling(args)
    results = []
    with tempfile.TemporaryDirectory(prefix="guided-bench-") as tmp:
        for mode in args.modes.split(","):
            for concurrency in (1, args.slots):
                r = run_once(args, mode, concurrency, Path(tmp))
                results.append(r)
                print(f"# {mode}, {concurrency} in flight: {r['problems']} problems in {r['wall_s']:.0f} s", file=sys.stderr)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, load average at end "
          f"{os.getloadavg()[0]:.1f}; server {args.server}, {args.slots} slots, {args.threads} threads each; "
          f"{args.base} + {args.oracle}; {args.problems} MATH-500 problems, max_new_tokens {args.max_new_tokens}\n")
    print("| mode | in flight | problems | errors | wall s | problems/hour | tokens/s | speed-up | oracle share | accuracy |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        one = next(x for x in results if x["mode"] == r["mode"] and x["concurrency"] == 1)
        print(f"| {r['mode']} | {r['concurrency']} | {r['problems']} | {r['errors']} | {r['wall_s']:.0f} | "
              f"{r['problems_per_hour']:.0f} | {r['tokens_per_s']:.1f} | {r['problems_per_hour'] / one['problems_per_hour']:.2f}x | "
              f"{100 * r['oracle_share']:.0f}% | {100 * r['accuracy']:.0f}% |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
