"""Calibration: the threshold at which a policy spends a target oracle-token share.

    guided calibrate --policy entropy --target_share 0.10 --c 20 --k 10 --base_model 0.5B \\
        --dataset math --num_samples 50 --output_file cal.json        # or --from_results base_only.jsonl
    guided eval ... --policy entropy --calibration cal.json

A researcher compares policies at equal cost, not equal threshold. Calibration takes
base-only traces on problems outside the evaluation set (by default the MATH test set
minus MATH-500), teacher-forces them once (``teacher.py``: the base's statistics, and
the oracle's scores for ``verify``), replays the policy's firing rule with the budget
(c, k), step size and cooldown over every candidate threshold, and keeps the one whose
expected oracle-token share is closest to the target.

The replay is an estimate: after a real consult the text differs from the base-only
trace, so the realised share on the evaluation set differs (``guided report`` prints
both). Replay rules, per trace of n tokens: a takeover at position i covers
min(k, n - i) tokens and the replay resumes after them; verify checks each base step
of ``step_size`` tokens and takes over at its first disagreement.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from . import __version__
from .config import ConfigError, GuidedError
from .teacher import TokenFeatures

CALIBRATABLE = ("entropy", "varentropy", "top_prob", "margin", "rolling_entropy", "boundary", "verify", "learned")


def firing_score(policy: str, feats: TokenFeatures, config, router=None) -> tuple[np.ndarray, str]:
    """(score per position, "above"|"below"): the policy fires at i when score[i] is above
    (or below) the threshold. NaN never fires."""
    if policy in ("entropy", "varentropy"):
        return getattr(feats, policy), "above"
    if policy in ("top_prob", "margin"):
        return getattr(feats, policy), "below"
    if policy == "rolling_entropy":
        return feats.rolling_entropy(config.window), "above"
    if policy == "boundary":
        return feats.step_confidence(), "below"
    if policy == "verify":
        return feats.oracle_p, "below"
    if policy == "learned":
        return router.predict_features(feats), "above"
    raise ConfigError(f"calibrate supports policies with a threshold ({', '.join(CALIBRATABLE)}), got {policy!r}")


def fires(score: np.ndarray, direction: str, t: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return score > t if direction == "above" else score < t


def replay(fire: np.ndarray, *, c: int, k: int, cooldown: int, step_size: int, verify: bool) -> int:
    """Oracle tokens a policy firing at ``fire`` would spend on one trace (see module docstring)."""
    n, i, consults, oracle, last_end = fire.size, 0, 0, 0, None
    while i < n:
        if verify:
            end = min(i + step_size, n)
            hits = np.flatnonzero(fire[i:end])
            if consults < c and hits.size:
                j = i + int(hits[0])
                w = min(k, n - j)
                oracle, consults, i = oracle + w, consults + 1, j + w
            else:
                i = end
            continue
        if consults < c and fire[i] and (last_end is None or i - last_end >= cooldown):
            w = min(k, n - i)
            oracle, consults, i, last_end = oracle + w, consults + 1, i + w, i + w
        else:
            i += 1
    return oracle


def expected_share(scores: list[np.ndarray], direction: str, t: float, config, verify: bool) -> float:
    total = sum(s.size for s in scores)
    spent = sum(replay(fires(s, direction, t), c=config.c, k=config.k, cooldown=config.cooldown,
                       step_size=config.step_size, verify=verify) for s in scores)
    return spent / total if total else 0.0


def choose_threshold(scores: list[np.ndarray], direction: str, target: float, config, verify: bool,
                     n_candidates: int = 200) -> tuple[float, float, list[tuple[float, float]]]:
    """(threshold, its expected share, the curve of (threshold, share)) closest to ``target``.

    Candidates: quantiles of the pooled scores, nudged just past each so "above t" / "below t"
    switch exactly there; ties go to the smaller share."""
    pooled = np.concatenate([s[~np.isnan(s)] for s in scores]) if scores else np.zeros(0)
    if pooled.size == 0:
        raise GuidedError("calibration has no statistics to replay (empty traces?)")
    qs = np.unique(np.quantile(pooled, np.linspace(0, 1, n_candidates)))
    eps = 1e-9
    cands = np.unique(np.concatenate([qs - eps, qs + eps]))
    curve = [(float(t), expected_share(scores, direction, float(t), config, verify)) for t in cands]
    best = min(curve, key=lambda ts: (abs(ts[1] - target), ts[1]))
    return best[0], best[1], curve


def write_calibration(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)


def calibration_record(policy: str, config, target: float, threshold: float, share: float, curve, *,
                       base, oracle, problem_ids: list[str], source: str) -> dict:
    return {"policy": policy, "threshold": threshold, "target_share": target, "expected_share": share,
            "c": config.c, "k": config.k, "step_size": config.step_size, "cooldown": config.cooldown,
            "window": config.window, "base_model_id": base.model_id, "base_sha256": base.sha256,
            "oracle_sha256": oracle.sha256 if oracle is not None else None, "n_problems": len(problem_ids),
            "problem_ids": problem_ids, "source": source, "version": __version__, "created_at": time.time(),
            "curve": curve[:: max(1, len(curve) // 50)]}


def load_calibration(path: str) -> tuple[dict, str]:
    from .models import file_sha256

    p = Path(path)
    try:
        record = json.loads(p.read_text())
        record["policy"], record["threshold"]  # noqa: B018 - required keys
    except FileNotFoundError:
        raise GuidedError(f"calibration file not found: {path!r}") from None
    except (ValueError, KeyError, TypeError):
        raise GuidedError(f"{path!r} is not a calibration file (guided calibrate writes one)") from None
    return record, file_sha256(p)


def apply_calibration(path: str, given: dict) -> dict:
    """Config overrides from a calibration file: its policy's threshold, recorded with the
    file's sha256 and target. One-line error when the file does not fit the flags."""
    record, sha = load_calibration(path)
    policy = given.get("policy", record["policy"])
    if policy != record["policy"]:
        raise GuidedError(f"calibration file {path!r} is for policy {record['policy']!r}, got --policy {policy!r}")
    for name in ("c", "k"):
        if name in given and given[name] != record[name]:
            raise GuidedError(f"calibration file {path!r} was made for {name}={record[name]}, got --{name} {given[name]}")
    if "threshold" in given and given.get("threshold_source") == "flag":
        raise GuidedError("give either --threshold or --calibration, not both")
    out = dict(given, policy=policy, c=record["c"], k=record["k"], threshold=record["threshold"])
    out["threshold_source"] = f"calibration {Path(path).name} sha256:{sha[:16]} target_share {record['target_share']}"
    return out


def check_calibration_models(path: str, base, oracle) -> None:
    """The calibration must come from the same base (and oracle, for verify) weights."""
    record, _ = load_calibration(path)
    if record.get("base_sha256") and base.sha256 and record["base_sha256"] != base.sha256:
        raise GuidedError(f"calibration file {path!r} was made with base sha256 {record['base_sha256'][:12]}, "
                          f"this base {base.name!r} is {base.sha256[:12]}")
    if record.get("oracle_sha256") and oracle.sha256 and record["oracle_sha256"] != oracle.sha256:
        raise GuidedError(f"calibration file {path!r} was made with oracle sha256 {record['oracle_sha256'][:12]}, "
                          f"this oracle {oracle.name!r} is {oracle.sha256[:12]}")
