"""The learned router: a logistic regression on the base's per-token features that
predicts where the oracle would have written something else.

    guided router fit --divergence_file train_div.jsonl --output_file router.json [--label disagree]
    guided eval ... --policy learned --router router.json --threshold 0.5
    guided calibrate --policy learned --router router.json --target_share 0.10 ...   # then --calibration

Features (``FEATURES``), all known *before* the base writes token i: the base's
entropy, varentropy, top-1 probability and margin at i, its rolling entropy over the
last 4, 16 and 64 base tokens (including i), whether a step boundary was just passed,
and log(1 + position). They are computed from two sources that must agree number for
number on the same trace:

- online, from a ``DecisionPoint`` (``point_features``): ``StepStats``, ``History``
  and the text tail, as the engine hands them to the ``learned`` policy;
- offline, from ``TokenFeatures`` (``feature_matrix``): teacher forcing or stored
  divergence lines, through ``TokenFeatures.rolling_entropy`` and ``boundary``;
- in the calibration replay, through ``point_features`` again, over recorded traces.

Rolling entropy averages base tokens only (oracle tokens have no base statistics): on a
base-only trace that is every token, so training and online agree; after a consult the
online window skips the oracle's tokens, and the replay skips them the same way.

Each feature is standardised with the training mean and standard deviation, then
p = sigmoid(w . z + b). Fitting is a few Newton steps with a small L2 penalty (numpy
only). The file is small JSON: weights, feature names, normalisation, label, training
problem ids, the model pair's sha256 and provenance. ``load_router`` refuses a missing
or garbled file, and a file whose sha256 differs from the one recorded in the config.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .config import GuidedError
from .steps import ROLLING_WINDOWS

WINDOWS = ROLLING_WINDOWS
FEATURES = ("entropy", "varentropy", "top_prob", "margin",
            *(f"rolling_entropy_{w}" for w in WINDOWS), "boundary", "log_position")
KIND = "guided-router"
L2 = 1e-3  # ridge on standardised weights: keeps Newton stable when a feature separates a small class


def feature_matrix(feats) -> np.ndarray:
    """[n, len(FEATURES)] float64: the router's features at every position of a TokenFeatures."""
    cols = [feats.entropy, feats.varentropy, feats.top_prob, feats.margin,
            *(feats.rolling_entropy(w) for w in WINDOWS),
            np.asarray(feats.boundary, dtype=np.float64), np.log1p(np.arange(feats.n, dtype=np.float64))]
    return np.column_stack([np.asarray(c, dtype=np.float64) for c in cols]) if feats.n else np.zeros((0, len(FEATURES)))


def point_features(point) -> np.ndarray:
    """[len(FEATURES)] float64: the same features at one online decision point (the
    base's distribution for the next token is ``point.stats``)."""
    s, h = point.stats, point.history
    # Rolling entropy over the base tokens in the history, as rolling_entropy reads it: online and
    # in the calibration replay the window skips oracle tokens; offline on a base-only trace every
    # token is the base's, so feature_matrix's rolling mean over all positions is the same number.
    rolling = [h.rolling_entropy(w, s.entropy) if h is not None else s.entropy for w in WINDOWS]
    boundary = bool(h is not None and h.boundary)  # read by History.advance (the engine calls it: needs_text)
    return np.array([s.entropy, s.varentropy, s.top_prob, s.margin, *rolling,
                     float(boundary), math.log1p(s.position)], dtype=np.float64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow warnings for large |z|


@dataclass(frozen=True)
class Router:
    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    label: str = "disagree"
    meta: dict = field(default_factory=dict)  # provenance: training ids, pair sha256, version

    def __post_init__(self) -> None:
        if tuple(self.features) != FEATURES:
            raise GuidedError(f"router features {list(self.features)} differ from this version's {list(FEATURES)}")
        for name in ("mean", "scale", "weights"):
            v = getattr(self, name)
            if v.shape != (len(FEATURES),) or not np.all(np.isfinite(v)):
                raise GuidedError(f"router {name} must be {len(FEATURES)} finite numbers, got {v.tolist()!r}")
        if np.any(self.scale <= 0) or not math.isfinite(self.bias):
            raise GuidedError("router scale must be > 0 and bias finite")

    def _predict(self, x: np.ndarray) -> np.ndarray:
        """x: [n, d] -> [n] probabilities (one code path for online and offline)."""
        z = (x - self.mean) / self.scale
        return _sigmoid((z * self.weights).sum(axis=1) + self.bias)

    def predict_features(self, feats) -> np.ndarray:
        """[n] the router's probability at every position of a TokenFeatures (offline)."""
        return self._predict(feature_matrix(feats))

    def probability(self, point) -> float:
        """The router's probability at one online decision point."""
        return float(self._predict(point_features(point)[None, :])[0])

    def to_dict(self) -> dict:
        return {"kind": KIND, "features": list(self.features), "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "weights": self.weights.tolist(), "bias": self.bias,
                "label": self.label, **self.meta}


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = L2, iters: int = 50) -> tuple[np.ndarray, float]:
    """(weights, bias) of an L2-penalised logistic regression on standardised x, by Newton's
    method (the intercept is not penalised). x: [n, d], y: [n] bool."""
    n, d = x.shape
    a = np.column_stack([x, np.ones(n)])
    beta = np.zeros(d + 1)
    penalty = np.full(d + 1, l2 * n)
    penalty[-1] = 0.0
    for _ in range(iters):
        p = _sigmoid(a @ beta)
        grad = a.T @ (p - y) + penalty * beta
        hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(penalty) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return beta[:d], float(beta[d])


def fit_router(xs: list[np.ndarray], ys: list[np.ndarray], *, label: str, meta: dict) -> Router:
    """Standardise the pooled features, fit, and return the Router (features in FEATURES order)."""
    x, y = np.concatenate(xs), np.concatenate(ys).astype(np.float64)
    if x.shape[0] == 0 or y.min() == y.max():
        raise GuidedError(f"cannot fit a router: label {label!r} has only one class in {x.shape[0]} tokens")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)  # a constant feature gets weight ~0, not a division by zero
    w, b = fit_logistic((x - mean) / scale, y)
    return Router(FEATURES, mean, scale, w, b, label, dict(meta, n_tokens=int(x.shape[0]),
                                                            positive_rate=float(y.mean())))


def save_router(router: Router, path: str | Path) -> str:
    """Write the router JSON atomically; return its sha256."""
    from .models import file_sha256

    from .atomic import write_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(dict(router.to_dict(), created_at=time.time(), version=__version__), indent=1) + "\n")
    return file_sha256(path)


def load_router(path: str | Path, expected_sha256: str | None = None) -> Router:
    """The router in ``path``; GuidedError (one line) when the file is missing, is not a
    router, or its sha256 is not ``expected_sha256``."""
    from .models import file_sha256

    p = Path(path) if path else None
    if p is None or not p.is_file():
        raise GuidedError(f"router file not found: {str(path)!r} (guided router fit writes one)")
    if expected_sha256 and file_sha256(p) != expected_sha256:
        raise GuidedError(f"router file {str(path)!r} changed: sha256 {file_sha256(p)[:12]}, "
                          f"expected {expected_sha256[:12]}")
    try:
        d = json.loads(p.read_text())
        if d.get("kind") != KIND:
            raise ValueError
        meta = {k: v for k, v in d.items() if k not in ("kind", "features", "mean", "scale", "weights", "bias", "label")}
        return Router(tuple(d["features"]), np.asarray(d["mean"], dtype=np.float64),
                      np.asarray(d["scale"], dtype=np.float64), np.asarray(d["weights"], dtype=np.float64),
                      float(d["bias"]), str(d.get("label", "disagree")), meta)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise GuidedError(f"{str(path)!r} is not a router file (guided router fit writes one)") from None
