"""The evaluation commands: eval, sweep, report, compare, grade.

    guided eval --dataset math500 --num_samples 100 --c 20 --k 10 --output_file out/c20k10.jsonl
    guided sweep --c 0,5,10,20,50 --k 5,10 --policy random --dataset math500 --num_samples 100 --out_dir DIR
    guided report out/*.jsonl                  # table (+ level/subject breakdowns for one file)
    guided report --html report.html out/*.jsonl
    guided compare out/base.jsonl out/c20k10.jsonl
    guided grade out/c20k10.jsonl              # re-grade in place
    guided report --cost compute,api --plot cost.png out/*.jsonl   # cost beside accuracy (cost_report.py)

The library they call is ``evaluation/`` (runner, results, sweep) and ``reporting/`` (report, cost_report, plots, html).
Bad values raise GuidedError with a one-line message (exit 2). ``eval`` exits 1 when some
problems failed with a backend error: they are recorded as ``error`` lines and retried by
rerunning.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ConfigError, GuidedError
from ..evaluation.runner import EVAL_MAX_NEW_TOKENS
from ..render import render_trace
from ..tasks import DATASETS, common_defaults, get_task, task_for_file, with_prompt
from ..tasks.selection import Selection, parse_int_list, parse_shard, parse_str_list, read_ids
from .flags import add_generation_flags, add_model_flags, add_prompt_flags, flag, generation_config


def register(sub) -> None:
    e = sub.add_parser("eval", help="evaluate a base/oracle pair on a dataset (resumable JSONL)")
    add_model_flags(e)
    add_generation_flags(e)
    _run_flags(e)
    flag(e, "output_file", default=None, help="results JSONL (default out/<dataset>_<base>_<oracle>_<policy>_c_k.jsonl)")
    flag(e, "target_share", type=float, default=None,
         help="calibrate the policy's threshold to this oracle share first (cached in calibration/), then run")
    e.set_defaults(func=cmd_eval, make_config=generation_config)

    s = sub.add_parser("sweep", help="run a grid of (k, c) budgets, then print the table and plot", conflict_handler="resolve")
    add_model_flags(s)
    add_generation_flags(s)
    _run_flags(s)
    flag(s, "c", default="0,5,10,20,50", help="comma-separated consult budgets (default 0,5,10,20,50)")
    flag(s, "k", default="5,10", help="comma-separated oracle tokens per consult (default 5,10)")
    flag(s, "out_dir", default=None, help="directory for one results file per point (default sweeps/<dataset>)")
    flag(s, "no_baselines", action="store_true", help="skip base-only (c=0) and oracle-only (policy always) runs")
    flag(s, "plot", default=None, help="PNG path of accuracy vs oracle share (default <out_dir>/sweep.png); "
                                     "with --cost also <plot>_cost.png, accuracy against normalized cost")
    add_cost_flags(s)
    s.set_defaults(func=cmd_sweep, make_config=generation_config)

    r = sub.add_parser("report", help="accuracy table (and --html page) for result files")
    r.add_argument("files", nargs="+", help="results JSONL files (one run each, unless --merge)")
    flag(r, "html", default=None, help="write one self-contained HTML page here")
    flag(r, "by", default=None, help="breakdowns: comma list of level,subject or none (default: both for one file)")
    flag(r, "merge", action="store_true", help="pool all files into one run (e.g. shards)")
    flag(r, "analysis_file", default=None, help="with --html: add the statistics and plots of a guided analyze file")
    flag(r, "plot", default=None, help="PNG of accuracy against normalized cost, one panel per cost model of --cost "
                                       "(default: tokens, compute, gpu, api, and cpu with --rates)")
    add_cost_flags(r)
    r.set_defaults(func=cmd_report)

    c = sub.add_parser("compare", help="paired comparison of two result files on their shared problems")
    c.add_argument("a", help="results JSONL file of run A")
    c.add_argument("b", help="results JSONL file of run B (the difference is B - A)")
    flag(c, "n_boot", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    flag(c, "seed", type=int, default=0, help="bootstrap seed (default 0)")
    add_cost_flags(c)
    c.set_defaults(func=cmd_compare)

    g = sub.add_parser("grade", help="re-grade result files in place (atomic)")
    g.add_argument("files", nargs="+", help="results JSONL files, rewritten in place")
    flag(g, "grade_timeout", type=float, default=10.0, help="seconds per problem; a timeout counts as wrong")
    g.set_defaults(func=cmd_grade)


def add_cost_flags(p) -> None:
    from ..reporting.cost_report import add_cost_flags as add

    add(p, flag)


def _run_flags(p) -> None:
    for action in p._actions:  # eval's own default, in place of GenerationConfig's
        if action.dest == "max_new_tokens":
            action.help = f"max tokens generated per problem (default {EVAL_MAX_NEW_TOKENS} for eval, or the data file's)"
    flag(p, "dataset", default=None, help=f"one of {', '.join(DATASETS)} (default math500)")
    flag(p, "data", default=None, help="a JSONL file instead: problem/answer fields, or the Meta evals format")
    flag(p, "num_samples", type=int, default=None, help="problems to run (default all selected)")
    flag(p, "offset", type=int, default=0, help="skip this many selected problems first")
    flag(p, "levels", default=None, help="comma-separated levels, e.g. 1,2,3")
    flag(p, "subjects", default=None, help="comma-separated subjects, e.g. algebra,number_theory")
    flag(p, "shard", default=None, help="i/n: the i-th of n disjoint shards (1-based)")
    flag(p, "ids", default=None, help="a file of unique_ids, one per line: exactly those problems, in that order "
                                      "(e.g. results/heldout/math_heldout_ids.txt), before the other filters")
    add_prompt_flags(p)
    flag(p, "concurrency", type=int, default=1, help="problems in flight (HTTP backends only)")
    flag(p, "grade_timeout", type=float, default=10.0, help="grading seconds per problem; a timeout counts as wrong")
    flag(p, "verbose", action="store_true", help="print each coloured trace (oracle blue, base red)")
    flag(p, "no_progress", action="store_true", help="no progress bar")


def load_selection(args):
    """(task, selected problems, file defaults) from the dataset/selection flags; errors before any model loads."""
    if args.data and args.dataset:
        raise ConfigError(f"give --dataset or --data, not both (got {args.dataset!r} and {args.data!r})")
    task = task_for_file(args.data) if args.data else get_task(args.dataset or "math500")
    task = with_prompt(task, args)
    problems = task.load()
    selection = Selection(
        num_samples=args.num_samples, offset=args.offset,
        levels=parse_int_list("levels", args.levels, minimum=1) if args.levels else None,
        subjects=parse_str_list("subjects", args.subjects) if args.subjects else None,
        shard=parse_shard(args.shard) if args.shard else None,
        ids=read_ids(args.ids) if args.ids else None)
    chosen = selection.apply(problems)
    if not chosen:
        raise ConfigError(f"the selection is empty ({len(problems)} problems before filters, offset {args.offset})")
    return task, chosen, common_defaults(chosen), selection


def _dataset_label(task, args) -> str:
    """The dataset part of a default output name; an id file's stem and the hash of its ids
    join it (a held-out run must not resume the file of a run over the dataset's first problems,
    nor two id files of the same name each other's)."""
    if not args.ids:
        return task.name
    import hashlib

    digest = hashlib.sha256("\n".join(read_ids(args.ids)).encode()).hexdigest()[:8]
    return f"{task.name}_{Path(args.ids).stem}-{digest}"


def _apply_defaults(args, file_defaults: dict) -> None:
    """Flags the user did not give take the data file's defaults, then the eval default."""
    for name, value in file_defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    if args.max_new_tokens is None:
        args.max_new_tokens = EVAL_MAX_NEW_TOKENS


def _settings(args, output: Path):
    from ..evaluation.runner import EvalSettings

    return EvalSettings(output_file=output, concurrency=args.concurrency, grade_timeout_s=args.grade_timeout,
                        verbose=args.verbose, progress=not args.no_progress)


def _load_pair(args, config):
    from ..model_pair import load_pair

    pair = load_pair(args.base_model, args.oracle_model, n_ctx=args.n_ctx)
    if getattr(args, "calibration", None):
        from ..replay import check_calibration_models

        check_calibration_models(args.calibration, pair.base, pair.oracle)
    return pair


def calibrate_first(args) -> None:
    """``eval --target_share t``: use (or make, then cache) the calibration for this policy,
    budget and base, on the default calibration split (MATH test minus MATH-500). The
    base-only traces go to ``calibration/base-only_<base>_math_first100_max<T>.jsonl``, which
    every later policy and budget with that base, limit and prompt replays instead of re-running."""
    if getattr(args, "target_share", None) is None:
        return
    if args.calibration:
        raise ConfigError("give --target_share or --calibration, not both")
    from ..evaluation.calibrate import CAL_NUM_SAMPLES
    from .calibrate import cmd_calibrate

    c = args.c if args.c is not None else 5
    k = args.k if args.k is not None else 10
    base = Path(args.base_model).name
    name = f"{args.policy}_c{c}_k{k}_share{args.target_share:g}_{base}"
    task = with_prompt(get_task("math"), args)
    prompt = ""
    if task.template_id != get_task("math").template_id or task.system:  # another prompt: its own files
        import hashlib

        prompt = "_prompt" + hashlib.sha256(f"{task.template_id}|{task.system}".encode()).hexdigest()[:8]
    path = Path("calibration") / f"{name}{prompt}.json"
    if not path.exists():
        cal = argparse.Namespace(**vars(args))
        cal.dataset, cal.num_samples, cal.offset, cal.data, cal.from_results = None, None, 0, None, None
        cal.from_divergence = None
        # One base-only run per base model, limit and prompt, shared by every policy and budget:
        # the traces do not depend on them, and the run is the costly part (~1.5 core-hours).
        limit = args.max_new_tokens or EVAL_MAX_NEW_TOKENS
        cal.base_file = str(Path("calibration") / f"base-only_{base}_math_first{CAL_NUM_SAMPLES}_max{limit}{prompt}.jsonl")
        cal.output_file = str(path)
        cmd_calibrate(cal)
    args.calibration = str(path)


def cmd_eval(args) -> int:
    from ..reporting.report import format_table, latest, summarize
    from ..evaluation.runner import run_eval
    from ..evaluation.sweep import run_name

    task, problems, defaults, selection = load_selection(args)
    _apply_defaults(args, defaults)
    calibrate_first(args)
    config = args.make_config(args)
    output = Path(args.output_file) if args.output_file else Path("out") / run_name(
        _dataset_label(task, args), args.base_model, args.oracle_model, config.policy, config.c, config.k, selection.shard)
    settings = _settings(args, output)
    pair = _load_pair(args, config)
    outcome = run_eval(task, problems, pair, config, settings, show=render_trace)
    s = summarize(latest(outcome.rows), output.stem)
    print(format_table([s]))
    print(f"{output}: {outcome.ran} run, {outcome.skipped} resumed, {outcome.retried} retried; "
          f"{s.errors} error(s), {s.grade_timeouts} grading timeout(s), {100 * s.truncated:.1f}% truncated")
    return 1 if s.errors else 0


def cmd_sweep(args) -> int:
    from ..reporting.cost_report import cost_settings, oracle_run, print_costs
    from ..reporting.plots import accuracy_vs_share
    from ..reporting.report import latest, summarize, sweep_table
    from ..evaluation.runner import run_eval
    from ..evaluation.sweep import run_name, sweep_points

    cs = parse_int_list("c", args.c, minimum=0)
    ks = parse_int_list("k", args.k, minimum=1)
    settings = cost_settings(args)
    given = oracle_run(args, _read)
    task, problems, defaults, selection = load_selection(args)
    _apply_defaults(args, defaults)
    base_config = _config_at(args, c=None, k=ks[0], policy=args.policy)  # validates the shared flags early
    out_dir = Path(args.out_dir or Path("sweeps") / task.name.replace(":", "-"))
    pair = _load_pair(args, base_config)
    results, runs = [], []
    for point in sweep_points(cs, ks, args.policy or base_config.policy, baselines=not args.no_baselines):
        config = _config_at(args, c=point.c, k=point.k, policy=point.policy)
        path = out_dir / run_name(_dataset_label(task, args), args.base_model, args.oracle_model, point.policy,
                                  config.c, config.k, selection.shard)
        print(f"== {point.kind}: policy {point.policy}, c {config.c}, k {config.k} -> {path}", file=sys.stderr)
        outcome = run_eval(task, problems, pair, config, _settings(args, path), show=render_trace)
        results.append((point, summarize(latest(outcome.rows), path.stem)))
        runs.append((path.stem, latest(outcome.rows)))
    print(sweep_table(results))
    print_costs(runs, settings, given)
    plot = Path(args.plot) if args.plot else out_dir / "sweep.png"
    plot.parent.mkdir(parents=True, exist_ok=True)
    title = f"{task.name}, {args.base_model} + {args.oracle_model}, n={len(problems)}"
    plot.write_bytes(accuracy_vs_share([(p.kind, s, f"k{p.k} c{p.c}") for p, s in results], title=title))
    print(f"plot: {plot}")
    if settings:
        from ..reporting.cost_report import cost_panels, pick_oracle
        from ..reporting.plots import accuracy_vs_cost

        cost_plot = plot.with_name(plot.stem + "_cost.png")
        cost_plot.write_bytes(accuracy_vs_cost(cost_panels(runs, settings, pick_oracle(runs, given)), title=title))
        print(f"cost plot: {cost_plot}")
    return 0


def _config_at(args, *, c, k, policy):
    ns = argparse.Namespace(**vars(args))
    ns.c, ns.k, ns.policy = c, k, policy
    return ns.make_config(ns)


def _read(files: list[str]) -> list[tuple[str, list[dict]]]:
    from ..evaluation.results import read_rows

    return [(Path(f).stem, read_rows(f)) for f in files]


def cmd_report(args) -> int:
    from ..reporting.cost_report import cost_settings, oracle_run, print_costs
    from ..reporting.report import format_breakdown, format_costs, format_table, latest, summarize

    keys = None  # default: both breakdowns for one file, none for several
    if args.by is not None:  # checked before any file is read or anything printed
        keys = [] if args.by == "none" else list(parse_str_list("by", args.by))
        for key in keys:
            if key not in ("level", "subject"):
                raise ConfigError(f"by must be a comma list of level, subject, or none; got {key!r}")
    analysis = _analysis(args)
    settings = cost_settings(args, plot=bool(args.plot))
    given = oracle_run(args, _read)
    runs = _read(args.files)
    if args.merge:
        runs = [("+".join(label for label, _ in runs), [r for _, rows in runs for r in rows])]
    runs = [(label, latest(rows)) for label, rows in runs]
    summaries = [summarize(rows, label) for label, rows in runs]
    print(format_table(summaries))
    for s in summaries:  # a timeout is graded wrong: say how many of the wrong answers it accounts for
        if s.grade_timeouts:
            print(f"{s.label}: {s.grade_timeouts} grading timeout(s), counted as wrong")
    print("\nconsult cost (oracle wrote = tokens in the result; oracle read = its prompt, catch-up and checks; "
          "checked / unchecked = base tokens the oracle checked / written after the budget ran out; ? = not recorded):")
    print(format_costs(runs))
    if args.cost is not None:
        print_costs(runs, settings, given)
    if keys is None:
        keys = ["level", "subject"] if len(runs) == 1 else []
    for key in keys:
        for label, rows in runs:
            if any(r.get(key) is not None for r in rows):
                print(f"\n{label} by {key}:\n{format_breakdown(rows, key)}")
    costs = None
    if settings:
        from ..reporting.cost_report import pick_oracle

        costs = (settings if args.cost is not None else [], pick_oracle(runs, given))
    if args.plot:
        from ..reporting.cost_report import cost_panels
        from ..reporting.plots import accuracy_vs_cost

        Path(args.plot).write_bytes(accuracy_vs_cost(cost_panels(runs, settings, costs[1])))
        print(f"plot: {args.plot}")
    if args.html:
        from ..reporting.html import render_html

        Path(args.html).write_text(render_html(runs, analysis=analysis, costs=costs), encoding="utf-8")
        print(f"html: {args.html}")
    return 0


def _analysis(args) -> tuple[str, list[dict]] | None:
    """(label, rows) of --analysis_file, checked before anything is written."""
    if not args.analysis_file:
        return None
    if not args.html:
        raise ConfigError(f"--analysis_file {args.analysis_file!r} needs --html (the plots go on the page)")
    (label, rows), = _read([args.analysis_file])
    if not rows or any("analysis_result" not in r for r in rows):
        raise GuidedError(f"{args.analysis_file} is not an output file of guided analyze (no analysis_result)")
    return label, rows


def cmd_compare(args) -> int:
    from ..reporting.cost_report import cost_settings, oracle_run, print_costs
    from ..reporting.report import compare, format_comparison, is_graded, latest

    if args.n_boot < 100:
        raise ConfigError(f"n_boot must be an integer >= 100, got {args.n_boot}")
    settings = cost_settings(args)
    given = oracle_run(args, _read)
    (la, ra), (lb, rb) = _read([args.a, args.b])
    result = compare(ra, rb, n_boot=args.n_boot, seed=args.seed)
    if result.shared == 0:
        raise GuidedError(f"{args.a} and {args.b} share no graded problems (same dataset and selection?)")
    print(format_comparison(result, la, lb))
    if settings:  # costs on the problems both runs graded, so the ratio compares like with like
        from ..reporting.cost_report import cost_lines, format_cost_ratio, pick_oracle

        ids = set.intersection(*({r["unique_id"] for r in latest(rows) if is_graded(r)} for rows in (ra, rb)))
        runs = [(label, [r for r in latest(rows) if r["unique_id"] in ids]) for label, rows in ((la, ra), (lb, rb))]
        print_costs(runs, settings, given)
        for s in settings:
            a, b = cost_lines(runs, s, pick_oracle(runs, given))
            print(f"{s.model}: {format_cost_ratio(a, b)}")
    return 0


def cmd_grade(args) -> int:
    from ..evaluation.runner import regrade

    if args.grade_timeout <= 0:
        raise ConfigError(f"grade_timeout must be a number of seconds > 0, got {args.grade_timeout}")
    for f in args.files:
        if not Path(f).is_file():
            raise GuidedError(f"results file {f} does not exist")
        n, changed = regrade(Path(f), timeout_s=args.grade_timeout)
        print(f"{f}: re-graded {n} row(s), {changed} verdict(s) changed")
    return 0
