"""Statistics and text tables over result rows: pure functions, no I/O.

    rows = latest(read_rows("out/run.jsonl"))
    s = summarize(rows, label="c20k10")        # accuracy, Wilson 95% CI, n, shares, tokens
    print(format_table([s]))
    cmp = compare(rows_a, rows_b)               # paired bootstrap on the shared problems

Conventions:
  - A row counts when ``correct`` is True/False; rows with an ``error`` (the backend
    failed) are counted apart, never as wrong.
  - ``latest`` keeps the last row per ``unique_id`` (a file may hold an error line and
    its retry when read mid-run).
  - Oracle share is token-weighted: sum of oracle tokens / sum of all tokens.
  - Truncated: ``finish_reason == "length"`` (the answer may have been cut off).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..intervals import paired_bootstrap, wilson


def latest(rows: list[dict]) -> list[dict]:
    """The last row per unique_id, in order of first appearance."""
    last: dict = {}
    for r in rows:
        last[r.get("unique_id")] = r
    return list(last.values())


def is_graded(row: dict) -> bool:
    return row.get("error") is None and row.get("correct") is not None


@dataclass(frozen=True)
class Summary:
    label: str
    n: int  # graded problems
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    errors: int
    grade_timeouts: int
    truncated: float  # share of graded rows cut at max_new_tokens
    oracle_share: float
    mean_tokens: float
    generation_s: float  # sum of per-problem generation time
    tokens_per_s: float
    c: int | None = None
    k: int | None = None
    policy: str | None = None


def summarize(rows: list[dict], label: str = "") -> Summary:
    graded = [r for r in rows if is_graded(r)]
    n = len(graded)
    correct = sum(1 for r in graded if r["correct"])
    lo, hi = wilson(correct, n)
    tokens = sum(r.get("total_tokens_generated") or 0 for r in graded)
    oracle = sum(r.get("oracle_tokens") or 0 for r in graded)
    gen_s = sum((r.get("timings") or {}).get("generation_s", 0.0) for r in graded)
    first = rows[0] if rows else {}
    return Summary(
        label=label, n=n, correct=correct, accuracy=correct / n if n else 0.0, ci_low=lo, ci_high=hi,
        errors=sum(1 for r in rows if r.get("error") is not None),
        grade_timeouts=sum(1 for r in graded if r.get("grade_timeout")),
        truncated=sum(1 for r in graded if r.get("finish_reason") == "length") / n if n else 0.0,
        oracle_share=oracle / tokens if tokens else 0.0, mean_tokens=tokens / n if n else 0.0,
        generation_s=gen_s, tokens_per_s=tokens / gen_s if gen_s > 0 else 0.0,
        c=first.get("c"), k=first.get("k"), policy=first.get("policy"))


def breakdown(rows: list[dict], key: str) -> list[tuple[object, Summary]]:
    """One Summary per value of ``key`` (e.g. level, subject), values sorted, None last."""
    groups: dict = {}
    for r in rows:
        groups.setdefault(r.get(key), []).append(r)
    order = sorted(groups, key=lambda v: (v is None, str(type(v)), v if v is not None else 0))
    return [(v, summarize(groups[v], label=str(v))) for v in order]


@dataclass(frozen=True)
class Comparison:
    shared: int  # problems graded in both
    only_a: int  # graded in A only (left out)
    only_b: int
    acc_a: float
    acc_b: float
    diff: float  # acc_b - acc_a on the shared problems
    ci_low: float
    ci_high: float
    a_wins: int  # right in A, wrong in B
    b_wins: int


def compare(rows_a: list[dict], rows_b: list[dict], *, n_boot: int = 10_000, seed: int = 0) -> Comparison:
    """Paired comparison of two runs on the problems both graded (by unique_id)."""
    a = {r["unique_id"]: bool(r["correct"]) for r in latest(rows_a) if is_graded(r)}
    b = {r["unique_id"]: bool(r["correct"]) for r in latest(rows_b) if is_graded(r)}
    ids = [u for u in a if u in b]
    va, vb = [a[u] for u in ids], [b[u] for u in ids]
    diff, lo, hi = paired_bootstrap(va, vb, n_boot=n_boot, seed=seed)
    n = len(ids)
    return Comparison(shared=n, only_a=len(a) - n, only_b=len(b) - n,
                      acc_a=sum(va) / n if n else 0.0, acc_b=sum(vb) / n if n else 0.0, diff=diff,
                      ci_low=lo, ci_high=hi, a_wins=sum(x and not y for x, y in zip(va, vb)),
                      b_wins=sum(y and not x for x, y in zip(va, vb)))


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


TABLE_HEADER = ("run", "n", "accuracy", "95% CI", "oracle", "tokens", "trunc", "err", "gen time", "tok/s")


def table_row(s: Summary) -> tuple[str, ...]:
    return (s.label, str(s.n), pct(s.accuracy), f"{pct(s.ci_low)}-{pct(s.ci_high)}", pct(s.oracle_share),
            f"{s.mean_tokens:.0f}", pct(s.truncated), str(s.errors), f"{s.generation_s:.0f}s",
            f"{s.tokens_per_s:.1f}")


def format_table(summaries: list[Summary], header: tuple[str, ...] = TABLE_HEADER, rows=None) -> str:
    """A Markdown table (readable as plain text too)."""
    body = rows if rows is not None else [table_row(s) for s in summaries]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


SWEEP_HEADER = ("k", "c", "policy", "n", "accuracy", "95% CI", "oracle share", "tokens", "trunc")


def sweep_table(results: list[tuple]) -> str:
    """The original tool's table (k, c, accuracy) with n, CI and oracle share, from (``sweep.SweepPoint``,
    Summary) pairs; baselines as 0/0 and inf/inf."""
    body = []
    for point, s in results:
        k, c = {"base": ("0", "0"), "oracle": ("∞", "∞")}.get(point.kind, (str(point.k), str(point.c)))
        body.append((k, c, point.policy, str(s.n), pct(s.accuracy), f"{pct(s.ci_low)}-{pct(s.ci_high)}",
                     pct(s.oracle_share), f"{s.mean_tokens:.0f}", pct(s.truncated)))
    return format_table([], header=SWEEP_HEADER, rows=body)


def format_breakdown(rows: list[dict], key: str) -> str:
    parts = breakdown(rows, key)
    body = [(str(v) if v is not None else "-", str(s.n), pct(s.accuracy), f"{pct(s.ci_low)}-{pct(s.ci_high)}",
             pct(s.oracle_share), pct(s.truncated)) for v, s in parts]
    return format_table([], header=(key, "n", "accuracy", "95% CI", "oracle", "trunc"), rows=body)


def format_comparison(c: Comparison, label_a: str = "A", label_b: str = "B") -> str:
    return (f"shared problems: {c.shared} (left out: {c.only_a} only in {label_a}, {c.only_b} only in {label_b})\n"
            f"{label_a}: {pct(c.acc_a)}   {label_b}: {pct(c.acc_b)}\n"
            f"{label_b} - {label_a}: {100 * c.diff:+.1f} points, paired bootstrap 95% CI "
            f"[{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}]\n"
            f"right only in {label_a}: {c.a_wins}, right only in {label_b}: {c.b_wins}")


COST_HEADER = ("run", "policy", "threshold", "target share", "realised share", "consults/problem",
               "oracle wrote", "oracle read", "rejected", "checked", "unchecked")


def target_share(rows: list[dict]) -> float | None:
    """The oracle share a calibrated run aimed at (from its threshold_source), else None."""
    source = ((rows[0].get("config") or {}).get("threshold_source") or "") if rows else ""
    if "target_share" not in source:
        return None
    try:
        return float(source.rsplit("target_share", 1)[1].split()[0])
    except (ValueError, IndexError):
        return None


def oracle_reads(rows: list[dict]) -> int:
    """Tokens the oracle read over these rows: with a token-exact handoff it reads the base's
    text before each consult, so this is guidance's cost beside what it wrote. From a row's cost
    record (prompt + catch-up + check) when it has one, else from its timings (prefill tokens)."""
    total = 0
    for r in rows:
        record = ((r.get("cost") or {}).get("oracle") or {}) if isinstance(r.get("cost"), dict) else {}
        parts = [record.get(k) for k in ("read_prompt", "read_catchup", "read_check")]
        if record and None not in parts:
            total += sum(parts)
        else:
            total += ((r.get("timings") or {}).get("oracle") or {}).get("prefill_tokens", 0)
    return total


def summed(rows: list[dict], key: str) -> str:
    """The sum of a per-row count, or "?" when a row does not record it (older files)."""
    values = [r.get(key) for r in rows]
    return "?" if not rows or any(v is None for v in values) else str(sum(values))


def cost_row(label: str, rows: list[dict]) -> tuple[str, ...]:
    """What a run's consults cost: realised oracle share beside its target, and for verify the
    oracle's reads beside its writes, the base tokens it rejected, the base tokens it checked and
    those written unchecked after the budget ran out ("?" where the file does not record them).
    For costs in a unit someone pays, see cost_report.py (``--cost``)."""
    graded = [r for r in rows if is_graded(r)]
    s = summarize(graded, label)
    config = (graded[0].get("config") or {}) if graded else {}
    wrote = sum(r.get("oracle_tokens") or 0 for r in graded)
    read = oracle_reads(graded)
    target = target_share(graded)
    threshold = config.get("threshold")
    return (label, str(config.get("policy", "-")), "-" if threshold is None else f"{threshold:.4g}",
            "-" if target is None else pct(target), pct(s.oracle_share),
            f"{sum(len(r.get('cheat_positions') or []) for r in graded) / len(graded):.1f}" if graded else "-",
            str(wrote), str(read), str(sum(r.get("rejected_tokens") or 0 for r in graded)),
            summed(graded, "checked_tokens"), summed(graded, "unchecked_tokens"))


def format_costs(runs: list[tuple[str, list[dict]]]) -> str:
    return format_table([], header=COST_HEADER, rows=[cost_row(label, rows) for label, rows in runs])
