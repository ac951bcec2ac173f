"""Any JSONL file of problems: ``guided eval --data FILE.jsonl``.

Each line is one object in one of two shapes:

1. Plain: the question in ``problem`` (or ``question``), the gold answer in
   ``answer`` (a GSM8K-style ``... #### 42`` solution is reduced to 42);
   optional ``unique_id`` (or ``id``), ``level`` (int or "Level N"),
   ``subject`` (or ``type``).
2. Meta evals (what the original tool read, e.g. Llama-3.2-*-Instruct-evals
   MATH details): ``input_correct_responses`` (list; the first is the gold
   answer), ``input_question`` or else ``input_final_prompts`` (list; the first
   is used as the question text), ``eval_config`` whose ``max_gen_len`` and
   ``temperature`` become the run's defaults (explicit flags win).
   ``input_final_prompts`` are already in Llama-3's chat format; we re-wrap the
   question in the base model's own template instead, so prefer ``input_question``.

Ids default to ``<file stem>/<line>``. The dataset name recorded is ``file:<name>``.
"""
from __future__ import annotations

from pathlib import Path

from .task import Problem, Task, text_field
from .gsm8k import MARK, gold_number
from .math import parse_level

META_DEFAULTS = {"max_gen_len": ("max_new_tokens", int), "temperature": ("temperature", float)}
KIND_NAMES = {int: "an integer", float: "a number"}


def _first(row: dict, names: tuple[str, ...]):
    for n in names:
        if n in row:
            return n
    raise KeyError(" or ".join(names))


def _meta_defaults(row: dict) -> tuple:
    cfg = row.get("eval_config")
    if cfg is None:
        return ()
    if not isinstance(cfg, dict):
        raise ValueError(f"field 'eval_config' must be an object, got {cfg!r}")
    out = []
    for key, (name, kind) in META_DEFAULTS.items():
        if key in cfg:
            try:
                out.append((name, kind(cfg[key])))
            except (TypeError, ValueError):
                raise ValueError(f"eval_config.{key} must be {KIND_NAMES[kind]}, got {cfg[key]!r}") from None
    return tuple(out)


def _first_of_list(row: dict, name: str) -> str:
    value = row[name]
    if not isinstance(value, list) or not value:
        raise ValueError(f"field {name!r} must be a non-empty list, got {value!r}")
    return text_field({name: value[0]}, name)


def parse_any(row: dict, line: int, stem: str) -> Problem:
    if "input_correct_responses" in row:  # Meta evals format
        answer = _first_of_list(row, "input_correct_responses")
        question = (text_field(row, "input_question") if "input_question" in row
                    else _first_of_list(row, "input_final_prompts"))
        defaults = _meta_defaults(row)
    else:
        question = text_field(row, _first(row, ("problem", "question")))
        answer = text_field(row, "answer")
        answer = gold_number(answer) if MARK in answer else answer
        defaults = ()
    uid = row.get("unique_id", row.get("id", f"{stem}/{line}"))
    level = parse_level(row["level"]) if row.get("level") is not None else None
    subject = row.get("subject", row.get("type"))
    return Problem(unique_id=str(uid), problem=question, answer=answer, level=level,
                   subject=str(subject) if subject is not None else None, line=line, defaults=defaults)


def file_task(path: Path) -> Task:
    stem = path.stem
    return Task(f"file:{path.name}", path, lambda row, line: parse_any(row, line, stem))
