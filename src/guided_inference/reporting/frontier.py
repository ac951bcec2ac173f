"""Where a run stands against the straight line between base and oracle, under one cost model,
with paired bootstrap CIs, and whether it is worth running instead of the oracle alone. Pure.

    point = line_point(run_rows, base_rows, oracle_rows, CostSettings("gpu"))
    point.cost, point.gap, point.gap_ci, point.vs_oracle, point.vs_oracle_ci, verdict(point)

The straight line: answering a fraction t of the problems with the oracle and the rest with the
base costs B + t (1 - B) of the oracle alone (B: the base's cost, normalized) and scores
acc_base + t (acc_oracle - acc_base). A run of normalized cost R is compared with the line at
t = (R - B) / (1 - B), clipped to [0, 1] (a run dearer than the oracle meets the oracle's
accuracy). ``gap`` = the run's accuracy minus the line's there.

Every figure is on the problems graded in all three runs. The CIs are percentile intervals over
``n_boot`` resamples of those problems, each resample recomputing both accuracies, the run's and
the base's normalized costs and so the line itself (paired: one index draw for all three runs).
Costs come from ``costs.row_cost`` per problem. Under ``tokens`` a run's cost is the oracle
tokens it wrote over those the oracle alone wrote on the same problems (so the base is at 0, and
a literal base/oracle mix lands on the line, which a written *share* would not). A run whose cost
is unknown under the model gets ``cost=None``; one that cannot run there (api for a checking
policy), ``cost=NA``; when only the base's cost is unknown, the run keeps its cost and the line
is None.

``verdict`` gives no answer below ``MIN_N`` problems: with few problems the paired CI against
the oracle is wide enough to hold 0 for a run that lost a third of its answers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .costs import NA, CostSettings, row_cost
from .report import is_graded, latest


@dataclass(frozen=True)
class LinePoint:
    n: int
    accuracy: float
    cost: float | str | None  # normalized to the oracle alone; NA; None = unknown
    base_cost: float | None
    line: float | None  # the straight line's accuracy at ``cost``
    gap: float | None  # accuracy - line
    gap_ci: tuple[float, float] | None
    vs_oracle: float  # accuracy - the oracle's, on the same problems
    vs_oracle_ci: tuple[float, float]


def _line(acc_r, acc_b, acc_o, r, b):
    t = np.where(b < 1, np.clip((r - b) / np.where(b < 1, 1 - b, 1), 0.0, 1.0), 1.0)
    line = acc_b + (acc_o - acc_b) * t
    return line, acc_r - line


MIN_N = 50  # problems below which verdict() says "too few"


def _costs(rows: list[dict], s: CostSettings):
    """Per-problem costs as an array, or NA / None for the run (any NA / unknown row)."""
    values = [r.get("oracle_tokens") for r in rows] if s.model == "tokens" else [row_cost(r, s) for r in rows]
    if any(v == NA for v in values):
        return NA
    if any(v is None for v in values):
        return None
    return np.array(values, float)


def _normalized(costs, oracle_costs, idx):
    """Normalized cost of each resample (rows of ``idx``): run total / oracle total."""
    return costs[idx].sum(axis=-1) / np.maximum(oracle_costs[idx].sum(axis=-1), 1e-300)


def line_point(run: list[dict], base: list[dict], oracle: list[dict], s: CostSettings, *,
               n_boot: int = 10_000, seed: int = 0) -> LinePoint | None:
    """The run against the base-oracle line under ``s`` (None: no problem graded in all three)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    by = [{r["unique_id"]: r for r in latest(rows) if is_graded(r)} for rows in (run, base, oracle)]
    ids = sorted(set(by[0]) & set(by[1]) & set(by[2]))
    if not ids:
        return None
    r_rows, b_rows, o_rows = ([m[i] for i in ids] for m in by)
    correct = np.array([[bool(x["correct"]) for x in rows] for rows in (r_rows, b_rows, o_rows)], float)
    n = len(ids)
    rng = np.random.default_rng(seed)
    idx_all = np.arange(n)[None, :]
    boot = rng.integers(0, n, size=(n_boot, n))
    acc = correct.mean(axis=1)
    diff = correct[0, boot].mean(axis=1) - correct[2, boot].mean(axis=1)
    vs_ci = (float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5)))
    point = dict(n=n, accuracy=float(acc[0]), vs_oracle=float(acc[0] - acc[2]), vs_oracle_ci=vs_ci)
    run_c, base_c, oracle_c = _costs(r_rows, s), _costs(b_rows, s), _costs(o_rows, s)
    unknown = dict(line=None, gap=None, gap_ci=None)
    if run_c is NA or run_c is None or oracle_c is None or oracle_c is NA or oracle_c.sum() <= 0:
        return LinePoint(cost=NA if run_c is NA else None, base_cost=None, **unknown, **point)
    r_all = float(_normalized(run_c, oracle_c, idx_all)[0])
    if base_c is NA or base_c is None:
        return LinePoint(cost=r_all, base_cost=None, **unknown, **point)
    b_all = float(_normalized(base_c, oracle_c, idx_all)[0])
    line, gap = _line(acc[0], acc[1], acc[2], np.array(r_all), np.array(b_all))
    r_boot, b_boot = _normalized(run_c, oracle_c, boot), _normalized(base_c, oracle_c, boot)
    _, gaps = _line(correct[0, boot].mean(axis=1), correct[1, boot].mean(axis=1), correct[2, boot].mean(axis=1),
                    r_boot, b_boot)
    gap_ci = (float(np.percentile(gaps, 2.5)), float(np.percentile(gaps, 97.5)))
    return LinePoint(cost=r_all, base_cost=b_all, line=float(line), gap=float(gap), gap_ci=gap_ci, **point)


VERDICTS = {
    "few": f"too few problems for a verdict (n < {MIN_N})",
    "none": "no figure under this model",
    "na": "cannot run there",
    "dearer": "no: costs at least the oracle alone",
    "lossless": "yes: cheaper, its loss to the oracle not significant",
    "above": "a trade: cheaper, significantly less accurate, above the line",
    "below": "no: below the line (mixing base and oracle answers does better)",
    "on": "no gain shown: on the line within its CI",
}


def verdict(p: LinePoint) -> str:
    """Whether to run this instead of the oracle alone, by one rule: cheaper (cost < 1) and the
    oracle's accuracy inside the paired CI -> yes; cheaper, worse, and the line's CI above 0 -> a
    trade above the line; the line's CI below 0 -> below it; else on it. Fewer than ``MIN_N``
    problems, or no line (the base's cost unknown) -> no verdict. Keys of ``VERDICTS``."""
    if p.cost is None:
        return "none"
    if p.cost == NA:
        return "na"
    if p.n < MIN_N:
        return "few"
    if p.cost >= 1.0:
        return "dearer"
    if p.gap is None:
        return "none"
    if p.vs_oracle_ci[1] >= 0:
        return "lossless"
    if p.gap_ci[0] > 0:
        return "above"
    if p.gap_ci[1] < 0:
        return "below"
    return "on"


def point_cells(p: LinePoint) -> tuple[str, str, str, str]:
    """``p`` as table cells: cost, accuracy - oracle [95% CI], accuracy - line [95% CI], verdict."""
    cost = "?" if p.cost is None else p.cost if isinstance(p.cost, str) else f"{p.cost:.2f}"
    vs = f"{100 * p.vs_oracle:+.1f} [{100 * p.vs_oracle_ci[0]:+.1f}, {100 * p.vs_oracle_ci[1]:+.1f}]"
    gap = "-" if p.gap is None else f"{100 * p.gap:+.1f} [{100 * p.gap_ci[0]:+.1f}, {100 * p.gap_ci[1]:+.1f}]"
    return cost, vs, gap, VERDICTS[verdict(p)]
