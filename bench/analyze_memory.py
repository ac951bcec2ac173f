"""Peak memory of ``guided analyze``'s teacher-forced pass on a 1,024-token trace (Qwen 0.5B, fp32, CPU).

    GUIDED_THREADS=1 python bench/analyze_memory.py            # one child process per mode, a table at the end

Each mode runs in its own process (peak RSS only grows): load the model, read the longest
line of the committed random c=20 results (1,024 generated tokens), then one pass:
  consults        rows of the consult positions, last layer (the default of analyze)
  all             every generated position, last layer
  all-layers      every generated position, all 24 layers (per-head entropies kept)
  full-maps       transformers' own output_attentions=True: every layer's [heads, T, T] map
Prints peak RSS after loading (and a 16-token warm-up pass, so the lazily mapped weights are
resident) and after the pass, and the pass's wall time (for orientation
only: the machine is shared).
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "math500-first100" / "math500_0.5B_1.5B_random_c20_k10.jsonl"
MODES = ("consults", "all", "all-layers", "full-maps")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def one(mode: str) -> dict:
    from guided_inference.study.analyze import AnalyzeSettings, analyze_row
    from guided_inference.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend("qwen2.5-coder-0.5b", collect_stats=False)
    row = max((json.loads(line) for line in RESULTS.read_text().splitlines()), key=lambda r: len(r["token_ids"]))
    n_prompt = len(backend.tokenize(row["prompt"], add_bos=True))
    backend.teacher_forced(row["token_ids"][:16], [15])  # touch every weight (safetensors are mapped lazily)
    loaded = peak_mb()
    t = time.perf_counter()
    if mode == "full-maps":
        maps = backend.attention(backend.tokenize(row["prompt"], add_bos=True) + row["token_ids"])
        del maps
    else:
        positions = "consults" if mode == "consults" else "all"
        layers = "all" if mode == "all-layers" else "last"
        analyze_row(backend, row, AnalyzeSettings(Path("in"), Path("out"), positions=positions, layers=layers))
    return {"mode": mode, "tokens": n_prompt + len(row["token_ids"]), "generated": len(row["token_ids"]),
            "consults": len(row["cheat_positions"]), "loaded_mb": round(loaded), "peak_mb": round(peak_mb()),
            "pass_s": round(time.perf_counter() - t, 1)}


def main() -> None:
    if len(sys.argv) > 1:
        print(json.dumps(one(sys.argv[1])))
        return
    print("| mode | tokens | peak RSS after load + warm-up (MB) | peak RSS after the pass (MB) | pass increment (MB) | pass (s) |")
    print("|---|---|---|---|---|---|")
    for mode in MODES:
        out = subprocess.run([sys.executable, __file__, mode], capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {mode} | {r['tokens']} | {r['loaded_mb']} | {r['peak_mb']} | {r['peak_mb'] - r['loaded_mb']} "
              f"| {r['pass_s']} |", flush=True)


if __name__ == "__main__":
    main()
