"""The `guided` command line: generate end to end, models list, and one-line errors for bad input."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli

SMOL = ["--base_model", "smollm2-135m", "--oracle_model", "smollm2-135m"]


@pytest.mark.parametrize("args,needle", [
    (["--c", "-1"], "c must be an integer >= 0, got -1"),
    (["--k", "0"], "k must be an integer >= 1, got 0"),
    (["--max_new_tokens", "0"], "max_new_tokens must be an integer >= 1, got 0"),
    (["--step-size", "0"], "step_size must be an integer >= 1, got 0"),
    (["--top_p", "1.5"], "top_p must be a number in (0.0, 1.0], got 1.5"),
    (["--policy", "telepathy"], "got 'telepathy'"),
    (["--base_model", "gpt-17"], "unknown model 'gpt-17'"),
    (["--c", "x"], "argument --c: invalid int value: 'x'"),
])
def test_bad_input_one_line_error(args, needle):
    proc = run_cli("generate", *SMOL, "--prompt", "hi", *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert needle in lines[0]


def test_missing_prompt_is_an_error():
    proc = run_cli("generate", *SMOL)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --prompt is required"


def test_generate_json_trace(tmp_path):
    proc = run_cli("generate", *SMOL, "--c", "2", "--k", "4", "--step_size", "4", "--policy", "random",
                   "--seed", "5", "--prompt", "What is 2+2?", "--max_new_tokens", "30", "--json")
    assert proc.returncode == 0, proc.stderr
    t = json.loads(proc.stdout)
    assert "".join(s["output"] for s in t["interleaved_outputs"]) == t["result"]
    assert {s["model_type"] for s in t["interleaved_outputs"]} <= {"base", "oracle"}
    assert t["base_tokens"] + t["oracle_tokens"] == t["total_tokens_generated"] <= 30
    assert len(t["cheat_positions"]) <= 2 and t["handoff"] == "tokens"
    tm = t["timings"]
    assert tm["load_s"] > 0 and tm["generation_s"] > 0
    assert tm["base"]["prefill_tokens"] + tm["oracle"]["prefill_tokens"] > 0 and set(tm["oracle"]) == {"prefill_tokens", "prefill_s", "decode_tokens", "decode_s"}
    assert t["config"]["c"] == 2 and t["seed"] == 5 and len(t["base_sha256"]) == 64 and t["version"]


def test_generate_verbose_colours_and_summary():
    proc = run_cli("generate", "--base-model", "smollm2-135m", "--oracle-model", "smollm2-135m", "--policy", "always",
                   "--k", "5", "--prompt", "What is 2+2?", "--max-new-tokens", "12", "--verbose",
                   env={"FORCE_COLOR": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[34m" in proc.stdout  # oracle text in blue
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary.startswith("[") and "oracle" in summary and "tok/s" in summary and "consults at [0, 5" in summary


def test_models_list_shows_catalogue():
    proc = run_cli("models", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert {"qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2-135m", "gemma3-270m"} <= set(rows)
    assert rows["qwen2.5-coder-0.5b"]["aliases"] == ["0.5B"]
    assert rows["smollm2-135m"]["cached"] is True  # the test session pulled it
