"""PRM800K: the base's statistics against human ratings of solution steps.

    guided prm800k --base_model 0.5B --output_file prm.jsonl [--num_problems 20]

The shipped parquet (``data/prm800k/``, provenance in its README) holds 5,449 rated steps
of 101 MATH problems: per row the problem (``instruction``), the steps before it
(``responses``), the step (``next_response``) and its ``rating`` (-1 bad, 0 neutral,
1 good; unrated rows are skipped). Several candidate steps share one prefix.

Per rated step: the problem goes in the base's chat template as the user message, the
previous steps joined by newlines as the start of the assistant's message, and the
step is teacher-forced after them (``Backend.score``, one batched pass; the KV cache
keeps the shared prefix between candidates). Tokenization: the prefix text and the
step text are tokenized separately and concatenated, so the step's token span
reproduces its text exactly, whatever it starts with (whitespace, ``$``). Recorded:
the statistics at the step's first token and over the step (mean entropy, max entropy,
min top-1 probability, mean probability of the step's own tokens).
"""
from __future__ import annotations

import hashlib
import time
from importlib import resources
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import GuidedError
from ..evaluation.results import ResultsFile
from ..prompts import prompt_ids as engine_prompt_ids  # the engine's BOS rule, per model

COLUMNS = ("instruction", "responses", "next_response", "rating")
SEPARATOR = "\n"  # between steps of one solution, as PRM800K's own step lists are joined
STEP_STATS = ("first_entropy", "first_varentropy", "first_top_prob", "first_margin", "first_token_prob",
              "mean_entropy", "max_entropy", "min_top_prob", "mean_token_prob")
# Orientation for "higher means the step is bad": uncertainty up, confidence down.
ORIENT = {"first_entropy": 1, "first_varentropy": 1, "first_top_prob": -1, "first_margin": -1,
          "first_token_prob": -1, "mean_entropy": 1, "max_entropy": 1, "min_top_prob": -1, "mean_token_prob": -1}


def shipped_parquet() -> str:
    return str(resources.files("guided_inference") / "data" / "prm800k" / "phase1_test.stepwise-critic.parquet")


def load_steps(path: str, *, rated_only: bool = True) -> list[dict]:
    """Rows of the parquet (only the rated ones by default), in file order; one-line errors
    for a missing file, a missing column or a missing reader."""
    if not Path(path).is_file():
        raise GuidedError(f"PRM800K parquet not found: {path!r}")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise GuidedError("reading parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a non-parquet file
        raise GuidedError(f"{path!r} is not a readable parquet file ({type(e).__name__})") from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise GuidedError(f"{path!r} lacks column(s) {', '.join(missing)} (needs {', '.join(COLUMNS)})")
    rows = table.to_pylist()
    bad = next((r for r in rows if r["rating"] not in (None, -1, 0, 1)), None)
    if bad is not None:
        raise GuidedError(f"{path!r}: rating must be -1, 0, 1 or empty, got {bad['rating']!r}")
    return [r for r in rows if r["next_response"] and (r["rating"] is not None or not rated_only)]


def problem_key(instruction: str) -> str:
    return hashlib.sha256(instruction.encode("utf-8")).hexdigest()[:16]


def group_problems(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    """(instruction, its rated rows) per problem, in order of first appearance."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["instruction"], []).append(r)
    return list(out.items())


def step_tokens(backend, prompt_ids: list[int], responses: list[str], step: str) -> tuple[list[int], list[int]]:
    """(context ids, step ids): the prompt, then the previous steps joined by SEPARATOR
    (and one after them), then the step, each part tokenized on its own (module docstring)."""
    prefix = "".join(s + SEPARATOR for s in responses)
    context = list(prompt_ids) + (backend.tokenize(prefix, special=False) if prefix else [])
    return context, backend.tokenize(step, special=False)


def step_record(row: dict, scores) -> dict:
    """Statistics of one teacher-forced step (see STEP_STATS)."""
    st = scores.stats
    ent = np.array([s.entropy for s in st])
    top = np.array([s.top_prob for s in st])
    prob = np.exp(scores.logprobs)
    rec = {"rating": int(row["rating"]), "depth": len(row["responses"]), "n_tokens": len(st),
           "preferred": bool(row.get("is_preferred_response")), "human": bool(row.get("is_human_response")),
           "first_entropy": st[0].entropy, "first_varentropy": st[0].varentropy, "first_top_prob": st[0].top_prob,
           "first_margin": st[0].margin, "first_token_prob": float(prob[0]), "mean_entropy": float(ent.mean()),
           "max_entropy": float(ent.max()), "min_top_prob": float(top.min()), "mean_token_prob": float(prob.mean())}
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in rec.items()}


def score_problem(backend, instruction: str, rows: list[dict]) -> list[dict]:
    from ..prompts import chat_prompt

    prompt_ids = engine_prompt_ids(backend, chat_prompt(backend, instruction))
    out = []
    for r in rows:
        context, ids = step_tokens(backend, prompt_ids, list(r["responses"]), r["next_response"])
        out.append(step_record(r, backend.score(context, ids, with_stats=True)))
    return out


def run_prm800k(problems: list[tuple[str, list[dict]]], backend, output: Path, source: str, progress=None) -> list[dict]:
    """Score every problem not yet in ``output`` (resumable, one JSON line per problem);
    return the lines of the given problems."""
    head = {"kind": "prm800k", "base_model_id": backend.model_id, "base_sha256": backend.sha256, "source": source,
            "separator": SEPARATOR, "version": __version__}
    # ResultsFile: one locked writer per file, a torn last line dropped on resume, fsync per line.
    with ResultsFile.open(output) as rf:
        done = {}
        for i, d in rf.rows:
            if not isinstance(d, dict) or "problem_key" not in d or "steps" not in d:
                raise GuidedError(f"{str(output)!r} line {i} is not a prm800k line (guided prm800k writes them)")
            if backend.sha256 and d.get("base_sha256") not in (None, backend.sha256):
                raise GuidedError(f"{str(output)!r} was made with base sha256 {d['base_sha256'][:12]}, "
                                  f"this base {backend.name!r} is {backend.sha256[:12]}")
            done[d["problem_key"]] = d
        todo = [(ins, rows) for ins, rows in problems if problem_key(ins) not in done]
        for i, (ins, rows) in enumerate(todo):
            t = time.perf_counter()
            steps = score_problem(backend, ins, rows)
            line = dict(head, problem_key=problem_key(ins), problem=ins, seconds=round(time.perf_counter() - t, 2),
                        steps=steps)
            rf.append(line)
            done[line["problem_key"]] = line
            if progress:
                progress(i + 1, len(todo), line)
    return [done[problem_key(ins)] for ins, _ in problems if problem_key(ins) in done]
