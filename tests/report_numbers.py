"""Numbers of `guided report` / `compare` / the HTML page, recomputed here from the raw rows.

Deliberately not ``reporting/report.py``: the Wilson bound uses the other algebraic form
of the score interval, and the paired bootstrap is checked against the exact distribution
of the resampled mean (a trinomial over wins, losses and ties), not against a second bootstrap.
"""
from __future__ import annotations

import math
import re

Z95 = 1.959963984540054


# Printed percentages have one decimal: half a tenth of a point, plus float slack (18.8% for 0.1875).
HALF_POINT = 0.0005 + 1e-9

def graded(rows: list[dict]) -> list[dict]:
    last = {}
    for r in rows:  # the last line per problem counts (a retried error line is replaced)
        last[r["unique_id"]] = r
    return [r for r in last.values() if r.get("error") is None and r.get("correct") is not None]


def wilson_bounds(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """(k + z^2/2 -+ z sqrt(k (n - k) / n + z^2 / 4)) / (n + z^2)."""
    half = z * math.sqrt(k * (n - k) / n + z * z / 4)
    return max(0.0, (k + z * z / 2 - half) / (n + z * z)), min(1.0, (k + z * z / 2 + half) / (n + z * z))


def expected_summary(rows: list[dict]) -> dict:
    g = graded(rows)
    n = len(g)
    k = sum(1 for r in g if r["correct"] is True)
    tokens = sum(r["total_tokens_generated"] for r in g)
    oracle = sum(r["oracle_tokens"] for r in g)
    lo, hi = wilson_bounds(k, n)
    return {"n": n, "correct": k, "accuracy": k / n, "ci": (lo, hi), "oracle_share": oracle / tokens if tokens else 0.0,
            "mean_tokens": tokens / n, "truncated": sum(r["finish_reason"] == "length" for r in g) / n,
            "grade_timeouts": sum(bool(r.get("grade_timeout")) for r in g)}


def percent(cell: str) -> float:
    m = re.fullmatch(r"\s*(-?[\d.]+)%\s*", cell)
    assert m, f"not a percentage: {cell!r}"
    return float(m.group(1)) / 100


def table_rows(text: str) -> dict[str, dict[str, str]]:
    """A Markdown table (as `guided report` prints it) -> {first cell: {header: cell}}."""
    lines = text.splitlines()
    # the first header line followed by its |---| rule (other output, e.g. traces, may contain pipes)
    start = next(i for i in range(len(lines) - 1) if lines[i].startswith("| ") and lines[i + 1].startswith("|-"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    out = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[cells[0]] = dict(zip(header, cells))
    return out


def check_row(row: dict[str, str], rows: list[dict]) -> None:
    """A report table row (n, accuracy, 95% CI, oracle, and tokens, trunc where the table has them)
    against the raw rows. Printed percentages have one decimal: 0.05 points off at most."""
    e = expected_summary(rows)
    assert int(row["n"]) == e["n"]
    assert abs(percent(row["accuracy"]) - e["accuracy"]) <= HALF_POINT
    lo, hi = row["95% CI"].split("-")
    assert abs(percent(lo) - e["ci"][0]) <= HALF_POINT and abs(percent(hi) - e["ci"][1]) <= HALF_POINT
    assert abs(percent(row["oracle"]) - e["oracle_share"]) <= HALF_POINT
    if "tokens" in row:
        assert abs(float(row["tokens"]) - e["mean_tokens"]) <= 0.5
    if "trunc" in row:
        assert abs(percent(row["trunc"]) - e["truncated"]) <= HALF_POINT


def paired_verdicts(rows_a: list[dict], rows_b: list[dict]) -> tuple[list[bool], list[bool]]:
    a = {r["unique_id"]: r["correct"] for r in graded(rows_a)}
    b = {r["unique_id"]: r["correct"] for r in graded(rows_b)}
    shared = [u for u in a if u in b]
    return [a[u] for u in shared], [b[u] for u in shared]


def exact_bootstrap_quantiles(a: list[bool], b: list[bool], qs=(0.025, 0.975)) -> list[float]:
    """Quantiles of the mean of n draws (with replacement) of d = b - a: the limit a percentile
    bootstrap approaches as its resamples grow. d takes -1, 0, +1, so the sum is a trinomial."""
    n = len(a)
    plus = sum(y and not x for x, y in zip(a, b)) / n
    minus = sum(x and not y for x, y in zip(a, b)) / n
    pmf = [1.0]  # distribution of the sum, offset by the number of draws so far
    for _ in range(n):
        nxt = [0.0] * (len(pmf) + 2)
        for i, p in enumerate(pmf):
            nxt[i] += p * minus
            nxt[i + 1] += p * (1 - plus - minus)
            nxt[i + 2] += p * plus
        pmf = nxt
    out = []
    for q in qs:
        cdf = 0.0
        for i, p in enumerate(pmf):
            cdf += p
            if cdf >= q - 1e-12:
                out.append((i - n) / n)
                break
    return out


COMPARE = re.compile(r"shared problems: (\d+) .*\n.*\n.* - .*: ([+-][\d.]+) points, paired bootstrap 95% CI "
                     r"\[([+-][\d.]+), ([+-][\d.]+)\]\nright only in .*: (\d+), right only in .*: (\d+)")


def check_compare(text: str, rows_a: list[dict], rows_b: list[dict]) -> None:
    """`guided compare A B` output against the verdicts: shared n, B - A, the CI, the wins."""
    m = COMPARE.search(text)
    assert m, text
    shared, diff, lo, hi, a_wins, b_wins = m.groups()
    a, b = paired_verdicts(rows_a, rows_b)
    n = len(a)
    assert int(shared) == n
    assert float(diff) == round(100 * (sum(b) - sum(a)) / n, 1)
    assert int(a_wins) == sum(x and not y for x, y in zip(a, b))
    assert int(b_wins) == sum(y and not x for x, y in zip(a, b))
    exact_lo, exact_hi = exact_bootstrap_quantiles(a, b)
    # 10,000 resamples land within one step (1/n) of the exact quantiles, plus the printed rounding.
    assert abs(float(lo) / 100 - exact_lo) <= 1 / n + 0.0005, (lo, exact_lo)
    assert abs(float(hi) / 100 - exact_hi) <= 1 / n + 0.0005, (hi, exact_hi)
