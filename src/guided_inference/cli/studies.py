"""The study commands, offline readings of the base's signals: ``guided divergence``,
``guided prm800k``, ``guided router fit``; and the original tool's ``guided analyze`` and
``guided plots``.

    guided divergence --from_results results/math500-first100/math500_0.5B_1.5B_never_c0_k10.jsonl --output_file div.jsonl
    guided divergence --base_model 0.5B --oracle_model 1.5B --dataset math500 --num_samples 100 --output_file div.jsonl
    guided prm800k --base_model 0.5B --output_file prm.jsonl
    guided router fit --divergence_file train_div.jsonl --output_file router.json [--label disagree] [--eval_file div.jsonl]
    guided analyze --stats_file results_c20_k10.jsonl --output_file analysis.jsonl [--positions consults|all]
                   [--layers last|all] [--device cpu] [--verbose]
    guided plots --analysis_file analysis.jsonl --out_dir plots/

The library is ``study/`` (its tables in ``reporting/``). divergence, prm800k and router fit print
their table and write it as one section of ``--findings`` (default ``docs/findings.md``;
``--findings none`` skips). Bad input: one line, exit 2, before anything is written.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..config import ConfigError, GuidedError
from .flags import Parser, add_model_flags, flag

FINDINGS = "docs/findings.md"


def register(sub) -> None:
    from ..study.analyze import DEVICES, LAYERS, POSITIONS

    a = sub.add_parser("analyze", help="the original's statistics (logits and attention) at consult points")
    flag(a, "stats_file", required=True, help="a results file of guided eval")
    flag(a, "output_file", default=None, help="analysis JSONL (default <stats_file stem>_analysis.jsonl beside it)")
    flag(a, "positions", default="consults", help=f"one of {', '.join(POSITIONS)} (default consults)")
    flag(a, "layers", default="last", help=f"one of {', '.join(LAYERS)}: all adds per-layer, per-head attention "
                                           "entropy (default last)")
    flag(a, "device", default="cpu", help=f"one of {', '.join(DEVICES)} (default cpu)")
    flag(a, "base_model", default=None, help="the base model (default: the file's; must match its base_sha256)")
    flag(a, "verbose", action="store_true", help="print each line's mean statistics")
    flag(a, "no_progress", action="store_true", help="no progress bar")
    a.set_defaults(func=cmd_analyze)

    p = sub.add_parser("plots", help="PNG figures of an analysis file")
    flag(p, "analysis_file", required=True, help="an output file of guided analyze")
    flag(p, "out_dir", required=True, help="directory for the PNG files")
    flag(p, "entropy_threshold", type=float, default=None,
         help="entropix quadrant line in bits (default: the file's entropix policy, else that policy's default)")
    flag(p, "varentropy_threshold", type=float, default=None,
         help="entropix quadrant line (default: the file's entropix policy, else that policy's default)")
    flag(p, "traces", type=int, default=4, help="traces drawn along the generated position (default 4)")
    p.set_defaults(func=cmd_plots)

    d = sub.add_parser("divergence", help="label each base token with the oracle's opinion (teacher forcing)")
    add_model_flags(d)
    flag(d, "from_results", default=None, help="a base-only results file (guided eval --policy never) to reuse")
    flag(d, "dataset", default=None, help="run the base first on this dataset (default math500; "
                                          "math means MATH test minus MATH-500)")
    flag(d, "num_samples", type=int, default=None, help="problems to label (default all; with --from_results its first N)")
    flag(d, "offset", type=int, default=0, help="skip this many problems first")
    flag(d, "max_new_tokens", type=int, default=None, help="tokens per problem of the base-only run (default 1024)")
    flag(d, "output_file", default=None, help="the divergence JSONL (resumable: finished problems are kept)")
    _findings_flags(d)
    d.set_defaults(func=cmd_divergence)

    p = sub.add_parser("prm800k", help="the base's statistics against PRM800K human step ratings")
    flag(p, "base_model", default="0.5B", help="base model: catalogue name, alias, or .gguf path")
    flag(p, "n_ctx", type=int, default=4096, help="context size")
    flag(p, "data_file", default=None, help="PRM800K stepwise parquet (default: the shipped phase-1 test file)")
    flag(p, "num_problems", type=int, default=None, help="only the first N problems (default all: 98 of the 101 have rated steps)")
    flag(p, "output_file", default=None, help="per-problem step statistics JSONL (resumable)")
    _findings_flags(p)
    p.set_defaults(func=cmd_prm800k)

    r = sub.add_parser("router", help="the learned router of policy learned")
    rsub = r.add_subparsers(dest="router_cmd", required=True, parser_class=Parser)
    f = rsub.add_parser("fit", help="fit a logistic-regression router on a divergence file")
    flag(f, "divergence_file", default=None, help="training divergence JSONL (problems outside the evaluation set)")
    flag(f, "output_file", default=None, help="the router JSON to write")
    flag(f, "label", default="disagree", help="what the router predicts: disagree or oracle_p_lt_0.1")
    flag(f, "eval_set", default="math500", help="dataset whose problems may not be trained on (default math500; none)")
    flag(f, "eval_file", default=None, help="a held-out divergence JSONL: print the router beside single statistics")
    _findings_flags(f)
    f.set_defaults(func=cmd_router_fit)


def _findings_flags(p) -> None:
    flag(p, "findings", default=FINDINGS, help=f"markdown file whose section gets the table (default {FINDINGS}; "
                                                "'none': do not write)")
    flag(p, "n_boot", type=int, default=1000, help="bootstrap resamples over problems for the CIs (default 1000)")


def _check_common(args) -> None:
    if not args.output_file:
        raise ConfigError("--output_file is required")
    if args.n_boot < 1:
        raise ConfigError(f"n_boot must be an integer >= 1, got {args.n_boot}")


def _publish(args, heading: str, body: str) -> None:
    print(f"## {heading}\n\n{body}")
    if args.findings and args.findings.lower() != "none":
        from ..reporting.study_tables import write_section

        write_section(args.findings, heading, body)
        print(f"(written to section '{heading}' of {args.findings})", file=sys.stderr)


def _command_line() -> str:
    # the `guided` script, or `python -m guided_inference.cli`
    return "guided " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith(("guided", "cli/__main__.py")) else ""


def _progress(i: int, n: int, line: dict) -> None:
    print(f"\rteacher-forced {i}/{n} ({line['unique_id']}, {line['n']} tokens, {line['teacher_force_s']:.1f} s)",
          end="" if i < n else "\n", file=sys.stderr, flush=True)


def _base_only_run(args, pair, output: Path) -> tuple[list[dict], str]:
    """Run the base alone (policy never) on the selected problems into ``<output>.base.jsonl``;
    (its rows, the source named in the divergence lines)."""
    from ..config import GenerationConfig
    from ..evaluation.runner import EVAL_MAX_NEW_TOKENS, EvalSettings, run_eval
    from ..render import render_trace
    from ..tasks import get_task
    from ..tasks.selection import held_out_split

    task = get_task(args.dataset or "math500")
    problems = held_out_split(task)  # for math: MATH test minus MATH-500, subjects mixed
    problems = problems[args.offset:][: args.num_samples] if args.num_samples else problems[args.offset:]
    if not problems:
        raise ConfigError(f"the selection is empty (dataset {task.name}, offset {args.offset})")
    config = GenerationConfig(policy="never", c=0, max_new_tokens=args.max_new_tokens or EVAL_MAX_NEW_TOKENS)
    base_file = output.with_suffix(".base.jsonl")
    run_eval(task, problems, pair, config, EvalSettings(base_file, progress=False), show=render_trace)
    from ..evaluation.results import read_rows

    ids = {p.unique_id for p in problems}
    return [r for r in read_rows(base_file) if r["unique_id"] in ids and r.get("error") is None], str(base_file)


def cmd_divergence(args) -> int:
    from ..evaluation.results import ResultsError, read_rows
    from ..model_pair import load_pair
    from ..evaluation.recorded import check_base_only
    from ..study.divergence import run_divergence, throughput
    from ..reporting.study_tables import divergence_report

    _check_common(args)
    if args.num_samples is not None and args.num_samples < 1:
        raise ConfigError(f"num_samples must be an integer >= 1, got {args.num_samples}")
    if args.offset < 0:
        raise ConfigError(f"offset must be an integer >= 0, got {args.offset}")
    if args.from_results and args.dataset:
        raise ConfigError(f"give --from_results or --dataset, not both (got {args.dataset!r})")
    rows = None
    if args.from_results:
        if not Path(args.from_results).is_file():
            raise GuidedError(f"results file not found: {args.from_results!r}")
        try:
            rows = [r for r in read_rows(args.from_results) if r.get("error") is None]
        except ResultsError as e:
            raise GuidedError(str(e)) from None
        rows = check_base_only(rows, args.from_results, base=None)  # before minutes of model loading
        rows = rows[args.offset:][: args.num_samples] if args.num_samples else rows[args.offset:]
    pair = load_pair(args.base_model, args.oracle_model, n_ctx=args.n_ctx)
    output = Path(args.output_file)
    if rows is None:
        rows, source = _base_only_run(args, pair, output)
    else:
        source = f"results {args.from_results}"
    rows = check_base_only(rows, args.from_results or source, pair.base)
    lines = run_divergence(rows, pair, output, source, progress=_progress)
    speed = throughput(lines)
    print(f"{output}: {len(lines)} problems; teacher forcing {speed['problems_per_min']:.2f} problems/min "
          f"({speed['tokens_per_s']:.1f} generated tokens/s, base + oracle prefill)", file=sys.stderr)
    _publish(args, "Divergence labels", divergence_report(lines, n_boot=args.n_boot, command=_command_line()))
    return 0


def cmd_prm800k(args) -> int:
    from ..backends import load_backend
    from ..study.prm800k import group_problems, load_steps, run_prm800k, shipped_parquet
    from ..reporting.study_tables import prm_report

    _check_common(args)
    path = args.data_file or shipped_parquet()
    problems = group_problems(load_steps(path))  # errors before the model loads
    if args.num_problems is not None:
        if args.num_problems < 1:
            raise ConfigError(f"num_problems must be an integer >= 1, got {args.num_problems}")
        problems = problems[: args.num_problems]
    base = load_backend(args.base_model, n_ctx=args.n_ctx, collect_stats=False)
    source = f"PRM800K phase1 test ({Path(path).name})"

    def progress(i, n, line):
        print(f"\rscored {i}/{n} problems ({len(line['steps'])} steps, {line['seconds']:.1f} s)",
              end="" if i < n else "\n", file=sys.stderr, flush=True)

    lines = run_prm800k(problems, base, Path(args.output_file), source, progress=progress)
    _publish(args, "PRM800K", prm_report(lines, n_boot=args.n_boot, command=_command_line()))
    return 0


def _eval_set_ids(name: str) -> set[str]:
    if name.lower() == "none":
        return set()
    from ..tasks import get_task

    return {p.unique_id for p in get_task(name).load()}


def cmd_router_fit(args) -> int:
    from ..router import fit_router, feature_matrix, save_router
    from ..evaluation.recorded import features_from_row, read_divergence
    from ..study.divergence import LABELS, label
    from ..reporting.study_tables import router_report

    _check_common(args)
    if args.label not in LABELS:
        raise ConfigError(f"label must be one of {', '.join(LABELS)}, got {args.label!r}")
    if not args.divergence_file:
        raise ConfigError("--divergence_file is required (guided divergence writes one)")
    rows = read_divergence(args.divergence_file)
    ids = [r["unique_id"] for r in rows]
    overlap = sorted(set(ids) & _eval_set_ids(args.eval_set))
    if overlap:
        raise GuidedError(f"{args.divergence_file!r} holds {len(overlap)} problem(s) of the evaluation set "
                          f"{args.eval_set} (e.g. {overlap[0]}): fit on problems outside it (default: MATH test "
                          "minus MATH-500, guided divergence --dataset math)")
    eval_rows = None
    if args.eval_file:
        eval_rows = read_divergence(args.eval_file)
        if (eval_rows[0].get("base_sha256"), eval_rows[0].get("oracle_sha256")) != \
                (rows[0].get("base_sha256"), rows[0].get("oracle_sha256")):
            raise GuidedError(f"{args.eval_file!r} comes from another model pair than {args.divergence_file!r} "
                              "(base/oracle sha256 differ)")
        shared = sorted(set(ids) & {r["unique_id"] for r in eval_rows})
        if shared:
            raise GuidedError(f"{args.eval_file!r} shares {len(shared)} problem(s) with the training file "
                              f"(e.g. {shared[0]}): held-out means disjoint")
    feats = [features_from_row(r) for r in rows]
    meta = {"training_problems": ids, "training_file": args.divergence_file, "eval_set_refused": args.eval_set,
            "base_model_id": rows[0].get("base_model_id"), "base_sha256": rows[0].get("base_sha256"),
            "oracle_model_id": rows[0].get("oracle_model_id"), "oracle_sha256": rows[0].get("oracle_sha256")}
    router = fit_router([feature_matrix(f) for f in feats], [label(f, args.label) for f in feats],
                        label=args.label, meta=meta)
    sha = save_router(router, args.output_file)
    print(f"{args.output_file}: router on {len(rows)} problems, {router.meta['n_tokens']} tokens, label "
          f"{args.label} (rate {100 * router.meta['positive_rate']:.1f}%), sha256 {sha[:12]}", file=sys.stderr)
    if eval_rows is not None:
        _publish(args, "Learned router", router_report(router, eval_rows, n_boot=args.n_boot,
                                                       command=_command_line(), train_source=args.divergence_file))
    return 0


def cmd_analyze(args) -> int:
    from ..study.analyze import AnalyzeSettings, run_analyze
    from ..reporting.analysis_summary import format_summary, position_groups, summarize_groups

    src = Path(args.stats_file)
    output = Path(args.output_file) if args.output_file else src.with_name(f"{src.stem}_analysis.jsonl")
    settings = AnalyzeSettings(stats_file=src, output_file=output, positions=args.positions, layers=args.layers,
                               device=args.device, base_model=args.base_model, verbose=args.verbose,
                               progress=not args.no_progress)
    if settings.device == "cuda":
        _require_cuda()
    outcome = run_analyze(settings)
    print(f"{output}: {outcome.ran} analysed, {outcome.skipped} resumed")
    groups = position_groups(outcome.rows)
    if not any(groups.values()):
        print("no positions analysed: the run has no consults (--positions all analyses every generated position)")
    else:
        print(format_summary(summarize_groups(groups)))
    return 0


def _require_cuda() -> None:
    try:
        import torch
    except ImportError:
        raise GuidedError("device cuda needs torch: pip install -e '.[analysis]'") from None
    if not torch.cuda.is_available():
        raise ConfigError("device 'cuda' is not available on this machine; use --device cpu")


def cmd_plots(args) -> int:
    from ..evaluation.results import read_rows
    from ..reporting.analysis_plots import write_plots

    path = Path(args.analysis_file)
    if not path.is_file():
        raise GuidedError(f"analysis_file {str(path)!r} does not exist; give an output file of guided analyze")
    if args.traces < 0:
        raise ConfigError(f"traces must be an integer >= 0, got {args.traces}")
    rows = read_rows(path)
    bad = next((i for i, r in enumerate(rows, 1) if "analysis_result" not in r), None)
    if not rows or bad is not None:
        where = f"{path}:{bad} has no analysis_result" if rows else f"{path} has no lines"
        raise GuidedError(f"{where}; give an output file of guided analyze")
    written = write_plots(rows, Path(args.out_dir), entropy_threshold=args.entropy_threshold,
                          varentropy_threshold=args.varentropy_threshold, traces=args.traces)
    for f in written:
        print(f)
    if not written:
        print(f"no figures: {path} has no analysed positions (a run without consults? try analyze --positions all)")
    return 0
