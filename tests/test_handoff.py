"""Handoff between models: incremental KV-cache catch-up (tokens) and re-tokenized text."""
from __future__ import annotations

import numpy as np

from guided_inference.backends.llama_cpp import LlamaCppBackend
from guided_inference.config import GenerationConfig
from guided_inference.engine import guided_generate
from guided_inference.prompts import chat_prompt


def test_incremental_catch_up_on_qwen_pair(qwen_base, qwen_oracle):
    prompt = chat_prompt(qwen_base, "Solve 3x + 5 = 20 and explain each step.")
    config = GenerationConfig(policy="random", c=3, k=5, step_size=5, max_new_tokens=40, seed=3, p=0.6)
    for b in (qwen_base, qwen_oracle):  # empty caches: other tests share these session fixtures
        b.llm.reset()
        b._logits_at = -1
    trace = guided_generate(prompt, qwen_base, qwen_oracle, config)
    assert trace.handoff == "tokens" and trace.cheat_positions, "the seed should give at least one consult"
    n_prompt = len(qwen_base.tokenize(prompt, add_bos=True))
    full = qwen_base.tokenize(prompt, add_bos=True) + trace.token_ids

    for backend, timing in ((qwen_base, trace.timings.base), (qwen_oracle, trace.timings.oracle)):
        held = backend.cached_tokens
        # Its cache is a prefix of the shared sequence: nothing stale, nothing from elsewhere.
        assert held == full[: len(held)]
        # Every token it holds was read exactly once: prompt + catch-ups (prefill) + its own (decode).
        assert timing.prefill_tokens + timing.decode_tokens == len(held)
        # Catching up now evaluates only what it has not seen.
        assert backend.sync(full) == len(full) - len(held)
        assert backend.cached_tokens == full

    # After catch-up, the next-token distribution matches a fresh evaluation of the same sequence,
    # up to batch-vs-single numerics (MODELS.md: up to ~0.7 in logits, same argmax).
    fresh = LlamaCppBackend(qwen_oracle.llm.model_path, n_ctx=2048, name="fresh")
    fresh.sync(full)
    a, b = qwen_oracle.logits(), fresh.logits()
    assert int(a.argmax()) == int(b.argmax())
    assert float(np.abs(a - b).max()) < 1.5
    assert n_prompt < len(full)


def test_catch_up_evaluates_only_new_tokens(smol):
    ids = smol.tokenize("The quick brown fox jumps over the lazy dog.", add_bos=True)
    smol.llm.reset()  # an empty cache (the session fixture is shared): the contract then says all of it
    smol._logits_at = -1
    assert smol.sync(ids) == len(ids)
    assert smol.sync(ids) == 0  # held, and its last logits are ready
    assert smol.sync(ids[:-3]) == 1  # a prefix of what it holds: only the last position, for its logits
    assert smol.cached_tokens == ids[:-3]
    assert smol.sync(ids) == 3
    extra = smol.tokenize(" And then it ran away.")
    assert smol.sync(ids + extra) == len(extra)
    assert smol.sync(ids + extra) == 0  # nothing new: nothing evaluated
    # Diverging context: roll back to the common prefix and evaluate only the rest.
    other = smol.tokenize(" Then it slept.")
    assert smol.sync(ids + other) == len(other)
    assert smol.cached_tokens == ids + other


def test_text_handoff_keeps_whitespace_exactly(smol, gemma):
    prompt = chat_prompt(smol, "Write a short poem about the sea, with line breaks.")
    config = GenerationConfig(policy="random", c=4, k=6, step_size=6, max_new_tokens=60, seed=1, p=0.7)
    trace = guided_generate(prompt, smol, gemma, config)
    assert trace.handoff == "text" and trace.token_ids is None
    assert trace.cheat_positions and trace.base_tokens > 0
    assert "".join(s.output for s in trace.interleaved_outputs) == trace.result
    # What each model read back equals the shared text exactly (no stripping, no glued words).
    for backend in (smol, gemma):
        ids = backend.cached_tokens
        n_prompt = len(backend.tokenize(prompt, add_bos=True))
        seen = backend.detokenize(ids[n_prompt:]).decode("utf-8", "replace")
        assert trace.result.startswith(seen)
        assert len(seen) > 0
