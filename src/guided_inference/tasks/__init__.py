"""Evaluation datasets: one small file per dataset (load, prompt, grade), one record type.

    task = get_task("math500")          # or task_for_file("my.jsonl")
    problems = task.load()              # list[Problem], file order; DataError on a bad line
    user = task.prompt(problems[0])     # the user message (wrap with chat_prompt)
    grade = task.grade(problems[0], response_text, timeout_s=10)

Contracts:
  - ``load`` reads the whole file before returning: a malformed line raises
    ``DataError`` naming the file, the line number and what is wrong, so a run
    stops before any generation.
  - ``unique_id`` is unique within a file (resume keys on it); a duplicate is a
    ``DataError`` naming both lines.
  - ``Task.template_id`` changes whenever the prompt template text changes; it is
    recorded with every result so a resumed run never mixes prompts.

Datasets: ``math500`` (MATH-500), ``math`` (full MATH test, 5,000), ``gsm8k`` (test,
1,319), and any JSONL file with problem/answer fields or the Meta evals format
(``jsonl.py``).
"""
from __future__ import annotations

from pathlib import Path

from .task import (BOXED_COT, DataError, Grade, Problem, RowParser, Task, read_jsonl, shipped,
                   text_field)


def _registry() -> dict[str, Task]:
    from . import gsm8k, math

    return {t.name: t for t in (math.MATH500, math.MATH, gsm8k.GSM8K)}


DATASETS: tuple[str, ...] = ("math500", "math", "gsm8k")


def get_task(name: str) -> Task:
    tasks = _registry()
    if name not in tasks:
        raise DataError(f"dataset must be one of {', '.join(DATASETS)} (or --data FILE.jsonl), got {name!r}")
    return tasks[name]


def task_for_file(path: str | Path) -> Task:
    """A Task for any JSONL file with problem/answer fields or in the Meta evals format."""
    from .jsonl import file_task

    return file_task(Path(path))


def with_prompt(task: Task, options) -> Task:
    """``task`` with the ``prompt_template`` / ``system_prompt`` of ``options`` (flags of
    eval, sweep and calibrate; an absent attribute means the task's own); one-line errors."""
    return task.with_prompt(getattr(options, "prompt_template", None), getattr(options, "system_prompt", None))


def common_defaults(problems: list[Problem]) -> dict:
    """Generation defaults every problem agrees on (Meta files set max_gen_len/temperature per line).

    Lines that disagree raise DataError: one run has one configuration.
    """
    first = problems[0].defaults
    for p in problems[1:]:
        if p.defaults != first:
            raise DataError(f"line {p.line}: eval_config {dict(p.defaults)} differs from line "
                            f"{problems[0].line}'s {dict(first)}; split the file by configuration")
    return dict(first)


__all__ = ["BOXED_COT", "DATASETS", "DataError", "Grade", "Problem", "Task", "common_defaults", "get_task",
           "RowParser", "read_jsonl", "shipped", "task_for_file", "text_field", "with_prompt"]
