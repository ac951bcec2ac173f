"""GSM8K: grade-school word problems whose answer is one number.

    guided eval --dataset gsm8k --num_samples 50 --output_file gsm8k.jsonl

The file's ``answer`` is a worked solution ending in ``#### <number>``; the gold
answer is that number with thousands separators removed. The prompt is the same
zero-shot chain of thought with the final answer in \\boxed{}, so grading is the
MATH grader (math-verify compares numbers: 18 = 18.00 = \\$18). Ids are
``gsm8k/test/<line>`` (the file has none).
"""
from __future__ import annotations

from .task import Problem, Task, shipped, text_field

MARK = "####"


def gold_number(solution: str) -> str:
    """The number after the last ``####`` of a GSM8K solution, without commas."""
    if MARK not in solution:
        raise ValueError(f"field 'answer' has no '{MARK} <number>' final answer")
    number = solution.rsplit(MARK, 1)[1].strip().replace(",", "")
    if not number:
        raise ValueError(f"field 'answer' has nothing after '{MARK}'")
    return number


def parse_gsm8k(row: dict, line: int) -> Problem:
    return Problem(unique_id=f"gsm8k/test/{line}", problem=text_field(row, "question"),
                   answer=gold_number(text_field(row, "answer")), line=line)


GSM8K = Task("gsm8k", shipped("gsm8k_test.jsonl"), parse_gsm8k)
