"""Streaming and cancelling one guided generation without changing the engine.

``ReportingBackend`` wraps each backend for one request (the engine sees the same
protocol). Around every ``generate`` it tells a ``TextStream`` what was asked (the
context) and what came back (the chunk), and before every call, and before every token
on an embedded backend, it raises ``Cancelled`` once the request's cancel event is set:
a client that went away frees its slot at the next token.

``TextStream`` mirrors the engine's transcript (``transcript.Transcript``, the same
appends and cuts, so the same bytes) and emits only text the engine can no longer take
back:
  - a consult's tokens are final as they are written;
  - a base step is final as written, except under a ``verify`` consult, where the oracle
    may cut it: it is final once the next ``generate`` shows, in its context (token
    handoff: prompt + the generated ids), how much of it was kept;
  - the tail that could begin a stop string is held back (the engine cuts there), and so
    is an incomplete UTF-8 character.
``finish(result)`` emits the rest of the trace's ``result``; the concatenation of all
emitted pieces equals ``result`` (checked: ``mismatch`` is set where it could not).

Per-token hooks cost something: ``stop_before`` makes an embedded backend compute its
next-token statistics (about a millisecond over a 152k vocabulary). Text-only and HTTP
backends are checked once per call instead (a step of up to ``step_size`` tokens).
"""
from __future__ import annotations

import threading
from typing import Callable

from ..config import GuidedError
from ..handoff import split_utf8_tail
from ..trace import BASE, ORACLE
from ..transcript import Transcript


class Cancelled(GuidedError):
    """The client went away; the generation stopped early (its slot is free)."""


class TextStream:
    def __init__(self, emit: Callable[[str], None], stops: tuple[str, ...], *, verify: bool,
                 n_prompt: int | None):
        """``n_prompt``: prompt tokens under token handoff (contexts then show what was kept);
        None under text handoff (no cuts but stop strings)."""
        self.emit = emit
        self.stops = tuple(s.encode("utf-8") for s in stops)
        self.verify = verify
        self.n_prompt = n_prompt
        self.mirror = Transcript()
        self.pending = False  # the last piece is a base step a verify may still cut
        self.sent_bytes = 0
        self.sent = []  # the emitted pieces of text
        self.mismatch = False

    # --- events from ReportingBackend (the generation's thread) ---------------------------
    def on_generate(self, source: str, context, backend=None) -> None:
        if self.n_prompt is not None and not isinstance(context, str):
            generated, ids = list(context[self.n_prompt:]), self.mirror.token_ids() or []
            kept = 0
            while kept < min(len(generated), len(ids)) and generated[kept] == ids[kept]:
                kept += 1
            if kept < self.mirror.n_tokens:
                self.mirror.truncate(kept)  # a verify cut: the oracle writes from there
            extra = generated[kept:]
            if extra and backend is not None:
                # Tokens no generate call returned: the oracle's, taken from a check's scoring pass
                # (the token at the cut, a bonus token). They are final.
                self.mirror.start_consult(None)
                self.mirror.append(ORACLE, backend.detokenize(extra), len(extra), extra, backend.detokenize)
        self.pending = False
        self._offer(self._final())
        if source == ORACLE:
            self.mirror.start_consult(None)

    def on_tokens(self, source: str, backend, written: list[int]) -> None:
        """Before each token of a call: ``written`` is final unless a verify may cut it."""
        if written and not (source == BASE and self.verify):
            self._offer(self._final() + backend.detokenize(written))

    def on_chunk(self, source: str, backend, chunk) -> None:
        if chunk.text is not None:
            data, ids, n = chunk.text.encode("utf-8"), None, chunk.decode_tokens
        else:
            data, ids, n = backend.detokenize(chunk.tokens) if chunk.tokens else b"", chunk.tokens, len(chunk.tokens)
        self.mirror.append(source, data, n, ids, backend.detokenize if ids is not None else None)
        self.pending = source == BASE and self.verify
        self._offer(self._final())

    def finish(self, result: str) -> None:
        sent = "".join(self.sent)
        if result.startswith(sent):
            if len(result) > len(sent):
                self._send(result[len(sent):])
        else:
            self.mismatch = True  # never seen; the caller logs it

    # --- internals ---------------------------------------------------------------------------
    def _final(self) -> bytes:
        pieces = self.mirror.pieces[:-1] if self.pending else self.mirror.pieces
        return b"".join(p.data for p in pieces)

    def _offer(self, data: bytes) -> None:
        """Emit ``data`` beyond what was sent, up to where a stop string could begin."""
        limit = len(data)
        for s in self.stops:
            at = data.find(s, max(0, self.sent_bytes - len(s)))
            if at >= 0:
                limit = min(limit, at)
            for n in range(min(len(s) - 1, len(data)), 0, -1):  # a suffix that begins s
                if data.endswith(s[:n]):
                    limit = min(limit, len(data) - n)
                    break
        limit = split_utf8_tail(data[:limit])
        if limit > self.sent_bytes:
            self._send(data[self.sent_bytes:limit].decode("utf-8", errors="replace"))
            self.sent_bytes = limit

    def _send(self, text: str) -> None:
        self.sent.append(text)
        self.emit(text)


class ReportingBackend:
    """One request's view of a backend: reports to ``stream``, stops on ``cancel``.

    Every attribute but ``generate`` and ``score`` is the wrapped backend's."""

    def __init__(self, backend, source: str, stream: TextStream | None, cancel: threading.Event):
        self._backend = backend
        self._source = source
        self._stream = stream
        self._cancel = cancel
        # Per-token hooks only where tokens are produced here, one at a time (embedded);
        # an HTTP backend would ask its server for log-probabilities it does not need.
        self._per_token = not getattr(backend, "concurrent", True) and getattr(backend, "token_ids", False)

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def _check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled("the client disconnected")

    def generate(self, context, max_tokens, sampling, rng, stop_before=None, position=0, **kw):
        self._check()
        if self._stream is not None:
            self._stream.on_generate(self._source, context, self._backend)
        hook = self._per_token_hook(stop_before) if self._per_token else stop_before
        chunk = self._backend.generate(context, max_tokens, sampling, rng, hook, position, **kw)
        if self._stream is not None:
            self._stream.on_chunk(self._source, self._backend, chunk)
        return chunk

    def _per_token_hook(self, stop_before):
        """Before each token: stop if cancelled, report the tokens so far, then ask the engine's hook."""
        def hook(stats, written):
            self._check()
            if self._stream is not None:
                self._stream.on_tokens(self._source, self._backend, written)
            return stop_before(stats, written) if stop_before is not None else False
        return hook

    def score(self, context, tokens, **kw):
        self._check()
        return self._backend.score(context, tokens, **kw)
