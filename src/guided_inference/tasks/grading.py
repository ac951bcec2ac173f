"""Grading: the last \\boxed{} of a response against the gold answer, with math-verify.

    grade_response("\\frac{1}{2}", "... so the answer is $\\boxed{0.5}$.")
    -> Grade(correct=True, parsed_answer="0.5", timeout=False)

Steps:
  1. ``last_boxed``: the content of the last complete ``\\boxed{...}`` (or ``\\fbox``,
     or ``\\boxed 5``); braces are balanced, escaped ``\\{ \\}`` do not count. No
     box: wrong, ``parsed_answer`` None. The content is stored as text.
  2. ``normalise``: the one rewrite math-verify needs here: repeating decimals
     (``0.\\overline{3}`` -> ``\\frac{1}{3}``), which it reads as 0.
  3. math-verify ``parse`` of ``$gold$`` and ``$answer$``, then ``verify(gold, answer)``
     (not symmetric: gold first). It already strips ``\\text{units}``, ``^\\circ``,
     ``\\$``, ``\\!`` and thousands commas, and reads ``25\\%`` as 25 or 0.25.

Timeout: one deadline for the whole of step 3 (SIGALRM via ``setitimer``, so the
main thread only; pass ``timeout_s=None`` elsewhere). A timeout counts as wrong and
sets ``Grade.timeout``. The alarm fires between Python bytecodes, so one long C-level
call (a pathological regex) runs to its end before the timeout takes effect.

Known limitations (tests/test_grading.py keeps them as strict xfails): ``[-2,7]`` vs
``-2 \\le x \\le 7`` is judged different; ``i`` vs ``\\sqrt{-1}`` is judged different;
gold ``1,2`` (two values) vs ``(1,2)`` (an interval) is judged equal.
"""
from __future__ import annotations

import logging
import re
import signal
import threading
from dataclasses import dataclass
from fractions import Fraction

# math-verify logs a warning when its own timeouts are off; we impose ours (below).
logging.getLogger("math_verify").setLevel(logging.ERROR)

BOX_COMMANDS = ("\\boxed", "\\fbox")
_REPEATING = re.compile(r"(-?)(\d*)\.(\d*)\\overline\s*\{?(\d+)\}?")


@dataclass(frozen=True)
class Grade:
    correct: bool
    parsed_answer: str | None  # the last \boxed{} content as written; None when there is none
    timeout: bool = False


class GradeTimeout(BaseException):
    """Raised by the alarm; a BaseException so math-verify's ``except Exception`` lets it through."""


def last_boxed(text: str) -> str | None:
    """Content of the last complete \\boxed{...} / \\fbox{...} / \\boxed X in ``text``."""
    starts = sorted((m.start(), m.end()) for cmd in BOX_COMMANDS for m in re.finditer(re.escape(cmd), text))
    for start, end in reversed(starts):
        content = _box_content(text, end)
        if content is not None and content.strip():
            return content.strip()
    return None


def _box_content(text: str, i: int) -> str | None:
    if text[i:i + 1].isalpha():  # \boxedfoo is another command
        return None
    j = i
    while j < len(text) and text[j] == " ":
        j += 1
    if j >= len(text):
        return None
    if text[j] != "{":  # "\boxed 5": up to the next space or dollar
        m = re.match(r"[^\s$]+", text[j:])
        return m.group(0) if m and j > i else None
    depth, k = 0, j
    while k < len(text):
        ch = text[k]
        if ch == "\\":
            k += 2  # an escaped character (\{ \} \\) never opens or closes
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[j + 1:k]
        k += 1
    return None  # unbalanced: cut off mid-answer


def _repeating_to_fraction(m: re.Match) -> str:
    sign, whole, fixed, period = m.groups()
    shift = 10 ** len(fixed)
    value = Fraction(int(whole or "0")) + Fraction(int(fixed or "0"), shift) + \
        Fraction(int(period), shift * (10 ** len(period) - 1))
    body = str(value.numerator) if value.denominator == 1 else f"\\frac{{{value.numerator}}}{{{value.denominator}}}"
    return f"{sign}{body}"


def normalise(answer: str) -> str:
    """Rewrite what math-verify misreads (repeating decimals) and strip enclosing dollars."""
    answer = answer.strip().strip("$").strip()
    return _REPEATING.sub(_repeating_to_fraction, answer)


def equivalent(gold: str, answer: str) -> bool:
    """math-verify's verdict on two LaTeX answers (no timeout of its own; see grade_response)."""
    from math_verify import parse, verify

    g = parse(f"${normalise(gold)}$", parsing_timeout=None)
    a = parse(f"${normalise(answer)}$", parsing_timeout=None)
    if not g or not a:
        return False
    return bool(verify(g, a, timeout_seconds=None))


def grade_response(gold: str, response: str, *, timeout_s: float | None = 10.0) -> Grade:
    """Grade ``response`` (full model output) against ``gold``. See the module docstring."""
    answer = last_boxed(response)
    if answer is None:
        return Grade(False, None)
    try:
        correct = with_deadline(timeout_s, equivalent, gold, answer)
    except GradeTimeout:
        return Grade(False, answer, timeout=True)
    return Grade(correct, answer)


def with_deadline(timeout_s: float | None, fn, *args):
    """Call ``fn(*args)``; raise GradeTimeout after ``timeout_s`` seconds (main thread only)."""
    if timeout_s is None:
        return fn(*args)
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("grading with a timeout uses SIGALRM: call it from the main thread or pass timeout_s=None")

    def on_alarm(signum, frame):
        raise GradeTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
