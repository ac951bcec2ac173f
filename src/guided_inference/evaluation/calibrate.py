"""``guided calibrate``: base-only traces outside the evaluation set, teacher-forced once,
replayed through the policy itself to find the value of its calibrated field (a threshold,
``prefix_tokens``, ``ngram``, ``p``) that spends a target oracle share (``calibration.py``).

    guided calibrate --policy entropy --target_share 0.10 --c 20 --k 10 --base_model 0.5B \\
        --dataset math --num_samples 100 --output_file cal.json \\
        --dry_run_on results/math500-first100/divergence_0.5B_1.5B.jsonl
    guided calibrate --policy verify --target_share 0.10 --from_results base_only_math.jsonl --output_file cal.json

Default split: the MATH test set minus MATH-500 (problems whose ``unique_id`` is in
MATH-500 are dropped), in sha256(unique_id) order so that any prefix mixes subjects
(``tasks.selection.held_out_split``), its first ``CAL_NUM_SAMPLES`` (100) problems; problems
of MATH-500 itself are refused, as are results files that are not base-only. The base-only
run is an ordinary resumable results file (``<output_file>.base.jsonl`` unless
``--base_file``), so an interrupted calibration resumes and a second policy reuses it.

``--dry_run_on FILE`` (a base-only results file or a ``guided divergence`` file of the
*evaluation* set): after choosing the value, replay it on those traces and print the share it
would spend there, the drift that comes from the calibration set alone (no consult changes
the text in a replay); the calibration file records it under ``dry_run``. It is a flag, not
a lookup: the evaluation set's base-only traces live wherever its runs were written.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..calibration import (Recorded, calibration_record, check_calibratable, choose_value, realised_share,
                           recorded_from_features, write_calibration)
from ..config import ConfigError, GuidedError
from ..policies import POLICIES
from ..tasks import get_task
from ..tasks.selection import held_out_split, math500_ids
from .results import read_rows

CAL_NUM_SAMPLES = 100


def refuse_math500(rows: list[dict], path: str) -> list[dict]:
    """``rows`` unchanged, or a one-line error if any is a MATH-500 problem (the evaluation set)."""
    overlap = sorted({r["unique_id"] for r in rows} & math500_ids())
    if overlap:
        raise GuidedError(f"{path!r} holds {len(overlap)} MATH-500 problem(s) (e.g. {overlap[0]}): calibrate on "
                          "problems outside the evaluation set (default: MATH test minus MATH-500)")
    return rows


def base_only_rows(path: str, base, *, evaluation: bool = False) -> list[dict]:
    """Rows of a base-only results file; one-line errors for any other kind of file (and
    for MATH-500 problems, unless ``evaluation``: a dry run reads the evaluation set)."""
    try:
        rows = [r for r in read_rows(path) if r.get("error") is None]
    except FileNotFoundError:
        raise GuidedError(f"results file not found: {path!r}") from None
    if not rows or any("token_ids" not in r or "prompt" not in r for r in rows):
        raise GuidedError(f"{path!r} is not a results file with token ids (guided eval writes them)")
    bad = next((r for r in rows if r.get("oracle_tokens") or r.get("cheat_positions")), None)
    if bad is not None:
        raise GuidedError(f"{path!r} is not base-only: {bad['unique_id']} has oracle tokens "
                          f"(policy {bad.get('config', {}).get('policy')!r}); calibrate needs --policy never runs")
    if base.sha256 and rows[0].get("base_sha256") not in (None, base.sha256):
        raise GuidedError(f"{path!r} was made with base sha256 {rows[0]['base_sha256'][:12]}, "
                          f"this base {base.name!r} is {base.sha256[:12]}")
    return rows if evaluation else refuse_math500(rows, path)


def divergence_rows(path: str, pair, verify: bool, *, evaluation: bool = False) -> list[dict]:
    """Lines of a ``guided divergence`` file made with this base (and this oracle, for
    verify, which reads the oracle's scores), outside MATH-500."""
    from ..study.divergence import check_same_pair, read_divergence

    rows = read_divergence(path)
    check_same_pair(rows, pair.base, pair.oracle if verify else None, path)
    return rows if evaluation else refuse_math500(rows, path)


def run_base_only(args, pair, base_file: Path) -> list[dict]:
    from ..config import GenerationConfig
    from .cli import EVAL_MAX_NEW_TOKENS, _show, with_prompt
    from .runner import EvalSettings, run_eval

    task = with_prompt(get_task(args.dataset or "math"), args)
    if task.name == "math500":
        raise ConfigError("calibrate refuses --dataset math500: calibrate outside the evaluation set "
                          "(default: math, minus the MATH-500 problems)")
    problems = held_out_split(task)[args.offset:]
    problems = problems[: args.num_samples or CAL_NUM_SAMPLES]
    config = GenerationConfig(policy="never", c=0, max_new_tokens=args.max_new_tokens or EVAL_MAX_NEW_TOKENS,
                              seed=args.seed or 0)
    run_eval(task, problems, pair, config, EvalSettings(base_file, progress=not args.no_progress), show=_show)
    return base_only_rows(str(base_file), pair.base)


def is_divergence_file(path: str) -> bool:
    """Whether ``path``'s first line is a ``guided divergence`` line (else: a results file)."""
    import json

    try:
        with open(path) as f:
            first = f.readline()
        return json.loads(first).get("kind") == "divergence"
    except FileNotFoundError:
        raise GuidedError(f"file not found: {path!r}") from None
    except (ValueError, AttributeError):
        return False


def recorded_traces(rows: list[dict], pair, verify: bool, *, divergence: bool, what: str) -> list[Recorded]:
    """Replayable traces: divergence lines as they are (teacher-forced already), results rows
    teacher-forced now (the base's statistics; the oracle's scores for verify). Each token's
    bytes come from the base's tokenizer, so step boundaries are read anew from the text."""
    from ..prompts import prompt_ids
    from ..study.divergence import features_from_row
    from ..teacher import teacher_force, token_texts

    out = []
    for i, row in enumerate(rows):
        if divergence:
            feats = features_from_row(row)
        else:
            feats = teacher_force(pair.base, prompt_ids(pair.base, row["prompt"]), row["token_ids"],
                                  oracle=pair.oracle if verify else None)
        out.append(recorded_from_features(row["unique_id"], feats, token_texts(pair.base, [int(t) for t in feats.token_ids])))
        print(f"\r{what}: {'read' if divergence else 'teacher-forced'} {i + 1}/{len(rows)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    return out


def dry_run(path: str, pair, config, verify: bool) -> tuple[dict, list[Recorded]]:
    """The share the chosen value spends in a replay of the evaluation set's base-only traces."""
    div = is_divergence_file(path)
    rows = divergence_rows(path, pair, verify, evaluation=True) if div else base_only_rows(path, pair.base,
                                                                                           evaluation=True)
    recs = recorded_traces(rows, pair, verify, divergence=div, what=f"dry run {path}")
    share = realised_share(POLICIES[config.policy].build(config), config, recs)
    return {"file": path, "n_problems": len(recs), "share": share}, recs


def cmd_calibrate(args) -> int:
    from ..pair import load_pair

    if args.target_share is None or not (0.0 < args.target_share < 1.0):
        raise ConfigError(f"target_share must be a number in (0, 1), got {args.target_share!r}")
    if not args.output_file:
        raise ConfigError("--output_file is required (the calibration JSON)")
    from .cli import EVAL_MAX_NEW_TOKENS

    config = args.make_config(args)
    if args.max_new_tokens is None:  # the eval's limit, not generate's: the replay stops where the eval would
        config = config.replace(max_new_tokens=EVAL_MAX_NEW_TOKENS)
    check_calibratable(config)
    verify = config.consult_mode == "verify"
    out = Path(args.output_file)
    pair = load_pair(args.base_model, args.oracle_model if verify else args.base_model, n_ctx=args.n_ctx)
    if args.from_divergence:
        rows, source = divergence_rows(args.from_divergence, pair, verify), f"divergence {args.from_divergence}"
    elif args.from_results:
        rows, source = base_only_rows(args.from_results, pair.base), f"results {args.from_results}"
    else:
        base_file = Path(args.base_file) if args.base_file else out.with_suffix(".base.jsonl")
        rows, source = run_base_only(args, pair, base_file), f"base-only run {base_file}"
    recs = recorded_traces(rows, pair, verify, divergence=bool(args.from_divergence), what="calibration")
    value, share, curve = choose_value(config, recs, args.target_share)
    name = POLICIES[config.policy].calibrate
    chosen = config.replace(**{name: value})
    dry = dry_run(args.dry_run_on, pair, chosen, verify)[0] if getattr(args, "dry_run_on", None) else None
    record = calibration_record(config, args.target_share, value, share, curve, base=pair.base,
                                oracle=pair.oracle if verify else None, problem_ids=[r["unique_id"] for r in rows],
                                source=source, dry_run=dry)
    write_calibration(out, record)
    print(f"{out}: policy {config.policy}, {name} {value:.6g}, expected oracle share {100 * share:.1f}% "
          f"(target {100 * args.target_share:.1f}%) over {len(rows)} problems, c={config.c} k={config.k}")
    if dry is not None:
        print(f"dry run on {dry['file']} ({dry['n_problems']} base-only traces of the evaluation set): "
              f"{name} {value:.6g} spends {100 * dry['share']:.1f}% there")
    return 0


def register_calibrate(sub, *, add_model_flags, add_generation_flags, flag, generation_config) -> None:
    p = sub.add_parser("calibrate", help="the threshold at which a policy spends a target oracle share")
    add_model_flags(p)
    add_generation_flags(p)
    flag(p, "target_share", type=float, default=None, help="oracle-token share to aim at, in (0, 1)")
    flag(p, "from_results", default=None, help="a base-only results file (policy never) instead of running the base")
    flag(p, "from_divergence", default=None,
         help="a guided divergence file (statistics and oracle scores already teacher-forced) instead")
    flag(p, "dataset", default=None, help="dataset of the base-only run (default math, minus MATH-500)")
    flag(p, "num_samples", type=int, default=None, help=f"problems of the base-only run (default {CAL_NUM_SAMPLES})")
    flag(p, "offset", type=int, default=0, help="skip this many problems of the split first")
    flag(p, "base_file", default=None, help="where the base-only run goes (default <output_file>.base.jsonl)")
    from .cli import add_prompt_flags

    add_prompt_flags(p, flag)
    flag(p, "output_file", default=None, help="the calibration JSON to write")
    flag(p, "dry_run_on", default=None,
         help="base-only results or divergence file of the evaluation set: print the share the chosen value "
              "spends in a replay there")
    flag(p, "no_progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_calibrate, make_config=generation_config)
