"""Teacher forcing: per-token features of a finished trace, in one batched pass per model.

    feats = teacher_force(base, prompt_ids, token_ids, oracle=oracle)
    feats.entropy[i], feats.boundary[i], feats.oracle_top1[i] ...

Index i describes the moment before generated token i was written: the base's
next-token statistics there (the same ``stats_from_logits`` as the engine's
``StepStats``), the base's probability of the token that was written, whether a
reasoning-step boundary had just been passed (``steps.boundary_flags``), the tokens
since the last newline, and, with an oracle of the same tokenizer, the oracle's top-1
and its probability of the written token. Calibration replays policies over these
arrays; the divergence study labels them.

Cost: a prefill of prompt + trace per model (``Backend.score``), not a decode. Batch
logits differ slightly from token-by-token logits (llama.cpp: same argmax, values up
to ~0.7 apart), so these statistics match the engine's within a tolerance, not bit
for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backends.protocol import BackendError
from .steps import boundary_flags, rolling_mean

STAT_NAMES = ("entropy", "varentropy", "top_prob", "margin")


@dataclass
class TokenFeatures:
    token_ids: np.ndarray  # [n] int64, the generated tokens
    entropy: np.ndarray  # [n] bits, base
    varentropy: np.ndarray  # [n]
    top_prob: np.ndarray  # [n]
    margin: np.ndarray  # [n] top-1 minus top-2 probability
    token_prob: np.ndarray  # [n] base's probability of the token written
    boundary: np.ndarray  # [n] bool: a step boundary just passed before token i
    since_newline: np.ndarray  # [n] int64: tokens since the last token holding a newline
    oracle_top1: np.ndarray | None = None  # [n] int64
    oracle_p: np.ndarray | None = None  # [n] oracle's probability of the token written

    @property
    def n(self) -> int:
        return int(self.token_ids.size)

    def rolling_entropy(self, window: int) -> np.ndarray:
        """Mean entropy over the last ``window`` tokens including i (as policies.rolling_entropy)."""
        return rolling_mean(self.entropy, window)

    @property
    def disagree(self) -> np.ndarray:
        return self.oracle_top1 != self.token_ids

    def step_confidence(self) -> np.ndarray:
        """[n] the mean top-1 probability of the step that ends just before token i (NaN at
        non-boundaries): what the ``boundary`` policy compares with its threshold."""
        out = np.full(self.n, np.nan)
        start = 0
        for i in range(self.n):
            if self.boundary[i]:
                if i > start:
                    out[i] = float(self.top_prob[start:i].mean())
                start = i
        return out


def token_texts(backend, token_ids: list[int], context: int = 8) -> list[bytes]:
    """Each token's bytes: the growth of the detokenized text when it is added, with a few
    tokens of left context (so SentencePiece spaces and split characters come out right)."""
    out = []
    for i in range(len(token_ids)):
        lo = max(0, i - context)
        before = backend.detokenize(token_ids[lo:i]) if i > lo else b""
        out.append(backend.detokenize(token_ids[lo:i + 1])[len(before):])
    return out


def teacher_force(base, prompt_ids: list[int], token_ids: list[int], oracle=None) -> TokenFeatures:
    """Features of ``token_ids`` written after ``prompt_ids`` (see module docstring)."""
    if not getattr(base, "can_score", False):
        raise BackendError(f"backend {base.name!r} cannot teacher-force (no score)")
    ids = [int(t) for t in token_ids]
    scores = base.score(list(prompt_ids), ids, with_stats=True)
    pieces = token_texts(base, ids)
    from .steps import tokens_since_newline

    feats = TokenFeatures(
        token_ids=np.asarray(ids, dtype=np.int64),
        **{k: np.array([getattr(s, k) for s in scores.stats]) for k in STAT_NAMES},
        token_prob=np.exp(scores.logprobs),
        boundary=boundary_flags(pieces),
        since_newline=tokens_since_newline(pieces),
    )
    if oracle is not None:
        if oracle.tokenizer_key != base.tokenizer_key:
            raise BackendError(f"oracle {oracle.name!r} and base {base.name!r} do not share a tokenizer")
        o = oracle.score(list(prompt_ids), ids)
        feats.oracle_top1, feats.oracle_p = o.top1, np.exp(o.logprobs)
    return feats


def features_from_stats(backend, token_ids: list[int], token_stats: dict) -> TokenFeatures:
    """TokenFeatures from the statistics the engine itself recorded online
    (``Trace.token_stats`` of a base-only run with ``save_stats``), with the same
    boundary and newline features as ``teacher_force``. ``token_prob`` is NaN: it is
    not known before the token is sampled. What the ``learned`` policy saw, in the
    arrays the router reads offline: the two must give the same numbers."""
    ids = [int(t) for t in token_ids]
    from .steps import tokens_since_newline

    pieces = token_texts(backend, ids)
    arr = {k: np.array([np.nan if v is None else v for v in token_stats[k]], dtype=np.float64) for k in STAT_NAMES}
    return TokenFeatures(token_ids=np.asarray(ids, dtype=np.int64), **arr, token_prob=np.full(len(ids), np.nan),
                         boundary=boundary_flags(pieces), since_newline=tokens_since_newline(pieces))
