"""What backends that hold a KV cache and expose logits share: one cache ``sync``, the
per-token ``generate`` loop, and teacher-forced ``score``.

A backend of this kind (embedded llama.cpp, transformers) implements the small
``CachedModel`` protocol below; its ``generate`` and ``score`` are then one call to
``generate_from_logits`` / ``score_from_logits``, which follow the public contract in
``protocol.py``. Sampling happens here, not in the model library, so every such
backend samples identically and the seed alone fixes the draw.
"""
from __future__ import annotations

import time
from typing import Protocol, Sequence

import numpy as np

from ..config import SamplingConfig
from ..stats import log_softmax, stats_from_logits
from .protocol import BackendError, Chunk, Scores, StopBefore


class CachedModel(Protocol):
    """A model with one KV cache. ``evaluate`` appends tokens to the cache in batches."""

    name: str
    n_ctx: int | None

    def held(self) -> Sequence[int]:
        """The tokens the cache holds."""

    def logits_ready(self) -> bool:
        """True when ``logits()`` is the distribution after the last held token."""

    def keep(self, n: int) -> None:
        """Roll the cache back to its first ``n`` tokens (or fewer, if it cannot: callers
        re-read ``held()``)."""

    def evaluate(self, tokens: list[int], logits_from: int | None = None) -> np.ndarray | None:
        """Append ``tokens``; afterwards ``logits()`` is the distribution after the last one.
        With ``logits_from=j``, also return the logits after each of tokens[j:], as a
        float32 array [len(tokens) - j, vocab] (only those rows are computed)."""

    def logits(self) -> np.ndarray:
        """Next-token logits after the last held token (a float32 copy, [vocab])."""

    def is_eos(self, token: int) -> bool: ...


def common_prefix(held, context: Sequence[int]) -> int:
    """Length of the longest common prefix of the tokens a cache holds and a context."""
    limit = min(len(held), len(context))
    # Usually everything held is a prefix of the context (the engine only appends): check that first.
    if limit and held[limit - 1] == context[limit - 1] and np.array_equal(held[:limit], context[:limit]):
        return limit
    common = 0
    while common < limit and held[common] == context[common]:
        common += 1
    return common


def sync(model: CachedModel, context: list[int]) -> int:
    """Make the cache hold exactly ``context`` with its last logits ready, evaluating only
    the suffix it has not seen; return how many tokens were evaluated."""
    if not context:
        raise BackendError(f"backend {model.name!r}: empty context")
    if model.n_ctx is not None and len(context) > model.n_ctx:
        raise BackendError(f"backend {model.name!r}: context of {len(context)} tokens exceeds n_ctx {model.n_ctx}")
    held = model.held()
    common = common_prefix(held, context)
    if common == len(context) == len(held) and model.logits_ready():
        return 0
    common = min(common, len(context) - 1)  # the last position's logits are needed: re-evaluate >= 1 token
    model.keep(common)
    common = len(model.held())  # a sliding-window cache may not roll back: it then keeps nothing
    model.evaluate(list(context[common:]))
    return len(context) - common


def sample_token(logits: np.ndarray, sampling: SamplingConfig, rng: np.random.Generator) -> int:
    """Greedy argmax, or temperature + nucleus (top_p) sampling with ``rng``."""
    if sampling.greedy:
        return int(np.argmax(logits))
    x = logits.astype(np.float64) / sampling.temperature
    x -= x.max()
    p = np.exp(x)
    p /= p.sum()
    if sampling.top_p < 1.0:
        keep = nucleus(p, sampling.top_p)
        q = np.zeros_like(p)
        q[keep] = p[keep]
        p = q / q.sum()
    return int(rng.choice(p.size, p=p))


def nucleus(p: np.ndarray, top_p: float, first: int = 64) -> np.ndarray:
    """The smallest set of most probable tokens whose mass reaches ``top_p``, most probable
    first (ties in order of token id). Same set as sorting the whole vocabulary, but a
    peaked distribution's nucleus is found among the top ``first`` tokens: partition, then
    sort only those, widening 4x until their mass reaches ``top_p`` (a full argsort of 152k
    probabilities costs ~10 ms per token, more than the 0.5B's decode step)."""
    m = first
    while True:
        if m >= p.size:
            order = np.argsort(-p, kind="stable")
        else:
            top = np.argpartition(-p, m)[:m]
            order = top[np.lexsort((top, -p[top]))]
        cum = np.cumsum(p[order])
        n = int(np.searchsorted(cum, top_p)) + 1
        if n <= order.size or m >= p.size:
            return order[:n]
        m *= 4


def generate_from_logits(model: CachedModel, context: list[int], max_tokens: int, sampling: SamplingConfig,
                         rng: np.random.Generator, stop_before: StopBefore | None, position: int) -> Chunk:
    """The per-token loop (``generate`` contract in protocol.py)."""
    chunk = Chunk()
    t = time.perf_counter()
    chunk.prefill_tokens = sync(model, context)
    chunk.prefill_s = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(max_tokens):
        logits = model.logits()
        if stop_before is not None:
            stats = stats_from_logits(logits, position + i)  # only when someone reads it
            if stop_before(stats, chunk.tokens):
                chunk.stopped = True
                break
            chunk.stats.append(stats)
        token = sample_token(logits, sampling, rng)
        if model.is_eos(token):
            chunk.eos = True
            if chunk.stats:
                chunk.stats.pop()
            break
        chunk.tokens.append(token)
        model.evaluate([token])  # keep the cache one step ahead: the next logits are ready
    chunk.decode_tokens = len(chunk.tokens)
    chunk.decode_s = time.perf_counter() - t
    return chunk


def score_from_logits(model: CachedModel, context: list[int], tokens: list[int], *,
                      with_stats: bool = False) -> Scores:
    """Teacher-force ``tokens`` after ``context`` in one batch (``Scores`` in protocol.py).

    The cache keeps its common prefix with ``context[:-1]``; the rest of the context and
    the tokens are evaluated in one call, with logits requested only for the last
    context position and the tokens (never the whole context). Afterwards the cache
    holds context + tokens with the last logits ready, so a ``generate`` that continues
    from there costs nothing extra.
    """
    if not tokens:
        return Scores(np.zeros(0), np.zeros(0, dtype=np.int64), [] if with_stats else None)
    if not context:
        raise BackendError(f"backend {model.name!r}: score needs a non-empty context")
    full = list(context) + list(tokens)
    if model.n_ctx is not None and len(full) > model.n_ctx:
        raise BackendError(f"backend {model.name!r}: {len(full)} tokens exceed n_ctx {model.n_ctx}")
    t = time.perf_counter()
    model.keep(min(common_prefix(model.held(), full), len(context) - 1))
    common = len(model.held())
    # rows: the distribution after full[len(context) - 1 + i], i = 0..n (the last row: after every token)
    rows = model.evaluate(full[common:], logits_from=len(context) - 1 - common)
    n = len(tokens)
    top1 = rows[:n].argmax(axis=1).astype(np.int64)
    logprobs = np.empty(n)
    stats = [] if with_stats else None
    for i in range(n):
        lp = log_softmax(rows[i])
        logprobs[i] = lp[tokens[i]]
        if with_stats:
            stats.append(stats_from_logits(rows[i], i))
    return Scores(logprobs, top1, stats, prefill_tokens=len(full) - common, prefill_s=time.perf_counter() - t)
