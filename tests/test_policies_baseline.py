"""The baseline policies `random` and `ramp`: their decisions at the edges, and their realised rates.

Each test builds the policy the way the engine does (``make_policy(GenerationConfig(...))``)
and asks it through ``decide(point, rng)`` with a seeded generator. Rates are checked
against a 99.9% Wilson interval over many draws: a correct policy passes with this seed,
a policy off by a few points fails (the interval is about +-1 point wide at n = 20,000).
"""
from __future__ import annotations

import numpy as np
import pytest

from guided_inference.config import GenerationConfig
from guided_inference.intervals import wilson
from guided_inference.policies import DecisionPoint, make_policy

N = 20_000
Z999 = 3.2905267314918945  # two-sided 99.9% normal quantile
MAX_NEW = 400


def point(position: int, max_new_tokens: int = MAX_NEW) -> DecisionPoint:
    # Keyword arguments and only these four fields: DecisionPoint may grow optional fields.
    return DecisionPoint(position=position, consults_used=0, consults_left=5, max_new_tokens=max_new_tokens)


def decisions(policy_name: str, p: float, position: int, *, n: int = N, seed: int = 0) -> np.ndarray:
    policy = make_policy(GenerationConfig(policy=policy_name, p=p, max_new_tokens=MAX_NEW))
    rng = np.random.default_rng(seed)
    at = point(position)
    raw = [policy.decide(at, rng) for _ in range(n)]
    assert all(type(d) is bool for d in raw)  # decisions (Python bools), not probabilities or numpy scalars
    out = np.array(raw)
    return out


def assert_rate(observed: np.ndarray, expected: float) -> None:
    lo, hi = wilson(int(observed.sum()), observed.size, z=Z999)
    assert lo <= expected <= hi, f"realised rate {observed.mean():.4f} (99.9% CI {lo:.4f}-{hi:.4f}), expected {expected}"


@pytest.mark.parametrize("name", ["random", "ramp"])
def test_registered_with_their_names(name):
    policy = make_policy(GenerationConfig(policy=name))
    assert policy.name == name
    assert not policy.per_token and not policy.needs_stats  # decided between steps, no statistics needed


# --- random -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("position", [0, 37, MAX_NEW])
def test_random_p0_never_consults(position):
    assert decisions("random", 0.0, position).sum() == 0


@pytest.mark.parametrize("position", [0, 37, MAX_NEW])
def test_random_p1_always_consults(position):
    assert decisions("random", 1.0, position).sum() == N


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9])
def test_random_realised_rate_is_p(p):
    assert_rate(decisions("random", p, 0), p)


def test_random_rate_does_not_depend_on_position():
    early, late = decisions("random", 0.3, 0, seed=1), decisions("random", 0.3, MAX_NEW - 1, seed=2)
    assert_rate(early, 0.3)
    assert_rate(late, 0.3)


def test_random_draws_only_from_the_injected_generator():
    a = decisions("random", 0.5, 10, n=500, seed=7)
    b = decisions("random", 0.5, 10, n=500, seed=7)
    c = decisions("random", 0.5, 10, n=500, seed=8)
    assert np.array_equal(a, b)  # same seed, same schedule
    assert not np.array_equal(a, c)  # another seed, another schedule
    # One uniform draw per decision, compared with p: the decisions are exactly rng.random() < p.
    expected = np.random.default_rng(7).random(500) < 0.5
    assert np.array_equal(a, expected)


# --- ramp: p * min(1, position / max_new_tokens) ------------------------------------------------------

@pytest.mark.parametrize("p", [0.5, 1.0])
def test_ramp_never_consults_at_the_first_token(p):
    assert decisions("ramp", p, 0).sum() == 0


@pytest.mark.parametrize("position", [MAX_NEW, MAX_NEW + 1, 10 * MAX_NEW])
def test_ramp_p1_always_consults_from_max_new_tokens_on(position):
    assert decisions("ramp", 1.0, position).sum() == N


def test_ramp_p0_never_consults():
    for position in (0, MAX_NEW // 2, MAX_NEW, 3 * MAX_NEW):
        assert decisions("ramp", 0.0, position).sum() == 0


@pytest.mark.parametrize("p,position", [
    (1.0, MAX_NEW // 10),  # 0.1
    (1.0, MAX_NEW // 4),  # 0.25
    (0.8, MAX_NEW // 2),  # 0.4
    (0.6, 3 * MAX_NEW // 4),  # 0.45
    (0.6, MAX_NEW),  # reaches p
    (0.6, 2 * MAX_NEW),  # and stays at p past max_new_tokens
])
def test_ramp_realised_rate_is_linear_in_position(p, position):
    assert_rate(decisions("ramp", p, position), p * min(1.0, position / MAX_NEW))


def test_ramp_rises_with_position():
    rates = [decisions("ramp", 0.8, pos, n=5_000, seed=pos).mean() for pos in (40, 120, 200, 280, 360)]
    assert rates == sorted(rates) and rates[-1] - rates[0] > 0.5  # 0.08 -> 0.72 in expectation


def test_ramp_uses_the_points_max_new_tokens():
    # The ramp's length is the point's max_new_tokens (the engine fills it), not a constant.
    policy = make_policy(GenerationConfig(policy="ramp", p=1.0))
    rng = np.random.default_rng(0)
    assert all(policy.decide(point(100, max_new_tokens=100), rng) for _ in range(1000))
    assert not any(policy.decide(point(0, max_new_tokens=100), rng) for _ in range(1000))
    short = np.array([policy.decide(point(25, max_new_tokens=100), rng) for _ in range(N)])
    assert_rate(short, 0.25)
