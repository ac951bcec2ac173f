"""MATH: competition problems with LaTeX answers, levels 1-5 and seven subjects.

    guided eval --dataset math500 --num_samples 100 --levels 1,2 --output_file out.jsonl

``math500`` is the 500-problem subset of "Let's Verify Step by Step" (level is an
int, subject in ``subject``); ``math`` is the full 5,000-problem test set (level
"Level N", subject in ``type``). Both keep MATH's ``unique_id`` ("test/algebra/1.json"),
so a problem has the same id in both. Grading: the last \\boxed{} of the response
against ``answer`` with math-verify (``grading.py``).
"""
from __future__ import annotations

from .task import Problem, Task, shipped, text_field


def parse_level(value) -> int:
    """1-5 from an int or from MATH's "Level N" text."""
    if isinstance(value, str) and value.startswith("Level "):
        value = value[len("Level "):]
    try:
        level = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"field 'level' must be an integer or 'Level N', got {value!r}") from None
    return level


def parse_math500(row: dict, line: int) -> Problem:
    return Problem(unique_id=text_field(row, "unique_id"), problem=text_field(row, "problem"),
                   answer=text_field(row, "answer"), level=parse_level(row["level"]),
                   subject=text_field(row, "subject"), line=line)


def parse_math(row: dict, line: int) -> Problem:
    return Problem(unique_id=text_field(row, "unique_id"), problem=text_field(row, "problem"),
                   answer=text_field(row, "answer"), level=parse_level(row["level"]),
                   subject=text_field(row, "type"), line=line)


MATH500 = Task("math500", shipped("math500_test.jsonl"), parse_math500)
MATH = Task("math", shipped("math_test.jsonl"), parse_math)
