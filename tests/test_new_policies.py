"""The three new consult moments on real models: ``prefix`` (the oracle writes exactly the first
m tokens, then the base alone), ``repetition`` (a consult exactly where the last n tokens
repeat an earlier n-gram, and nowhere else it could have been), ``answer`` (a consult in the
token that opens ``\\boxed{``); their flags reach the CLI, bad values are one line, and a
calibration of ``prefix_tokens`` is the exact best and round-trips into a config.
"""
import json

import numpy as np
import pytest

from guided_inference.replay import (apply_calibration, calibration_record, choose_value, recorded,
                                          write_calibration)
from guided_inference.config import ConfigError, GenerationConfig, GuidedError
from guided_inference.engine import guided_generate
from guided_inference.prompts import chat_prompt
from guided_inference.transcript import check_invariants

from conftest import run_cli

LOOP = "Solve 3x + 5 = 20. Write each step on its own line as a numbered list, then put the final answer in \\boxed{}."
BOX = "What is 7 + 5? Put the final answer in \\boxed{}."


def test_prefix_oracle_writes_exactly_the_first_m_tokens(qwen_base, qwen_oracle):
    prompt = chat_prompt(qwen_base, "What is 17 * 23? Think step by step.")
    oracle_only = guided_generate(prompt, qwen_base, qwen_oracle, GenerationConfig(policy="always", c=4, k=5,
                                                                                  max_new_tokens=12))
    config = GenerationConfig(policy="prefix", prefix_tokens=12, c=5, k=5, max_new_tokens=30)
    trace = guided_generate(prompt, qwen_base, qwen_oracle, config)
    check_invariants(trace)
    assert trace.cheat_positions == [0, 5, 10]  # consults of k = 5, the last one capped at m
    oracle = [(s.start, s.n_tokens) for s in trace.interleaved_outputs if s.model_type == "oracle"]
    assert oracle == [(0, 5), (5, 5), (10, 2)]
    assert trace.oracle_tokens == 12 and trace.base_tokens == trace.total_tokens_generated - 12
    assert trace.token_ids[:12] == oracle_only.token_ids  # the plan is the oracle's own greedy text
    assert all(s.model_type == "base" for s in trace.interleaved_outputs if s.start >= 12)


def _repeats(ids, n) -> bool:
    last = tuple(ids[len(ids) - n:])
    return len(ids) > n and any(tuple(ids[s: s + n]) == last for s in range(len(ids) - n))


def test_repetition_consults_exactly_where_the_last_ngram_repeats(smol, smol2):
    config = GenerationConfig(policy="repetition", ngram=6, c=3, k=4, cooldown=5, step_size=8, max_new_tokens=160)
    trace = guided_generate(chat_prompt(smol, LOOP), smol, smol2, config)
    check_invariants(trace)
    assert trace.cheat_positions, "SmolLM2 loops on this prompt: the policy must fire"
    ids, oracle_at = trace.token_ids, {s.start + i for s in trace.interleaved_outputs if s.model_type == "oracle"
                                        for i in range(s.n_tokens)}
    consults, last_end = 0, None
    for pos in range(trace.total_tokens_generated):
        if pos in trace.cheat_positions:
            assert _repeats(ids[:pos], 6), f"consulted at {pos} where the last 6 tokens are new"
            consults += 1
            last_end = pos + next(s.n_tokens for s in trace.interleaved_outputs if s.start == pos)
        elif pos not in oracle_at:
            cooling = last_end is not None and pos - last_end < config.cooldown
            if consults < config.c and not cooling:
                assert not _repeats(ids[:pos], 6), f"should have consulted at {pos}"


def test_answer_consults_in_the_token_that_opens_boxed(smol, smol2):
    prompt = chat_prompt(smol, BOX)
    never = guided_generate(prompt, smol, smol2, GenerationConfig(policy="never", max_new_tokens=60))
    assert "\\boxed{" in never.result
    opened = next(i for i in range(1, len(never.token_ids) + 1)
                  if b"\\boxed{" in smol.detokenize(never.token_ids[:i]))
    trace = guided_generate(prompt, smol, smol2, GenerationConfig(policy="answer", c=2, k=6, max_new_tokens=60))
    check_invariants(trace)
    assert trace.cheat_positions == [opened]
    assert trace.token_ids[:opened] == never.token_ids[:opened]
    oracle = next(s for s in trace.interleaved_outputs if s.model_type == "oracle")
    assert oracle.start == opened and 0 < oracle.n_tokens <= 6


@pytest.mark.parametrize("kw,message", [
    (dict(policy="prefix", prefix_tokens=0), "prefix_tokens must be an integer >= 1, got 0"),
    (dict(policy="repetition", ngram=-3), "ngram must be an integer >= 1, got -3"),
    (dict(policy="answer", threshold=0.5), "threshold is not a parameter of answer"),
])
def test_bad_parameters_of_the_new_policies_are_one_line(kw, message):
    with pytest.raises(ConfigError) as err:
        GenerationConfig(**kw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_new_flags_reach_the_command_line():
    r = run_cli("generate", "--base_model", "smollm2-135m", "--oracle_model", "smollm2-135m", "--policy", "prefix",
                "--prefix_tokens", "3", "--c", "2", "--k", "2", "--max_new_tokens", "8", "--prompt", "Hi", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["cheat_positions"] == [0, 2] and out["oracle_tokens"] == 3
    assert out["config"]["prefix_tokens"] == 3 and out["config"]["ngram"] == 64
    rows = {row["policy"]: row for row in json.loads(run_cli("policies", "--json").stdout)}
    assert rows["prefix"]["params"] == {"prefix_tokens": 50}
    assert rows["repetition"]["params"] == {"ngram": 64, "cooldown": 10}
    assert rows["answer"]["params"] == {} and all(rows[p]["reference"] for p in ("prefix", "repetition", "answer"))


def test_prefix_calibration_is_the_exact_best_and_round_trips(smol, tmp_path):
    rng = np.random.default_rng(0)
    lengths = rng.integers(50, 900, 30)
    recs = [recorded(f"p/{i}", np.zeros(n, dtype=np.int64), [b"x"] * n,
                     {k: np.zeros(n) for k in ("entropy", "varentropy", "top_prob", "margin")})
            for i, n in enumerate(lengths)]
    config = GenerationConfig(policy="prefix", c=20, k=10, max_new_tokens=1024)
    m, share, _ = choose_value(config, recs, 0.10)
    shares = {v: np.minimum(v, lengths).sum() / lengths.sum() for v in range(1, 201)}  # c * k = 200 at most
    best = min(shares, key=lambda v: (abs(shares[v] - 0.10), shares[v]))
    assert (m, share) == (best, pytest.approx(shares[best]))
    path = tmp_path / "prefix.json"
    write_calibration(path, calibration_record(config, 0.10, m, share, [], base=smol, oracle=None,
                                               problem_ids=[r.unique_id for r in recs], source="synthetic"))
    given = apply_calibration(str(path), {"policy": "prefix"})
    assert given["prefix_tokens"] == m and "target_share 0.1" in given["threshold_source"]
    assert GenerationConfig(**given).prefix_tokens == m
    with pytest.raises(GuidedError, match="give either --prefix_tokens or --calibration"):
        apply_calibration(str(path), {"policy": "prefix", "prefix_tokens": 7})
