"""The cost record of every trace (``Trace.cost``): counted once, equal to what the models did.

- Counting stand-in (tests/counting_model.py) as base and oracle: for never, random, verify,
  entropy-gated verify and speculative, every count in the trace equals the stand-in's own
  (forward calls, tokens fed, batch shapes, requests, context lengths), the prompt is read
  once per model, and no token is fed twice at the same position after the same prefix.
- Real llama.cpp (SmolLM2): the reads are exactly the prompt plus the other model's text
  (catch-up) plus the checked tokens; nothing is re-evaluated.
- HTTP backends (the vLLM stand-in server): what they cannot count is None, never 0.
- Old results lines without the record still load.
"""
from __future__ import annotations

import json

import pytest

from counting_model import CountingStandIn
from guided_inference.config import GenerationConfig
from guided_inference.engine import guided_generate
from guided_inference.prompts import chat_prompt, prompt_ids
from guided_inference.trace import COST_KEYS, BASE, ORACLE, Trace
from guided_inference.transcript import check_invariants

PROMPT = "23456789"
CONFIGS = {
    "never": dict(policy="never"),
    "always": dict(policy="always", c=100, k=7),
    "random": dict(policy="random", p=0.4, c=4, k=5, temperature=0.9, oracle_temperature=0.9),
    "verify": dict(policy="verify", c=3, k=4, step_size=6),
    "verify-threshold": dict(policy="verify", threshold=0.3, c=5, k=3, step_size=6, oracle_temperature=0.8),
    "entropy-verify": dict(policy="entropy", consult="verify", threshold=2.0, cooldown=0, c=20, k=2, step_size=5),
    "speculative": dict(policy="speculative", step_size=4),
    "speculative-sampled": dict(policy="speculative", step_size=5, oracle_temperature=1.0, top_p=0.9),
}


def assert_counts_equal(trace, model: CountingStandIn, cost: dict, n_prompt: int) -> None:
    assert list(cost) == list(COST_KEYS)
    assert cost["calls"] == model.forward_calls
    assert cost["evaluated"] == model.fed == (cost["read_prompt"] + cost["read_catchup"] + cost["read_check"]
                                              + cost["decoded"])
    assert cost["batches"] == sorted([n, r, c] for (n, r), c in model.batches.items())
    assert sum(c for _, _, c in cost["batches"]) == cost["calls"]
    assert cost["requests"] == model.requests and cost["context_tokens"] == model.context_tokens
    assert cost["read_prompt"] == (n_prompt if model.requests else 0)  # the prompt is read once
    assert model.twice == 0, f"{model.name}: {model.twice} tokens fed twice"
    assert cost["seconds"] >= 0 and (cost["seconds"] > 0) == (model.requests > 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_cost_counts_equal_the_stand_ins_counts(name, seed):
    oracle = CountingStandIn("oracle", salt=2, eos_at=(9 + 70,))
    base = CountingStandIn("base", salt=1, like=oracle, noise=1.0)
    trace = guided_generate(PROMPT, base, oracle, GenerationConfig(max_new_tokens=80, seed=seed, **CONFIGS[name]))
    check_invariants(trace)
    n_prompt = len(PROMPT) + 1
    for role, model in ((BASE, base), (ORACLE, oracle)):
        assert_counts_equal(trace, model, trace.cost[role], n_prompt)
    b, o = trace.cost[BASE], trace.cost[ORACLE]
    assert b["kept"] == trace.base_tokens and o["kept"] == trace.oracle_tokens
    assert b["rejected"] == trace.rejected_tokens and o["rejected"] == 0
    last = trace.interleaved_outputs[-1].model_type if trace.interleaved_outputs else None
    final_eos = {BASE: 0, ORACLE: 0}
    if trace.finish_reason == "eos":
        # the EOS was written by the last writer, or by the oracle at a check that ended the text
        ended_by_check = trace.verify and trace.verify[-1]["position"] == trace.total_tokens_generated \
            and trace.verify[-1]["oracle_token"] == 1
        final_eos[ORACLE if ended_by_check else last] = 1
    assert b["written"] == b["kept"] + b["rejected"] + final_eos[BASE]
    assert o["written"] == o["kept"] + final_eos[ORACLE]
    if trace.checked_tokens is None:  # takeover: no check
        assert o["read_check"] == 0 and trace.unchecked_tokens is None
    else:
        assert o["read_check"] == trace.checked_tokens  # each checked token teacher-forced once
    if name.startswith("speculative"):
        assert o["decoded"] == 0 and trace.unchecked_tokens == 0  # the oracle only scores


def fresh(*backends) -> None:
    """Empty llama.cpp caches: the session's models hold the previous test's prompt, and a
    shared prefix is (rightly) not read again."""
    for b in backends:
        b.llm.reset()
        b._logits_at = -1


def test_a_trace_round_trips_and_an_old_line_without_cost_loads(smol, smol2):
    trace = guided_generate(chat_prompt(smol, "Say hi."), smol, smol2,
                            GenerationConfig(policy="verify", c=2, k=3, max_new_tokens=12, temperature=1.0))
    line = json.loads(json.dumps(trace.to_dict()))
    again = Trace.from_dict(line)
    assert again.cost == trace.cost and again.checked_tokens == trace.checked_tokens
    for key in ("cost", "checked_tokens", "unchecked_tokens"):
        del line[key]
    old = Trace.from_dict(line)
    assert old.cost is None and old.checked_tokens is None and old.unchecked_tokens is None


def test_llama_cpp_reads_each_token_once(smol, smol2):
    """Random takeovers on SmolLM2: each model reads its prompt once, then exactly the other
    model's tokens it continues after (catch-up), and decodes its own; nothing twice."""
    prompt = chat_prompt(smol, "Explain in a few sentences why the sky is blue.")
    n_prompt = len(prompt_ids(smol, prompt))
    fresh(smol, smol2)
    trace = guided_generate(prompt, smol, smol2, GenerationConfig(policy="random", p=0.5, c=4, k=5, step_size=6,
                                                                 max_new_tokens=60, seed=4))
    segs = trace.interleaved_outputs
    assert len({s.model_type for s in segs}) == 2
    for role in (BASE, ORACLE):
        cost = trace.cost[role]
        mine = [i for i, s in enumerate(segs) if s.model_type == role]
        # catch-up: the other model's tokens before this model's last segment
        other_before = sum(s.n_tokens for s in segs[: mine[-1]] if s.model_type != role) if mine else 0
        assert cost["read_prompt"] == n_prompt and cost["read_catchup"] == other_before
        assert cost["decoded"] == cost["written"] == cost["kept"] == sum(segs[i].n_tokens for i in mine)
        assert cost["evaluated"] == n_prompt + other_before + cost["decoded"]
        # llama.cpp batches: prompt and catch-ups in one call each (< n_batch), then one call per decoded token
        assert cost["calls"] == sum(c for _, _, c in cost["batches"]) and [1, 1, cost["decoded"]] in cost["batches"]
        assert all(r == 1 for _, r, _ in cost["batches"])  # logits only for the last position of each call


def test_llama_cpp_verify_checks_are_read_once(smol, smol2):
    """Verify on SmolLM2 (the base samples, the oracle checks greedily): the oracle reads the
    prompt, the checked tokens once each, and its own tokens from scoring passes; its
    check calls ask for one logits row per checked token and one more (the bonus row)."""
    prompt = chat_prompt(smol, "Explain in a few sentences why the sky is blue.")
    n_prompt = len(prompt_ids(smol, prompt))
    fresh(smol, smol2)
    trace = guided_generate(prompt, smol, smol2, GenerationConfig(policy="verify", c=4, k=1, step_size=8,
                                                                 max_new_tokens=60, temperature=1.0, seed=1))
    check_invariants(trace)
    o = trace.cost[ORACLE]
    assert trace.verify and o["read_prompt"] == n_prompt and o["read_check"] == trace.checked_tokens
    assert o["decoded"] == 0 and o["written"] == o["kept"] == trace.oracle_tokens  # k = 1: all from the passes
    # catch-up: only its own pass tokens, at the next check after each cut (none re-evaluated)
    assert len(trace.cheat_positions) - 1 <= o["read_catchup"] <= len(trace.cheat_positions)
    assert o["requests"] == o["calls"]  # one score call per check, each one forward call (< n_batch tokens)
    first, *rest = sorted(o["batches"], key=lambda b: -b[0])
    assert first[0] > n_prompt and all(rows in (n, n + 1) for n, rows, _ in rest if n < n_prompt)


def test_http_backends_report_unknown_counts_as_none():
    from guided_inference.backends import load_backend
    from vllm_standin import VLLMStandIn

    with VLLMStandIn(" Paris is big.") as base_srv, VLLMStandIn(" Paris is the capital of France.") as oracle_srv:
        base, oracle = load_backend(base_srv.url), load_backend(oracle_srv.url)
        trace = guided_generate("Q: What is the capital of France?\nA:", base, oracle,
                                GenerationConfig(policy="verify", c=1, k=6, step_size=12, max_new_tokens=16))
    for role in (BASE, ORACLE):
        cost = trace.cost[role]
        for key in ("calls", "read_prompt", "read_catchup", "read_check", "evaluated", "batches"):
            assert cost[key] is None, (role, key)
        assert cost["requests"] >= 1 and cost["context_tokens"] > 0 and cost["seconds"] > 0
        assert cost["kept"] == (trace.base_tokens if role == BASE else trace.oracle_tokens)
    assert trace.cost[BASE]["rejected"] == trace.rejected_tokens == 2
    assert trace.cost[BASE]["decoded"] == trace.cost[BASE]["written"]


@pytest.mark.parametrize("name", ["never", "always"])
def test_one_model_alone_is_one_api_request_of_the_prompt(name):
    """On an API, one model alone is one request: the prompt in once, the answer out. The cost
    record's context_tokens sums the engine's step requests (many here), so it is not the input.
    The stand-in is no catalogued model: the prompt is the tokens it read (no cache before)."""
    from guided_inference.reporting.costs import CostSettings, row_cost

    oracle = CountingStandIn("oracle", salt=2, eos_at=(9 + 70,))
    base = CountingStandIn("base", salt=1, like=oracle, noise=1.0)
    trace = guided_generate(PROMPT, base, oracle, GenerationConfig(max_new_tokens=80, **CONFIGS[name]))
    role = BASE if name == "never" else ORACLE
    cost = trace.cost[role]
    assert cost["requests"] > 1 and cost["context_tokens"] > cost["read_prompt"] == len(PROMPT) + 1
    row = {"policy": name, "config": {"policy": name}, "cost": trace.cost,
           "base_model_id": "stand-in-base", "oracle_model_id": "stand-in-oracle"}
    price = {"base": 1e9, "oracle": 3e9}[role] / 1e9  # input price per million = parameters in billions
    settings = CostSettings("api", params={"base": 1e9, "oracle": 3e9})
    assert row_cost(row, settings) == pytest.approx((price * cost["read_prompt"] + 4 * price * cost["written"]) / 1e6)
