"""Pure statistics and sampling: parametrize tables against values worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from guided_inference.backends.cached import nucleus, sample_token
from guided_inference.config import SamplingConfig
from guided_inference.distribution import stats_from_logits, stats_from_top_logprobs

H34 = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))  # 0.8112781


@pytest.mark.parametrize("probs,entropy,varentropy,top,margin", [
    ([0.25, 0.25, 0.25, 0.25], 2.0, 0.0, 0.25, 0.0),
    ([0.5, 0.5], 1.0, 0.0, 0.5, 0.0),
    ([1.0, 0.0, 0.0], 0.0, 0.0, 1.0, 1.0),
    ([0.75, 0.25], H34, 0.75 * (math.log2(0.75) + H34) ** 2 + 0.25 * (math.log2(0.25) + H34) ** 2, 0.75, 0.5),
    ([0.5, 0.25, 0.125, 0.125], 1.75, 0.6875, 0.5, 0.25),
])
def test_stats_from_logits(probs, entropy, varentropy, top, margin):
    logits = np.log(np.maximum(np.array(probs), 1e-300)) + 3.0  # any shift gives the same distribution
    s = stats_from_logits(logits.astype(np.float32), position=4)
    assert s.entropy == pytest.approx(entropy, abs=1e-5)
    assert s.varentropy == pytest.approx(varentropy, abs=1e-5)
    assert s.top_prob == pytest.approx(top, abs=1e-6)
    assert s.margin == pytest.approx(margin, abs=1e-6)
    assert s.position == 4 and s.n_support == len(probs)


def test_top_logprobs_are_renormalised():
    s = stats_from_top_logprobs({"a": math.log(0.3), "b": math.log(0.3)}, 0)
    assert s.entropy == pytest.approx(1.0) and s.top_prob == pytest.approx(0.5) and s.n_support == 2


def test_greedy_is_argmax_and_ignores_rng():
    logits = np.array([0.1, 2.0, 1.9, -1.0], dtype=np.float32)
    draws = {sample_token(logits, SamplingConfig(), np.random.default_rng(s)) for s in range(20)}
    assert draws == {1}


def test_top_p_keeps_only_the_nucleus():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = np.random.default_rng(0)
    draws = [sample_token(logits, SamplingConfig(temperature=1.0, top_p=0.7), rng) for _ in range(400)]
    assert set(draws) == {0, 1}  # 0.5 + 0.3 >= 0.7: tokens 2 and 3 are outside the nucleus
    share = draws.count(0) / len(draws)
    assert 0.55 < share < 0.70  # 0.5 / 0.8 = 0.625


@pytest.mark.parametrize("scale", [0.1, 1.0, 4.0, 12.0])  # flat (nucleus of ~100k tokens) to peaked (a few)
@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.999])
def test_nucleus_is_the_full_sort_nucleus(scale, top_p):
    """The partition shortcut keeps exactly the set the full argsort keeps, in the same order."""
    rng = np.random.default_rng(int(scale * 10) + int(top_p * 1000))
    x = rng.standard_normal(151_936) * scale
    x[:5] = x.max()  # ties at the top: order by token id
    p = np.exp(x - x.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    cum = np.cumsum(p[order])
    expected = order[: int(np.searchsorted(cum, top_p)) + 1]
    got = nucleus(p, top_p)
    assert np.array_equal(got, expected)
    assert p[got].sum() >= top_p * (1 - 1e-12) and p[got[:-1]].sum() < top_p


def test_temperature_sampling_follows_the_distribution():
    logits = np.log(np.array([0.7, 0.2, 0.1]))
    rng = np.random.default_rng(1)
    draws = np.bincount([sample_token(logits, SamplingConfig(temperature=1.0), rng) for _ in range(3000)], minlength=3)
    assert np.allclose(draws / 3000, [0.7, 0.2, 0.1], atol=0.03)


@pytest.mark.parametrize("seed,scale", [(0, 1.0), (1, 3.0), (2, 8.0)])
def test_fast_float32_path_matches_float64_reference(seed, scale):
    from guided_inference.distribution import log_softmax, stats_from_logprobs

    x = (np.random.default_rng(seed).standard_normal(151_936) * scale).astype(np.float32)
    fast, ref = stats_from_logits(x, 0), stats_from_logprobs(log_softmax(x), 0)
    assert fast.entropy == pytest.approx(ref.entropy, abs=1e-4)
    assert fast.varentropy == pytest.approx(ref.varentropy, rel=1e-4, abs=1e-4)
    assert fast.top_prob == pytest.approx(ref.top_prob, rel=1e-5)
    assert fast.margin == pytest.approx(ref.margin, rel=1e-4, abs=1e-7)
