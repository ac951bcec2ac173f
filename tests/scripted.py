"""A STAND-IN backend for engine edge cases that real models cannot be made to produce on
demand: a character split across chunks, a stop string across a handoff, EOS in the same
chunk as a stop string, a stop string ending exactly at a piece boundary.

It is not a model: each ``generate`` call returns the next scripted chunk (cut to
``max_tokens``). Its vocabulary maps ids to bytes: ids 0-255 are single bytes, larger
ids are the multi-byte tokens a test defines. ``tokenize`` is byte-wise (plus any
defined tokens it finds first), so it also serves the text handoff. Real-model tests
stay the main evidence; these pin the bookkeeping.
"""
from __future__ import annotations

from guided_inference.backends.protocol import Chunk


class ScriptedBackend:
    has_stats = False
    token_ids = True
    can_score = False
    concurrent = False
    adds_bos = False
    chat_template = None
    bos_text = ""
    sha256 = None

    def __init__(self, name: str, script: list[tuple[list[int] | bytes, bool]], extra: dict[int, bytes] | None = None,
                 tokenizer_key: str = "scripted", n_ctx: int | None = None):
        self.name = self.model_id = name
        self.extra = dict(extra or {})
        self.script = [(self._ids(t), eos) for t, eos in script]
        self.tokenizer_key = tokenizer_key
        self.n_ctx = n_ctx
        self.contexts: list[list[int]] = []  # every context generate() was given
        self.calls = 0

    @staticmethod
    def _ids(t) -> list[int]:
        return list(t)  # a list of ids, or bytes: one token per byte

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        return list(text.encode("utf-8"))

    def detokenize(self, ids: list[int]) -> bytes:
        return b"".join(self.extra.get(i, bytes([i])) if i >= 256 else bytes([i]) for i in ids)

    def generate(self, context, max_tokens, sampling, rng, stop_before=None, position=0) -> Chunk:
        self.calls += 1
        self.contexts.append(list(context))
        if not self.script:
            return Chunk(eos=True)
        tokens, eos = self.script.pop(0)
        chunk = Chunk(tokens=tokens[:max_tokens], eos=eos and len(tokens) <= max_tokens)
        chunk.decode_tokens = len(chunk.tokens)
        return chunk
