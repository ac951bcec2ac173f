"""``guided bench rates`` on SmolLM2 (real model, a couple of batch sizes), and the cpu cost model
reading the file it writes."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli
from guided_inference.reporting.costs import CostSettings, run_cost
from guided_inference.evaluation.rates import FORMAT, load_rates, measure_model
from guided_inference.models import CATALOGUE

SMOL = CATALOGUE["smollm2-135m"]


class Clock:
    """A clock that advances by one second per reading: each measured interval is exactly 1 s,
    so the figures show what was divided by what (seconds per token = 1 / tokens in the call)."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def test_measure_model_times_each_size_and_leaves_the_cache_empty(smol):
    entry = measure_model(smol, sizes=(1, 4), context=16, repeats=2, decode_tokens=3, clock=Clock())
    assert entry["model_id"] == SMOL.model_id and entry["sha256"] == SMOL.sha256
    # each interval spans two clock readings (1 s): s/token = 1 / batch size; decode: 1 s for 3 tokens
    assert entry["read_s_per_token"] == [{"batch": 1, "last": 1.0, "all": 1.0}, {"batch": 4, "last": 0.25, "all": 0.25}]
    assert entry["decode_s_per_token"] == pytest.approx(1 / 3)
    assert len(smol.held()) == 0  # the next user of the model starts from an empty cache


def test_bench_rates_cli_writes_a_file_the_cpu_model_reads(tmp_path):
    out = tmp_path / "rates.json"
    proc = run_cli("bench", "rates", "--base_model", "smollm2", "--oracle_model", "smollm2", "--sizes", "1,8",
                   "--context", "16", "--repeats", "1", "--decode_tokens", "4", "--output_file", str(out),
                   env={"GUIDED_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["format"] == FORMAT and data["settings"]["sizes"] == [1, 8]
    assert {"platform", "processor", "cpu_count", "threads", "llama_cpp", "loadavg_before"} <= set(data["machine"])
    [model] = data["models"]  # the same model as base and oracle: measured once
    assert (model["role"], model["sha256"], model["file_bytes"]) == ("base", SMOL.sha256, SMOL.size)
    assert all(e["last"] > 0 and e["all"] > 0 for e in model["read_s_per_token"]) and model["decode_s_per_token"] > 0
    rates = load_rates(out)
    # a problem that read an 8-token prompt (one call) and decoded 2 tokens, on both sides
    side = {"read_prompt": 8, "read_catchup": 0, "read_check": 0, "written": 2, "decoded": 2, "batches": [[8, 1, 1]]}
    row = {"unique_id": "a", "correct": True, "error": None, "policy": "random", "base_model_id": SMOL.model_id,
           "oracle_model_id": SMOL.model_id, "base_sha256": SMOL.sha256, "oracle_sha256": SMOL.sha256,
           "cost": {"base": side, "oracle": side}}
    eight = next(e for e in model["read_s_per_token"] if e["batch"] == 8)
    expected = 2 * (8 * eight["last"] + 2 * model["decode_s_per_token"])
    assert run_cost([row], CostSettings("cpu", rates=rates)).value == pytest.approx(expected)


def test_bench_rates_refuses_bad_sizes():
    proc = run_cli("bench", "rates", "--sizes", "0,8")
    assert proc.returncode == 2
    assert proc.stderr == "error: sizes must be a comma list of batch sizes from 1 to 4096, got '0,8'\n"
