"""The straight line between base and oracle (reporting/frontier.py) against values worked out by
hand, its paired bootstrap, and the verdict rule. Rows are built here with cost records whose
arithmetic is easy to follow (parameters 1 and 3 per token, given as overrides)."""
from __future__ import annotations

import pytest

from guided_inference.reporting.costs import NA, CostSettings
from guided_inference.reporting.frontier import LinePoint, line_point, verdict

COMPUTE = CostSettings("compute", params={"base": 1.0, "oracle": 3.0})


def role(read: int, written: int) -> dict:
    return {"read_prompt": read, "read_catchup": 0, "read_check": 0, "written": written, "decoded": written,
            "calls": written, "requests": 1, "context_tokens": read, "batches": [[read, 1, 1]] if read else []}


def rows(correct: list[int], base: tuple[int, int], oracle: tuple[int, int], policy: str = "random") -> list[dict]:
    return [{"unique_id": f"p{i}", "correct": bool(c), "error": None, "policy": policy,
             "oracle_tokens": oracle[1], "total_tokens_generated": base[1] + oracle[1],
             "cost": {"base": role(*base), "oracle": role(*oracle)}} for i, c in enumerate(correct)]


BASE = rows([1, 0, 0, 0], base=(10, 90), oracle=(0, 0), policy="never")  # 100 x 1 = 100 per problem
ORACLE = rows([1, 1, 1, 0], base=(0, 0), oracle=(10, 90), policy="always")  # 100 x 3 = 300
RUN = rows([1, 1, 0, 0], base=(10, 90), oracle=(50, 0))  # 100 + 150 = 250


def test_the_line_by_hand():
    p = line_point(RUN, BASE, ORACLE, COMPUTE, n_boot=2000)
    # R = 250/300, B = 100/300, t = (R - B) / (1 - B) = 0.75; line = 0.25 + 0.5 x 0.75 = 0.625
    assert p.n == 4 and p.accuracy == 0.5
    assert p.cost == pytest.approx(250 / 300) and p.base_cost == pytest.approx(1 / 3)
    assert p.line == pytest.approx(0.625) and p.gap == pytest.approx(-0.125)
    assert p.vs_oracle == pytest.approx(-0.25)
    assert p.gap_ci[0] <= p.gap <= p.gap_ci[1] and p.vs_oracle_ci[0] <= -0.25 <= p.vs_oracle_ci[1]


def test_the_oracle_and_the_base_lie_on_their_own_line():
    at_oracle = line_point(ORACLE, BASE, ORACLE, COMPUTE, n_boot=500)
    assert at_oracle.cost == pytest.approx(1.0) and at_oracle.gap == pytest.approx(0.0)
    assert at_oracle.gap_ci == pytest.approx((0.0, 0.0)) and verdict(at_oracle) == "few"  # n = 4
    at_base = line_point(BASE, BASE, ORACLE, COMPUTE, n_boot=500)
    assert at_base.gap == pytest.approx(0.0) and at_base.gap_ci == pytest.approx((0.0, 0.0))


def test_a_dearer_run_meets_the_oracle_and_tokens_put_the_base_at_zero():
    dear = rows([1, 1, 1, 1], base=(10, 90), oracle=(200, 10))  # 100 + 630 > 300
    p = line_point(dear, BASE, ORACLE, COMPUTE, n_boot=200)
    assert p.cost > 1 and p.line == pytest.approx(0.75) and p.gap == pytest.approx(0.25)
    tokens = line_point(RUN, BASE, ORACLE, CostSettings("tokens"), n_boot=200)
    assert tokens.cost == 0.0 and tokens.base_cost == 0.0 and tokens.gap == pytest.approx(0.25)


def test_only_shared_graded_problems_count():
    run = RUN[:3] + [dict(RUN[3], error="boom", correct=None)]
    p = line_point(run, BASE, ORACLE, COMPUTE, n_boot=200)
    # p0..p2: run 2/3, base 1/3, oracle 1; costs 250x3 / 300x3, base 1/3 -> t = 0.75, line = 1/3 + 2/3 x 0.75
    assert p.n == 3 and p.gap == pytest.approx(2 / 3 - (1 / 3 + 0.5))


def test_unknown_and_impossible_costs():
    checking = [dict(r, policy="verify") for r in RUN]
    assert line_point(checking, BASE, ORACLE, CostSettings("api"), n_boot=100).cost == NA
    no_record = [{k: v for k, v in r.items() if k != "cost"} for r in RUN]
    p = line_point(no_record, BASE, ORACLE, CostSettings("gpu"), n_boot=100)
    assert p.cost is None and p.gap is None and verdict(p) == "none"
    assert line_point(RUN, [], ORACLE, COMPUTE) is None


def point(cost, vs_ci, gap_ci) -> LinePoint:
    return LinePoint(n=100, accuracy=0.4, cost=cost, base_cost=0.3, line=0.4, gap=None if gap_ci is None else sum(gap_ci) / 2, gap_ci=gap_ci,
                     vs_oracle=sum(vs_ci) / 2, vs_oracle_ci=vs_ci)


@pytest.mark.parametrize("cost,vs_ci,gap_ci,expected", [
    (0.76, (-0.27, 0.0), (0.1, 0.3), "lossless"),
    (0.57, (-0.13, -0.01), (0.05, 0.2), "above"),
    (0.57, (-0.3, -0.1), (-0.2, -0.05), "below"),
    (0.57, (-0.3, -0.1), (-0.05, 0.05), "on"),
    (1.46, (-0.1, 0.0), (-0.1, 0.0), "dearer"),
    (NA, (-0.1, 0.0), None, "na"),
])
def test_verdict_rule(cost, vs_ci, gap_ci, expected):
    assert verdict(point(cost, vs_ci, gap_ci)) == expected


def test_too_few_problems_get_no_verdict_and_n_boot_is_checked():
    p = line_point(RUN, BASE, ORACLE, COMPUTE, n_boot=100)  # n = 4: any CI may hold 0
    assert p.n == 4 and verdict(p) == "few"
    with pytest.raises(ValueError, match="n_boot must be >= 1, got 0"):
        line_point(RUN, BASE, ORACLE, COMPUTE, n_boot=0)


def test_a_literal_mix_of_base_and_oracle_answers_lies_on_the_line_under_tokens_and_compute():
    # problems 0-1 answered by the oracle alone, 2-3 by the base alone: the straight line itself
    mix = ORACLE[:2] + BASE[2:]
    for settings in (COMPUTE, CostSettings("tokens")):
        p = line_point(mix, BASE, ORACLE, settings, n_boot=300)
        assert p.gap == pytest.approx(0.0), settings.model  # (its CI is not degenerate: which problems
        # went to the oracle matters within a resample, while the line averages over all of them)


def test_an_unknown_base_cost_leaves_the_run_its_own_cost():
    base = [{k: v for k, v in r.items() if k != "cost"} for r in BASE]
    gpu = CostSettings("gpu")
    p = line_point(RUN, base, ORACLE, gpu, n_boot=100)
    assert p.cost == pytest.approx(line_point(RUN, BASE, ORACLE, gpu, n_boot=100).cost)
    assert p.line is None and p.gap is None and verdict(p) == "none"
