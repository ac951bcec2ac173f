"""How the text passes between the two models, and what each model's requests cost.

    handoff = choose_handoff(base, oracle)          # "tokens" or "text"
    readers = {BASE: Reader(base, prompt, shared), ORACLE: Reader(oracle, prompt, shared)}
    record_chunk(text, readers, BASE, chunk, shared, handoff)

Two models with one tokenizer that speak token ids share one token list ("tokens"
handoff): what one writes, the other reads as is. Otherwise each keeps its own ids and
the other's new text is re-tokenized for it ("text" handoff), an incomplete UTF-8
character held back until it completes. Each backend evaluates only the tokens it has
not seen (its KV cache), so a handoff costs a catch-up of the other model's new tokens.
``Meter`` times every request and counts it into the model's ``CostMeter`` (the trace's
cost record). The loop that uses all of this is ``engine.py``.
"""
from __future__ import annotations

from .backends.protocol import Backend, Chunk
from .prompts import prompt_ids
from .trace import ORACLE, CostMeter, Timings
from .transcript import Transcript


def split_utf8_tail(data: bytes) -> int:
    """Length of the longest prefix of ``data`` that does not end inside a UTF-8 character
    (an incomplete tail of 1-3 bytes is held back until its character completes)."""
    for back in range(1, min(4, len(data)) + 1):
        b = data[-back]
        if b & 0xC0 == 0x80:
            continue  # continuation byte: look further back for the lead byte
        need = 2 if b & 0xE0 == 0xC0 else 3 if b & 0xF0 == 0xE0 else 4 if b & 0xF8 == 0xF0 else 1
        return len(data) - back if need > back else len(data)
    return len(data)


def choose_handoff(base: Backend, oracle: Backend) -> str:
    """"tokens" when both models speak the same token ids, else "text"."""
    same = base.token_ids and oracle.token_ids and base.tokenizer_key == oracle.tokenizer_key
    return "tokens" if same else "text"


class Reader:
    """One model's view of the shared text: its own token ids (text handoff), or the
    shared list (token handoff), plus the bytes it has not yet read."""

    def __init__(self, backend: Backend, prompt: str, shared: list[int] | None):
        self.backend = backend
        self.prompt = prompt
        # BOS per model (prompts.prompt_ids): never doubled, never missing.
        self.ids = shared if shared is not None else (prompt_ids(backend, prompt) if backend.token_ids else [])
        self.unread = bytearray()
        self.own_text = bytearray()  # for text-only backends: everything generated so far

    def context(self):
        if not self.backend.token_ids:
            return self.prompt + self.own_text[:split_utf8_tail(self.own_text)].decode("utf-8", errors="replace")
        if self.unread:
            # Text handoff: the other model's new text, re-tokenized for this one, whitespace
            # untouched (never strip: that glued words in the prototype). An incomplete UTF-8
            # character stays unread until the rest of it arrives.
            n = split_utf8_tail(self.unread)
            if n:
                self.ids.extend(self.backend.tokenize(self.unread[:n].decode("utf-8", errors="replace"), special=False))
                del self.unread[:n]
        return self.ids

    def room(self) -> int | None:
        """Tokens this model can still generate before its context is full (None: unknown)."""
        n_ctx = getattr(self.backend, "n_ctx", None)
        if n_ctx is None or not self.backend.token_ids:
            return None
        return n_ctx - len(self.ids) - (len(self.unread) > 0)  # unread bytes become >= 1 token


def record_chunk(text: Transcript, readers: dict[str, Reader], source: str, chunk: Chunk,
                 shared: list[int] | None, handoff: str) -> None:
    """Append a chunk to the transcript and make it visible to the other model."""
    writer = readers[source].backend
    data = chunk.text.encode("utf-8") if chunk.text is not None else (writer.detokenize(chunk.tokens) if chunk.tokens else b"")
    ids = chunk.tokens if writer.token_ids else None
    n_new = len(chunk.tokens) if writer.token_ids else chunk.decode_tokens
    text.append(source, data, n_new, ids, writer.detokenize if writer.token_ids else None)
    if handoff == "tokens":
        shared.extend(chunk.tokens)
        return
    for name, r in readers.items():
        if name == source:
            if r.backend.token_ids:
                r.ids.extend(chunk.tokens)
                r.unread.clear()  # a held half character can no longer complete in order
            else:
                r.own_text += data
        elif r.backend.token_ids:
            r.unread += data
        else:
            r.own_text += data


class Meter:
    """Each model's requests, timed and counted into its ``CostMeter`` (the trace's cost record)."""

    def __init__(self, readers: dict[str, Reader], timings: Timings):
        self.readers, self.timings = readers, timings
        self.costs = {name: CostMeter() for name in readers}
        # each model's prompt length in its own tokens (splits prompt reads from catch-up)
        self.n_prompt = {name: len(r.ids) if r.backend.token_ids else None for name, r in readers.items()}

    def __getitem__(self, name: str) -> CostMeter:
        return self.costs[name]

    def generate(self, name: str, context, max_tokens: int, sampling, rng, hook, position: int,
                 keep_logits: bool = False) -> Chunk:
        backend = self.readers[name].backend
        kw = {"keep_logits": True} if keep_logits else {}
        chunk = backend.generate(context, max_tokens, sampling, rng, hook, position=position, **kw)
        getattr(self.timings, name).add(chunk)
        self.costs[name].request(chunk.usage, n_prompt=self.n_prompt[name],
                                 context_len=len(context) if backend.token_ids else None,
                                 decoded=chunk.decode_tokens, seconds=chunk.prefill_s + chunk.decode_s)
        self.costs[name].written += (len(chunk.tokens) + bool(chunk.eos)) if backend.token_ids else chunk.decode_tokens
        return chunk

    def scored(self, scores, context) -> None:
        """The oracle's teacher-forced pass over a step (a check): timed and counted like a request."""
        self.timings.oracle.prefill_tokens += scores.prefill_tokens
        self.timings.oracle.prefill_s += scores.prefill_s
        self.costs[ORACLE].request(scores.usage, n_prompt=self.n_prompt[ORACLE], context_len=len(context),
                                   decoded=0, seconds=scores.prefill_s)
