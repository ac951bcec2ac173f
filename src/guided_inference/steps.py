"""History features over the base's per-token statistics (rolling entropy, step confidence)
and over the text as it grows (step boundaries, an opened ``\\boxed{``, a repeated n-gram).
Pure functions over arrays and text, plus ``History``, the record the engine keeps along
one generation and policies read.

The same code serves the online policies, the calibration replay (which drives the same
``History`` over a recorded trace) and the offline studies (divergence labels, the learned
router), so a feature means the same thing in all three.

Step boundary (Speculative Thinking; STEER/SMART step-level confidence), read on the decoded
text one character at a time (``StepBoundaries``). A step begins at a new line that

- follows a blank line: recognised when the newline that ends the blank line is written;
- opens a step: ``Step N`` (recognised at N's first digit), ``N.`` or ``N)`` (at the dot or
  parenthesis), a bullet ``-`` or ``•`` (at the bullet), ``*`` and a space, a Markdown heading
  ``##``..``######`` and a space; ``Step N`` may follow ``#`` or ``**``.

A marker counts when its last character is written, not when the space after it is:
byte-level tokenizers (Qwen, SmolLM2) attach that space to the next word, so a rule that
waits for the space at a token end never fires. Each step begins once: a marker right after
a blank line, or a second blank line, begins no new step, since no text was written in
between. The first line of the answer opens no step. Known false positives: a line that
starts with a minus sign (``-3x``) or a decimal (``1.5``) reads as a list item.

The step just written is the text since the previous boundary; its confidence is the mean
top-1 probability of its base tokens (the probability of the chosen token under greedy
decoding, our default). Oracle tokens have no base statistics and count in no step.
"""
from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

MAYBE, DONE, NO = 0, 1, 2  # can the current line still open a step / it does / it cannot
# A line (leading whitespace stripped) opens a step once a prefix of it matches _DONE; while
# it is a prefix of such a match (_MAYBE) it may still. ANSWER_OPEN: where an answer begins.
_DONE = re.compile(r"(?:#{1,6} *|\*\*)?Step \d|\d+[.)]|[-\u2022]|\* |#{2,6} ")
_MAYBE = re.compile(r"(?:#{1,6} *|\*\*?)?(?:S(?:t(?:e(?:p ?)?)?)?)?|\d+")
ANSWER_OPEN = "\\boxed{"
ROLLING_WINDOWS = (4, 16, 64)  # rolling-entropy windows of the router's features and the divergence study


def marker_state(line: str) -> int:
    """MAYBE, DONE or NO for the current line so far (see module docstring)."""
    s = line.lstrip(" \t\r")
    if _DONE.match(s):
        return DONE
    return MAYBE if _MAYBE.fullmatch(s) else NO


class StepBoundaries:
    """Reads text as it is written; ``feed`` says whether a step began in the text it read."""

    def __init__(self) -> None:
        self.line = ""  # the current line so far, while it may still open a step
        self.state = NO  # the first line is not a boundary: nothing was written before it
        self.armed = True  # a step began and no text was written since (start of the answer)
        self.blank = True  # the current line holds only whitespace so far

    def feed(self, text: str) -> bool:
        passed = False
        for ch in text:
            if ch == "\n":
                if self.state == MAYBE and not self.blank:
                    self.armed = False  # a line that ended half a marker ("12", "**"): text all the same
                if self.blank and not self.armed and self.state != NO:  # a blank line ended
                    passed, self.armed = True, True
                self.line, self.state, self.blank = "", MAYBE, True
                continue
            if ch not in " \t\r":
                self.blank = False
            if self.state == MAYBE:
                self.line += ch
                state = marker_state(self.line)
                if state == DONE:
                    passed, self.armed = passed or not self.armed, True
                elif state == NO and not self.blank:
                    self.armed = False
                self.state = state
            elif ch not in " \t\r":
                self.armed = False  # text after a marker, or a line that opens no step
        return passed

    def snapshot(self) -> tuple:
        return self.line, self.state, self.armed, self.blank

    def restore(self, snap: tuple) -> None:
        self.line, self.state, self.armed, self.blank = snap


def boundary_flags(pieces: list[bytes]) -> np.ndarray:
    """[n] True where a step boundary was passed in the text of token i - 1 (so, just
    before token i): the same reading as ``History.advance`` fed one token at a time."""
    flags, steps = np.zeros(len(pieces), dtype=bool), StepBoundaries()
    decoder = codecs.getincrementaldecoder("utf-8")("ignore")
    for i, b in enumerate(pieces[:-1]):
        flags[i + 1] = steps.feed(decoder.decode(b))
    return flags


def is_boundary(text_so_far: str, new: str | None = None) -> bool:
    """True when a step boundary was passed in ``new``, the last text written after
    ``text_so_far`` (without ``new``: in the last character of ``text_so_far``)."""
    if new is None:
        text_so_far, new = text_so_far[:-1], text_so_far[-1:]
    steps = StepBoundaries()
    steps.feed(text_so_far)
    return steps.feed(new)


def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of x over the last ``window`` values up to and including each index (shorter
    at the start: the mean of what there is)."""
    x = np.asarray(x, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(1, x.size + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def tokens_since_newline(pieces: list[bytes]) -> np.ndarray:
    """For each token (given as its bytes), how many tokens have passed since the last
    token containing a newline (0 for the token right after one)."""
    out, since = np.zeros(len(pieces), dtype=np.int64), 0
    for i, b in enumerate(pieces):
        out[i] = since
        since = 0 if b"\n" in b else since + 1
    return out


@dataclass
class History:
    """What one generation has written so far, for policies that look back.

    ``entropies``/``top_probs``/``positions`` hold the statistics of the base tokens written so
    far (``add``; oracle tokens have none). ``advance`` reads the generated text (both
    models') up to the current decision point and sets ``boundary`` (a step began in the text
    written since the previous decision point) and ``answer_opened`` (a ``\\boxed{`` was
    opened in it); ``ids`` are the generated token ids (the base's tokenization), for
    ``repeats``. ``truncate`` rolls all of it back to a token position (verify's rollback).
    """

    entropies: list[float] = field(default_factory=list)
    top_probs: list[float] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    step_start: int = 0
    ids: list[int] = field(default_factory=list)
    boundary: bool = False
    answer_opened: bool = False
    n_bytes: int = 0
    _closed: float | None = None  # confidence of the step the last boundary closed
    _recent: str = ""  # the last characters read, to find ANSWER_OPEN across tokens
    _steps: StepBoundaries = field(default_factory=StepBoundaries)
    _decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("ignore"))
    _marks: list[tuple] = field(default_factory=list)  # state at each advance, for truncate
    _ngrams: dict = field(default_factory=dict)  # n -> (index {n-gram: first start}, starts indexed)

    def add(self, stats) -> None:
        self.entropies.append(stats.entropy)
        self.top_probs.append(stats.top_prob)
        self.positions.append(stats.position)

    def advance(self, ids: Sequence[int], data: bytes | memoryview) -> None:
        """Read the generated text so far (``data``, its ``ids``): only what is new since the
        last call. At a step boundary, the step just written is closed (``step_confidence``)
        and a new one begins, before any policy reads the point."""
        if len(ids) < len(self.ids) or len(data) < self.n_bytes:
            raise ValueError("History.advance: the text shrank; call truncate(position) first")
        if len(data) == self.n_bytes and len(ids) == len(self.ids):
            return  # the same decision point asked again: the flags stand
        self.ids.extend(int(t) for t in ids[len(self.ids):])
        text = self._decoder.decode(bytes(data[self.n_bytes:]))
        self.n_bytes = len(data)
        self.boundary = self._steps.feed(text)
        recent = self._recent + text
        self.answer_opened = ANSWER_OPEN in recent
        self._recent = recent[-(len(ANSWER_OPEN) - 1):]
        if self.boundary:
            step = self.top_probs[self.step_start:]
            self._closed = float(np.mean(step)) if step else None
            self.step_start = len(self.top_probs)
        self._marks.append((len(self.ids), self.n_bytes, self._steps.snapshot(), self._decoder.getstate(),
                            self._recent, self.step_start, self.boundary, self.answer_opened, self._closed))

    def truncate(self, position: int) -> None:
        """Forget what was written at or after ``position`` (verify's rollback): statistics,
        ids, and the text state, back to the last decision point at or before it."""
        keep = next((i for i, p in enumerate(self.positions) if p >= position), len(self.positions))
        del self.entropies[keep:], self.top_probs[keep:], self.positions[keep:]
        self.step_start = min(self.step_start, keep)
        while self._marks and self._marks[-1][0] > position:
            self._marks.pop()
        n_ids, self.n_bytes, steps, decoder, self._recent, start, self.boundary, self.answer_opened, self._closed = (
            self._marks[-1] if self._marks else (0, 0, StepBoundaries().snapshot(), (b"", 0), "", 0, False, False, None))
        del self.ids[n_ids:]
        self._steps.restore(steps)
        self._decoder.setstate(decoder)
        self.step_start = min(start, keep)
        self._ngrams.clear()

    def rolling_entropy(self, window: int, current: float | None = None) -> float:
        """Mean entropy over the last ``window`` base tokens, including ``current`` (the
        distribution about to be sampled) when given. Oracle tokens are not in the window."""
        values = self.entropies[-window:] + ([current] if current is not None else [])
        values = values[-window:]
        return float(np.mean(values)) if values else 0.0

    def step_confidence(self) -> float | None:
        """Mean top-1 probability of the step just written: at a boundary, the step it
        closed; elsewhere, the step so far (None if it has no base token)."""
        if self.boundary:
            return self._closed
        step = self.top_probs[self.step_start:]
        return float(np.mean(step)) if step else None

    def repeats(self, n: int) -> bool:
        """Whether the last ``n`` generated tokens already occur earlier in the text (an
        n-gram starting at an earlier position; overlapping occurrences count)."""
        ids, end = self.ids, len(self.ids)
        if end <= n:
            return False
        index, done = self._ngrams.get(n, ({}, 0))
        for s in range(done, end - n):  # index every start before the last n-gram's
            index.setdefault(tuple(ids[s:s + n]), s)
        self._ngrams[n] = (index, end - n)
        return tuple(ids[end - n:]) in index
