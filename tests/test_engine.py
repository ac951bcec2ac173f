"""The guided loop on real models: equality with plain generation, budgets, seeds, EOS."""
from __future__ import annotations

import numpy as np
import pytest

from guided_inference.config import GenerationConfig
from guided_inference.engine import guided_generate
from guided_inference.prompts import chat_prompt

PROMPT = "Explain in a few sentences why the sky is blue."


def plain_greedy(backend, prompt: str, n: int) -> list[int]:
    """The model's own greedy generation through llama-cpp-python's generate() and its
    own greedy sampler: an independent reference for the engine's token stream."""
    llm = backend.llm
    llm.reset()
    out = []
    for tok in llm.generate(backend.tokenize(prompt, add_bos=True), temp=0.0, reset=True):
        if backend._llama_cpp.llama_vocab_is_eog(backend._vocab, tok) or len(out) == n:
            break
        out.append(tok)
    llm.reset()
    backend._logits_at = -1
    return out


class Counting:
    """A real backend, wrapped to count generate() calls (the calls still run)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, *args, **kw):
        self.calls += 1
        return self.inner.generate(*args, **kw)


def check_invariants(trace, config: GenerationConfig, backend) -> None:
    segs = trace.interleaved_outputs
    assert "".join(s.output for s in segs) == trace.result
    assert sum(s.n_tokens for s in segs) == trace.total_tokens_generated
    assert trace.base_tokens + trace.oracle_tokens == trace.total_tokens_generated
    assert trace.total_tokens_generated <= config.max_new_tokens
    assert len(trace.cheat_positions) <= config.c
    oracle_segs = [s for s in segs if s.model_type == "oracle"]
    assert len(oracle_segs) == len(trace.cheat_positions)
    assert [s.start for s in oracle_segs] == trace.cheat_positions
    assert all(s.n_tokens <= config.k for s in oracle_segs)
    starts = np.cumsum([0] + [s.n_tokens for s in segs])[:-1].tolist()
    assert [s.start for s in segs] == starts
    assert len(trace.token_ids) == trace.total_tokens_generated
    assert backend.detokenize(trace.token_ids).decode("utf-8", "replace") == trace.result
    if trace.finish_reason == "length":
        assert trace.total_tokens_generated == config.max_new_tokens
    else:
        assert trace.finish_reason == "eos"


def test_never_equals_plain_base_greedy(smol, smol2):
    prompt = chat_prompt(smol, PROMPT)
    config = GenerationConfig(policy="never", c=5, k=10, max_new_tokens=60)
    trace = guided_generate(prompt, smol, smol2, config)
    assert trace.oracle_tokens == 0 and trace.cheat_positions == []
    assert trace.token_ids == plain_greedy(smol, prompt, 60)


def test_always_equals_plain_oracle_greedy(qwen_base, qwen_oracle):
    prompt = chat_prompt(qwen_base, "What is 7 times 8? Answer briefly.")
    config = GenerationConfig(policy="always", c=100, k=7, max_new_tokens=30)
    trace = guided_generate(prompt, qwen_base, qwen_oracle, config)
    assert trace.base_tokens == 0 and trace.handoff == "tokens"
    assert trace.token_ids == plain_greedy(qwen_oracle, prompt, 30)


@pytest.mark.parametrize("c,k,step,max_new", [(0, 5, 10, 40), (3, 1, 1, 40), (2, 50, 10, 30), (10, 3, 2, 64),
                                               (4, 10, 10, 35), (50, 2, 1, 25)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_budget_invariants(smol, smol2, c, k, step, max_new, seed):
    config = GenerationConfig(policy="random", c=c, k=k, step_size=step, max_new_tokens=max_new, seed=seed,
                              temperature=0.8, oracle_temperature=0.8)
    trace = guided_generate(chat_prompt(smol, PROMPT), smol, smol2, config)
    check_invariants(trace, config, smol)
    if c == 0:
        assert trace.cheat_positions == [] and trace.oracle_tokens == 0


def test_eos_inside_oracle_segment_stops_all_calls(smol, smol2):
    base, oracle = Counting(smol), Counting(smol2)
    config = GenerationConfig(policy="always", c=3, k=200, max_new_tokens=300)
    trace = guided_generate(chat_prompt(smol, "Reply with the single word: yes"), base, oracle, config)
    check_invariants(trace, config, smol)
    assert trace.finish_reason == "eos"
    last = trace.interleaved_outputs[-1]
    assert last.model_type == "oracle" and last.n_tokens < config.k
    # One call per consult, nothing after the EOS.
    assert oracle.calls == len(trace.cheat_positions) == 1 and base.calls == 0


def test_same_seed_same_trace_different_seed_different_consults(smol, smol2):
    prompt = chat_prompt(smol, PROMPT)
    make = lambda seed: GenerationConfig(policy="random", c=4, k=3, step_size=3, max_new_tokens=60, seed=seed)
    a, b = (guided_generate(prompt, smol, smol2, make(7)) for _ in range(2))
    assert a.token_ids == b.token_ids and a.cheat_positions == b.cheat_positions and a.result == b.result
    positions = {tuple(guided_generate(prompt, smol, smol2, make(s)).cheat_positions) for s in range(5)}
    assert len(positions) > 1


def test_sampling_with_seed_is_reproducible_and_seed_sensitive(smol, smol2):
    prompt = chat_prompt(smol, PROMPT)
    make = lambda seed: GenerationConfig(policy="never", max_new_tokens=30, temperature=1.0, seed=seed)
    assert guided_generate(prompt, smol, smol2, make(3)).token_ids == guided_generate(prompt, smol, smol2, make(3)).token_ids
    assert len({tuple(guided_generate(prompt, smol, smol2, make(s)).token_ids) for s in range(4)}) > 1


def test_stop_string_cuts_text_and_stops(smol, smol2):
    prompt = chat_prompt(smol, "Count from 1 to 20, separated by commas.")
    full = guided_generate(prompt, smol, smol2, GenerationConfig(policy="never", max_new_tokens=60))
    assert "5" in full.result
    stop = full.result[full.result.index("5"):][:2]
    trace = guided_generate(prompt, smol, smol2, GenerationConfig(policy="never", max_new_tokens=60, stop=(stop,)))
    assert trace.finish_reason == "stop"
    assert trace.result == full.result[: full.result.index(stop)]


def test_per_token_policy_consults_exactly_where_it_fires(smol, smol2):
    """The interface later uncertainty policies use: asked before every base token with
    that token's statistics; the consult starts at exactly that token."""
    from guided_inference.policies import Policy

    unsure = Policy("unsure", lambda point, rng: point.stats.top_prob < 0.6, per_token=True, needs_stats=True)
    config = GenerationConfig(policy="never", c=3, k=4, step_size=10, max_new_tokens=80)
    trace = guided_generate(chat_prompt(smol, PROMPT), smol, smol2, config, policy=unsure)
    check_invariants(trace, config, smol)
    assert len(trace.cheat_positions) == 3
    for pos, stats in zip(trace.cheat_positions, trace.consult_stats):
        assert stats["position"] == pos and stats["top_prob"] < 0.6
        assert 0 <= stats["entropy"] and stats["n_support"] == smol.n_vocab
    # Before the first consult, every base token was confident (the policy did not fire).
    first = trace.cheat_positions[0]
    plain = guided_generate(chat_prompt(smol, PROMPT), smol, smol2, GenerationConfig(policy="never", max_new_tokens=first))
    assert plain.token_ids == trace.token_ids[:first]
