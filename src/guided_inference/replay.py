"""Calibration: the parameter value at which a policy spends a target oracle-token share.

    guided calibrate --policy entropy --target_share 0.10 --c 20 --k 10 --base_model 0.5B \\
        --dataset math --num_samples 100 --output_file cal.json        # or --from_results base_only.jsonl
    guided eval ... --policy entropy --calibration cal.json

A researcher compares policies at equal cost, not equal threshold. Calibration takes
base-only traces on problems outside the evaluation set (by default the MATH test set
minus MATH-500), teacher-forces them once (``teacher.py``: the base's statistics, and the
oracle's scores for ``verify``), and **replays the policy itself** over them (``replay``):
the object ``make_policy`` builds, asked at the decision points the engine would ask it,
with the engine's budget, step size, cooldown, consult caps and ``History`` (base tokens
only in the rolling window; step boundaries read from the text as it grows). One registry:
a policy is calibratable when its ``PolicySpec`` names the field to tune (``calibrate``).

The replay assumes the text does not change after a consult (the oracle writes what the
base would have): exact when the oracle is the base (the tests check that replayed and
online spend are equal), an estimate otherwise, so the realised share on the evaluation
set differs (``guided report`` prints both; ``guided calibrate --dry_run_on`` replays the
evaluation set's own base-only traces). The trace ends where the base-only run ended (EOS
or the token limit); a consult covers min(k, tokens left) tokens. With greedy decoding the
replay is exact up to the first consult whose oracle tokens differ from the base's
(``first_change``): before it, the online text is the base trace token for token.

The value is chosen exactly, not from a grid: for a threshold, the candidates are the
midpoints between consecutive distinct scores the policy reads on the traces (where its
decisions change; for ``verify``, the oracle's probabilities), for an integer field every
integer, for a probability the real line (bisected to 1e-12); a bisection finds where the
replayed share crosses the target, and the closest of its neighbours wins (ties: the
smaller share). A threshold policy whose score depends on its own history (rolling
entropy, a step's confidence) reads scores after a consult that the candidate pass (no
consults) did not see; the replayed share of the chosen value is exact all the same.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace as dc_replace
from pathlib import Path

import numpy as np

from . import __version__
from .config import ConfigError, GuidedError
from .steps import History
from .policies import POLICIES, DecisionPoint, Policy
from .distribution import StepStats

P_BISECTIONS = 40  # a probability is bisected to 2**-40 (~1e-12)


@dataclass
class Recorded:
    """One finished base-only trace, as the replay reads it. ``stats[i]``: the base's
    distribution before token i; ``ends[i]``: where token i's bytes end in ``data``."""

    unique_id: str | None
    ids: np.ndarray  # [n] int64
    data: bytes  # the generated text
    ends: np.ndarray  # [n] int64
    stats: list[StepStats]
    oracle_top1: np.ndarray | None = None  # [n] verify: the oracle's top-1 before token i
    oracle_p: np.ndarray | None = None  # [n] verify: the oracle's probability of token i

    @property
    def n(self) -> int:
        return int(self.ids.size)


def recorded(unique_id: str | None, ids, pieces: list[bytes], stats: dict, oracle_top1=None,
             oracle_p=None) -> Recorded:
    """A Recorded trace from token ids, each token's bytes (``teacher.token_texts``) and the
    base's statistics as arrays (``entropy``, ``varentropy``, ``top_prob``, ``margin``)."""
    cols = [np.asarray(stats[k], dtype=np.float64) for k in ("entropy", "varentropy", "top_prob", "margin")]
    steps = [StepStats(i, float(e), float(v), float(t), float(m), 0) for i, (e, v, t, m) in enumerate(zip(*cols))]
    return Recorded(unique_id, np.asarray(ids, dtype=np.int64), b"".join(pieces),
                    np.cumsum([len(b) for b in pieces], dtype=np.int64), steps,
                    None if oracle_top1 is None else np.asarray(oracle_top1, dtype=np.int64),
                    None if oracle_p is None else np.asarray(oracle_p, dtype=np.float64))


def recorded_from_features(unique_id: str | None, feats, pieces: list[bytes]) -> Recorded:
    """A Recorded trace from ``TokenFeatures`` (teacher forcing, or a divergence line)."""
    return recorded(unique_id, feats.token_ids, pieces, {k: getattr(feats, k) for k in
                                                         ("entropy", "varentropy", "top_prob", "margin")},
                    feats.oracle_top1, feats.oracle_p)


@dataclass(frozen=True)
class Replayed:
    consults: list[int]  # where each consult began
    oracle_tokens: int
    n: int  # tokens of the trace (within max_new_tokens)
    widths: list[int] = field(default_factory=list)  # oracle tokens of each consult


def verify_rejects(rec: Recorded, config) -> np.ndarray:
    """[n] where verify's check rejects the base's token: the rule of ``checking.check_step``
    (oracle top-1 differs; with a cut-off t, ``config.cut_threshold``: the oracle's
    probability of the token < t)."""
    if rec.oracle_top1 is None:
        raise GuidedError("replaying verify needs the oracle's scores (teacher-force with the oracle)")
    t = config.cut_threshold
    return rec.oracle_top1 != rec.ids if t is None else rec.oracle_p < t


def replay(policy: Policy, config, rec: Recorded) -> Replayed:
    """Drive ``policy`` over ``rec`` as ``engine.guided_generate`` would (see module docstring)."""
    from .engine import seed_sequence  # the engine's per-problem random streams

    rng = np.random.default_rng(seed_sequence(config.seed, rec.unique_id).spawn(3)[0])
    verify = config.consult_mode == "verify"
    rejects = verify_rejects(rec, config) if verify else None
    n, history = min(rec.n, config.max_new_tokens), History()
    data, ends = memoryview(rec.data), rec.ends
    consults, widths, oracle, last_end, pos, fired = [], [], 0, None, 0, False

    def point(i: int, stats=None) -> DecisionPoint:
        tail = ""
        if policy.needs_text:
            end = int(ends[i - 1]) if i else 0
            history.advance(rec.ids[:i], data[:end])
            tail = bytes(data[max(0, end - 64):end]).decode("utf-8", "ignore")
        since = None if last_end is None else i - last_end
        return DecisionPoint(i, len(consults), config.c - len(consults), config.max_new_tokens, stats, since,
                             history, tail)

    def may_fire(p: DecisionPoint) -> bool:
        cooling = policy.signal and p.since_last_consult is not None and p.since_last_consult < config.cooldown
        return p.consults_left > 0 and not cooling and policy.decide(p, rng)

    while pos < n:
        if fired or (not verify and not policy.per_token and may_fire(point(pos))):
            w = min(config.k, n - pos)
            if policy.consult_tokens is not None:
                w = min(w, policy.consult_tokens(pos))
            consults.append(pos)
            widths.append(w)
            oracle, pos, last_end, fired = oracle + w, pos + w, pos + w, False
            continue
        start = pos
        gate = verify and not policy.per_token and may_fire(point(pos))
        hooked = policy.per_token and len(consults) < config.c  # the engine's per-token hook
        for i in range(start, min(start + config.step_size, n)):
            if hooked:
                fire = may_fire(point(i, rec.stats[i]))
                if fire and not verify:
                    fired = True  # the consult starts at exactly token i
                    break
                gate |= fire
                history.add(rec.stats[i])
            pos = i + 1
        if verify and gate and pos > start and len(consults) < config.c:
            hits = np.flatnonzero(rejects[start:pos])
            if hits.size:
                pos = start + int(hits[0])
                history.truncate(pos)
                fired = True  # the oracle writes from its first disagreement
    return Replayed(consults, oracle, n, widths)


def first_change(rec: Recorded, done: Replayed) -> tuple[int | None, int]:
    """(where the online text first leaves the base trace, or None if no consult of ``done`` changes
    it; oracle tokens written before that). A greedy consult at ``pos`` writes the oracle's top-1
    tokens, which equal the base's until the first position where the teacher-forced oracle
    disagrees; until a consult meets one, the online run is the base trace itself, so this is
    exact (up to batch-vs-incremental numerics at near-ties). Needs the oracle's scores."""
    if rec.oracle_top1 is None:
        raise GuidedError("first_change needs the oracle's top-1 (teacher-force with the oracle)")
    spent = 0
    for pos, w in zip(done.consults, done.widths):
        hits = np.flatnonzero(rec.oracle_top1[pos:pos + w] != rec.ids[pos:pos + w])
        if hits.size:
            return pos + int(hits[0]), spent + int(hits[0])
        spent += w
    return None, spent


def realised_share(policy: Policy, config, recs: list[Recorded]) -> float:
    """Oracle tokens over all tokens when ``policy`` is replayed over ``recs``."""
    spent, total = 0, 0
    for rec in recs:
        r = replay(policy, config, rec)
        spent, total = spent + r.oracle_tokens, total + r.n
    return spent / total if total else 0.0


def calibratable() -> list[str]:
    return [name for name, spec in POLICIES.items() if spec.calibrate]


def check_calibratable(config) -> None:
    spec = POLICIES[config.policy]
    if not spec.calibrate:
        raise ConfigError(f"calibrate supports {', '.join(calibratable())}, got --policy {config.policy!r}")
    if config.consult_mode == "verify" and config.policy != "verify":
        raise ConfigError(f"calibrate --consult verify is only for --policy verify (a gated check is not "
                          f"calibrated yet), got --policy {config.policy!r}")


def threshold_candidates(config, recs: list[Recorded]) -> np.ndarray:
    """Ascending thresholds, one inside each interval where the policy's decisions are the
    same: below the lowest score, between consecutive distinct scores, above the highest
    (clipped to the policy's allowed range)."""
    spec = POLICIES[config.policy]
    if config.policy == "verify":
        pooled = np.concatenate([r.oracle_p for r in recs if r.oracle_p is not None] or [np.zeros(0)])
    else:
        policy = spec.build(config)
        seen: list[float] = []

        def read_only(point, rng) -> bool:  # asked everywhere (no consult): every score it can read
            seen.append(policy.score(point))
            return False

        record = dc_replace(policy, decide=read_only)
        for rec in recs:
            replay(record, config, rec)
        pooled = np.asarray(seen, dtype=np.float64)
    u = np.unique(pooled[~np.isnan(pooled)])
    if u.size == 0:
        raise GuidedError(f"calibration found no score of {config.policy} on the traces (empty traces?)")
    lo, hi = spec.threshold_range
    cands = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2, [u[-1] + 1.0]])
    return np.unique(np.clip(cands, lo, hi if hi is not None else np.inf))


def choose_value(config, recs: list[Recorded], target: float) -> tuple[float, float, list[tuple[float, float]]]:
    """(value of the policy's calibrated field, its replayed share, the (value, share) pairs
    evaluated), the value whose share is closest to ``target`` (see module docstring)."""
    check_calibratable(config)
    spec = POLICIES[config.policy]
    name = spec.calibrate
    cache: dict[float, float] = {}

    def share(v) -> float:
        if v not in cache:
            c = config.replace(**{name: v})
            cache[v] = realised_share(spec.build(c), c, recs)
        return cache[v]

    if name == "threshold" or isinstance(getattr(config, name), int):
        values = ([float(v) for v in threshold_candidates(config, recs)] if name == "threshold"
                  else list(range(1, max(r.n for r in recs) + 1)))
        ordered = values if spec.more_spends else values[::-1]  # the share rises along ordered
        a, b = 0, len(ordered)  # the first index whose share reaches the target (len: none does)
        while a < b:
            mid = (a + b) // 2
            a, b = (a, mid) if share(ordered[mid]) >= target else (mid + 1, b)
        values = ordered[max(0, a - 2): a + 2]
    else:  # a probability: bisect the real line down to the step where the share crosses the target
        lo, hi = 0.0, 1.0
        for _ in range(P_BISECTIONS):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if (share(mid) >= target) == spec.more_spends else (mid, hi)
        values = [lo, hi]
    best = min(values, key=lambda v: (abs(share(v) - target), share(v)))
    return best, share(best), sorted(cache.items())


def write_calibration(path: Path, record: dict) -> None:
    from .atomic import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(record, indent=1) + "\n")


def calibration_record(config, target: float, value: float, share: float, curve, *, base, oracle,
                       problem_ids: list[str], source: str, dry_run: dict | None = None,
                       transductive: bool = False, drift: float = 1.0) -> dict:
    """The calibration file's record. ``target`` is the share aimed at online; the replay aimed at
    ``target / drift`` and spent ``share`` (``expected_share``)."""
    name = POLICIES[config.policy].calibrate
    return {"policy": config.policy, "param": name, "value": value,
            "threshold": value if name == "threshold" else config.threshold, "target_share": target,
            "drift": drift, "replay_target": target / drift,
            "expected_share": share, "c": config.c, "k": config.k, "step_size": config.step_size,
            "cooldown": config.cooldown, "window": config.window, "prefix_tokens": config.prefix_tokens,
            "ngram": config.ngram, "p": config.p, "max_new_tokens": config.max_new_tokens,
            "base_model_id": base.model_id, "base_sha256": base.sha256,
            "oracle_sha256": oracle.sha256 if oracle is not None else None, "n_problems": len(problem_ids),
            "problem_ids": problem_ids, "source": source, "transductive": transductive, "dry_run": dry_run,
            "version": __version__,
            "created_at": time.time(), "curve": curve[:: max(1, len(curve) // 50)]}


def load_calibration(path: str) -> tuple[dict, str]:
    from .models import file_sha256

    p = Path(path)
    try:
        record = json.loads(p.read_text())
        record["policy"], record.get("value", record["threshold"])  # noqa: B018 - required keys
    except FileNotFoundError:
        raise GuidedError(f"calibration file not found: {path!r}") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise GuidedError(f"{path!r} is not a calibration file (guided calibrate writes one)") from None
    return record, file_sha256(p)


def apply_calibration(path: str, given: dict) -> dict:
    """Config overrides from a calibration file: its policy's calibrated field (a threshold,
    ``prefix_tokens``, ``ngram``, ``p``), recorded with the file's sha256 and target. One-line
    error when the file does not fit the flags. Files written before ``param`` existed hold a
    threshold."""
    record, sha = load_calibration(path)
    policy = given.get("policy", record["policy"])
    if policy != record["policy"]:
        raise GuidedError(f"calibration file {path!r} is for policy {record['policy']!r}, got --policy {policy!r}")
    for name in ("c", "k"):
        if name in given and given[name] != record[name]:
            raise GuidedError(f"calibration file {path!r} was made for {name}={record[name]}, got --{name} {given[name]}")
    param = record.get("param", "threshold")
    if param == "threshold" and given.get("threshold_source") == "flag" or param != "threshold" and param in given:
        raise GuidedError(f"give either --{param} or --calibration, not both")
    value = record.get("value", record["threshold"])
    out = dict(given, policy=policy, c=record["c"], k=record["k"], **{param: value})
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
