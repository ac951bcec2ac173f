"""The ``guided`` command: a thin layer that parses flags, builds configs, calls the library.

    guided generate --base_model 0.5B --oracle_model 1.5B --c 5 --k 10 --prompt "What is 2+2?" --verbose
    guided eval --dataset math500 --num_samples 100 --c 20 --k 10
    python -m guided_inference.cli ...          # the same, without the installed script

One module per command group, each with ``register(sub)`` that adds its subcommands and
``cmd_*`` functions that run them; all of them over ``flags.py`` (the shared flags), and
none imports another but ``evaluate`` -> ``calibrate`` (``eval --target_share`` calibrates
first). The library never imports this package. Errors print one line, ``error: ...``,
and exit with status 2.
"""
from __future__ import annotations

import sys

from .. import __version__
from ..config import GuidedError
from . import bench, calibrate, evaluate, generate, serve, studies
from .flags import Parser


def build_parser() -> Parser:
    p = Parser(prog="guided", description="Guided inference: a base model consults an oracle under a budget.")
    p.add_argument("--version", action="version", version=f"guided-inference {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    generate.register(sub)  # generate, policies, models, doctor
    bench.register(sub)  # bench rates
    calibrate.register(sub)  # calibrate
    evaluate.register(sub)  # eval, sweep, report, compare, grade
    studies.register(sub)  # divergence, prm800k, router fit, analyze, plots
    serve.register(sub)  # serve (FastAPI imported only when it runs)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except GuidedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


__all__ = ["build_parser", "main"]
