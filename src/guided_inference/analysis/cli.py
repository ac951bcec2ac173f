"""The analysis subcommands: analyze and plots.

    guided analyze --stats_file results_c20_k10.jsonl --output_file analysis.jsonl [--positions consults|all]
                   [--layers last|all] [--device cpu] [--verbose]
    guided plots --analysis_file analysis.jsonl --out_dir plots/

``register`` adds them to the main parser (``guided_inference/cli.py`` calls it). Bad values
raise GuidedError with a one-line message (exit 2) before anything is written.
"""
from __future__ import annotations

from pathlib import Path

from ..config import ConfigError, GuidedError


def register(sub, *, flag, **_) -> None:
    from .analyze import DEVICES, LAYERS, POSITIONS

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


def cmd_analyze(args) -> int:
    from .analyze import AnalyzeSettings, run_analyze
    from .summary import format_summary, position_groups, summarize_groups

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
    from .plots import write_plots

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
