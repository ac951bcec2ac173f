"""Result files: one JSON line per problem, written so that a kill never corrupts them.

    with ResultsFile.open("out/run.jsonl") as rf:   # locks, repairs the tail, reads rows
        check_same_run(rf, key)                      # ResultsError on a foreign line
        rf.append(row)                               # one write + fsync per problem

Contracts:
  - ``append`` writes the whole line (JSON + newline) with one ``os.write`` on an
    O_APPEND descriptor, then fsyncs, so the file holds every finished problem and
    at most a partial last line if the process dies mid-write.
  - ``open`` sets aside such a partial tail (bytes after the last newline, or a last
    line that is not valid JSON), keeping every complete line, and the first ``append``
    or ``rewrite`` removes it: a run refused after ``open`` (another configuration)
    leaves the file byte for byte as it was. An invalid line anywhere else is a
    ``ResultsError`` naming the file and line.
  - ``open`` takes an exclusive ``flock``: a second run on the same file fails fast
    instead of interleaving lines. ``rewrite`` replaces the file atomically (temp
    file in the same directory, fsync, ``os.replace``) and relocks the new file.
  - ``read_rows`` (for reports) never modifies the file; it ignores a partial tail.
"""
from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import write_atomic
from ..config import GuidedError

# What must agree between a file's lines and the run appending to it.
KEY_FIELDS = ("dataset", "prompt_template", "system_prompt", "base_model_id", "oracle_model_id", "base_sha256", "oracle_sha256",
              "config", "seed_derivation")


class ResultsError(GuidedError):
    """A results file is corrupt, locked, or made with another configuration."""


def _parse_lines(path: Path, data: bytes) -> tuple[list[tuple[int, dict]], int]:
    """(rows with 1-based line numbers, length of the valid prefix in bytes)."""
    end = data.rfind(b"\n") + 1  # bytes after the last newline are a partial line
    lines = data[:end].split(b"\n")[:-1]
    rows, offset = [], 0
    for i, raw in enumerate(lines, 1):
        try:
            row = json.loads(raw)
            if not isinstance(row, dict):
                raise ValueError("not an object")
        except ValueError as e:
            if i == len(lines):  # the last complete line: a torn write, drop it
                return rows, offset
            raise ResultsError(f"{path}:{i}: not a JSON object ({e}); fix or remove that line") from None
        rows.append((i, row))
        offset += len(raw) + 1
    return rows, offset


def read_rows(path: str | Path) -> list[dict]:
    """All complete rows of a results file, in file order (read-only)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ResultsError(f"cannot read results file {path}: {e.strerror}") from None
    return [row for _, row in _parse_lines(path, data)[0]]


@dataclass
class ResultsFile:
    path: Path
    fd: int
    rows: list[tuple[int, dict]] = field(default_factory=list)  # (line number, row)
    dropped_bytes: int = 0  # partial tail, removed by the first append or rewrite

    @classmethod
    def open(cls, path: str | Path) -> "ResultsFile":
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_locked(path)
        data = b""
        while chunk := os.read(fd, 1 << 20):
            data += chunk
        try:
            rows, valid = _parse_lines(path, data)
        except ResultsError:
            os.close(fd)
            raise
        return cls(path, fd, rows, len(data) - valid)

    def append(self, row: dict) -> None:
        if self.dropped_bytes:  # the torn tail goes only once this run is known to write here
            os.ftruncate(self.fd, os.fstat(self.fd).st_size - self.dropped_bytes)
            self.dropped_bytes = 0
        line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        written = os.write(self.fd, line)
        while written < len(line):  # short writes are rare on regular files; finish the line
            written += os.write(self.fd, line[written:])
        os.fsync(self.fd)
        self.rows.append((self.rows[-1][0] + 1 if self.rows else 1, row))

    def rewrite(self, rows: list[dict]) -> None:
        """Replace the file's content with ``rows`` atomically; keep holding the lock."""
        write_rows(self.path, rows)
        self.dropped_bytes = 0
        os.close(self.fd)
        self.fd = _open_locked(self.path)
        self.rows = list(enumerate(rows, 1))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the flock
            self.fd = -1

    def __enter__(self) -> "ResultsFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_locked(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ResultsError(f"{path} is being written by another run (locked); wait for it or use another file") from None
    return fd


def write_rows(path: Path, rows: list[dict]) -> None:
    """Replace ``path`` with ``rows``, one JSON line each, atomically (``atomic.write_atomic``:
    temp file, fsync, rename; the file's permissions kept)."""
    write_atomic(path, b"".join((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8") for row in rows))


def run_key(row: dict) -> dict:
    """The fields that must agree. A config field a file predates counts as its default, so a
    run resumes a file written before that field existed (and only with the default). A
    base-only run (policy never) leaves the oracle out: the oracle takes no part in its rows,
    so calibration and ``guided divergence`` runs with different oracles share one base file.
    (The oracle's context size still bounds the room of such a trace; both models hold prompt
    plus max_new_tokens in every configuration here.)"""
    key = {k: row.get(k) for k in KEY_FIELDS}
    if isinstance(key["config"], dict):
        key["config"] = {**_config_defaults(), **key["config"]}
        if key["config"].get("policy") == "never":
            del key["oracle_model_id"], key["oracle_sha256"]
    return key


def _config_defaults() -> dict:
    from ..config import GenerationConfig

    return GenerationConfig().params()


def first_difference(old: dict, new: dict, prefix: str = "") -> str | None:
    """'config.c: 5 in the file, 20 now' for the first differing (nested) field, else None."""
    for k in sorted(set(old) | set(new), key=lambda k: (k not in KEY_FIELDS, str(k))):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = first_difference(a, b, f"{prefix}{k}.")
            if inner:
                return inner
        elif a != b:
            return f"{prefix}{k}: {a!r} in the file, {b!r} now"
    return None


def check_same_run(rf: ResultsFile, key: dict) -> None:
    """ResultsError naming the first line whose run key differs from the run key of ``key`` (a row or header)."""
    for line, row in rf.rows:
        diff = first_difference(run_key(row), run_key(key))
        if diff:
            raise ResultsError(f"{rf.path}:{line} was made with a different configuration ({diff}); "
                               f"use another --output_file, or the same settings to resume")
