"""lm-evaluation-harness against `guided serve`: its per-problem outputs equal `guided eval`'s.

How the comparison is made honest:
  - the task (tests/lm_eval/gsm8k_guided.yaml) runs the first GSM8K test problems with the
    user message guided eval sends (``tasks.BOXED_COT``); lm-eval sends it as the one chat
    message, the server applies the base model's chat template (as guided eval does);
  - the server logs each prompt it rendered (``--log_prompts``): each equals the ``prompt``
    of guided eval's row for that problem, so both sides generated from the same text;
  - both sides run the same flags (pair, policy, budget, n_ctx), temperature 0, 48 tokens,
    the stop string "Question:" and seed 0. The policy (entropy) draws no random numbers,
    so guided eval's per-problem seed key changes nothing;
  - compared per problem: lm-eval's response with the row's ``result``, and the server's
    logged counts (base, oracle, consults) with the row's.
The server empties its KV caches per request (the default); guided eval keeps them across
problems. Equality therefore also shows that the reuse does not change these outputs.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from serve_process import SMOL, GuidedServe

pytest.importorskip("lm_eval", reason="lm-eval is installed by the [test] extra (lm-eval[api]==0.4.13)")
pytest.importorskip("fastapi")

N = 3
FLAGS = ("--n_ctx", "1024", "--policy", "entropy", "--threshold", "1.0", "--c", "3", "--k", "6")
TASK_YAML = Path(__file__).parent / "lm_eval" / "gsm8k_guided.yaml"


def test_lm_eval_outputs_equal_guided_eval(tmp_path):
    from guided_inference.tasks.gsm8k import GSM8K

    problems = GSM8K.load()[:N]
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    shutil.copy(TASK_YAML, task_dir)
    with open(GSM8K.path) as src, open(task_dir / "gsm8k_guided.jsonl", "w") as dst:
        for _ in range(N):
            row = json.loads(src.readline())
            dst.write(json.dumps({"question": row["question"], "answer": row["answer"]}) + "\n")

    with GuidedServe(SMOL, SMOL, *FLAGS, "--log_prompts") as server:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
               "TOKENIZERS_PARALLELISM": "false"}
        model_args = (f"base_url={server.url}/v1/chat/completions,model=guided,num_concurrent=1,max_retries=1,"
                      "seed=0,timeout=300")
        r = subprocess.run([sys.executable, "-m", "lm_eval", "run", "--model", "local-chat-completions",
                            "--model_args", model_args, "--tasks", "gsm8k_guided", "--include_path", str(task_dir),
                            "--apply_chat_template", "--log_samples", "--output_path", str(tmp_path / "out")],
                           cwd=task_dir, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        served = [x for x in server.requests_logged() if x["route"] == "/v1/chat/completions"]

    samples_file = next((tmp_path / "out").rglob("samples_gsm8k_guided_*.jsonl"))
    samples = sorted((json.loads(line) for line in samples_file.read_text().splitlines()), key=lambda s: s["doc_id"])
    assert len(samples) == N and len(served) == N and all(x["status"] == 200 for x in served)

    out = tmp_path / "eval.jsonl"
    e = run_cli("eval", "--base_model", SMOL, "--oracle_model", SMOL, *FLAGS, "--dataset", "gsm8k", "--num_samples",
                str(N), "--max_new_tokens", "48", "--temperature", "0", "--stop", "Question:", "--seed", "0",
                "--output_file", str(out), "--no_progress", env={"GUIDED_THREADS": "1"})
    assert e.returncode == 0, e.stderr
    rows = {row["unique_id"]: row for row in map(json.loads, out.read_text().splitlines())}

    by_prompt = {x["prompt"]: x for x in served}
    for sample, problem in zip(samples, problems):
        row = rows[problem.unique_id]
        sent = json.loads(sample["arguments"]["gen_args_0"]["arg_0"][0])  # the JSON chat lm-eval sent
        assert sent == [{"role": "user", "content": GSM8K.prompt(problem)}]  # guided eval's user message
        logged = by_prompt[row["prompt"]]  # the server rendered guided eval's prompt, to the byte
        assert sample["resps"][0][0] == row["result"], problem.unique_id
        assert (logged["base_tokens"], logged["oracle_tokens"], logged["consults"], logged["completion_tokens"]) == \
            (row["base_tokens"], row["oracle_tokens"], len(row["cheat_positions"]), row["total_tokens_generated"])
    assert sum(row["oracle_tokens"] for row in rows.values()) > 0, "the policy should consult the oracle"
