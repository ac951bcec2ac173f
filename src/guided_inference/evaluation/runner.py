"""The evaluation runner: each selected problem through the guided loop, graded, one line each.

    outcome = run_eval(task, problems, pair, GenerationConfig(c=20, k=10, max_new_tokens=1024),
                       EvalSettings(output_file=Path("out/math500.jsonl")))

Per problem, top to bottom:
  1. Prompt: the task's zero-shot chain-of-thought message in the base model's chat
     template (``chat_prompt``).
  2. ``guided_generate`` (in a worker thread when the backends are ``concurrent``).
  3. Grade in the main thread (math-verify times out with SIGALRM, main thread only).
  4. Append one JSON line (``results.py``): flushed and fsynced before the next.

Resume: problems whose ``unique_id`` is already in the file are skipped; lines with an
``error`` (the backend failed: not a wrong answer) are removed first and retried; a
line made with another configuration stops the run (``check_same_run``).
"""
from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError, GenerationConfig, check_int
from ..engine import SEED_DERIVATION, guided_generate
from ..prompts import chat_prompt
from ..model_pair import Pair
from ..tasks import Problem, Task
from .results import ResultsFile, check_same_run

# An eval's token limit unless the user or the data file sets one (generate's default is shorter):
# long enough that MATH answers are rarely cut off (the truncated share is reported).
EVAL_MAX_NEW_TOKENS = 1024


@dataclass(frozen=True)
class EvalSettings:
    output_file: Path
    concurrency: int = 1  # problems in flight; only for backends whose ``concurrent`` is True
    grade_timeout_s: float = 10.0  # per problem; a timeout counts as wrong, ``grade_timeout: true``
    verbose: bool = False  # print each coloured trace
    progress: bool = True  # tqdm bar on stderr

    def __post_init__(self) -> None:
        check_int("concurrency", self.concurrency, 1)
        if not (isinstance(self.grade_timeout_s, (int, float)) and self.grade_timeout_s > 0):
            raise ConfigError(f"grade_timeout must be a number of seconds > 0, got {self.grade_timeout_s!r}")


@dataclass
class EvalOutcome:
    path: Path
    rows: list[dict] = field(default_factory=list)  # the selected problems' rows, new and resumed
    skipped: int = 0  # already in the file
    retried: int = 0  # error lines removed to be run again
    ran: int = 0
    workers: int = 1


def run_header(task: Task, pair: Pair, config: GenerationConfig) -> dict:
    """The fields every line of one run shares (provenance, config, dataset, template)."""
    head = {"c": config.c, "k": config.k, **config.params()}
    head.update(pair.provenance(config))
    head.update(dataset=task.name, prompt_template=task.template_id, system_prompt=task.system,
                seed_derivation=SEED_DERIVATION)
    if task.template_file:
        head["prompt_template_file"] = task.template_file
    return json.loads(json.dumps(head))  # exactly what a line read back from the file holds


def make_row(head: dict, problem: Problem, prompt: str, trace, grade, error: str | None,
             load_s: float, grade_s: float) -> dict:
    """One output line: the original tool's fields, the trace, the verdict, provenance."""
    row = dict(head)
    row.update(unique_id=problem.unique_id, level=problem.level, subject=problem.subject, prompt=prompt,
               ground_truth=problem.answer, error=error, seed_key=problem.unique_id)
    if trace is None:
        row.update(result=None, parsed_answer=None, correct=None, grade_timeout=False, interleaved_outputs=[],
                   cheat_positions=[], total_tokens_generated=0, base_tokens=0, oracle_tokens=0,
                   oracle_share=0.0, finish_reason=None, timings=None)
    else:
        trace.timings.load_s = load_s
        row.update(trace.to_dict())
        row["timings"]["grade_s"] = grade_s
        row.update(parsed_answer=grade.parsed_answer, correct=grade.correct, grade_timeout=grade.timeout)
    row["finished_at"] = time.time()
    return row


def _generate(pair: Pair, prompt: str, config: GenerationConfig, seed_key: str):
    """(trace, None) or (None, error message): a failing backend is recorded, not fatal."""
    try:
        return guided_generate(prompt, pair.base, pair.oracle, config, seed_key=seed_key), None
    except Exception as e:  # noqa: BLE001 - any backend failure becomes an `error` line, retried on rerun
        return None, f"{type(e).__name__}: {e}"


def worker_count(pair: Pair, requested: int) -> int:
    concurrent = all(getattr(b, "concurrent", False) for b in (pair.base, pair.oracle))
    return requested if concurrent else 1


def run_eval(task: Task, problems: list[Problem], pair: Pair, config: GenerationConfig,
             settings: EvalSettings, *, log=None, show=None) -> EvalOutcome:
    """``show(trace) -> str`` renders a trace for ``settings.verbose`` (the CLI passes its colouring)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    show = show or (lambda trace: trace.result)
    head = run_header(task, pair, config)
    with ResultsFile.open(settings.output_file) as rf:
        check_same_run(rf, head)
        if rf.dropped_bytes:
            log(f"{rf.path}: dropping a partial last line ({rf.dropped_bytes} bytes) left by an interrupted run")
        kept = [row for _, row in rf.rows if row.get("error") is None]
        outcome = EvalOutcome(rf.path, retried=len(rf.rows) - len(kept))
        if outcome.retried:
            rf.rewrite(kept)
            log(f"{rf.path}: retrying {outcome.retried} problem(s) that failed with an error")
        done = {row["unique_id"]: row for row in kept}
        todo = [p for p in problems if p.unique_id not in done]
        outcome.skipped = len(problems) - len(todo)
        outcome.workers = worker_count(pair, settings.concurrency)
        if settings.concurrency > 1 and outcome.workers == 1:
            log(f"--concurrency {settings.concurrency} ignored: backend {pair.base.name!r} runs one problem at a time")
        prompts = {p.unique_id: chat_prompt(pair.base, task.prompt(p), task.system) for p in todo}
        new = {}
        bar = _Progress(len(problems), [done[p.unique_id] for p in problems if p.unique_id in done], settings.progress)
        try:
            for problem, (trace, error) in _results(pair, todo, prompts, config, outcome.workers):
                t = time.perf_counter()
                grade = task.grade(problem, trace.result, timeout_s=settings.grade_timeout_s) if trace else None
                row = make_row(head, problem, prompts[problem.unique_id], trace, grade, error, pair.load_s,
                               time.perf_counter() - t)
                rf.append(row)
                new[problem.unique_id] = row
                bar.update(row)
                if settings.verbose and trace is not None:
                    bar.write(f"[{problem.unique_id}] {'correct' if grade.correct else 'wrong'}: "
                              f"answer {grade.parsed_answer!r}, gold {problem.answer!r}\n{show(trace)}")
                elif error:
                    bar.write(f"[{problem.unique_id}] error: {error}")
        finally:
            bar.close()
        outcome.ran = len(new)
        outcome.rows = [new.get(p.unique_id) or done[p.unique_id] for p in problems
                        if p.unique_id in new or p.unique_id in done]
    return outcome


def _results(pair: Pair, todo: list[Problem], prompts: dict, config: GenerationConfig, workers: int):
    """Yield (problem, (trace, error)) as generations finish; in order when sequential."""
    if workers == 1:
        for p in todo:
            yield p, _generate(pair, prompts[p.unique_id], config, p.unique_id)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="guided-eval")
    try:
        futures = {pool.submit(_generate, pair, prompts[p.unique_id], config, p.unique_id): p for p in todo}
        for f in as_completed(futures):
            yield futures[f], f.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _Progress:
    """tqdm bar with running accuracy (all graded rows) and this run's tokens/s."""

    def __init__(self, total: int, previous: list[dict], enabled: bool):
        from tqdm import tqdm

        self.graded = sum(1 for r in previous if r.get("correct") is not None)
        self.correct = sum(1 for r in previous if r.get("correct"))
        self.tokens = 0
        self.seconds = 0.0
        self.bar = tqdm(total=total, initial=len(previous), disable=not enabled, desc="eval", unit="problem",
                        dynamic_ncols=True, file=sys.stderr)
        self.write = (lambda s: self.bar.write(s, file=sys.stdout)) if enabled else print  # traces go to stdout

    def update(self, row: dict) -> None:
        if row.get("correct") is not None:
            self.graded += 1
            self.correct += bool(row["correct"])
            self.tokens += row["total_tokens_generated"]
            self.seconds += row["timings"]["generation_s"]
        acc = f"{100 * self.correct / self.graded:.1f}%" if self.graded else "-"
        self.bar.set_postfix_str(f"acc {acc} ({self.correct}/{self.graded}), "
                                 f"{self.tokens / self.seconds if self.seconds else 0:.1f} tok/s")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def regrade(path: Path, *, timeout_s: float = 10.0) -> tuple[int, int]:
    """Re-grade every answered row of a results file in place (atomic replace).

    Returns (rows re-graded, verdicts changed). Error rows are left as they are.
    """
    from ..tasks.grading import grade_response

    with ResultsFile.open(path) as rf:
        rows, regraded, changed = [], 0, 0
        for _, row in rf.rows:
            if row.get("error") is None and row.get("result") is not None:
                g = grade_response(str(row.get("ground_truth", "")), row["result"], timeout_s=timeout_s)
                changed += g.correct != row.get("correct")
                row = {**row, "parsed_answer": g.parsed_answer, "correct": g.correct, "grade_timeout": g.timeout}
                regraded += 1
            rows.append(row)
        rf.rewrite(rows)
    return regraded, changed
