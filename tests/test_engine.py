"""The guided loop on real models: equality with plain generation, budgets, seeds, EOS."""
from __future__ import annotations

import numpy as np
import pytest

from guided_inference.config import GenerationConfig
from guided_inference.engine import guided_generate
from guided_inference.prompts import chat_prompt
from guided_inference.transcript import check_invariants as transcript_invariants

PROMPT = "Explain in a few sentences why the sky is blue."


def generate(*args, **kw):
    """guided_generate, with the accounting invariants checked on every trace it returns."""
    trace = guided_generate(*args, **kw)
    transcript_invariants(trace)
    return trace


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
    transcript_invariants(trace)  # the accounting contract every trace must keep
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
    trace = generate(prompt, smol, smol2, config)
    assert trace.oracle_tokens == 0 and trace.cheat_positions == []
    assert trace.token_ids == plain_greedy(smol, prompt, 60)


def test_always_equals_plain_oracle_greedy(qwen_base, qwen_oracle):
    prompt = chat_prompt(qwen_base, "What is 7 times 8? Answer briefly.")
    config = GenerationConfig(policy="always", c=100, k=7, max_new_tokens=30)
    trace = generate(prompt, qwen_base, qwen_oracle, config)
    assert trace.base_tokens == 0 and trace.handoff == "tokens"
    assert trace.token_ids == plain_greedy(qwen_oracle, prompt, 30)


@pytest.mark.parametrize("c,k,step,max_new", [(0, 5, 10, 40), (3, 1, 1, 40), (2, 50, 10, 30), (10, 3, 2, 64),
                                               (4, 10, 10, 35), (50, 2, 1, 25)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_budget_invariants(smol, smol2, c, k, step, max_new, seed):
    config = GenerationConfig(policy="random", c=c, k=k, step_size=step, max_new_tokens=max_new, seed=seed,
                              temperature=0.8, oracle_temperature=0.8)
    trace = generate(chat_prompt(smol, PROMPT), smol, smol2, config)
    check_invariants(trace, config, smol)
    if c == 0:
        assert trace.cheat_positions == [] and trace.oracle_tokens == 0


def test_eos_inside_oracle_segment_stops_all_calls(smol, smol2):
    base, oracle = Counting(smol), Counting(smol2)
    config = GenerationConfig(policy="always", c=3, k=200, max_new_tokens=300)
    trace = generate(chat_prompt(smol, "Reply with the single word: yes"), base, oracle, config)
    check_invariants(trace, config, smol)
    assert trace.finish_reason == "eos"
    last = trace.interleaved_outputs[-1]
    assert last.model_type == "oracle" and last.n_tokens < config.k
    # One call per consult, nothing after the EOS.
    assert oracle.calls == len(trace.cheat_positions) == 1 and base.calls == 0


def test_same_seed_same_trace_different_seed_different_consults(smol, smol2):
    prompt = chat_prompt(smol, PROMPT)
    make = lambda seed: GenerationConfig(policy="random", c=4, k=3, step_size=3, max_new_tokens=60, seed=seed)
    a, b = (generate(prompt, smol, smol2, make(7)) for _ in range(2))
    assert a.token_ids == b.token_ids and a.cheat_positions == b.cheat_positions and a.result == b.result
    positions = {tuple(generate(prompt, smol, smol2, make(s)).cheat_positions) for s in range(5)}
    assert len(positions) > 1


def test_sampling_with_seed_is_reproducible_and_seed_sensitive(smol, smol2):
    prompt = chat_prompt(smol, PROMPT)
    make = lambda seed: GenerationConfig(policy="never", max_new_tokens=30, temperature=1.0, seed=seed)
    assert generate(prompt, smol, smol2, make(3)).token_ids == generate(prompt, smol, smol2, make(3)).token_ids
    assert len({tuple(generate(prompt, smol, smol2, make(s)).token_ids) for s in range(4)}) > 1


def test_stop_string_cuts_text_and_stops(smol, smol2):
    prompt = chat_prompt(smol, "Count from 1 to 20, separated by commas.")
    full = generate(prompt, smol, smol2, GenerationConfig(policy="never", max_new_tokens=60))
    assert "5" in full.result
    stop = full.result[full.result.index("5"):][:2]
    trace = generate(prompt, smol, smol2, GenerationConfig(policy="never", max_new_tokens=60, stop=(stop,)))
    assert trace.finish_reason == "stop"
    assert trace.result == full.result[: full.result.index(stop)]


def test_per_token_policy_consults_exactly_where_it_fires(smol, smol2):
    """The interface later uncertainty policies use: asked before every base token with
    that token's statistics; the consult starts at exactly that token."""
    from guided_inference.policies import Policy

    unsure = Policy("unsure", lambda point, rng: point.stats.top_prob < 0.6, per_token=True, needs_stats=True)
    config = GenerationConfig(policy="never", c=3, k=4, step_size=10, max_new_tokens=80)
    trace = generate(chat_prompt(smol, PROMPT), smol, smol2, config, policy=unsure)
    check_invariants(trace, config, smol)
    assert len(trace.cheat_positions) == 3
    for pos, stats in zip(trace.cheat_positions, trace.consult_stats):
        assert stats["position"] == pos and stats["top_prob"] < 0.6
        assert 0 <= stats["entropy"] and stats["n_support"] == smol.n_vocab
    # Before the first consult, every base token was confident (the policy did not fire).
    first = trace.cheat_positions[0]
    plain = generate(chat_prompt(smol, PROMPT), smol, smol2, GenerationConfig(policy="never", max_new_tokens=first))
    assert plain.token_ids == trace.token_ids[:first]


class HookLog:
    """A real backend, wrapped to record whether each generate() call got a stop_before hook."""

    def __init__(self, inner):
        self.inner, self.hooks = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, context, max_tokens, sampling, rng, stop_before=None, position=0):
        self.hooks.append(stop_before is not None)
        chunk = self.inner.generate(context, max_tokens, sampling, rng, stop_before, position)
        self.stats_seen = getattr(self, "stats_seen", 0) + len(chunk.stats)
        return chunk


def test_statistics_are_computed_only_when_read(smol, smol2):
    base = HookLog(smol)
    # random decides between steps: no per-token hook, no statistics.
    generate(chat_prompt(smol, PROMPT), base, smol2, GenerationConfig(policy="random", c=3, k=2, max_new_tokens=40))
    assert base.hooks and not any(base.hooks) and base.stats_seen == 0
    # A per-token policy stops being asked once the budget is spent.
    base = HookLog(smol)
    trace = generate(chat_prompt(smol, PROMPT), base, smol2,
                     GenerationConfig(policy="entropy", threshold=0.0, c=2, k=2, cooldown=0, step_size=5,
                                      max_new_tokens=40))
    assert len(trace.cheat_positions) == 2
    last_consult_call = 2  # the base calls that ended at each firing: one each
    assert base.hooks[:last_consult_call] == [True, True] and not any(base.hooks[last_consult_call:])
    # --save_stats keeps every base token's statistics, at its position, None where the oracle wrote.
    trace = generate(chat_prompt(smol, PROMPT), smol, smol2,
                     GenerationConfig(policy="random", c=3, k=2, max_new_tokens=40, save_stats=True))
    ent = trace.token_stats["entropy"]
    assert len(ent) == trace.total_tokens_generated
    oracle_pos = {s.start + i for s in trace.interleaved_outputs if s.model_type == "oracle" for i in range(s.n_tokens)}
    assert all((ent[i] is None) == (i in oracle_pos) for i in range(len(ent)))
    assert trace.n_support == smol.n_vocab


def test_small_context_finishes_with_context_and_no_error(smol, smol2):
    from guided_inference.backends.llama_cpp import LlamaCppBackend
    from guided_inference.models import resolve

    path, model_id, sha = resolve("smollm2-135m")
    tiny = LlamaCppBackend(path, name="smol-tiny", model_id=model_id, sha256=sha, n_ctx=64)
    prompt = chat_prompt(tiny, PROMPT)
    n_prompt = len(tiny.tokenize(prompt, add_bos=True))
    trace = generate(prompt, tiny, tiny, GenerationConfig(policy="never", max_new_tokens=200))
    assert trace.finish_reason == "context" and trace.total_tokens_generated == 64 - n_prompt
    # A prompt that does not fit at all: no tokens, no error.
    long = generate(chat_prompt(tiny, PROMPT * 10), tiny, tiny, GenerationConfig(policy="never", max_new_tokens=20))
    assert long.finish_reason == "context" and long.total_tokens_generated == 0 and long.result == ""
