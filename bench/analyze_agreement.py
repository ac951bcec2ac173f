"""How closely ``guided analyze`` (transformers, fp32 dequantized, one teacher-forced pass) reproduces
the engine's per-token statistics (llama.cpp, Q4_K_M, prompt in a batch then token by token).

    GUIDED_THREADS=1 python bench/analyze_agreement.py [--lines 3] [--tokens 200]

For the first ``--lines`` prompts of the committed random c=20 results, the base generates
``--tokens`` tokens greedily through llama.cpp, recording each token's statistics; the same
ids are then analysed at every position. Prints the median, 99th percentile and maximum of
the absolute gaps of entropy, varentropy, top_prob and margin (prob_top2_diff).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "math500-first100" / "math500_0.5B_1.5B_random_c20_k10.jsonl"


def main() -> None:
    from guided_inference.study.analyze import AnalyzeSettings, analyze_row
    from guided_inference.backends.llama_cpp import LlamaCppBackend
    from guided_inference.backends.transformers_backend import TransformersBackend
    from guided_inference.config import SamplingConfig
    from guided_inference.models import resolve

    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=200)
    args = ap.parse_args()
    path, model_id, sha = resolve("qwen2.5-coder-0.5b")
    llama = LlamaCppBackend(path, name="qwen2.5-coder-0.5b", model_id=model_id, sha256=sha, n_ctx=2048)
    tf = TransformersBackend("qwen2.5-coder-0.5b", collect_stats=False)
    prompts = [json.loads(line)["prompt"] for line in RESULTS.read_text().splitlines()[: args.lines]]
    gaps = []
    for prompt in prompts:
        chunk = llama.generate(llama.tokenize(prompt, add_bos=True), args.tokens, SamplingConfig(),
                               np.random.default_rng(0))
        row = {"prompt": prompt, "token_ids": chunk.tokens, "cheat_positions": []}
        for s, it in zip(chunk.stats, analyze_row(tf, row, AnalyzeSettings(Path("in"), Path("out"), positions="all"))):
            assert s.position == it["position"]
            gaps.append((abs(s.entropy - it["entropy"]), abs(s.varentropy - it["varentropy"]),
                         abs(s.top_prob - it["top_prob"]), abs(s.margin - it["prob_top2_diff"])))
    g = np.array(gaps)
    print(f"positions: {len(g)}")
    for j, name in enumerate(("entropy", "varentropy", "top_prob", "margin")):
        print(f"{name}: median {np.median(g[:, j]):.2e}, p99 {np.quantile(g[:, j], 0.99):.2e}, max {g[:, j].max():.2e}")


if __name__ == "__main__":
    main()
