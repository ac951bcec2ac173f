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
     ``StepStats`` (position = ``position`` + index) and the tokens this call has
     produced so far; if it returns True, stop without producing that token
     (``Chunk.stopped`` is then True). Statistics are computed only when
     ``stop_before`` is given: they cost a full-vocabulary pass per token.
  4. Stop after an end-of-generation token; it is not returned but ``Chunk.eos``
     is True. The generated tokens are not returned with EOS.
  5. Never evaluate past the model's context (``n_ctx``): the engine caps
     ``max_tokens`` at the room left, so a backend may treat overflow as an error.
Text-only backends (no token ids) set ``token_ids = False``: the engine then
passes ``context`` as the full text (prompt + generated so far), hands off
through text, and reads ``Chunk.text``, with ``Chunk.decode_tokens`` as the
number of tokens the reply used. A backend is stateless between calls apart
from its cache, so one backend can serve several problems (if ``concurrent``).

Optional ability, declared by ``can_score``: ``score(context, tokens)`` teacher-forces
``tokens`` after ``context`` in one batch and returns ``Scores`` (per position, the
log-probability of the given token and the model's top-1). The verify consult and
the divergence study use it; a backend without it is refused at start.

Optional ability, declared by ``full_logits`` (cached backends): ``generate(...,
keep_logits=True)`` returns the logits each token was sampled from (``Chunk.logits``),
and ``score(..., keep_rows=True)`` returns the teacher-forced logits rows
(``Scores.rows``); speculative decoding at temperature > 0 needs both.

Cost: a backend that counts its work fills ``Chunk.usage`` / ``Scores.usage`` (a
``Usage``: forward calls, tokens evaluated by kind, batch shapes); one that cannot
(HTTP, Bedrock) leaves it None, and the trace's cost record then says "unknown".

Backends that hold a KV cache and expose logits implement the smaller helper
protocol of ``cached.py`` and get ``generate``/``score`` from it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from ..config import ConfigError, GuidedError, SamplingConfig
from ..distribution import StepStats


class BackendError(GuidedError):
    """A backend could not serve a request (server down, bad reply, missing ability)."""


@dataclass
class Usage:
    """The work one request cost a backend that holds its own KV cache, counted where the
    forward calls happen (``cached.py``). Every token fed to the model is in exactly one of
    ``read`` (context it had not evaluated: prompt, catch-up, re-evaluation), ``check``
    (tokens teacher-forced by ``score``) and ``decoded`` (one at a time, right after being
    sampled)."""

    calls: int = 0  # forward calls: one per batch of up to n_batch tokens
    read_from: int = 0  # cache position of the first context token evaluated (splits prompt from catch-up)
    read: int = 0
    check: int = 0
    decoded: int = 0
    batches: dict = field(default_factory=dict)  # (n_tokens, n_logit_rows) -> forward calls of that shape

    @property
    def evaluated(self) -> int:
        return self.read + self.check + self.decoded


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
    eos_token: int | None = None  # the EOS id sampled (when eos and the backend knows it)
    logits: list[np.ndarray] | None = None  # keep_logits=True: the logits each token (and the EOS) was drawn from
    usage: Usage | None = None  # None: the backend does not count its work


@dataclass
class Scores:
    """Teacher-forced scores of ``tokens`` after ``context``. Index i describes the
    model's distribution after ``context + tokens[:i]``."""

    logprobs: np.ndarray  # [n] float64: natural-log probability of tokens[i]
    top1: np.ndarray  # [n] int64: the model's argmax token at position i
    stats: list[StepStats] | None = None  # [n], when asked for (with_stats=True)
    prefill_tokens: int = 0  # tokens evaluated for this call (catch-up included)
    prefill_s: float = 0.0
    next_top1: int | None = None  # the argmax after the last token (the bonus row), where known
    rows: np.ndarray | None = None  # keep_rows=True: [n + 1, vocab] float32 logits (row n: after every token)
    usage: Usage | None = None


StopBefore = Callable[[StepStats, list[int]], bool]


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
    adds_bos: bool  # tokenize(text, add_bos=True) / the server puts this model's BOS before a prompt itself
    n_ctx: int | None  # context size in tokens, None when unknown (remote text APIs)

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
        stop_before: StopBefore | None = None,
        position: int = 0,
    ) -> Chunk: ...


def env_threads() -> int:
    """``GUIDED_THREADS`` from the environment (0 when unset): the CPU threads a backend uses."""
    value = os.environ.get("GUIDED_THREADS", "").strip()
    if not value:
        return 0
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"GUIDED_THREADS must be a whole number >= 1, got {value!r}")
    return int(value)
