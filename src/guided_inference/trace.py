"""The trace of one guided generation: who wrote what, where consults began, what it cost.

``Trace.to_dict()`` is what ``guided generate --json`` prints and what the
evaluation stores per problem. Field names follow the original tool
(``interleaved_outputs`` with ``model_type``/``output``, ``cheat_positions``,
``total_tokens_generated``) so its stats scripts still read our files.

Invariant: ``"".join(s.output for s in segments) == result`` exactly.

``Trace.cost`` is what the generation cost, per model (``{"base": {...}, "oracle": {...}}``,
keys ``COST_KEYS``, counted by ``CostMeter``); a count a backend cannot know (HTTP, text
handoff) is None, never 0. Traces written before it existed have ``cost`` None.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

BASE, ORACLE = "base", "oracle"

COST_KEYS = ("calls", "requests", "read_prompt", "read_catchup", "read_check", "decoded", "evaluated",
             "written", "kept", "rejected", "context_tokens", "batches", "seconds")


def _plus(a, b):
    return None if a is None or b is None else a + b


@dataclass
class CostMeter:
    """One model's cost in one generation, counted request by request (``Trace.cost``).

    Per model: ``calls`` forward calls (one per batch of up to n_batch tokens); ``requests``
    generate or score calls; tokens through the forward pass, each counted once:
    ``read_prompt`` (the prompt), ``read_catchup`` (text the other model wrote, this model's
    own tokens taken from a scoring pass, and any re-evaluation), ``read_check`` (tokens
    teacher-forced by a check), ``decoded`` (evaluated one at a time right after this model
    sampled them); ``evaluated`` their sum; ``written`` tokens it produced (a sampled EOS
    counts one; for the oracle, tokens taken from a scoring pass count though not decoded),
    ``kept`` those in the result, ``rejected`` those a check discarded (written - kept -
    rejected = a final EOS plus tokens after a stop string); ``context_tokens`` the context
    length sent, summed over requests; ``batches`` [n_tokens, n_logit_rows, count] over
    forward calls; ``seconds`` wall time in its requests. Unknown (no ``Usage`` from the
    backend, or a text context): None.
    """

    calls: int | None = 0
    requests: int = 0
    read_prompt: int | None = 0
    read_catchup: int | None = 0
    read_check: int | None = 0
    decoded: int | None = 0
    written: int = 0
    context_tokens: int | None = 0
    batches: dict | None = field(default_factory=dict)
    seconds: float = 0.0

    def request(self, usage, *, n_prompt: int | None, context_len: int | None, decoded: int | None,
                seconds: float) -> None:
        """Count one request. ``usage``: the backend's ``Usage`` or None (then only what the
        engine knows: ``decoded`` as the reply reported it, the context length, the time)."""
        self.requests += 1
        self.seconds += seconds
        self.context_tokens = _plus(self.context_tokens, context_len)
        if usage is None or n_prompt is None:
            self.calls = self.read_prompt = self.read_catchup = self.read_check = self.batches = None
            self.decoded = _plus(self.decoded, decoded if usage is None else usage.decoded)
            return
        prompt = max(0, min(n_prompt - usage.read_from, usage.read))  # reads below n_prompt are the prompt
        self.read_prompt = _plus(self.read_prompt, prompt)
        self.read_catchup = _plus(self.read_catchup, usage.read - prompt)
        self.read_check = _plus(self.read_check, usage.check)
        self.decoded = _plus(self.decoded, usage.decoded)
        self.calls = _plus(self.calls, usage.calls)
        if self.batches is not None:
            for shape, count in usage.batches.items():
                self.batches[shape] = self.batches.get(shape, 0) + count

    def record(self, kept: int, rejected: int) -> dict:
        """The cost record of this model: exactly ``COST_KEYS``."""
        evaluated = None
        if None not in (self.read_prompt, self.read_catchup, self.read_check, self.decoded):
            evaluated = self.read_prompt + self.read_catchup + self.read_check + self.decoded
        batches = None if self.batches is None else [[n, r, c] for (n, r), c in sorted(self.batches.items())]
        return {"calls": self.calls, "requests": self.requests, "read_prompt": self.read_prompt,
                "read_catchup": self.read_catchup, "read_check": self.read_check, "decoded": self.decoded,
                "evaluated": evaluated, "written": self.written, "kept": kept, "rejected": rejected,
                "context_tokens": self.context_tokens, "batches": batches, "seconds": round(self.seconds, 6)}


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
    rejected_tokens: int = 0  # verify: base tokens the oracle rejected (discarded, never in result; an EOS counts)
    verify: list[dict] | None = None  # verify: per cut {position, rejected, base_token, oracle_token, oracle_p_base}
    checked_tokens: int | None = None  # verify: base tokens the oracle checked (a checked EOS counts); None: takeover
    unchecked_tokens: int | None = None  # verify: base tokens written after the budget c ran out (EOS counts)
    cost: dict | None = None  # {"base": {...}, "oracle": {...}}, keys COST_KEYS (CostMeter); None: older trace
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
