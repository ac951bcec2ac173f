"""Which problems of a dataset a run covers: filters, a window, a shard.

    sel = Selection(levels=(1, 2), num_samples=100, shard=(1, 4))
    problems = sel.apply(task.load())

Order of operations (each a pure function of the list before it):
  0. with ``ids``: exactly those problems, in the order of ``ids`` (a committed id list, e.g. the
     held-out problems of ``scripts/heldout_ids.py``); an id the dataset lacks is an error;
  1. keep ``levels`` and ``subjects`` (subjects match case-insensitively, and
     "counting_and_probability" matches "Counting & Probability");
  2. skip ``offset`` problems, keep the next ``num_samples`` (all if None);
  3. shard ``i/n`` (1-based): every n-th problem starting at the i-th, so the n
     shards are disjoint, together cover step 2's list, and each mixes levels.

Contract: a bad value raises ``ConfigError`` naming the value and what is allowed.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..config import ConfigError, check_int
from .task import Problem


def subject_key(name: str) -> str:
    """'Counting & Probability' and 'counting_and_probability' -> 'counting_and_probability'."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower().replace("&", " and ")).strip("_")


@dataclass(frozen=True)
class Selection:
    num_samples: int | None = None
    offset: int = 0
    levels: tuple[int, ...] | None = None
    subjects: tuple[str, ...] | None = None
    shard: tuple[int, int] | None = None  # (i, n), 1 <= i <= n
    ids: tuple[str, ...] | None = None  # unique_ids, in the order to run them

    def __post_init__(self) -> None:
        if self.num_samples is not None:
            check_int("num_samples", self.num_samples, 1)
        check_int("offset", self.offset, 0)
        if self.shard is not None:
            i, n = self.shard
            if not (n >= 1 and 1 <= i <= n):
                raise ConfigError(f"shard must be i/n with 1 <= i <= n, got {i}/{n}")

    def apply(self, problems: list[Problem]) -> list[Problem]:
        chosen = problems
        if self.ids is not None:
            by_id = {p.unique_id: p for p in problems}
            missing = next((i for i in self.ids if i not in by_id), None)
            if missing is not None:
                raise ConfigError(f"ids: {missing!r} is not a problem of this dataset ({len(problems)} problems)")
            chosen = [by_id[i] for i in dict.fromkeys(self.ids)]
        if self.levels is not None:
            present = sorted({p.level for p in problems if p.level is not None})
            if not present:
                raise ConfigError("levels: this dataset has no levels")
            bad = [lv for lv in self.levels if lv not in present]
            if bad:
                raise ConfigError(f"levels must be among {','.join(map(str, present))}, got {bad[0]}")
            chosen = [p for p in chosen if p.level in self.levels]
        if self.subjects is not None:
            present = {subject_key(p.subject): p.subject for p in problems if p.subject}
            if not present:
                raise ConfigError("subjects: this dataset has no subjects")
            wanted = {subject_key(s) for s in self.subjects}
            bad = sorted(wanted - present.keys())
            if bad:
                raise ConfigError(f"subjects must be among {', '.join(sorted(present))}, got {bad[0]!r}")
            chosen = [p for p in chosen if p.subject and subject_key(p.subject) in wanted]
        end = None if self.num_samples is None else self.offset + self.num_samples
        chosen = chosen[self.offset:end]
        if self.shard is not None:
            i, n = self.shard
            chosen = chosen[i - 1::n]
        return chosen


def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise ConfigError(f"shard must look like i/n (e.g. 1/4), got {text!r}")
    i, n = int(m.group(1)), int(m.group(2))
    if not (n >= 1 and 1 <= i <= n):
        raise ConfigError(f"shard must be i/n with 1 <= i <= n, got {text!r}")
    return i, n


def parse_int_list(name: str, text: str, *, minimum: int = 0) -> tuple[int, ...]:
    """'1,2,3' -> (1, 2, 3); ConfigError naming ``name`` otherwise."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a comma-separated list of integers, got {text!r}") from None
    if not values or any(v < minimum for v in values):
        raise ConfigError(f"{name} must be a comma-separated list of integers >= {minimum}, got {text!r}")
    return values


def read_ids(path: str) -> tuple[str, ...]:
    """The unique_ids of an id file: one per line; blank lines and ``#`` comments skipped."""
    from pathlib import Path

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or "not UTF-8 text"
        raise ConfigError(f"ids must be a readable file of unique_ids, one per line: {path!r} ({why})") from None
    ids = tuple(s for s in (line.strip() for line in lines) if s and not s.startswith("#"))
    if not ids:
        raise ConfigError(f"ids file {path!r} holds no unique_id (one per line, # for comments)")
    return ids


def parse_str_list(name: str, text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values:
        raise ConfigError(f"{name} must be a comma-separated list, got {text!r}")
    return values


def math500_ids() -> set[str]:
    """The ``unique_id`` of every MATH-500 problem (the evaluation set)."""
    from . import get_task
    return {p.unique_id for p in get_task("math500").load()}


def held_out_split(task) -> list:
    """Problems to calibrate or train on, never evaluated on.

    For ``math``: the MATH test set minus MATH-500, in sha256(unique_id) order. The file
    is sorted by subject (its first 1,000 problems are all Algebra), so a prefix in file
    order would calibrate on one subject; the hash order is stable across machines and
    makes every prefix mix subjects and levels. Other datasets keep their file order.
    """
    problems = task.load()
    if task.name != "math":
        return problems
    held_out = math500_ids()
    kept = [p for p in problems if p.unique_id not in held_out]
    return sorted(kept, key=lambda p: hashlib.sha256(p.unique_id.encode("utf-8")).hexdigest())
