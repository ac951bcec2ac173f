"""Pure statistics over labelled scores: AUROC with ties, precision at a trigger share,
Spearman correlation, and AUROC's confidence interval. No I/O; numpy only.

Conventions: a score is oriented so that *higher means "consult here"* (the caller
negates top_prob, margin and token_prob). NaN scores are dropped together with their
labels. Confidence intervals are ``intervals.bootstrap_ci``: percentile bootstraps that
resample whole problems (tokens of one problem are not independent), 95% by default.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from ..intervals import bootstrap_ci


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x, ties sharing the mean of the ranks they span (vectorised)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    sx = x[order]
    new_run = np.concatenate([[True], sx[1:] != sx[:-1]])  # [n] a run of equal values starts here
    run = np.cumsum(new_run) - 1  # [n] run index of each sorted value
    starts = np.flatnonzero(new_run)
    ends = np.concatenate([starts[1:], [x.size]])
    mean_rank = (starts + 1 + ends) / 2.0  # ranks start+1 .. end
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = mean_rank[run]
    return ranks


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """P(score of a random positive > score of a random negative) + 0.5 P(tie)
    (Mann-Whitney U / (n_pos n_neg)). NaN when either class is empty."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    keep = ~np.isnan(s)
    s, y = s[keep], y[keep]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    r = average_ranks(s)
    u = r[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def precision_at_share(scores: Sequence[float], labels: Sequence[bool], share: float) -> float:
    """Fraction of positives among the ``share`` of tokens with the highest scores: what a
    policy that fires on that share of tokens would hit. Ties at the cut are taken in
    input order (stable), so the count is exactly ceil(share * n)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    keep = ~np.isnan(s)
    s, y = s[keep], y[keep]
    if s.size == 0:
        return math.nan
    m = max(1, int(math.ceil(share * s.size)))
    top = np.argsort(-s, kind="mergesort")[:m]
    return float(y[top].mean())


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson on average ranks); NaN pairs dropped."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = average_ranks(a[keep]), average_ranks(b[keep])
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def pooled(stat: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[list], float]:
    """A statistic over groups of (scores, labels) pairs, computed on their concatenation."""
    def f(groups: list) -> float:
        if not groups:
            return math.nan
        return stat(np.concatenate([g[0] for g in groups]), np.concatenate([g[1] for g in groups]))
    return f


def auroc_ci(groups: list[tuple[np.ndarray, np.ndarray]], *, n_boot: int = 1000, seed: int = 0):
    """AUROC over pooled (scores, labels) groups with its bootstrap CI over groups."""
    return bootstrap_ci(groups, pooled(auroc), n_boot=n_boot, seed=seed)
