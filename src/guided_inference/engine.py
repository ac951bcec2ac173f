"""The guided loop: a base model writes, and at chosen moments an oracle takes over.

    trace = guided_generate(prompt_text, base, oracle, GenerationConfig(c=5, k=10))

The loop, top to bottom:
  1. Tokenize the prompt. If both models share a tokenizer (and speak token
     ids) they share one token sequence ("tokens" handoff); otherwise each keeps
     its own and new text is re-tokenized for the other ("text" handoff).
  2. At each decision point, while consults remain, ask the policy. Yes: the
     oracle writes up to k tokens (one consult). No: the base writes up to
     step_size tokens; a per-token policy can cut that step short, and the
     consult then starts at exactly that token.
  3. Each model's backend evaluates only the tokens it has not seen (its own
     KV cache), so a handoff costs a catch-up of the other model's new tokens.
  4. Stop at EOS from either model, at a stop string, or at max_new_tokens;
     no model is called after that.
"""
from __future__ import annotations

import time

import numpy as np

from .backends.protocol import Backend, BackendError, Chunk
from .config import GenerationConfig
from .policies import DecisionPoint, Policy, make_policy
from .trace import BASE, ORACLE, Timings, Trace, split_segments


class _Reader:
    """One model's view of the shared text: its own token ids (text handoff), or the
    shared list (token handoff), plus the bytes it has not yet read."""

    def __init__(self, backend: Backend, prompt: str, shared: list[int] | None):
        self.backend = backend
        self.prompt = prompt
        self.ids = shared if shared is not None else (backend.tokenize(prompt, add_bos=True) if backend.token_ids else [])
        self.unread = bytearray()
        self.own_text = bytearray()  # for text-only backends: everything generated so far

    def context(self):
        if not self.backend.token_ids:
            return self.prompt + self.own_text.decode("utf-8", errors="replace")
        if self.unread:
            # Text handoff: the other model's new text, re-tokenized for this one,
            # whitespace untouched. Never strip: that glued words in the prototype.
            self.ids.extend(self.backend.tokenize(self.unread.decode("utf-8", errors="replace"), special=False))
            self.unread.clear()
        return self.ids


def choose_handoff(base: Backend, oracle: Backend) -> str:
    same = base.token_ids and oracle.token_ids and base.tokenizer_key == oracle.tokenizer_key
    return "tokens" if same else "text"


def guided_generate(
    prompt: str,
    base: Backend,
    oracle: Backend,
    config: GenerationConfig,
    policy: Policy | None = None,
) -> Trace:
    """Run one guided generation of ``prompt`` (already in the models' chat format)."""
    policy = policy or make_policy(config)
    if policy.needs_stats and not base.has_stats:
        raise BackendError(f"policy {policy.name!r} needs per-token statistics, which backend {base.name!r} does not provide")
    policy_rng, base_rng, oracle_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(3))
    t0 = time.perf_counter()

    # 1. Prompt and handoff mode.
    handoff = choose_handoff(base, oracle)
    shared = base.tokenize(prompt, add_bos=True) if handoff == "tokens" else None
    readers = {BASE: _Reader(base, prompt, shared), ORACLE: _Reader(oracle, prompt, shared)}
    n_prompt = len(shared) if shared is not None else 0

    timings = Timings()
    pieces: list[tuple[str, bytes, int]] = []
    cheat_positions: list[int] = []
    consult_stats: list[dict | None] = []
    generated = consults = 0
    finish = "length"
    fired = None  # stats of the base token where a per-token policy fired

    def point(stats=None) -> DecisionPoint:
        position = stats.position if stats is not None else generated
        return DecisionPoint(position, consults, config.c - consults, config.max_new_tokens, stats)

    def stop_before(stats):
        nonlocal fired
        if consults < config.c and policy.decide(point(stats), policy_rng):
            fired = stats
            return True
        return False

    while generated < config.max_new_tokens:
        remaining = config.max_new_tokens - generated
        # 2. Decide who writes next.
        consult = consults < config.c and (fired is not None or (not policy.per_token and policy.decide(point(), policy_rng)))
        source = ORACLE if consult else BASE
        reader = readers[source]
        if consult:
            consults += 1
            cheat_positions.append(generated)
            consult_stats.append(fired.to_dict() if fired is not None else None)
            fired = None
            chunk = reader.backend.generate(reader.context(), min(config.k, remaining), config.oracle_sampling,
                                            oracle_rng, position=generated)
        else:
            chunk = reader.backend.generate(reader.context(), min(config.step_size, remaining), config.base_sampling,
                                            base_rng, stop_before if policy.per_token else None, position=generated)
        # 3. Record the piece and make it visible to the other model.
        (timings.oracle if consult else timings.base).add(chunk)
        data = _chunk_bytes(reader.backend, chunk)
        n_new = len(chunk.tokens) if reader.backend.token_ids else chunk.decode_tokens
        pieces.append((source, data, n_new))
        generated += n_new
        if handoff == "tokens":
            shared.extend(chunk.tokens)
        else:
            _advance(readers, source, chunk, data)
        # 4. Stop conditions.
        if chunk.eos:
            finish = "eos"
            break
        if config.stop and _cut_at_stop(pieces, config.stop):
            finish = "stop"
            break
        if n_new == 0 and not chunk.stopped and not consult:
            raise BackendError(f"backend {reader.backend.name!r} returned no tokens and no EOS")

    timings.generation_s = time.perf_counter() - t0
    segments = split_segments(pieces)
    base_tokens = sum(s.n_tokens for s in segments if s.model_type == BASE)
    return Trace(
        result="".join(s.output for s in segments),
        interleaved_outputs=segments,
        cheat_positions=cheat_positions,
        total_tokens_generated=generated,
        base_tokens=base_tokens,
        oracle_tokens=generated - base_tokens,
        handoff=handoff,
        finish_reason=finish,
        timings=timings,
        token_ids=list(shared[n_prompt:]) if shared is not None else None,
        consult_stats=consult_stats,
    )


def _chunk_bytes(backend: Backend, chunk: Chunk) -> bytes:
    if chunk.text is not None:
        return chunk.text.encode("utf-8")
    return backend.detokenize(chunk.tokens) if chunk.tokens else b""


def _advance(readers: dict, source: str, chunk: Chunk, data: bytes) -> None:
    """Text handoff bookkeeping: the writer extends its own ids, the other model
    gets the new bytes to read before it next writes."""
    writer = readers[source]
    if writer.backend.token_ids:
        writer.ids.extend(chunk.tokens)
    else:
        writer.own_text += data
    for name, other in readers.items():
        if name != source:
            if other.backend.token_ids:
                other.unread += data
            else:
                other.own_text += data


def _cut_at_stop(pieces: list, stops: tuple[str, ...]) -> bool:
    """Cut the generated bytes just before the earliest stop string; True if one was found."""
    full = b"".join(p[1] for p in pieces)
    hits = [i for i in (full.find(s.encode("utf-8")) for s in stops) if i >= 0]
    if not hits:
        return False
    cut = min(hits)
    offset = 0
    for j, (source, data, n) in enumerate(pieces):
        if offset + len(data) >= cut:
            pieces[j] = (source, data[: cut - offset], n)
            del pieces[j + 1:]
            break
        offset += len(data)
    return True
