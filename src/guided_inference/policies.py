"""Consult policies: when does the base hand over to the oracle?

A policy is a small pure function ``decide(point, rng) -> bool`` over a
``DecisionPoint`` record, plus two flags:

- ``per_token``: asked before every base token (with that token's
  distribution statistics) instead of only between base steps;
- ``needs_stats``: requires per-token statistics, so a backend without them
  (Bedrock) is refused at start with a clear error.

The engine owns the budget: a policy is only asked while consults remain, so
no policy can exceed ``c``. Randomness comes only from the injected, seeded
``rng``: same seed, same decisions.

Policies of this module (the original tool's):
  never   base only
  always  consult at every decision point while budget remains (oracle only when
          c * k >= max_new_tokens)
  random  consult with probability p at each decision point (p=0.5 by default)
  ramp    probability rising linearly with position: p * min(1, position / max_new_tokens)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .stats import StepStats


@dataclass(frozen=True)
class DecisionPoint:
    """What a policy may look at. ``stats`` is the base's next-token distribution
    (present for per-token policies, None between steps)."""

    position: int  # tokens generated so far
    consults_used: int
    consults_left: int
    max_new_tokens: int
    stats: StepStats | None = None


@dataclass(frozen=True)
class Policy:
    name: str
    decide: Callable[[DecisionPoint, np.random.Generator], bool]
    per_token: bool = False
    needs_stats: bool = False


def _never(config) -> Policy:
    return Policy("never", lambda point, rng: False)


def _always(config) -> Policy:
    return Policy("always", lambda point, rng: True)


def _random(config) -> Policy:
    p = config.p
    return Policy("random", lambda point, rng: bool(rng.random() < p))


def _ramp(config) -> Policy:
    p = config.p

    def decide(point: DecisionPoint, rng: np.random.Generator) -> bool:
        # Rises from 0 at the first token to p at max_new_tokens: early text is
        # usually restating the problem, late text is where solutions go wrong.
        return bool(rng.random() < p * min(1.0, point.position / point.max_new_tokens))

    return Policy("ramp", decide)


# name -> factory(GenerationConfig) -> Policy. Later policies register here.
POLICIES: dict[str, Callable] = {
    "never": _never,
    "always": _always,
    "random": _random,
    "ramp": _ramp,
}


def make_policy(config) -> Policy:
    """Build the policy a (validated) GenerationConfig names."""
    return POLICIES[config.policy](config)
