"""``guided calibrate``: base-only traces (outside the evaluation set unless
``--transductive``), teacher-forced once, replayed through the policy itself to find the value
of its calibrated field (a threshold, ``prefix_tokens``, ``ngram``, ``p``) that spends a target
oracle share (``replay.py``).

    guided calibrate --policy entropy --target_share 0.10 --c 20 --k 10 --base_model 0.5B \\
        --dataset math --num_samples 100 --output_file cal.json \\
        --dry_run_on results/math500-first100/divergence_0.5B_1.5B.jsonl
    guided calibrate --policy verify --target_share 0.10 --from_results base_only_math.jsonl --output_file cal.json

Default split: the MATH test set minus MATH-500 (problems whose ``unique_id`` is in
MATH-500 are dropped), in sha256(unique_id) order so that any prefix mixes subjects
(``tasks.selection.held_out_split``), its first ``CAL_NUM_SAMPLES`` (100) problems; problems
of MATH-500 itself are refused (unless ``--transductive``), as are results files that are not
base-only. The base-only
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

from ..replay import Recorded, realised_share, recorded_from_features
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
                          "problems outside the evaluation set (default: MATH test minus MATH-500), or pass --transductive "
                          "with --from_results/--from_divergence to set the budget on the evaluation set's own traces")
    return rows


def base_only_rows(path: str, base, *, evaluation: bool = False) -> list[dict]:
    """Rows of a base-only results file; one-line errors for any other kind of file (and
    for MATH-500 problems, unless ``evaluation``: a dry run or a ``--transductive`` calibration
    reads the evaluation set)."""
    from .recorded import check_base_only

    try:
        rows = [r for r in read_rows(path) if r.get("error") is None]
    except FileNotFoundError:
        raise GuidedError(f"results file not found: {path!r}") from None
    rows = check_base_only(rows, path, base, needed_by="calibrate")
    return rows if evaluation else refuse_math500(rows, path)


def divergence_rows(path: str, pair, verify: bool, *, evaluation: bool = False) -> list[dict]:
    """Lines of a ``guided divergence`` file made with this base (and this oracle, for
    verify, which reads the oracle's scores), outside MATH-500 unless ``evaluation``."""
    from .recorded import check_same_pair, read_divergence

    rows = read_divergence(path)
    check_same_pair(rows, pair.base, pair.oracle if verify else None, path)
    return rows if evaluation else refuse_math500(rows, path)


def run_base_only(args, pair, base_file: Path) -> list[dict]:
    from ..config import GenerationConfig
    from ..render import render_trace
    from ..tasks import with_prompt
    from .runner import EVAL_MAX_NEW_TOKENS, EvalSettings, run_eval

    task = with_prompt(get_task(args.dataset or "math"), args)
    if task.name == "math500":
        raise ConfigError("calibrate refuses --dataset math500: calibrate outside the evaluation set "
                          "(default: math, minus the MATH-500 problems)")
    problems = held_out_split(task)[args.offset:]
    problems = problems[: args.num_samples or CAL_NUM_SAMPLES]
    # Seed 0 whatever --seed says: the base-only traces are greedy, so the seed changes nothing in
    # them, and one base file serves calibrations made with any seed.
    config = GenerationConfig(policy="never", c=0, max_new_tokens=args.max_new_tokens or EVAL_MAX_NEW_TOKENS, seed=0)
    run_eval(task, problems, pair, config, EvalSettings(base_file, progress=not args.no_progress), show=render_trace)
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
    from .recorded import features_from_row
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
