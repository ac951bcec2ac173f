"""The original tool's eight statistics at one position: pure numpy functions, each formula once.

Reference: entropix (github.com/xjdr-alt/entropix), ``entropix/torch_sampler.py``:
``calculate_varentropy_logsoftmax`` (entropy, varentropy) and ``calculate_metrics``
(attn_entropy, attn_varentropy, agreement, interaction_strength). The original tool's
``stats_analysis.py`` wrote these fields per consult position.

From the base's next-token distribution (delegated to ``distribution.py`` so that the engine's
``consult_stats`` and the analysis share one definition):
  entropy         H = -sum_v p_v log2 p_v                    (bits)
  varentropy      V = sum_v p_v (log2 p_v + H)^2             (bits^2)
  top_prob        max_v p_v
  prob_top2_diff  top-1 minus top-2 probability              (``StepStats.margin``)

From one query row of one layer's attention, ``scores`` and ``probs`` both [heads, n] over
the n keys that row may attend to (the causal prefix; entropix's NaN varentropy came from
letting future keys in, so callers pass the prefix only):
  attn_entropy          mean_h  H_h,  H_h = -sum_j a_hj log2 clamp(a_hj, 1e-10, 1)
  attn_varentropy       var_h H_h, unbiased (ddof 1, ``torch.var``'s default); 0 for one head,
                        where entropix maps torch's NaN to 0
  agreement             mean_{h,j} |a_hj - mean_h' a_h'j|   (0 when all heads attend alike)
  interaction_strength  mean_{h,j} |s_hj|, s = pre-softmax scores q.k * scaling

Heads are query heads: under grouped-query attention (Qwen2.5: 14 query heads sharing
2 key/value heads in the 0.5B) each query head has its own attention row, so every
statistic above is over the 14 query heads, not the 2 key/value heads.
"""
from __future__ import annotations

import numpy as np

from ..distribution import stats_from_logits

LOGIT_FIELDS = ("entropy", "varentropy", "top_prob", "prob_top2_diff")
ATTENTION_FIELDS = ("attn_entropy", "attn_varentropy", "agreement", "interaction_strength")
FIELDS = LOGIT_FIELDS + ATTENTION_FIELDS  # the original's analysis_result keys, in its order
PROB_FLOOR = 1e-10  # entropix's clamp before log2: 0 log 0 counts as 0


def logit_statistics(logits: np.ndarray) -> dict:
    """entropy, varentropy, top_prob, prob_top2_diff of softmax(logits) (one vocabulary row)."""
    s = stats_from_logits(logits, 0)
    return {"entropy": s.entropy, "varentropy": s.varentropy, "top_prob": s.top_prob, "prob_top2_diff": s.margin}


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax over the last axis, in float64."""
    x = np.asarray(scores, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def head_entropies(probs: np.ndarray) -> np.ndarray:
    """[heads] entropy in bits of each head's attention distribution ``probs`` [heads, n]."""
    p = np.asarray(probs, dtype=np.float64)
    return -(p * np.log2(np.clip(p, PROB_FLOOR, 1.0))).sum(axis=-1)


def attention_entropy(probs: np.ndarray) -> float:
    return float(head_entropies(probs).mean())


def attention_varentropy(probs: np.ndarray) -> float:
    h = head_entropies(probs)
    return float(h.var(ddof=1)) if h.size > 1 else 0.0


def agreement(probs: np.ndarray) -> float:
    p = np.asarray(probs, dtype=np.float64)
    return float(np.abs(p - p.mean(axis=0, keepdims=True)).mean())


def interaction_strength(scores: np.ndarray) -> float:
    return float(np.abs(np.asarray(scores, dtype=np.float64)).mean())


def attention_statistics(scores: np.ndarray, probs: np.ndarray | None = None) -> dict:
    """The four attention statistics of one query row: ``scores`` [heads, n] pre-softmax,
    ``probs`` [heads, n] the model's own attention weights (softmax of ``scores`` if None)."""
    scores = np.atleast_2d(scores)
    probs = softmax(scores) if probs is None else np.atleast_2d(probs)
    if scores.shape != probs.shape:
        raise ValueError(f"scores {scores.shape} and probs {probs.shape} must have the same [heads, keys] shape")
    return {"attn_entropy": attention_entropy(probs), "attn_varentropy": attention_varentropy(probs),
            "agreement": agreement(probs), "interaction_strength": interaction_strength(scores)}
