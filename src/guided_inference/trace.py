"""The trace of one guided generation: who wrote what, where consults began, what it cost.

``Trace.to_dict()`` is what ``guided generate --json`` prints and what the
evaluation stores per problem. Field names follow the original tool
(``interleaved_outputs`` with ``model_type``/``output``, ``cheat_positions``,
``total_tokens_generated``) so its stats scripts still read our files.

Invariant: ``"".join(s.output for s in segments) == result`` exactly.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

BASE, ORACLE = "base", "oracle"


@dataclass
class Segment:
    model_type: str  # "base" | "oracle"
    output: str
    start: int  # index of its first token among the generated tokens
    n_tokens: int


@dataclass
class ModelTimings:
    prefill_tokens: int = 0
    prefill_s: float = 0.0
    decode_tokens: int = 0
    decode_s: float = 0.0

    def add(self, chunk) -> None:
        self.prefill_tokens += chunk.prefill_tokens
        self.prefill_s += chunk.prefill_s
        self.decode_tokens += chunk.decode_tokens
        self.decode_s += chunk.decode_s


@dataclass
class Timings:
    load_s: float = 0.0
    generation_s: float = 0.0
    base: ModelTimings = field(default_factory=ModelTimings)
    oracle: ModelTimings = field(default_factory=ModelTimings)


@dataclass
class Trace:
    result: str
    interleaved_outputs: list[Segment]
    cheat_positions: list[int]
    total_tokens_generated: int
    base_tokens: int
    oracle_tokens: int
    handoff: str  # "tokens" | "text"
    finish_reason: str  # "eos" | "length" | "stop"
    timings: Timings
    token_ids: list[int] | None = None  # generated ids (token handoff only)
    consult_stats: list[dict | None] = field(default_factory=list)  # base stats where each consult began
    seed_key: str | None = None  # per-problem key of the random streams (engine.seed_sequence)
    rejected_tokens: int = 0  # verify: base tokens the oracle rejected (discarded, never in result)
    verify: list[dict] | None = None  # verify: per consult {position, rejected, base_token, oracle_token, oracle_p_base}
    token_stats: dict | None = None  # --save_stats: per generated position, the base's statistics (None: oracle)
    n_support: int | None = None  # probabilities the statistics were computed over (vocabulary, or top-N over HTTP)

    @property
    def oracle_share(self) -> float:
        return self.oracle_tokens / self.total_tokens_generated if self.total_tokens_generated else 0.0

    @property
    def tokens_per_s(self) -> float:
        g = self.timings.generation_s
        return self.total_tokens_generated / g if g > 0 else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["oracle_share"] = self.oracle_share
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Trace":
        t = d["timings"]
        timings = Timings(t["load_s"], t["generation_s"], ModelTimings(**t["base"]), ModelTimings(**t["oracle"]))
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k not in ("timings", "interleaved_outputs")}
        return cls(interleaved_outputs=[Segment(**s) for s in d["interleaved_outputs"]], timings=timings, **fields)


def split_segments(pieces: list[tuple[str, bytes, int]]) -> list[Segment]:
    """Turn (source, bytes, n_tokens) pieces into text segments whose concatenation
    decodes exactly like the whole byte string.

    A token can end in the middle of a UTF-8 character; such a character is moved
    whole into the segment where it began, so no segment holds half a character
    and nothing is stripped or added. A character can span more than two pieces
    (a one-token consult of a single byte in its middle): the pieces it covers
    then keep their tokens but an empty text. Adjacent base pieces are merged;
    each oracle piece (one consult) stays its own segment.
    """
    merged: list[list] = []
    for source, data, n in pieces:
        if merged and source == BASE and merged[-1][0] == BASE:
            merged[-1][1] += data
            merged[-1][2] += n
        else:
            merged.append([source, bytearray(data), n])
    data = b"".join(bytes(m[1]) for m in merged)
    # Byte offsets where each piece begins, each moved forward past UTF-8 continuation
    # bytes (0b10xxxxxx): those belong to a character that began in an earlier piece.
    bounds, at = [], 0
    for _, piece, _ in merged:
        b = max(at, bounds[-1] if bounds else 0)
        while b < len(data) and (data[b] & 0xC0) == 0x80:
            b += 1
        bounds.append(b)
        at += len(piece)
    bounds = [0, *bounds[1:], len(data)]
    segments, start = [], 0
    for (source, _, n), lo, hi in zip(merged, bounds, bounds[1:]):
        segments.append(Segment(source, data[lo:hi].decode("utf-8", errors="replace"), start, n))
        start += n
    return segments
