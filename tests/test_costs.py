"""Cost models (reporting/costs.py, cost_report.py) against tables computed by hand.

The rows below are results records written out by hand with known counts (what the engine's
cost record would hold), not stand-ins for a model: every expected figure is the arithmetic in
the comment beside it, not a call into the module under test.
"""
from __future__ import annotations

import json
import re

import pytest

from conftest import run_cli
from guided_inference.config import ConfigError
from guided_inference.reporting.cost_report import cost_lines, format_cost_report, pick_oracle
from guided_inference.reporting.costs import NA, CostSettings, counts, forward_passes, params_for, run_cost
from guided_inference.evaluation.rates import rates_from_dict

BASE_ID, ORACLE_ID = "toy-base.gguf", "toy-oracle.gguf"  # not in the parameter table: --params gives them
PARAMS = {"base": 1e9, "oracle": 3e9}


def record(read_prompt=0, read_catchup=0, read_check=0, written=0, decoded=0, context=0, batches=()):
    return {"calls": None, "requests": None, "read_prompt": read_prompt, "read_catchup": read_catchup,
            "read_check": read_check, "decoded": decoded, "evaluated": read_prompt + read_catchup + read_check + decoded,
            "written": written, "kept": written, "rejected": 0, "context_tokens": context,
            "batches": [list(b) for b in batches], "seconds": None}


def row(uid, policy, base, oracle, *, total, oracle_tokens, correct=True, consult=None):
    return {"unique_id": uid, "correct": correct, "error": None, "policy": policy, "c": 0 if policy == "never" else 5,
            "k": 10, "config": {"policy": policy, "consult": consult}, "base_model_id": BASE_ID,
            "oracle_model_id": ORACLE_ID, "base_sha256": "b" * 64, "oracle_sha256": "o" * 64,
            "total_tokens_generated": total, "oracle_tokens": oracle_tokens, "base_tokens": total - oracle_tokens,
            "finish_reason": "eos", "cheat_positions": [], "cost": {"base": base, "oracle": oracle}}


# Oracle only: o1 reads a 64-token prompt (decode steps not in its batches), o2 a 256-token prompt
# (its 40 decode steps listed as 1-token batches). Guided (random): the base reads the prompt (64) and
# one 8-token catch-up, writes 30; the oracle reads 40 + 24 in one 64-token batch and writes 10.
ORACLE_ONLY = [row("p1", "always", record(), record(64, 0, 0, 20, 20, 64, [(64, 1, 1)]), total=20, oracle_tokens=20),
               row("p2", "always", record(), record(256, 0, 0, 40, 40, 256, [(256, 1, 1), (1, 1, 40)]),
                   total=40, oracle_tokens=40)]
GUIDED = [row(p, "random", record(64, 8, 0, 30, 30, 300, [(64, 1, 1), (8, 1, 1)]),
              record(40, 24, 0, 10, 10, 100, [(64, 1, 1)]), total=40, oracle_tokens=10) for p in ("p1", "p2")]
BASE_ONLY = [row(p, "never", record(64, 0, 0, 50, 50, 64, [(64, 1, 1)]), record(), total=50, oracle_tokens=0,
                 correct=False) for p in ("p1", "p2")]
# verify: the oracle checks 10 base tokens in one 64-token pass with 11 logit rows
VERIFY = [row(p, "verify", record(64, 0, 0, 40, 40, 64, [(64, 1, 1)]), record(54, 0, 10, 1, 0, 64, [(64, 11, 1)]),
              total=41, oracle_tokens=1) for p in ("p1", "p2")]

RATES = rates_from_dict({"format": "guided-rates/1", "models": [
    {"role": "base", "model_id": BASE_ID, "sha256": "b" * 64, "decode_s_per_token": 0.01,
     "read_s_per_token": [{"batch": 1, "last": 0.01, "all": 0.01}, {"batch": 64, "last": 0.002, "all": 0.004},
                          {"batch": 256, "last": 0.001, "all": 0.002}]},
    {"role": "oracle", "model_id": ORACLE_ID, "sha256": "o" * 64, "decode_s_per_token": 0.03,
     "read_s_per_token": [{"batch": 1, "last": 0.03, "all": 0.03}, {"batch": 64, "last": 0.006, "all": 0.012},
                          {"batch": 256, "last": 0.003, "all": 0.006}]}]})


def settings(model: str) -> CostSettings:
    return CostSettings(model, params=PARAMS, rates=RATES, rates_file="toy-rates.json", gpu_bandwidth=1e12, gpu_batch=256)


# Per problem, summed over the two problems (oracle only, guided, verify), by hand:
ORACLE_TOTAL = {
    "compute": 3e9 * (64 + 20) + 3e9 * (256 + 40),  # parameters x (read + written)
    "cpu": (64 * 0.006 + 20 * 0.03) + (256 * 0.003 + 40 * 0.03),  # read at the batch's rate, decode at 0.03
    "gpu": (1 + 20) * 6e9 / 1e12 + (1 + 40) * 6e9 / 1e12,  # calls x 2 bytes/parameter / bandwidth
    "api": ((3 * 64 + 12 * 20) + (3 * 256 + 12 * 40)) / 1e6,  # one request: prompt in at 3, answer out at 12
}
GUIDED_TOTAL = {
    "compute": 2 * (1e9 * (72 + 30) + 3e9 * (64 + 10)),
    # the 8-token batch: halfway (in log2) from 1 (0.01) to 64 (0.002) = 0.006 s/token
    "cpu": 2 * ((64 * 0.002 + 8 * 0.006 + 30 * 0.01) + (64 * 0.006 + 10 * 0.03)),
    "gpu": 2 * ((1 + 1 + 30) * 2e9 / 1e12 + (1 + 10) * 6e9 / 1e12),
    # input 72 (prompt + catch-up) at 1, cached 300 - 72 at 0.1, output 30 at 4; oracle 64 / 36 / 10 at 3 / 0.3 / 12
    "api": 2 * ((72 + 0.1 * 228 + 4 * 30) + (3 * 64 + 0.3 * 36 + 12 * 10)) / 1e6,
}
VERIFY_TOTAL = {
    "compute": 2 * (1e9 * (64 + 40) + 3e9 * (64 + 1)),
    # the check pass: 64 tokens, 11 of them with logits: 0.006 + (0.012 - 0.006) * 10 / 63 per token
    "cpu": 2 * ((64 * 0.002 + 40 * 0.01) + 64 * (0.006 + 0.006 * 10 / 63)),
    "gpu": 2 * ((1 + 40) * 2e9 / 1e12 + 1 * 6e9 / 1e12),
    "api": NA,
}


@pytest.mark.parametrize("model", ["compute", "cpu", "gpu", "api"])
def test_each_cost_model_against_the_hand_computed_table(model):
    s = settings(model)
    oracle = run_cost(ORACLE_ONLY, s)
    assert oracle.value == pytest.approx(ORACLE_TOTAL[model] / 2) and not oracle.derived
    assert run_cost(GUIDED, s).value == pytest.approx(GUIDED_TOTAL[model] / 2)
    lines = {line.label: line for line in cost_lines([("oracle", ORACLE_ONLY), ("guided", GUIDED), ("verify", VERIFY)],
                                                      s, ("oracle", ORACLE_ONLY))}
    assert lines["oracle"].ratio == 1.0  # the oracle-only run is the unit
    assert lines["guided"].ratio == pytest.approx(GUIDED_TOTAL[model] / ORACLE_TOTAL[model])
    if model == "api":
        assert lines["verify"].ratio == NA and lines["verify"].cost.value == NA
    else:
        assert lines["verify"].ratio == pytest.approx(VERIFY_TOTAL[model] / ORACLE_TOTAL[model])


def test_tokens_is_the_written_oracle_share():
    s = settings("tokens")
    lines = cost_lines([("guided", GUIDED), ("base", BASE_ONLY), ("oracle", ORACLE_ONLY)], s, ("oracle", ORACLE_ONLY))
    assert [line.ratio for line in lines] == [pytest.approx(20 / 80), 0.0, 1.0]


def test_the_printed_table_names_the_model_and_normalizes_the_oracle_to_one():
    text = format_cost_report([("base", BASE_ONLY), ("guided", GUIDED), ("oracle", ORACLE_ONLY)], settings("compute"),
                              pick_oracle([("oracle", ORACLE_ONLY)]))
    head, ref = text.splitlines()[:2]
    assert head.startswith("cost model compute: parameters x (tokens read + tokens written)")
    assert "base toy-base.gguf 1e9" in head and "oracle toy-oracle.gguf 3e9" in head
    assert ref == "normalized to the oracle-only run oracle on the same problems (= 1.00)"
    cells = {label: cells_of(text, label) for label in ("base", "guided", "oracle")}
    assert cells["oracle"][5] == "1.00" and cells["base"][3] == "0.0%" and cells["guided"][3] == "100.0%"
    # base only: 2 x 1e9 x (64 + 50) against 1.14e12
    assert cells["base"][5] == f"{2 * 1e9 * 114 / ORACLE_TOTAL['compute']:.2f}"
    assert cells["guided"][5] == f"{GUIDED_TOTAL['compute'] / ORACLE_TOTAL['compute']:.2f}"


@pytest.mark.parametrize("policy,consult", [("verify", None), ("speculative", None), ("entropy", "verify")])
def test_api_cost_of_a_checking_policy_is_na(policy, consult):
    rows = [dict(r, policy=policy, config={"policy": policy, "consult": consult}) for r in GUIDED]
    assert run_cost(rows, settings("api")).value == NA
    assert run_cost(rows, settings("compute")).value == pytest.approx(GUIDED_TOTAL["compute"] / 2)  # only api is n/a


def test_costs_are_only_over_the_problems_shared_with_the_oracle_run():
    one = ORACLE_ONLY[:1]  # only p1 graded in the oracle run: the guided run is costed on p1 alone
    [line] = cost_lines([("guided", GUIDED)], settings("compute"), ("oracle", one))
    assert line.summary.n == 1 and line.ratio == pytest.approx((GUIDED_TOTAL["compute"] / 2) / (3e9 * 84))


def test_forward_passes_add_decode_steps_only_when_the_batches_hold_reads_only():
    assert forward_passes(counts(ORACLE_ONLY[0], "oracle")) == ((64, 1, 1), (1, 1, 20))
    assert forward_passes(counts(ORACLE_ONLY[1], "oracle")) == ((256, 1, 1), (1, 1, 40))


def test_rates_interpolate_in_log2_and_by_logit_rows():
    oracle = RATES.find("o" * 64, None)
    assert oracle.per_token(1, 1) == 0.03  # a 1-token call is a decode step
    assert oracle.per_token(128, 1) == pytest.approx(0.0045)  # halfway from 64 (0.006) to 256 (0.003)
    assert oracle.per_token(128, 128) == pytest.approx(0.009)
    assert oracle.per_token(1024, 1) == 0.003  # beyond the largest size: its rate
    assert RATES.find("x" * 64, ORACLE_ID) is None  # a hash that differs is another model


def test_published_parameter_counts():
    assert params_for("Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf") == 0.49e9
    assert params_for("Qwen2.5-Coder-1.5B-Instruct-Q4_K_M.gguf") == 1.54e9
    assert params_for("SmolLM2-135M-Instruct-Q4_1.gguf") == 0.135e9
    assert params_for("gemma-3-270m-Q4_K_M.gguf") == 0.27e9
    assert params_for("toy.gguf") is None


def test_unknown_counts_are_unknown_not_zero():
    rows = [dict(r, cost={"base": r["cost"]["base"], "oracle": dict(r["cost"]["oracle"], batches=None)}) for r in GUIDED]
    assert run_cost(rows, settings("gpu")).value is None
    assert run_cost(rows, settings("compute")).value == pytest.approx(GUIDED_TOTAL["compute"] / 2)
    no_params = CostSettings("compute")  # toy ids are not in the parameter table
    assert run_cost(GUIDED, no_params).value is None and "no parameter count" in run_cost(GUIDED, no_params).why


@pytest.mark.parametrize("kwargs,message", [
    ({"model": "watts"}, "cost must be one of tokens, compute, cpu, gpu, api, got 'watts'"),
    ({"model": "cpu"}, "cost cpu needs --rates FILE"),
    ({"model": "gpu", "gpu_batch": 0}, "gpu_batch must be an integer >= 1"),
])
def test_bad_settings_name_the_value(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        CostSettings(**kwargs)


# --- from the command line, on files -----------------------------------------------------------


def cells_of(text: str, label: str) -> list[str]:
    """The cells of the table row whose first cell is ``label``."""
    line = next(x for x in text.splitlines() if re.match(rf"\| {re.escape(label)} +\|", x))
    return [c.strip() for c in line.strip("|").split("|")]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_report_cost_from_the_command_line(tmp_path):
    files = [write(tmp_path / f"{name}.jsonl", rows) for name, rows in
             (("base", BASE_ONLY), ("guided", GUIDED), ("verify", VERIFY), ("oracle", ORACLE_ONLY))]
    proc = run_cli("report", "--cost", "gpu,api", "--params", "base=1e9,oracle=3e9", "--gpu_bandwidth", "1000", *files)
    assert proc.returncode == 0, proc.stderr
    gpu, api = proc.stdout.split("cost model ")[1:]
    assert gpu.startswith("gpu (a model, not a measurement)") and "1,000 GB/s" in gpu and "256 tokens" in gpu
    assert "normalized to the oracle-only run oracle" in gpu
    assert cells_of(gpu, "guided")[5] == f"{GUIDED_TOTAL['gpu'] / ORACLE_TOTAL['gpu']:.2f}"
    assert cells_of(api, "verify")[5:] == ["n/a", "n/a", "needs prompt log-probabilities"]
    assert cells_of(api, "oracle")[5] == "1.00"
    assert cells_of(api, "guided")[5] == f"{GUIDED_TOTAL['api'] / ORACLE_TOTAL['api']:.2f}"


def test_without_an_oracle_run_the_figures_are_not_normalized(tmp_path):
    proc = run_cli("report", "--cost", "compute", "--params", "base=1e9,oracle=3e9",
                   write(tmp_path / "guided.jsonl", GUIDED))
    assert proc.returncode == 0, proc.stderr
    assert "not normalized: no oracle-only run" in proc.stdout
    cells = cells_of(proc.stdout.split("cost model ")[1], "guided")
    assert cells[5:7] == ["-", f"{GUIDED_TOTAL['compute'] / 2:.4g}"]


def test_oracle_run_flag_normalizes_and_refuses_a_guided_run(tmp_path):
    guided, oracle = write(tmp_path / "guided.jsonl", GUIDED), write(tmp_path / "o.jsonl", ORACLE_ONLY)
    proc = run_cli("compare", guided, guided, "--cost", "compute", "--params", "base=1e9,oracle=3e9",
                   "--oracle_run", oracle)
    assert proc.returncode == 0, proc.stderr
    assert "normalized to the oracle-only run o on the same problems" in proc.stdout
    assert "compute: guided / guided cost: 1.00 on 2 shared problems" in proc.stdout
    bad = run_cli("report", "--cost", "compute", "--oracle_run", guided, guided)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == "error: oracle_run 'guided' is not an oracle-only run (policy always, graded rows)\n"


@pytest.mark.parametrize("args,message", [
    (["--cost", "watts"], "error: cost must be a comma list of tokens, compute, cpu, gpu, api or all; got 'watts'"),
    (["--cost", "cpu"], "error: cost cpu needs --rates FILE (made by guided bench rates)"),
    (["--cost", "api", "--price_in", "cheap"], "error: price_in must be a number or base=X,oracle=Y, got 'cheap'"),
    (["--cost", "cpu", "--rates", "missing.json"], "error: cannot read rates file missing.json"),
])
def test_bad_cost_flags_are_one_line(tmp_path, args, message):
    proc = run_cli("report", *args, write(tmp_path / "g.jsonl", GUIDED), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(message) and proc.stderr.count("\n") == 1
