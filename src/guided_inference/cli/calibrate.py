"""``guided calibrate``: the value of a policy's calibrated field (a threshold,
``prefix_tokens``, ``ngram``, ``p``) that spends a target oracle share.

    guided calibrate --policy entropy --target_share 0.10 --c 20 --k 10 --base_model 0.5B \\
        --dataset math --num_samples 100 --output_file cal.json
    guided calibrate --policy verify --target_share 0.10 --from_results base_only_math.jsonl --output_file cal.json
    guided calibrate --policy top_prob --target_share 0.10 --transductive \\
        --from_divergence results/math500-first100/divergence_0.5B_1.5B.jsonl --output_file cal.json

``--transductive`` sets the budget on the evaluation set's own base-only traces (their text, no
label): a value set on 100 other problems can miss the evaluation set's share by a point or more
(different answer lengths and loops), so a study that compares policies at one realised share
calibrates on the problems it evaluates. ``--drift R`` aims the replay at ``target_share / R``
where a committed online run of the policy spent R times its replayed share (a consult changes
the text that follows, which no replay sees); the file records the target, R and the replay's aim.

The library: ``evaluation/calibrate.py`` (base-only traces, outside the evaluation set)
and ``replay.py`` (the replay that chooses the value, the calibration file). ``guided
eval --target_share`` calls ``cmd_calibrate`` first (``evaluate.calibrate_first``).
"""
from __future__ import annotations

from pathlib import Path

from ..replay import calibration_record, check_calibratable, choose_value, write_calibration
from ..config import ConfigError
from ..evaluation.calibrate import (CAL_NUM_SAMPLES, base_only_rows, divergence_rows, dry_run, recorded_traces,
                                    run_base_only)
from ..evaluation.runner import EVAL_MAX_NEW_TOKENS
from ..policies import POLICIES
from .flags import add_generation_flags, add_model_flags, add_prompt_flags, flag, generation_config


def register(sub) -> None:
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
    add_prompt_flags(p)
    flag(p, "output_file", default=None, help="the calibration JSON to write")
    flag(p, "drift", type=float, default=1.0,
         help="online over replayed share measured for this policy (scripts/online_drift.py): the replay aims "
              "at target_share / drift, so that the run spends target_share online")
    flag(p, "transductive", action="store_true",
         help="allow --from_results/--from_divergence to hold the evaluation set's own base-only traces "
              "(MATH-500): the budget is set on the problems evaluated, reading no label")
    flag(p, "dry_run_on", default=None,
         help="base-only results or divergence file of the evaluation set: print the share the chosen value "
              "spends in a replay there")
    flag(p, "no_progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_calibrate, make_config=generation_config)


def cmd_calibrate(args) -> int:
    from ..model_pair import load_pair

    if args.target_share is None or not (0.0 < args.target_share < 1.0):
        raise ConfigError(f"target_share must be a number in (0, 1), got {args.target_share!r}")
    if not args.output_file:
        raise ConfigError("--output_file is required (the calibration JSON)")
    drift = getattr(args, "drift", 1.0)
    if not (isinstance(drift, float) and 0.0 < drift < float("inf")) or not (0.0 < args.target_share / drift < 1.0):
        raise ConfigError(f"drift must be a positive number with target_share / drift in (0, 1), got --drift {drift!r}")
    aim = args.target_share / drift
    config = args.make_config(args)
    if args.max_new_tokens is None:  # the eval's limit, not generate's: the replay stops where the eval would
        config = config.replace(max_new_tokens=EVAL_MAX_NEW_TOKENS)
    check_calibratable(config)
    verify = config.consult_mode == "verify"
    out = Path(args.output_file)
    transductive = bool(getattr(args, "transductive", False))
    if transductive and not (args.from_divergence or args.from_results):
        raise ConfigError("--transductive needs --from_results or --from_divergence (the evaluation set's "
                          "base-only traces); calibrate never runs the base on the evaluation set")
    pair = load_pair(args.base_model, args.oracle_model if verify else args.base_model, n_ctx=args.n_ctx)
    if args.from_divergence:
        rows = divergence_rows(args.from_divergence, pair, verify, evaluation=transductive)
        source = f"divergence {args.from_divergence}"
    elif args.from_results:
        rows = base_only_rows(args.from_results, pair.base, evaluation=transductive)
        source = f"results {args.from_results}"
    else:
        base_file = Path(args.base_file) if args.base_file else out.with_suffix(".base.jsonl")
        rows, source = run_base_only(args, pair, base_file), f"base-only run {base_file}"
    recs = recorded_traces(rows, pair, verify, divergence=bool(args.from_divergence), what="calibration")
    value, share, curve = choose_value(config, recs, aim)
    name = POLICIES[config.policy].calibrate
    chosen = config.replace(**{name: value})
    dry = dry_run(args.dry_run_on, pair, chosen, verify)[0] if getattr(args, "dry_run_on", None) else None
    record = calibration_record(config, args.target_share, value, share, curve, base=pair.base,
                                oracle=pair.oracle if verify else None, problem_ids=[r["unique_id"] for r in rows],
                                source=source, dry_run=dry, transductive=transductive, drift=drift)
    write_calibration(out, record)
    aimed = (f"target {100 * args.target_share:.1f}%" if drift == 1.0 else
             f"replay target {100 * aim:.1f}% for {100 * args.target_share:.1f}% online at drift {drift:g}")
    print(f"{out}: policy {config.policy}, {name} {value:.6g}, expected oracle share {100 * share:.1f}% "
          f"({aimed}) over {len(rows)} problems, c={config.c} k={config.k}"
          + (" (transductive: the evaluation set's own base-only traces, no label read)" if transductive else ""))
    if dry is not None:
        print(f"dry run on {dry['file']} ({dry['n_problems']} base-only traces of the evaluation set): "
              f"{name} {value:.6g} spends {100 * dry['share']:.1f}% there")
    return 0
