"""Statistics over result rows: Wilson intervals, paired bootstrap, summaries, breakdowns, comparisons;
then `guided report` / `compare` / `report --html` on the committed results files, their numbers
recomputed from the raw rows (tests/report_numbers.py)."""
import html
import math
import re
from pathlib import Path

import pytest

from conftest import run_cli
from guided_inference.evaluation.results import read_rows
from report_numbers import check_compare, check_row, exact_bootstrap_quantiles, table_rows

from guided_inference.reporting.report import (compare, format_breakdown, format_comparison, format_table, latest,
                                                 summarize, breakdown)
from guided_inference.intervals import paired_bootstrap, wilson


# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3 (Wilson score).
@pytest.mark.parametrize("k,n,low,high", [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
    (29, 29, 0.8830, 1.0),
    (5, 10, 0.2366, 0.7634),
])
def test_wilson_known_values(k, n, low, high):
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(low, abs=5e-5)
    assert hi == pytest.approx(high, abs=5e-5)


def test_wilson_empty_is_uninformative():
    assert wilson(0, 0) == (0.0, 1.0)


def _binom_quantile(n: int, p: float, q: float) -> int:
    cdf = 0.0
    for x in range(n + 1):
        cdf += math.comb(n, x) * p ** x * (1 - p) ** (n - x)
        if cdf >= q:
            return x
    return n


# When B fixes m of A's n problems and breaks none, d = b - a has m ones: a resampled mean is
# Binomial(n, m/n) / n, so the percentile CI is the binomial quantiles over n.
@pytest.mark.parametrize("n,m", [(200, 20), (100, 50), (300, 9)])
def test_bootstrap_matches_the_exact_resampling_distribution(n, m):
    a = [False] * n
    b = [True] * m + [False] * (n - m)
    diff, lo, hi = paired_bootstrap(a, b, n_boot=20_000, seed=1)
    assert diff == pytest.approx(m / n)
    assert lo == pytest.approx(_binom_quantile(n, m / n, 0.025) / n, abs=1.01 / n)
    assert hi == pytest.approx(_binom_quantile(n, m / n, 0.975) / n, abs=1.01 / n)


@pytest.mark.parametrize("a,b,expected", [
    ([True, False, True], [True, False, True], (0.0, 0.0, 0.0)),
    ([False] * 5, [True] * 5, (1.0, 1.0, 1.0)),
    ([True] * 4, [False] * 4, (-1.0, -1.0, -1.0)),
    ([], [], (0.0, 0.0, 0.0)),
])
def test_bootstrap_degenerate_cases(a, b, expected):
    assert paired_bootstrap(a, b, n_boot=500) == pytest.approx(expected)


def test_bootstrap_is_paired_and_seeded():
    # Same accuracy in both runs but on different problems: the paired CI straddles 0 widely;
    # identical per-problem verdicts give a zero-width interval.
    a = [True, False] * 50
    b = [False, True] * 50
    diff, lo, hi = paired_bootstrap(a, b, seed=3)
    assert diff == 0 and lo < -0.15 and hi > 0.15
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)
    with pytest.raises(ValueError):
        paired_bootstrap([True], [True, False])


def row(uid, correct, *, level=1, subject="Algebra", tokens=100, oracle=20, finish="eos", error=None, gen_s=2.0):
    return {"unique_id": uid, "correct": None if error else correct, "error": error, "level": level, "subject": subject,
            "total_tokens_generated": tokens, "oracle_tokens": oracle, "finish_reason": finish,
            "timings": {"generation_s": gen_s}, "c": 5, "k": 10, "policy": "random", "grade_timeout": False}


ROWS = [row("a", True, level=1), row("b", False, level=2, finish="length", tokens=300, oracle=0),
        row("c", True, level=2, subject="Geometry"), row("d", None, error="BackendError: down"),
        row("e", False, level=3, subject="Geometry", oracle=100)]


def test_summarize_counts_errors_apart():
    s = summarize(ROWS, "run")
    assert (s.n, s.correct, s.errors) == (4, 2, 1)
    assert s.accuracy == 0.5
    assert (s.ci_low, s.ci_high) == pytest.approx(wilson(2, 4))
    assert s.truncated == 0.25
    assert s.oracle_share == pytest.approx(140 / 600)  # token-weighted
    assert s.mean_tokens == 150
    assert s.generation_s == 8.0 and s.tokens_per_s == 75.0
    assert (s.c, s.k, s.policy) == (5, 10, "random")


@pytest.mark.parametrize("key,expected", [
    ("level", [(1, 2, 2), (2, 2, 1), (3, 1, 0), (None, 1, 0)]),  # the error row has no verdict: not counted
    ("subject", [("Algebra", 3, 2), ("Geometry", 2, 1), (None, 1, 0)]),
])
def test_breakdown(key, expected):
    rows = ROWS + [row("f", True, level=1), row("g", False, level=None, subject=None)]
    assert [(v, s.n, s.correct) for v, s in breakdown(rows, key)] == expected


def test_latest_keeps_the_last_row_per_problem():
    rows = [row("a", None, error="x"), row("b", True), row("a", True)]
    assert [(r["unique_id"], r["correct"]) for r in latest(rows)] == [("a", True), ("b", True)]


def test_compare_uses_only_shared_problems():
    a = [row("p1", True), row("p2", False), row("p3", False), row("only_a", True)]
    b = [row("p1", True), row("p2", True), row("p3", True), row("only_b", False), row("p4", None, error="e")]
    c = compare(a, b, n_boot=2000)
    assert (c.shared, c.only_a, c.only_b) == (3, 1, 1)
    assert c.acc_a == pytest.approx(1 / 3) and c.acc_b == 1.0
    assert c.diff == pytest.approx(2 / 3)
    assert (c.a_wins, c.b_wins) == (0, 2)
    text = format_comparison(c, "base", "guided")
    assert "shared problems: 3" in text and "+66.7 points" in text


def test_tables_render_every_row():
    s = summarize(ROWS, "run")
    t = format_table([s, s])
    assert t.count("\n") == 3 and "50.0%" in t
    b = format_breakdown(ROWS + [row("g", False, level=None)], "level")
    assert "| 3 " in b and "| - " in b


# --- The commands' numbers on the committed results files (real runs, n = 100 each) ----------------------

RESULTS = Path(__file__).resolve().parent.parent / "results" / "math500-first100"
FILES = {name: RESULTS / f"math500_0.5B_1.5B_{name}.jsonl" for name in ("never_c0_k10", "random_c20_k10",
                                                                       "always_c103_k10")}


@pytest.fixture(scope="module")
def raw():
    return {name: read_rows(path) for name, path in FILES.items()}


def test_report_numbers_equal_the_files(raw):
    proc = run_cli("report", *map(str, FILES.values()))
    assert proc.returncode == 0, proc.stderr
    table = table_rows(proc.stdout)
    assert sorted(table) == [f"math500_0.5B_1.5B_{name}" for name in sorted(FILES)]
    for name, rows in raw.items():
        check_row(table[f"math500_0.5B_1.5B_{name}"], rows)
    # and the values the docs quote, so a silent change of the files cannot pass either
    assert [table[f"math500_0.5B_1.5B_{n}"]["accuracy"] for n in FILES] == ["8.0%", "20.0%", "44.0%"]


def test_report_by_level_numbers_equal_the_files(raw):
    rows = raw["random_c20_k10"]
    proc = run_cli("report", "--by", "level", str(FILES["random_c20_k10"]))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.split("by level:")[1]
    table = table_rows(text)
    levels = sorted({r["level"] for r in rows})
    assert sorted(table) == [str(v) for v in levels]
    for level in levels:
        check_row(table[str(level)], [r for r in rows if r["level"] == level])
    assert sum(int(table[str(v)]["n"]) for v in levels) == 100


@pytest.mark.parametrize("a,b", [("never_c0_k10", "random_c20_k10"), ("random_c20_k10", "always_c103_k10"),
                                 ("never_c0_k10", "always_c103_k10")])
def test_compare_numbers_equal_the_files(raw, a, b):
    proc = run_cli("compare", str(FILES[a]), str(FILES[b]))
    assert proc.returncode == 0, proc.stderr
    check_compare(proc.stdout, raw[a], raw[b])


def test_html_summary_numbers_equal_the_files(raw, tmp_path):
    out = tmp_path / "r.html"
    proc = run_cli("report", "--html", str(out), *map(str, FILES.values()))
    assert proc.returncode == 0, proc.stderr
    page = out.read_text(encoding="utf-8")
    summary = page.split("<h2>Summary</h2>")[1].split("</table>")[0]
    cells = [[html.unescape(c) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", tr)]
             for tr in re.findall(r"<tr>(.*?)</tr>", summary)]
    header, body = cells[0], cells[1:]
    assert len(body) == 3
    for row in body:
        check_row(dict(zip(header, row)), raw[row[0].removeprefix("math500_0.5B_1.5B_")])
    # one problem block per row of each file, with its verdict
    for name, rows in raw.items():
        section = page.split(f'<section class="run"><h3>math500_0.5B_1.5B_{name}</h3>')[1].split("</section>")[0]
        assert section.count('<div class="problem correct"') == sum(r["correct"] is True for r in rows)
        assert section.count('<div class="problem wrong"') == sum(r["correct"] is False for r in rows)


def test_exact_bootstrap_reference_matches_the_binomial_case():
    # The reference used above, on the case the bootstrap test at the top checks by other means.
    a, b = [False] * 200, [True] * 20 + [False] * 180
    assert exact_bootstrap_quantiles(a, b) == [_binom_quantile(200, 0.1, 0.025) / 200, _binom_quantile(200, 0.1, 0.975) / 200]
