"""Signal policies on real models: each fires exactly where its rule holds on the base's
real statistics (and nowhere else it could have), within budget and cooldown; the
extreme thresholds reduce to `never` and to "fire at once"; `verify` consults exactly
where an independent token-by-token pass of the oracle disagrees with the base.
"""
import math

import numpy as np
import pytest

from guided_inference.config import ConfigError, GenerationConfig
from guided_inference.engine import guided_generate
from guided_inference.steps import is_boundary
from guided_inference.policies import POLICIES
from guided_inference.prompts import chat_prompt
from guided_inference.transcript import check_invariants

PROMPT = "List three prime numbers and explain briefly why each is prime."
MATH = "What is 17 * 23? Think step by step."

RULES = {  # policy -> (threshold, rule(stats dict, base history so far) -> fires)
    "entropy": (1.0, lambda s, h: s["entropy"] > 1.0),
    "varentropy": (2.0, lambda s, h: s["varentropy"] > 2.0),
    "top_prob": (0.5, lambda s, h: s["top_prob"] < 0.5),
    "margin": (0.3, lambda s, h: s["margin"] < 0.3),
    "rolling_entropy": (0.8, lambda s, h: np.mean((h + [s["entropy"]])[-4:]) > 0.8),
}


def fresh(*backends):
    """Empty KV caches: llama.cpp's logits depend slightly on how a prefix was batched, so
    byte-identical comparisons start every run from the same (empty) cache."""
    for b in backends:
        b.keep(0)
        b._logits_at = -1


def _base_positions(trace):
    """(position, stats) for every base-written token, from --save_stats."""
    ts = trace.token_stats
    return [(i, {k: ts[k][i] for k in ts}) for i in range(trace.total_tokens_generated) if ts["entropy"][i] is not None]


@pytest.mark.parametrize("name", sorted(RULES))
def test_signal_policy_fires_exactly_where_its_rule_holds(name, smol, smol2):
    threshold, rule = RULES[name]
    config = GenerationConfig(policy=name, threshold=threshold, window=4, c=4, k=3, cooldown=5, step_size=8,
                              max_new_tokens=80, save_stats=True)
    trace = guided_generate(chat_prompt(smol, PROMPT), smol, smol2, config)
    check_invariants(trace)
    assert len(trace.cheat_positions) <= 4 and all(s.n_tokens <= 3 for s in trace.interleaved_outputs
                                                    if s.model_type == "oracle")
    # Each consult began where the rule held on the base's distribution at that token.
    history = []
    fired_stats = dict(zip(trace.cheat_positions, trace.consult_stats))
    consults, last_end = 0, None
    base = dict(_base_positions(trace))
    for pos in range(trace.total_tokens_generated):
        if pos in fired_stats:
            s = {k: fired_stats[pos][k] for k in ("entropy", "varentropy", "top_prob", "margin")}
            assert rule(s, history), f"{name} consulted at {pos} where its rule does not hold: {s}"
            consults += 1
            seg = next(x for x in trace.interleaved_outputs if x.start == pos and x.model_type == "oracle")
            last_end = pos + seg.n_tokens
        if pos in base:
            cooling = last_end is not None and pos - last_end < config.cooldown
            if consults < config.c and not cooling:
                assert not rule(base[pos], history), f"{name} should have fired at {pos}: {base[pos]}"
            history.append(base[pos]["entropy"])
    # Cooldown: consults start at least k + cooldown apart when the oracle wrote all k tokens.
    for a, b in zip(trace.cheat_positions, trace.cheat_positions[1:]):
        assert b - a >= config.k + config.cooldown


def test_entropy_threshold_no_distribution_reaches_equals_never(qwen_base, qwen_oracle):
    prompt = chat_prompt(qwen_base, MATH)
    # Qwen's vocabulary has 151,936 tokens: the entropy maximum is log2(151936) = 17.21 bits.
    assert math.log2(151936) < 17.22
    fresh(qwen_base, qwen_oracle)
    never = guided_generate(prompt, qwen_base, qwen_oracle, GenerationConfig(policy="never", max_new_tokens=48))
    fresh(qwen_base, qwen_oracle)
    high = guided_generate(prompt, qwen_base, qwen_oracle,
                           GenerationConfig(policy="entropy", threshold=17.22, max_new_tokens=48))
    assert high.result.encode() == never.result.encode() and high.token_ids == never.token_ids
    assert high.cheat_positions == []
    zero = guided_generate(prompt, qwen_base, qwen_oracle,
                           GenerationConfig(policy="entropy", threshold=0.0, c=2, k=4, max_new_tokens=48))
    check_invariants(zero)
    assert zero.cheat_positions[0] == 0 and zero.consult_stats[0]["position"] == 0


def test_boundary_fires_only_at_step_boundaries(smol, smol2):
    config = GenerationConfig(policy="boundary", threshold=1.0, c=6, k=2, cooldown=0, step_size=10,
                              max_new_tokens=120)
    trace = guided_generate(chat_prompt(smol, "Solve 2x + 3 = 11. Write each step on its own line."),
                            smol, smol2, config)
    check_invariants(trace)
    assert trace.cheat_positions, "threshold 1 consults at every boundary: the answer has several lines"
    text = trace.result.encode()
    for pos in trace.cheat_positions:  # a step began in the token just before the consult
        before = smol.detokenize(trace.token_ids[:pos - 1]).decode("utf-8", "ignore")
        last = smol.detokenize(trace.token_ids[:pos]).decode("utf-8", "ignore")[len(before):]
        assert is_boundary(before, last), f"consult at {pos} is not at a step boundary: {before[-20:] + last!r}"
    assert text


def test_verify_consults_where_the_oracle_disagrees(qwen_base, qwen_oracle):
    prompt = chat_prompt(qwen_base, MATH)
    config = GenerationConfig(policy="verify", c=3, k=4, step_size=8, max_new_tokens=64)
    trace = guided_generate(prompt, qwen_base, qwen_oracle, config)
    check_invariants(trace)
    assert trace.verify and len(trace.verify) == len(trace.cheat_positions)
    prompt_ids = qwen_base.tokenize(prompt, add_bos=True)
    llm = qwen_oracle.llm
    for record, pos in zip(trace.verify, trace.cheat_positions):
        assert record["position"] == pos
        # Independent: the oracle's greedy next token, evaluated token by token from scratch.
        llm.reset()
        llm.eval(prompt_ids + trace.token_ids[:pos])
        qwen_oracle._logits_at = -1
        greedy = int(np.argmax(np.ctypeslib.as_array(
            qwen_oracle._llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(qwen_oracle.n_vocab,))))
        assert greedy != record["base_token"], "verify cut where the oracle agreed with the base"
        assert trace.token_ids[pos] == greedy == record["oracle_token"]  # the oracle wrote its own token there
    assert trace.rejected_tokens == sum(r["rejected"] for r in trace.verify) > 0
    # Reads are counted once: at most prompt + every token + one re-evaluation per rollback/handoff.
    reads = trace.timings.oracle.prefill_tokens
    assert reads <= len(prompt_ids) + trace.total_tokens_generated + 2 * (len(trace.verify) + 1)


def test_verify_threshold_zero_never_fires_and_equals_never(qwen_base, qwen_oracle):
    prompt = chat_prompt(qwen_base, MATH)
    fresh(qwen_base, qwen_oracle)
    never = guided_generate(prompt, qwen_base, qwen_oracle, GenerationConfig(policy="never", max_new_tokens=40))
    fresh(qwen_base, qwen_oracle)
    v0 = guided_generate(prompt, qwen_base, qwen_oracle,
                         GenerationConfig(policy="verify", threshold=0.0, max_new_tokens=40))
    assert v0.result.encode() == never.result.encode() and v0.cheat_positions == [] and v0.rejected_tokens == 0


@pytest.mark.parametrize("kw,message", [
    (dict(policy="entropy", threshold=-1), "threshold must be a number >= 0 for entropy, got -1"),
    (dict(policy="top_prob", threshold=1.5), "threshold must be a number in [0, 1] for top_prob, got 1.5"),
    (dict(policy="entropix", quadrant="north"), "quadrant must be one of hehv, helv, lehv, lelv, got 'north'"),
    (dict(policy="random", threshold=0.5), "threshold is not a parameter of random (its parameters: p), got 0.5"),
    (dict(policy="entropy", consult="ask"), "consult must be one of takeover, verify, got 'ask'"),
    (dict(policy="learned"), "policy learned needs --router FILE"),
    (dict(policy="psychic"), "policy must be one of"),
    (dict(policy="entropy", cooldown=-2), "cooldown must be an integer >= 0, got -2"),
])
def test_bad_policy_parameters_are_one_line(kw, message):
    with pytest.raises(ConfigError) as err:
        GenerationConfig(**kw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_every_registered_policy_has_a_spec_that_builds():
    for name, spec in POLICIES.items():
        if name == "learned":
            continue  # needs a router file: tests/test_router.py
        policy = spec.build(GenerationConfig(policy=name))
        assert policy.name == name and spec.reads and spec.describe
