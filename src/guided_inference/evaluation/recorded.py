"""Recorded traces on disk: the per-token lines of a ``guided divergence`` file, and the
base-only results files that divergence and calibration both read. Reading and checking
only; ``study/divergence.py`` writes the lines, ``evaluation/calibrate.py`` replays them.

A divergence line stores the arrays ``ARRAYS`` (floats rounded, see ``study/divergence.py``);
``features_from_row`` rebuilds the ``TokenFeatures`` the online policies and the router use.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..config import GuidedError
from ..teacher import TokenFeatures

FLOAT_ARRAYS = ("entropy", "varentropy", "top_prob", "margin", "token_prob", "oracle_p")
INT_ARRAYS = ("token_ids", "since_newline", "oracle_top1")
ARRAYS = FLOAT_ARRAYS + INT_ARRAYS + ("boundary",)


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
