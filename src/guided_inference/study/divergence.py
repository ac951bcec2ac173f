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
``level``, ``subject``, ``correct``, ``n``, and the stored arrays (``evaluation/recorded.ARRAYS``; floats
rounded to ``DIGITS`` decimals). Derived features (rolling entropy, position, labels)
are recomputed from them by ``features_from_row`` through the same ``TokenFeatures``
methods the online policies and the router use, so they cannot drift apart.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import GuidedError
from ..evaluation.recorded import FLOAT_ARRAYS, INT_ARRAYS, check_divergence_lines, check_same_pair
from ..evaluation.results import ResultsFile
from ..steps import ROLLING_WINDOWS
from ..prompts import prompt_ids as engine_prompt_ids  # the engine's BOS rule, per model
from ..teacher import TokenFeatures, teacher_force

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
