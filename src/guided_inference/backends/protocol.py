"""The Backend protocol: everything the engine needs from a model, and nothing more.

A backend is one model with one KV cache (or a server that holds one). The
engine talks to it in token ids; it never sees logits.

Contract of ``generate(context, max_tokens, sampling, rng, stop_before=None, position=0)``:
  1. Make the cache hold exactly ``context`` (a list of token ids in this
     backend's vocabulary), evaluating only the suffix it has not seen: the
     longest common prefix with what it holds is kept.
  2. Produce up to ``max_tokens`` new tokens with ``sampling`` (greedy when
     temperature is 0; otherwise drawn with ``rng``).
  3. Before each token, if ``stop_before`` is given, call it with that token's
     ``StepStats`` (position = ``position`` + index); if it returns True, stop
     without producing that token (``Chunk.stopped`` is then True).
  4. Stop after an end-of-generation token; it is not returned but ``Chunk.eos``
     is True. The generated tokens are not returned with EOS.
Text-only backends (no token ids) set ``token_ids = False``: the engine then
passes ``context`` as the full text (prompt + generated so far), hands off
through text, and reads ``Chunk.text``, with ``Chunk.decode_tokens`` as the
number of tokens the reply used. A backend is stateless between calls apart
from its cache, so one backend can serve several problems (if ``concurrent``).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from ..config import ConfigError, GuidedError, SamplingConfig
from ..stats import StepStats, stats_from_logits


class BackendError(GuidedError):
    """A backend could not serve a request (server down, bad reply, missing ability)."""


@dataclass
class Chunk:
    """What one ``generate`` call produced, with the work it took.

    prefill: tokens read in a batch without being generated (prompt, catch-up).
    decode: tokens generated one at a time.
    """

    tokens: list[int] = field(default_factory=list)
    stats: list[StepStats | None] = field(default_factory=list)
    text: str | None = None  # text-only backends fill this instead of tokens
    eos: bool = False
    stopped: bool = False
    prefill_tokens: int = 0
    prefill_s: float = 0.0
    decode_tokens: int = 0
    decode_s: float = 0.0


@runtime_checkable
class Backend(Protocol):
    name: str  # the catalogue name, alias, or file path the user gave
    model_id: str  # what the model is (HF id or file name), recorded in results
    sha256: str | None  # of the weights file where there is one
    tokenizer_key: str  # equal keys: token ids pass unchanged between two backends
    chat_template: str | None  # Jinja chat template, None for base models
    bos_text: str  # the BOS token's text when the template needs it
    has_stats: bool  # per-token StepStats available
    token_ids: bool  # accepts and returns token ids
    concurrent: bool  # safe to call generate() from several threads at once (HTTP: yes; embedded: no)

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        """special=True parses control-token text (chat templates); generated text is
        re-tokenized with special=False so a model writing "<|im_end|>" stays text."""
        ...

    def detokenize(self, ids: list[int]) -> bytes: ...

    def generate(
        self,
        context: list[int],
        max_tokens: int,
        sampling: SamplingConfig,
        rng: np.random.Generator,
        stop_before: Callable[[StepStats], bool] | None = None,
        position: int = 0,
    ) -> Chunk: ...


def sample_token(logits: np.ndarray, sampling: SamplingConfig, rng: np.random.Generator) -> int:
    """Greedy argmax, or temperature + nucleus (top_p) sampling with ``rng``.

    Done here rather than in llama.cpp's sampler so that every backend with
    logits samples identically and the seed alone fixes the draw.
    """
    if sampling.greedy:
        return int(np.argmax(logits))
    x = logits.astype(np.float64) / sampling.temperature
    x -= x.max()
    p = np.exp(x)
    p /= p.sum()
    if sampling.top_p < 1.0:
        order = np.argsort(-p)
        cum = np.cumsum(p[order])
        keep = order[: int(np.searchsorted(cum, sampling.top_p)) + 1]
        q = np.zeros_like(p)
        q[keep] = p[keep]
        p = q / q.sum()
    return int(rng.choice(p.size, p=p))


def common_prefix(held, context: list[int]) -> int:
    """Length of the longest common prefix of the tokens a cache holds and a context."""
    limit = min(len(held), len(context))
    # Usually everything held is a prefix of the context (the engine only appends): check that first.
    if limit and held[limit - 1] == context[limit - 1] and np.array_equal(held[:limit], context[:limit]):
        return limit
    common = 0
    while common < limit and held[common] == context[common]:
        common += 1
    return common


def env_threads() -> int:
    """``GUIDED_THREADS`` from the environment (0 when unset): the CPU threads a backend uses."""
    value = os.environ.get("GUIDED_THREADS", "").strip()
    if not value:
        return 0
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"GUIDED_THREADS must be a whole number >= 1, got {value!r}")
    return int(value)


def generate_from_logits(backend, context: list[int], max_tokens: int, sampling: SamplingConfig,
                         rng: np.random.Generator, stop_before: Callable[[StepStats], bool] | None,
                         position: int) -> Chunk:
    """The per-token loop shared by backends that hold a KV cache and expose logits.

    ``backend`` provides ``sync(context) -> tokens evaluated``, ``logits()`` (next-token
    logits after the cache's last token), ``advance(token)`` (evaluate one token),
    ``is_eos(token)`` and ``collect_stats``. Follows the ``generate`` contract above.
    """
    chunk = Chunk()
    t = time.perf_counter()
    chunk.prefill_tokens = backend.sync(context)
    chunk.prefill_s = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(max_tokens):
        logits = backend.logits()
        stats = stats_from_logits(logits, position + i) if (backend.collect_stats or stop_before) else None
        if stop_before is not None and stop_before(stats):
            chunk.stopped = True
            break
        token = sample_token(logits, sampling, rng)
        if backend.is_eos(token):
            chunk.eos = True
            break
        chunk.tokens.append(token)
        chunk.stats.append(stats)
        backend.advance(token)  # keep the cache one step ahead: the next logits are ready
    chunk.decode_tokens = len(chunk.tokens)
    chunk.decode_s = time.perf_counter() - t
    return chunk
