"""95% confidence intervals, in one place: pure functions, numpy only, no I/O.

    lo, hi = wilson(correct, n)                       # a binomial proportion (accuracy)
    diff, lo, hi = paired_bootstrap(a, b)             # B - A on the same problems
    est, lo, hi = bootstrap_ci(groups, statistic)     # any statistic, problems resampled
    c = mean_ci(values, clusters)                     # a mean whose values come in clusters
    fmt_ci(est, lo, hi)                               # "0.712 (0.650-0.770)"

Which one when: accuracy of one run, ``wilson`` (``reporting/report.py``); two runs on
the same problems, ``paired_bootstrap``; a statistic over tokens grouped by problem
(AUROC, precision at a share: ``study/``), ``bootstrap_ci``, which resamples whole
problems because tokens of one problem are not independent; means of per-position
statistics (``study/analyze.py``), ``mean_ci``, cluster-robust with the line as cluster. The
bootstraps are percentile intervals, deterministic for a seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (no continuity correction).

    n = 0 gives (0, 1): nothing is known.
    """
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_bootstrap(a: list[bool], b: list[bool], *, n_boot: int = 10_000, seed: int = 0,
                     alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean(b) - mean(a), low, high): percentile bootstrap over problems, resampled in pairs.

    ``a[i]`` and ``b[i]`` must be verdicts on the same problem. Deterministic for a seed.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}")
    if not a:
        return 0.0, 0.0, 0.0
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    step = max(1, 2_000_000 // d.size)  # resamples per batch: bounded memory for big n
    for start in range(0, n_boot, step):
        m = min(step, n_boot - start)
        means[start:start + m] = d[rng.integers(0, d.size, size=(m, d.size))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(d.mean()), float(low), float(high)


def bootstrap_ci(groups: list, statistic: Callable[[list], float], *, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """(estimate, low, high): ``statistic`` on all ``groups`` (one per problem), and the
    percentile interval of it over ``n_boot`` resamples of the groups with replacement.
    Resamples where the statistic is NaN (a class missing) are skipped."""
    estimate = statistic(groups)
    rng = np.random.default_rng(seed)
    n = len(groups)
    values = []
    for _ in range(n_boot):
        pick = rng.integers(0, n, n)
        v = statistic([groups[i] for i in pick])
        if not math.isnan(v):
            values.append(v)
    if not values:
        return estimate, math.nan, math.nan
    lo, hi = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return estimate, float(lo), float(hi)


@dataclass(frozen=True)
class MeanCI:
    mean: float
    low: float
    high: float
    n: int  # values (positions)
    lines: int  # clusters (the lines of an analysis file)


def mean_ci(values, clusters) -> MeanCI:
    """Mean and cluster-robust 95% CI; NaN bounds when fewer than two clusters.

    SE^2 = G/(G-1) * sum_g (sum_{i in g} (x_i - mean))^2 / n^2 over G clusters and n values
    (the sandwich estimator of a mean), then mean +- 1.96 SE. With one value per cluster
    this is the usual SE up to G/(G-1)."""
    x = np.asarray(values, dtype=np.float64)
    g = np.asarray(clusters)
    if x.size == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0, 0)
    m = float(x.mean())
    ids, inverse = np.unique(g, return_inverse=True)
    if ids.size < 2:
        return MeanCI(m, math.nan, math.nan, int(x.size), int(ids.size))
    sums = np.bincount(inverse, weights=x - m)
    se = math.sqrt(ids.size / (ids.size - 1) * float((sums ** 2).sum())) / x.size
    return MeanCI(m, m - Z95 * se, m + Z95 * se, int(x.size), int(ids.size))


def fmt_ci(est: float, lo: float, hi: float, digits: int = 3) -> str:
    """``est (lo-hi)``, or ``est (lo to hi)`` when a bound is negative; "n/a" for a NaN estimate."""
    if math.isnan(est):
        return "n/a"
    sep = " to " if min(lo, hi) < 0 else "-"  # "-0.2--0.1" would misread
    return f"{est:.{digits}f} ({lo:.{digits}f}{sep}{hi:.{digits}f})"
