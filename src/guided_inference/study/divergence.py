"""Divergence labels: where would the oracle have written something else than the base?

    guided divergence --from_results results/math500-first100/math500_0.5B_1.5B_never_c0_k10.jsonl \\
        --output_file div.jsonl
    guided divergence --base_model 0.5B --oracle_model 1.5B --dataset math500 --num_samples 100 --output_file div.jsonl

Per problem of a base-only trace: ``teacher.teacher_force`` runs the base and the oracle
over the base's tokens (one batched prefill each) and gives, per generated position i,
the base's statistics before token i and the oracle's top-1 and its probability of the
base's token. The labels: ``disagree`` (oracle top-1 != base token) and
``oracle_p_lt_0.1`` (oracle's probability of the base token < 0.1).

File format (JSONL, one line per problem, appended and fsynced as each finishes, so a
run resumes): provenance (both models' ids and sha256, source, version), ``unique_id``,
``level``, ``subject``, ``correct``, ``n``, and the stored arrays ``ARRAYS`` (floats
rounded to ``DIGITS`` decimals). Derived features (rolling entropy, position, labels)
are recomputed from them by ``features_from_row`` through the same ``TokenFeatures``
methods the online policies and the router use, so they cannot drift apart.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import GuidedError
from ..evaluation.results import ResultsFile
from ..steps import ROLLING_WINDOWS
from ..prompts import prompt_ids as engine_prompt_ids  # the engine's BOS rule, per model
from ..teacher import TokenFeatures, teacher_force

FLOAT_ARRAYS = ("entropy", "varentropy", "top_prob", "margin", "token_prob", "oracle_p")
INT_ARRAYS = ("token_ids", "since_newline", "oracle_top1")
ARRAYS = FLOAT_ARRAYS + INT_ARRAYS + ("boundary",)
DIGITS = 4  # 1e-4 is far below the batch-vs-token-by-token noise of the statistics (~1e-2)
WINDOWS = ROLLING_WINDOWS  # rolling-entropy windows studied (the router's features)
LABELS = ("disagree", "oracle_p_lt_0.1")
ORACLE_P_CUT = 0.1


def label(feats: TokenFeatures, name: str) -> np.ndarray:
    """[n] bool: the named label of every position (see module docstring)."""
    if name == "disagree":
        return np.asarray(feats.disagree, dtype=bool)
    if name == "oracle_p_lt_0.1":
        return feats.oracle_p < ORACLE_P_CUT
    raise GuidedError(f"label must be one of {', '.join(LABELS)}, got {name!r}")


def statistics(feats: TokenFeatures) -> dict[str, np.ndarray]:
    """The per-position signals a policy could read, oriented so that higher = "consult
    here" (top_prob, margin and token_prob are negated; the table says so)."""
    out = {"entropy": feats.entropy, "varentropy": feats.varentropy, "-top_prob": -feats.top_prob,
           "-margin": -feats.margin, "-token_prob": -feats.token_prob}
    for w in WINDOWS:
        out[f"rolling_entropy_{w}"] = feats.rolling_entropy(w)
    out["position"] = np.arange(feats.n, dtype=np.float64)
    out["since_newline"] = feats.since_newline.astype(np.float64)
    out["boundary"] = feats.boundary.astype(np.float64)
    return out


def _round(x: np.ndarray) -> list:
    return [round(float(v), DIGITS) for v in x]


def divergence_row(source_row: dict, feats: TokenFeatures, provenance: dict, seconds: float) -> dict:
    """One output line for one problem (see module docstring)."""
    row = {k: source_row.get(k) for k in ("unique_id", "level", "subject", "correct", "dataset")}
    row.update(provenance, n=feats.n, teacher_force_s=round(seconds, 3))
    for name in FLOAT_ARRAYS:
        row[name] = _round(getattr(feats, name))
    for name in INT_ARRAYS:
        row[name] = [int(v) for v in getattr(feats, name)]
    row["boundary"] = [int(v) for v in feats.boundary]
    return row


def features_from_row(row: dict) -> TokenFeatures:
    """The TokenFeatures a divergence line stores (GuidedError naming a missing array)."""
    missing = [k for k in ARRAYS if k not in row]
    if missing:
        raise GuidedError(f"divergence line {row.get('unique_id')!r} lacks {', '.join(missing)} "
                          "(not a file written by guided divergence)")
    arr = {k: np.asarray(row[k], dtype=np.float64) for k in FLOAT_ARRAYS}
    ints = {k: np.asarray(row[k], dtype=np.int64) for k in INT_ARRAYS}
    return TokenFeatures(token_ids=ints["token_ids"], entropy=arr["entropy"], varentropy=arr["varentropy"],
                         top_prob=arr["top_prob"], margin=arr["margin"], token_prob=arr["token_prob"],
                         boundary=np.asarray(row["boundary"], dtype=bool), since_newline=ints["since_newline"],
                         oracle_top1=ints["oracle_top1"], oracle_p=arr["oracle_p"])


def read_divergence(path: str) -> list[dict]:
    """All lines of a divergence file; one-line errors for a missing or foreign file and
    for lines from more than one model pair."""
    p = Path(path)
    if not p.is_file():
        raise GuidedError(f"divergence file not found: {path!r}")
    rows = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((i, json.loads(line)))
        except ValueError:
            raise GuidedError(f"{path!r} line {i} is not JSON (a divergence file is JSONL)") from None
    if not rows:
        raise GuidedError(f"divergence file {path!r} is empty")
    return check_divergence_lines(rows, path)


def check_divergence_lines(numbered: list[tuple[int, object]], path: str) -> list[dict]:
    """The rows of ``(line number, row)`` pairs, after checking that each is a divergence
    line and that all come from one model pair."""
    for i, row in numbered:
        if not isinstance(row, dict) or row.get("kind") != "divergence":
            raise GuidedError(f"{path!r} line {i} is not a divergence line (guided divergence writes them)")
    rows = [row for _, row in numbered]
    pairs = {(r.get("base_sha256"), r.get("oracle_sha256")) for r in rows}
    if len(pairs) > 1:
        raise GuidedError(f"{path!r} mixes {len(pairs)} model pairs (base/oracle sha256); one pair per file")
    return rows


def check_same_pair(rows: list[dict], base, oracle, path: str) -> None:
    """A divergence file only ever holds one (base, oracle) pair: resuming with another is refused.
    ``oracle=None`` checks the base only (a reader of the base's statistics alone)."""
    for r in rows:
        for role, backend in (("base", base), ("oracle", oracle)):
            sha = r.get(f"{role}_sha256")
            if sha and backend is not None and backend.sha256 and sha != backend.sha256:
                raise GuidedError(f"{path!r} was made with another model pair: {role} sha256 {sha[:12]}, "
                                  f"this {role} {backend.name!r} is {backend.sha256[:12]}")


def check_base_only(rows: list[dict], path: str, base, *, needed_by: str = "divergence") -> list[dict]:
    """``rows`` of a base-only results file with token ids, made with ``base`` (None: any
    base); otherwise a one-line error that names ``needed_by``, the command that needs them.
    ``guided divergence`` and ``guided calibrate`` both read such files."""
    if not rows or any("token_ids" not in r or "prompt" not in r for r in rows):
        raise GuidedError(f"{path!r} is not a results file with token ids (guided eval writes them)")
    bad = next((r for r in rows if r.get("oracle_tokens") or r.get("cheat_positions")), None)
    if bad is not None:
        raise GuidedError(f"{path!r} is not base-only: {bad['unique_id']} has {bad.get('oracle_tokens')} oracle "
                          f"tokens (policy {bad.get('policy') or bad.get('config', {}).get('policy')!r}); "
                          f"{needed_by} needs a --policy never run")
    sha = rows[0].get("base_sha256")
    if base is not None and base.sha256 and sha not in (None, base.sha256):
        raise GuidedError(f"{path!r} was made with base sha256 {sha[:12]}, this base {base.name!r} is "
                          f"{base.sha256[:12]}")
    return rows


def provenance(pair, source: str) -> dict:
    return {"kind": "divergence", "base_model_id": pair.base.model_id, "base_sha256": pair.base.sha256,
            "oracle_model_id": pair.oracle.model_id, "oracle_sha256": pair.oracle.sha256, "source": source,
            "version": __version__}


def run_divergence(rows: list[dict], pair, output: Path, source: str, progress=None) -> list[dict]:
    """Teacher-force every row not yet in ``output``; append one line each. Returns all
    lines of ``output`` for the given rows (resumed and new), in ``rows`` order."""
    head = provenance(pair, source)
    # ResultsFile: one locked writer per file, a torn last line dropped on resume, fsync per line.
    with ResultsFile.open(output) as rf:
        old = check_divergence_lines(rf.rows, str(output))
        if old:
            check_same_pair(old, pair.base, pair.oracle, str(output))
        done = {r["unique_id"]: r for r in old}
        todo = [r for r in rows if r["unique_id"] not in done]
        for i, r in enumerate(todo):
            t = time.perf_counter()
            prompt_ids = engine_prompt_ids(pair.base, r["prompt"])
            feats = teacher_force(pair.base, prompt_ids, r["token_ids"], oracle=pair.oracle)
            line = divergence_row(r, feats, head, time.perf_counter() - t)
            rf.append(line)
            done[r["unique_id"]] = line
            if progress:
                progress(i + 1, len(todo), line)
    return [done[r["unique_id"]] for r in rows if r["unique_id"] in done]


def throughput(rows: list[dict]) -> dict:
    """Problems and tokens per minute of teacher forcing (both models), from the lines' timings."""
    s = sum(r.get("teacher_force_s", 0.0) for r in rows)
    n = sum(r["n"] for r in rows)
    return {"problems": len(rows), "seconds": s, "tokens": n,
            "problems_per_min": 60 * len(rows) / s if s else math.nan,
            "tokens_per_s": n / s if s else math.nan}
