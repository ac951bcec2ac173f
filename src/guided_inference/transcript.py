"""The generated text of one guided generation, owned in one place.

``Transcript`` holds the pieces the two models wrote (source, bytes, token ids, token
count) and the consults. Everything that changes it is a method: ``append`` a model's
chunk, ``truncate`` to a token position (verify's rollback), ``cut_at_stop`` (stop
strings). The accounting invariants therefore hold by construction, and
``check_invariants`` states them:

- the segments' outputs concatenate to ``result``;
- ``base_tokens + oracle_tokens == total_tokens_generated``, which equals
  ``len(token_ids)`` when the models share token ids;
- every ``cheat_position`` starts an oracle segment, one per consult;
- nothing after a cut is kept or counted.

Token byte offsets inside a piece are computed only when a cut needs them, by
detokenizing growing prefixes of the piece (exact for byte-level and SentencePiece
vocabularies alike, since both decode prefixes to prefixes). A text-only piece (no
ids) that is cut keeps ``ceil(n * kept_bytes / bytes)`` of its tokens: an estimate,
the only one its backend allows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from .trace import BASE, ORACLE, Segment, split_segments


@dataclass
class Piece:
    source: str  # BASE | ORACLE
    data: bytes
    n_tokens: int
    ids: list[int] | None  # None: a text-only backend wrote it
    detokenize: Callable[[list[int]], bytes] | None = None  # the writer's, for offsets
    consult: int | None = None  # index of the consult this oracle piece belongs to

    def token_ends(self) -> list[int]:
        """Byte offset in ``data`` where each token ends (len n_tokens, last == len(data))."""
        if self.ids is None or self.detokenize is None:
            return [math.ceil(len(self.data) * (i + 1) / self.n_tokens) for i in range(self.n_tokens)]
        ends, last = [], 0
        for i in range(1, len(self.ids) + 1):
            last = max(last, min(len(self.data), len(self.detokenize(self.ids[:i]))))
            ends.append(last)
        if ends:
            ends[-1] = len(self.data)
        return ends


@dataclass
class Transcript:
    pieces: list[Piece] = field(default_factory=list)
    cheat_positions: list[int] = field(default_factory=list)
    consult_stats: list[dict | None] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return sum(p.n_tokens for p in self.pieces)

    def start_consult(self, stats: dict | None) -> int:
        """Open a consult at the current position; the next ORACLE ``append`` belongs to it."""
        self.cheat_positions.append(self.n_tokens)
        self.consult_stats.append(stats)
        return len(self.cheat_positions) - 1

    def append(self, source: str, data: bytes, n_tokens: int, ids: list[int] | None,
               detokenize: Callable | None = None) -> None:
        consult = len(self.cheat_positions) - 1 if source == ORACLE else None
        if source == ORACLE and (consult < 0 or any(p.consult == consult for p in self.pieces)):
            raise ValueError("an oracle piece must follow start_consult(), once per consult")
        self.pieces.append(Piece(source, bytes(data), n_tokens, list(ids) if ids is not None else None,
                                 detokenize, consult))

    # --- cuts ---------------------------------------------------------------
    def truncate(self, position: int) -> None:
        """Keep only the first ``position`` tokens (verify's rollback); consults that
        started at or after it are forgotten."""
        kept, count = [], 0
        for p in self.pieces:
            if count + p.n_tokens <= position:
                kept.append(p)
                count += p.n_tokens
                continue
            keep = position - count
            if keep > 0:
                end = p.token_ends()[keep - 1]
                kept.append(Piece(p.source, p.data[:end], keep, p.ids[:keep] if p.ids is not None else None,
                                  p.detokenize, p.consult))
            break
        self.pieces = kept
        while self.cheat_positions and self.cheat_positions[-1] >= position:
            self.cheat_positions.pop()
            self.consult_stats.pop()

    def cut_at_stop(self, stops: tuple[str, ...]) -> bool:
        """Cut just before the earliest stop string; True if one was found.

        The kept tokens are those that begin before the cut (a token the cut splits is
        counted: part of its text is in the result); tokens after it are dropped."""
        full = b"".join(p.data for p in self.pieces)
        hits = [i for i in (full.find(s.encode("utf-8")) for s in stops) if i >= 0]
        if not hits:
            return False
        cut, offset, kept = min(hits), 0, []
        for p in self.pieces:
            if offset + len(p.data) <= cut:
                kept.append(p)
                offset += len(p.data)
                continue
            local = cut - offset
            if local > 0:
                ends = p.token_ends()
                keep = next(i + 1 for i, e in enumerate(ends) if e >= local)  # tokens that begin before the cut
                kept.append(Piece(p.source, p.data[:local], keep, p.ids[:keep] if p.ids is not None else None,
                                  p.detokenize, p.consult))
            break
        self.pieces = kept
        present = {p.consult for p in kept if p.consult is not None and p.n_tokens}
        while self.cheat_positions and len(self.cheat_positions) - 1 not in present:
            self.cheat_positions.pop()
            self.consult_stats.pop()
        return True

    # --- views --------------------------------------------------------------
    def segments(self) -> list[Segment]:
        return split_segments([(p.source, p.data, p.n_tokens) for p in self.pieces])

    def token_ids(self) -> list[int] | None:
        if any(p.ids is None for p in self.pieces):
            return None
        return [t for p in self.pieces for t in p.ids]

    def tokens_of(self, source: str) -> int:
        return sum(p.n_tokens for p in self.pieces if p.source == source)

    def tail(self, n_bytes: int = 64) -> str:
        """The last bytes of the text, decoded (an incomplete character is dropped)."""
        data = b"".join(p.data for p in self.pieces[-4:])[-n_bytes:]
        return data.decode("utf-8", errors="ignore")


def check_invariants(trace) -> None:
    """AssertionError if a trace breaks the accounting contract (see module docstring)."""
    segs = trace.interleaved_outputs
    assert "".join(s.output for s in segs) == trace.result, "segments do not concatenate to result"
    assert sum(s.n_tokens for s in segs) == trace.total_tokens_generated, "segment tokens != total"
    assert trace.base_tokens + trace.oracle_tokens == trace.total_tokens_generated, "base + oracle != total"
    assert trace.base_tokens == sum(s.n_tokens for s in segs if s.model_type == BASE), "base count"
    if trace.token_ids is not None:
        assert len(trace.token_ids) == trace.total_tokens_generated, "token_ids length != total"
    oracle_starts = [s.start for s in segs if s.model_type == ORACLE]
    assert oracle_starts == list(trace.cheat_positions), "cheat_positions do not start oracle segments"
    assert len(trace.consult_stats) == len(trace.cheat_positions), "consult_stats length"
