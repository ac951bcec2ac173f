"""The bytes of each token of a Hugging Face tokenizer, so that detokenizing a chunk never
damages a character split across chunks.

``tokenizer.decode(ids)`` returns str: a chunk that ends inside a multi-byte UTF-8
character (an emoji, a rare CJK character, split over two or more byte tokens) comes back
as U+FFFD, and the next chunk starts with another U+FFFD; concatenating the chunks' text
loses the character. The engine appends chunks as bytes, so a backend must return the
exact bytes of the tokens, whole or partial characters alike.

    to_bytes = token_bytes(tok)        # built once per tokenizer (one pass over the vocabulary)
    to_bytes([id1, id2]) -> b"..."     # special tokens give b"" (as decode(skip_special_tokens=True))

Two decoder families cover the models we target:
  - byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM2): each piece's characters stand for bytes
    through GPT-2's printable byte map;
  - SentencePiece with byte fallback (Llama 2, Gemma, Mistral): ``<0xHH>`` pieces are single
    bytes, ``▁`` is a space.
Any other decoder falls back to ``decode`` per call, which is exact for whole characters.
"""
from __future__ import annotations

import re
from typing import Callable

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def gpt2_byte_map() -> dict[str, int]:
    """GPT-2's map from the printable character that stands for a byte back to the byte."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:  # bytes that are not printable are shifted past 255, in order
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def decoder_kind(tok) -> str:
    """``byte_level``, ``sentencepiece`` or ``other``, from the fast tokenizer's decoder."""
    backend = getattr(tok, "backend_tokenizer", None)
    text = repr(getattr(backend, "decoder", None))
    if "ByteLevel" in text:
        return "byte_level"
    if "ByteFallback" in text or "Metaspace" in text:
        return "sentencepiece"
    return "other"


def token_bytes(tok) -> Callable[[list[int]], bytes]:
    """A function from token ids to the exact bytes they stand for (see the module doc)."""
    kind = decoder_kind(tok)
    if kind == "other":
        return lambda ids: tok.decode(list(ids), skip_special_tokens=True).encode("utf-8")
    special = set(tok.all_special_ids)
    if kind == "byte_level":
        byte_of = gpt2_byte_map()

        def piece_bytes(p: str) -> bytes:
            # Added tokens that are not special (rare) are stored as plain text, not byte characters.
            return bytes(byte_of[c] for c in p) if all(c in byte_of for c in p) else p.encode("utf-8")
    else:
        def piece_bytes(p: str) -> bytes:
            m = _BYTE_PIECE.fullmatch(p)
            return bytes([int(m.group(1), 16)]) if m else p.replace("\u2581", " ").encode("utf-8")

    pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
    table = [b"" if i in special or p is None else piece_bytes(p) for i, p in enumerate(pieces)]
    return lambda ids: b"".join(table[i] for i in ids)
