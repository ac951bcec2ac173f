"""One record type and one Task type for every dataset: load a file, prompt, grade.

    task = Task("math500", shipped("math500_test.jsonl"), parse_row)
    problems = task.load()              # list[Problem], file order; DataError on a bad line
    user = task.prompt(problems[0])     # the user message (wrap with chat_prompt)
    grade = task.grade(problems[0], response_text, timeout_s=10)

The datasets themselves (``math.py``, ``gsm8k.py``, ``jsonl.py``) build Tasks from these
parts, and ``tasks/__init__.py`` names them (``get_task``). Contracts: see the package's
docstring.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

from ..config import GuidedError
from .grading import Grade, grade_response

# Zero-shot chain of thought, final answer in \boxed{} (the Qwen2.5-Math wording).
BOXED_COT = "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."


class DataError(GuidedError, ValueError):
    """A dataset file is missing or a line in it is malformed."""


@dataclass(frozen=True)
class Problem:
    unique_id: str
    problem: str  # the question text the template wraps
    answer: str  # the gold answer, as LaTeX or a plain number
    level: int | None = None
    subject: str | None = None
    line: int = 0  # 1-based line number in its file
    defaults: tuple[tuple[str, Any], ...] = ()  # generation defaults the file sets (Meta eval_config)


RowParser = Callable[[dict, int], Problem]  # (JSON object, line number) -> Problem; KeyError/ValueError if bad


@dataclass(frozen=True)
class Task:
    """A dataset: where its file is, how a line becomes a Problem, the prompt template."""

    name: str  # recorded as ``dataset`` in every result row
    path: Path
    parse_row: RowParser
    template: str = BOXED_COT  # str.format template with one field, {problem}
    system: str | None = None  # system message put before the user message (--system_prompt)
    template_file: str | None = None  # where a --prompt_template came from (recorded, not keyed)

    @property
    def template_id(self) -> str:
        digest = hashlib.sha256(self.template.encode("utf-8")).hexdigest()[:8]
        return f"boxed-cot@{digest}" if self.template == BOXED_COT else f"custom@{digest}"

    def with_prompt(self, template_file: str | None = None, system: str | None = None) -> "Task":
        """This task with the user message from ``template_file`` (text in which ``{problem}``
        is replaced by the problem; no other brace is special, so ``\\boxed{}`` stays as
        written) and/or a system message. DataError (one line) for a file that cannot be read
        or lacks ``{problem}``, and for an empty system message."""
        template, source = self.template, self.template_file
        if template_file is not None:
            try:
                text = Path(template_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise DataError(f"cannot read prompt template {template_file}: {getattr(e, 'strerror', None) or e}") from None
            if "{problem}" not in text:
                raise DataError(f"prompt template {template_file} lacks {{problem}} (where the problem text goes)")
            # Escape every brace, then restore the one field: format() then replaces only it.
            template = text.replace("{", "{{").replace("}", "}}").replace("{{problem}}", "{problem}")
            source = str(template_file)
        if system is not None and not system.strip():
            raise DataError(f"system_prompt must be non-empty text, got {system!r}")
        return dataclasses.replace(self, template=template, template_file=source,
                                   system=system if system is not None else self.system)

    def load(self) -> list[Problem]:
        problems, seen = [], {}
        for lineno, row in read_jsonl(self.path):
            try:
                p = self.parse_row(row, lineno)
            except KeyError as e:
                raise DataError(f"{self.path}:{lineno}: missing field {e.args[0]!r}") from None
            except (TypeError, ValueError) as e:
                raise DataError(f"{self.path}:{lineno}: {e}") from None
            if p.unique_id in seen:
                raise DataError(f"{self.path}:{lineno}: unique_id {p.unique_id!r} repeats line {seen[p.unique_id]}")
            seen[p.unique_id] = lineno
            problems.append(p)
        if not problems:
            raise DataError(f"{self.path}: no problems in file")
        return problems

    def prompt(self, problem: Problem) -> str:
        return self.template.format(problem=problem.problem)

    def grade(self, problem: Problem, response: str, *, timeout_s: float | None = 10.0) -> Grade:
        return grade_response(problem.answer, response, timeout_s=timeout_s)


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; DataError on bad JSON or a non-object."""
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise DataError(f"cannot read data file {path}: {e.strerror}") from None
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def text_field(row: dict, name: str) -> str:
    """A required non-empty string field (numbers are accepted and turned into text)."""
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or str(value).strip() == "":
        raise ValueError(f"field {name!r} must be a non-empty string, got {value!r}")
    return str(value)


def shipped(filename: str) -> Path:
    """Path of a data file shipped inside the package."""
    return Path(str(resources.files("guided_inference") / "data" / filename))
