"""Each statistic of study/attention_stats.py against values worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from guided_inference.study import attention_stats as A

BIG_NEG = -1e4  # a logit whose probability underflows to 0 (a one-hot distribution)


@pytest.mark.parametrize("logits, entropy, varentropy, top, diff", [
    # p = (1/2, 1/4, 1/4): H = 1/2*1 + 2*(1/4*2) = 1.5; V = 1/2*(-1+1.5)^2 + 2*1/4*(-2+1.5)^2 = 0.25
    (np.log([0.5, 0.25, 0.25]), 1.5, 0.25, 0.5, 0.25),
    (np.zeros(8), 3.0, 0.0, 1 / 8, 0.0),  # uniform over 8: log2 8
    ([0.0, BIG_NEG, BIG_NEG, BIG_NEG], 0.0, 0.0, 1.0, 1.0),  # one-hot
    ([3.0, 3.0], 1.0, 0.0, 0.5, 0.0),
    # p = (3/4, 1/4): H = 3/4 log2(4/3) + 1/4 * 2
    (np.log([0.75, 0.25]), 0.75 * math.log2(4 / 3) + 0.5,
     0.75 * (math.log2(0.75) + (0.75 * math.log2(4 / 3) + 0.5)) ** 2 + 0.25 * (-2 + (0.75 * math.log2(4 / 3) + 0.5)) ** 2,
     0.75, 0.5),
])
def test_logit_statistics(logits, entropy, varentropy, top, diff):
    s = A.logit_statistics(np.asarray(logits, dtype=np.float32))
    assert list(s) == list(A.LOGIT_FIELDS)
    assert s["entropy"] == pytest.approx(entropy, abs=1e-5)
    assert s["varentropy"] == pytest.approx(varentropy, abs=1e-5)
    assert s["top_prob"] == pytest.approx(top, abs=1e-6)
    assert s["prob_top2_diff"] == pytest.approx(diff, abs=1e-6)


TWO_HEADS = [[1.0, 0.0], [0.5, 0.5]]  # entropies 0 and 1 bit


@pytest.mark.parametrize("probs, entropy, varentropy, agree", [
    (TWO_HEADS, 0.5, 0.5, 0.25),  # var of (0, 1) with ddof 1 = 0.5; head mean (.75,.25): every |dev| = .25
    ([[0.25] * 4] * 3, 2.0, 0.0, 0.0),  # three identical uniform heads: log2 4, no spread, full agreement
    ([[0.2, 0.3, 0.5]], -(0.2 * math.log2(0.2) + 0.3 * math.log2(0.3) + 0.5 * math.log2(0.5)), 0.0, 0.0),  # one head
    ([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], 0.0, 0.0, 1 / 3),  # one-hot heads on different keys: |dev| .5,0,.5 each
    ([[1.0]], 0.0, 0.0, 0.0),  # the first position: one key
])
def test_attention_probability_statistics(probs, entropy, varentropy, agree):
    p = np.asarray(probs)
    assert A.attention_entropy(p) == pytest.approx(entropy, abs=1e-9)
    assert A.attention_varentropy(p) == pytest.approx(varentropy, abs=1e-9)
    assert A.agreement(p) == pytest.approx(agree, abs=1e-9)


@pytest.mark.parametrize("scores, expected", [
    ([[2.0, -1.0], [0.5, -0.5]], 1.0),
    ([[0.0, 0.0, 0.0]], 0.0),
    ([[-3.0]], 3.0),
])
def test_interaction_strength_is_mean_absolute_score(scores, expected):
    assert A.interaction_strength(np.asarray(scores)) == pytest.approx(expected)


def test_attention_statistics_from_scores_alone_uses_their_softmax():
    scores = np.array([[0.0, math.log(3.0)], [5.0, 5.0]])  # softmax: (1/4, 3/4) and (1/2, 1/2)
    s = A.attention_statistics(scores)
    assert list(s) == list(A.ATTENTION_FIELDS)
    h1 = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    assert s["attn_entropy"] == pytest.approx((h1 + 1.0) / 2)
    assert s["attn_varentropy"] == pytest.approx((h1 - 1.0) ** 2 / 2)  # ddof 1 over two heads
    assert s["agreement"] == pytest.approx(0.125)  # head mean (3/8, 5/8): every |dev| = 1/8
    assert s["interaction_strength"] == pytest.approx((math.log(3.0) + 10.0) / 4)
    np.testing.assert_allclose(A.softmax(scores).sum(axis=-1), 1.0)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match=r"same \[heads, keys\] shape"):
        A.attention_statistics(np.zeros((2, 3)), np.full((2, 4), 0.25))


def test_fields_are_the_original_output_keys_in_order():
    assert A.FIELDS == ("entropy", "varentropy", "top_prob", "prob_top2_diff",
                        "attn_entropy", "attn_varentropy", "agreement", "interaction_strength")
