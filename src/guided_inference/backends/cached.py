"""What backends that hold a KV cache and expose logits share: one cache ``sync``, the
per-token ``generate`` loop, and teacher-forced ``score``.

A backend of this kind (embedded llama.cpp, transformers) implements the small
``CachedModel`` protocol below; its ``generate`` and ``score`` are then one call to
``generate_from_logits`` / ``score_from_logits``, which follow the public contract in
``protocol.py``. Sampling happens here, not in the model library, so every such
backend samples identically and the seed alone fixes the draw.

Every ``evaluate`` goes through ``forward``, which counts it into the request's ``Usage``
(forward calls and their shapes, from the model's ``n_batch`` and ``all_logits``), so the
cost record of a trace is counted in one place. No token is fed twice where the cache can
avoid it: a ``score`` whose context the cache already holds, with its logits ready, takes
its first row from those logits instead of re-evaluating the last context token.
"""
from __future__ import annotations

import time
from typing import Protocol, Sequence

import numpy as np

from ..config import SamplingConfig
from ..distribution import log_softmax, stats_from_logits
from .protocol import BackendError, Chunk, Scores, StopBefore, Usage


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

    # Optional, for the cost record: ``n_batch`` (tokens per forward call; None or absent:
    # one call per ``evaluate``) and ``all_logits`` (True: every call computes logits for
    # every position it evaluates, as transformers does).


def forward_batches(model, n: int, logits_from: int | None) -> list[tuple[int, int]]:
    """(n_tokens, n_logit_rows) of each forward call one ``evaluate(tokens[:n], logits_from)`` makes."""
    size = getattr(model, "n_batch", None) or n
    out = []
    for lo in range(0, n, size):
        hi = min(n, lo + size)
        if getattr(model, "all_logits", False):
            rows = hi - lo
        else:
            rows = sum(1 for i in range(lo, hi) if (logits_from is not None and i >= logits_from) or i == n - 1)
        out.append((hi - lo, rows))
    return out


def forward(model: CachedModel, tokens: list[int], usage: Usage | None, kind: str,
            logits_from: int | None = None) -> np.ndarray | None:
    """``model.evaluate``, counted into ``usage`` (``kind``: "read", "check" or "decoded"; a
    read may mix in check tokens: callers add those to ``check`` themselves)."""
    out = model.evaluate(tokens, logits_from) if logits_from is not None else model.evaluate(tokens)
    if usage is not None:
        for shape in forward_batches(model, len(tokens), logits_from):
            usage.batches[shape] = usage.batches.get(shape, 0) + 1
            usage.calls += 1
        setattr(usage, kind, getattr(usage, kind) + len(tokens))
    return out


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


def sync(model: CachedModel, context: list[int], usage: Usage | None = None) -> int:
    """Make the cache hold exactly ``context`` with its last logits ready, evaluating only
    the suffix it has not seen; return how many tokens were evaluated (counted as reads
    into ``usage``)."""
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
    if usage is not None:
        usage.read_from = common
    forward(model, list(context[common:]), usage, "read")
    return len(context) - common


def sample_token(logits: np.ndarray, sampling: SamplingConfig, rng: np.random.Generator) -> int:
    """Greedy argmax, or temperature + nucleus (top_p) sampling with ``rng``."""
    if sampling.greedy:
        return int(np.argmax(logits))
    p = sampling_distribution(logits, sampling)
    return int(rng.choice(p.size, p=p))


def sampling_distribution(logits: np.ndarray, sampling: SamplingConfig) -> np.ndarray:
    """The distribution ``sample_token`` draws from (float64, sums to 1): one-hot at the
    argmax when greedy, else softmax(logits / temperature) restricted to the top_p nucleus.
    Speculative decoding's acceptance rule reads it, so draft and check use one transform."""
    if sampling.greedy:
        p = np.zeros(logits.shape[-1])
        p[int(np.argmax(logits))] = 1.0
        return p
    x = logits.astype(np.float64) / sampling.temperature
    x -= x.max()
    p = np.exp(x)
    p /= p.sum()
    if sampling.top_p < 1.0:
        keep = nucleus(p, sampling.top_p)
        q = np.zeros_like(p)
        q[keep] = p[keep]
        p = q / q.sum()
    return p


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
                         rng: np.random.Generator, stop_before: StopBefore | None, position: int,
                         keep_logits: bool = False) -> Chunk:
    """The per-token loop (``generate`` contract in protocol.py). ``keep_logits``: return
    the logits each token (and a final EOS) was sampled from in ``Chunk.logits``."""
    chunk = Chunk(usage=Usage(), logits=[] if keep_logits else None)
    chunk.usage.read_from = len(context)
    t = time.perf_counter()
    chunk.prefill_tokens = sync(model, context, chunk.usage)
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
        if keep_logits:
            chunk.logits.append(logits)
        if model.is_eos(token):
            chunk.eos, chunk.eos_token = True, token
            if chunk.stats:
                chunk.stats.pop()
            break
        chunk.tokens.append(token)
        forward(model, [token], chunk.usage, "decoded")  # keep the cache one step ahead: the next logits are ready
    chunk.decode_tokens = len(chunk.tokens)
    chunk.decode_s = time.perf_counter() - t
    return chunk


def score_from_logits(model: CachedModel, context: list[int], tokens: list[int], *,
                      with_stats: bool = False, keep_rows: bool = False) -> Scores:
    """Teacher-force ``tokens`` after ``context`` in one batch (``Scores`` in protocol.py).

    The cache keeps its common prefix with ``context[:-1]``; the rest of the context and
    the tokens are evaluated in one call, with logits requested only for the last
    context position and the tokens (never the whole context). If the cache already
    holds exactly ``context`` with its logits ready (the previous check or generate ended
    there), those logits are the first row and only ``tokens`` are evaluated. Afterwards
    the cache holds context + tokens with the last logits ready, so a ``generate`` that
    continues from there costs nothing extra. ``Scores.next_top1`` (and with
    ``keep_rows``, ``Scores.rows``) give the distribution after the last token too.
    """
    if not tokens:
        return Scores(np.zeros(0), np.zeros(0, dtype=np.int64), [] if with_stats else None)
    if not context:
        raise BackendError(f"backend {model.name!r}: score needs a non-empty context")
    full = list(context) + list(tokens)
    if model.n_ctx is not None and len(full) > model.n_ctx:
        raise BackendError(f"backend {model.name!r}: {len(full)} tokens exceed n_ctx {model.n_ctx}")
    t = time.perf_counter()
    usage = Usage(read_from=len(context))
    held = model.held()
    if len(held) == len(context) and common_prefix(held, context) == len(context) and model.logits_ready():
        first = model.logits()  # the row after the last context token: no re-evaluation
        rows = np.concatenate([first[None, :], forward(model, list(tokens), usage, "check", logits_from=0)])
    else:
        model.keep(min(common_prefix(held, full), len(context) - 1))
        common = len(model.held())
        usage.read_from = common
        # rows: the distribution after full[len(context) - 1 + i], i = 0..n (the last row: after every token)
        rows = forward(model, full[common:], usage, "read", logits_from=len(context) - 1 - common)
        usage.read, usage.check = len(context) - common, len(tokens)  # one batch: context part, then the check
    n = len(tokens)
    top1 = rows[:n].argmax(axis=1).astype(np.int64)
    logprobs = np.empty(n)
    stats = [] if with_stats else None
    for i in range(n):
        lp = log_softmax(rows[i])
        logprobs[i] = lp[tokens[i]]
        if with_stats:
            stats.append(stats_from_logits(rows[i], i))
    return Scores(logprobs, top1, stats, prefill_tokens=usage.read + usage.check, prefill_s=time.perf_counter() - t,
                  next_top1=int(np.argmax(rows[n])), rows=rows if keep_rows else None, usage=usage)
