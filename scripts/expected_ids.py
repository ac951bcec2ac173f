"""Write tests/data/expected_ids.json: 32 greedy token ids of one short prompt on each Qwen
model, with the build that made them (tests/test_build.py compares every later build to it).

    python scripts/expected_ids.py     # only after checking the build is the portable one
"""
import json
from pathlib import Path

from guided_inference import __version__, buildinfo
from guided_inference.backends.cached import sync
from guided_inference.backends.llama_cpp import LlamaCppBackend
from guided_inference.models import resolve

PROMPT = "<|im_start|>user\nWhat is 12 times 13? Answer briefly.<|im_end|>\n<|im_start|>assistant\n"
N = 32

out = {"prompt": PROMPT, "tokens": N, "build": buildinfo.current_variant(),
       "system_info": buildinfo.system_info().strip(), "guided_inference": __version__, "models": {}}
assert not buildinfo.build_problems(out["system_info"], out["build"]), out["system_info"]
for name in ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"):
    path, _, sha = resolve(name)
    b = LlamaCppBackend(path, name=name, sha256=sha, n_ctx=2048)
    sync(b, b.tokenize(PROMPT, add_bos=b.adds_bos))
    ids = []
    for _ in range(N):
        ids.append(int(b.logits().argmax()))
        b.evaluate([ids[-1]])
    out["models"][name] = {"sha256": sha, "ids": ids, "text": b.detokenize(ids).decode("utf-8", "replace")}
dest = Path(__file__).resolve().parent.parent / "tests" / "data" / "expected_ids.json"
dest.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
print(dest, {m: v["text"][:60] for m, v in out["models"].items()})
