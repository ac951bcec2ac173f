"""Cost beside accuracy: each run's cost under one cost model (costs.py), normalized to the
oracle-only run on the same problems (= 1.00). Pure functions over rows; no I/O.

    oracle = pick_oracle(runs, given)                  # (label, rows) or None
    print(format_cost_report(runs, settings, oracle))  # header line + table
    lines = cost_lines(runs, settings, oracle)         # the same, as records (plots, HTML)

Which run is the oracle-only run: the one given (``--oracle_run FILE``; its policy must be
``always``), else the first of the runs whose policy is ``always`` and whose answers hold no base
token. Each run is costed on the problems it shares with that run (graded in both), and its
accuracy and Wilson CI are given on the same problems. Without an oracle-only run the figures are
absolute, per problem, and the table says "not normalized".

The flags (``add_cost_flags``) are shared by ``guided report``, ``compare`` and ``sweep``:
--cost, --oracle_run, --rates, --gpu_bandwidth, --gpu_batch, --params, --price_in,
--price_cached, --price_out; ``cost_settings`` turns them into CostSettings.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError
from ..tasks.selection import parse_str_list
from .costs import (COST_MODELS, GPU_BANDWIDTH, GPU_BATCH, NA, CostSettings, RunCost, describe, parse_roles, policy_of,
                    run_cost)
from .report import Summary, format_table, is_graded, latest, pct, summarize

UNITS = {"tokens": "oracle share", "compute": "parameters x tokens", "cpu": "s", "gpu": "s (model)",
         "api": "price units"}
DERIVED_NOTE = ("* derived: the file has no cost record; counts rebuilt from its timings (prefill + decode tokens) "
                "and, for takeover runs, its segments (reporting/derived_costs.py)")


def is_oracle_only(rows: list[dict]) -> bool:
    graded = [r for r in rows if is_graded(r)]
    return bool(graded) and policy_of(graded[0]) == "always" and all(r.get("base_tokens") == 0 for r in graded)


def run_kind(rows: list[dict]) -> str:
    """"base" (base only), "oracle" (oracle only), "speculative", or "guided"."""
    first = rows[0] if rows else {}
    policy = policy_of(first)
    if policy == "speculative":  # its budget does not apply (unlimited checks), whatever c says
        return "speculative"
    if first.get("c") == 0 or policy == "never":
        return "base"
    return "oracle" if is_oracle_only(rows) else "guided"


def pick_oracle(runs: list[tuple[str, list[dict]]], given: tuple[str, list[dict]] | None = None):
    """(label, rows) of the oracle-only run, or None. A given run must be one (ConfigError)."""
    if given is not None:
        label, rows = given
        if not any(is_graded(r) for r in rows) or policy_of(next(r for r in rows if is_graded(r))) != "always":
            raise ConfigError(f"oracle_run {label!r} is not an oracle-only run (policy always, graded rows)")
        return label, latest(rows)
    return next(((label, latest(rows)) for label, rows in runs if is_oracle_only(latest(rows))), None)


@dataclass(frozen=True)
class CostLine:
    label: str
    kind: str
    policy: str
    summary: Summary  # accuracy on the costed problems
    cost: RunCost
    ratio: float | str | None  # cost / the oracle-only run's on the same problems; NA; None = unknown


def cost_lines(runs: list[tuple[str, list[dict]]], s: CostSettings,
               oracle: tuple[str, list[dict]] | None) -> list[CostLine]:
    oracle_graded = {r["unique_id"]: r for r in (oracle[1] if oracle else []) if is_graded(r)}
    out = []
    for label, rows in runs:
        rows = latest(rows)
        graded = [r for r in rows if is_graded(r)]
        if oracle is not None:
            graded = [r for r in graded if r["unique_id"] in oracle_graded]
        cost = run_cost(graded, s)
        ratio = None
        if cost.value == NA:
            ratio = NA
        elif oracle is not None and cost.value is not None:
            ref = run_cost([oracle_graded[r["unique_id"]] for r in graded], s)
            if ref.value not in (None, NA) and ref.value > 0:
                ratio = cost.value / ref.value
        first = graded[0] if graded else (rows[0] if rows else {})
        out.append(CostLine(label, run_kind(rows), policy_of(first) or "-", summarize(graded, label), cost, ratio))
    return out


def _number(value, derived: bool, fmt) -> str:
    if value is None:
        return "?"
    if value == NA:
        return NA
    return fmt(value) + ("*" if derived else "")


def _per_problem(model: str, value: float) -> str:
    return pct(value) if model == "tokens" else f"{value:.4g}"


def reference_line(s: CostSettings, oracle: tuple[str, list[dict]] | None) -> str:
    if oracle is None:
        return ("not normalized: no oracle-only run among the files (give --oracle_run FILE, a run with policy "
                "always); figures per problem")
    return f"normalized to the oracle-only run {oracle[0]} on the same problems (= 1.00)"


def cost_table(runs: list[tuple[str, list[dict]]], s: CostSettings, oracle: tuple[str, list[dict]] | None):
    """(lines above the table, header, body, lines below): the header line naming the cost model and
    its parameters, the reference; one row per run, accuracy and Wilson CI on the costed problems
    beside the normalized cost; the footnote when a figure is derived from old timings."""
    lines = cost_lines(runs, s, oracle)
    all_rows = [r for _, rows in runs for r in rows if is_graded(r)]
    header = ("run", "policy", "n", "accuracy", "95% CI",
              f"cost ({s.model}, " + ("not normalized)" if oracle is None else "oracle only = 1.00)"),
              f"per problem ({UNITS[s.model]})", "note")
    body = []
    for line in lines:
        c, sm = line.cost, line.summary
        note = c.why if c.value is None or c.value == NA else ""
        body.append((line.label, line.policy, str(sm.n), pct(sm.accuracy), f"{pct(sm.ci_low)}-{pct(sm.ci_high)}",
                     "-" if oracle is None and line.ratio is None else _number(line.ratio, c.derived, "{:.2f}".format),
                     _number(c.value, c.derived, lambda v: _per_problem(s.model, v)), note))
    below = [DERIVED_NOTE] if any(x.cost.derived and x.cost.value not in (None, NA) for x in lines) else []
    return [describe(s, all_rows), reference_line(s, oracle)], header, body, below


def format_cost_report(runs: list[tuple[str, list[dict]]], s: CostSettings,
                       oracle: tuple[str, list[dict]] | None) -> str:
    above, header, body, below = cost_table(runs, s, oracle)
    return "\n".join([*above, format_table([], header=header, rows=body), *below])


PANEL_TITLES = {"tokens": "tokens: oracle share of written tokens", "compute": "compute: parameters x tokens read+written",
                "cpu": "cpu: seconds at the measured rates", "api": "api: input/cached/output prices"}


def panel_title(s: CostSettings) -> str:
    if s.model == "gpu":
        return f"gpu (a model, not measured): {s.gpu_bandwidth / 1e9:,.0f} GB/s, one call per {s.gpu_batch} tokens"
    return PANEL_TITLES[s.model]


def cost_panels(runs: list[tuple[str, list[dict]]], settings: list[CostSettings],
                oracle: tuple[str, list[dict]] | None) -> list:
    """The panels of ``plots.accuracy_vs_cost``: one per cost model, one point per run (normalized
    cost when there is an oracle-only run, else the cost per problem)."""
    panels = []
    for s in settings:
        points = [(line.kind, line.label, line.ratio if oracle is not None else line.cost.value, line.summary)
                  for line in cost_lines(runs, s, oracle)]
        xlabel = ("cost, oracle only = 1.00" if oracle is not None
                  else f"cost per problem ({UNITS[s.model]}), not normalized")
        panels.append((panel_title(s), xlabel, points))
    return panels


def format_cost_ratio(a: CostLine, b: CostLine) -> str:
    """'B costs x.xx times A' under the model, or why it cannot be said."""
    va, vb = a.cost.value, b.cost.value
    if NA in (va, vb):
        return f"{b.label} / {a.label} cost: {NA} ({'A' if va == NA else 'B'} needs prompt log-probabilities)"
    if va is None or vb is None or va == 0:
        return f"{b.label} / {a.label} cost: ? (unknown for {'A' if va in (None, 0) else 'B'})"
    return f"{b.label} / {a.label} cost: {vb / va:.2f} on {b.summary.n} shared problems"


# --- the flags --------------------------------------------------------------------------------


def add_cost_flags(p, flag) -> None:
    """--cost and the cost models' parameters (costs.py), shared by report, compare and sweep."""
    flag(p, "cost", default=None, help=f"comma list of {', '.join(COST_MODELS)}, or all (cpu only with --rates): each "
                                       "run's cost under that model beside accuracy, normalized to the oracle-only run")
    flag(p, "oracle_run", default=None, help="the oracle-only results file to normalize to (policy always); default: "
                                             "a given file whose policy is always, else the figures are not normalized")
    flag(p, "rates", default=None, help="rates file of guided bench rates (needed by --cost cpu)")
    flag(p, "gpu_bandwidth", type=float, default=GPU_BANDWIDTH / 1e9,
         help=f"gpu model: GB/s streamed per forward call (default {GPU_BANDWIDTH / 1e9:g}, an H100's HBM3)")
    flag(p, "gpu_batch", type=int, default=GPU_BATCH,
         help=f"gpu model: tokens one forward call takes at the cost of one weight pass (default {GPU_BATCH})")
    flag(p, "params", default=None, help="parameter counts, base=N,oracle=N (default: published counts by model id)")
    flag(p, "price_in", default=None, help="api: input price per million tokens, X or base=X,oracle=Y "
                                           "(default: parameters in billions, an example)")
    flag(p, "price_cached", default=None, help="api: cached-input price (default 0.1 x input)")
    flag(p, "price_out", default=None, help="api: output price (default 4 x input)")


def cost_settings(args, *, plot: bool = False) -> list:
    """The CostSettings that --cost names (checked before anything is read or printed); with
    ``plot`` and no --cost, every model that can be computed."""
    from ..evaluation.rates import load_rates

    if args.cost is None and not plot:
        return []
    if args.cost in (None, "all"):
        names = [m for m in COST_MODELS if m != "cpu" or args.rates]
    else:
        names = list(parse_str_list("cost", args.cost))
        for name in names:
            if name not in COST_MODELS:
                raise ConfigError(f"cost must be a comma list of {', '.join(COST_MODELS)} or all; got {name!r}")
    if not args.gpu_bandwidth > 0:
        raise ConfigError(f"gpu_bandwidth must be a number of GB/s > 0, got {args.gpu_bandwidth}")
    rates = load_rates(args.rates) if args.rates else None
    common = dict(params=parse_roles("params", args.params), rates=rates, rates_file=args.rates,
                  gpu_bandwidth=args.gpu_bandwidth * 1e9, gpu_batch=args.gpu_batch,
                  price_in=parse_roles("price_in", args.price_in),
                  price_cached=parse_roles("price_cached", args.price_cached),
                  price_out=parse_roles("price_out", args.price_out))
    return [CostSettings(name, **common) for name in names]


def oracle_run(args, read):
    """(label, rows) of --oracle_run read with ``read`` (checked to be an oracle-only run), or None."""
    if not getattr(args, "oracle_run", None):
        return None
    given = read([args.oracle_run])[0]
    pick_oracle([], given)
    return given


def print_costs(runs, settings, given) -> None:
    oracle = pick_oracle(runs, given)
    for s in settings:
        print("\n" + format_cost_report(runs, s, oracle))
