"""The runner on real models: SmolLM2 in-process (one problem at a time) and a real
llama.cpp server over HTTP (several problems in flight): concurrency, grading in the
main thread, backend errors and retries, resume, configuration checks, re-grading.

``Watch`` wraps a real backend to record which threads call it and how many calls are
in flight; every call still goes to the real model.
"""
import json
import threading
from pathlib import Path

import pytest

from guided_inference.backends.llama_cpp import LlamaCppBackend
from guided_inference.backends.openai_http import HTTPSettings, OpenAIHTTPBackend
from guided_inference.config import GenerationConfig
from guided_inference.evaluation.results import ResultsError, read_rows
from guided_inference.evaluation.runner import EvalSettings, regrade, run_eval
from guided_inference.models import resolve
from guided_inference.model_pair import Pair
from guided_inference.prompts import chat_prompt
from guided_inference.tasks import task_for_file
from guided_inference.tasks.grading import grade_response
from servers import LlamaServer

QUESTIONS = {f"q{i}": (f"What is {i} + {i + 1}?", str(2 * i + 1)) for i in range(1, 7)}
CONFIG = GenerationConfig(c=2, k=4, step_size=5, max_new_tokens=24)


class Watch:
    """A real backend, with the threads that call it and the peak of calls in flight."""

    def __init__(self, inner):
        self.inner = inner
        self.lock = threading.Lock()
        self.inflight = self.max_inflight = 0
        self.threads = set()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, *args, **kw):
        with self.lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            self.threads.add(threading.current_thread().name)
        try:
            return self.inner.generate(*args, **kw)
        finally:
            with self.lock:
                self.inflight -= 1


def write_task(path: Path, questions: dict):
    path.write_text("".join(json.dumps({"problem": q, "answer": a, "unique_id": uid}) + "\n"
                            for uid, (q, a) in questions.items()))
    return task_for_file(path)


@pytest.fixture
def task(tmp_path):
    return write_task(tmp_path / "toy.jsonl", QUESTIONS)


def run(task, backend, out, config=CONFIG, **kw):
    settings = EvalSettings(output_file=out, progress=False, **kw)
    logs = []
    outcome = run_eval(task, task.load(), Pair(backend, backend, 0.0), config, settings, log=logs.append)
    return outcome, logs


def verdicts(path: Path) -> dict:
    return {r["unique_id"]: r["correct"] for r in read_rows(path)}


def graded_right(path: Path) -> None:
    """Every verdict is math-verify's verdict on that row's own text."""
    for r in read_rows(path):
        assert r["correct"] == grade_response(r["ground_truth"], r["result"], timeout_s=None).correct


def test_rows_carry_the_trace_verdict_and_provenance(task, tmp_path, smol):
    run(task, smol, tmp_path / "r.jsonl")
    rows = read_rows(tmp_path / "r.jsonl")
    assert [r["unique_id"] for r in rows] == list(QUESTIONS)
    row = rows[0]
    assert "".join(s["output"] for s in row["interleaved_outputs"]) == row["result"]
    assert row["ground_truth"] == "3" and row["grade_timeout"] is False and row["error"] is None
    assert row["dataset"] == "file:toy.jsonl" and QUESTIONS["q1"][0] in row["prompt"]
    assert row["config"]["c"] == row["c"] == 2 and row["k"] == 4 and row["policy"] == "random"
    assert row["total_tokens_generated"] == row["base_tokens"] + row["oracle_tokens"] <= 24
    assert row["base_sha256"] == smol.sha256 and row["finish_reason"] in ("eos", "length")
    assert "grade_s" in row["timings"]
    graded_right(tmp_path / "r.jsonl")


def test_embedded_backend_runs_one_at_a_time_and_says_so(task, tmp_path, smol):
    backend = Watch(smol)
    outcome, logs = run(task, backend, tmp_path / "r.jsonl", concurrency=4)
    assert outcome.workers == 1 and backend.max_inflight == 1
    assert backend.threads == {"MainThread"}
    assert logs == ["--concurrency 4 ignored: backend 'smollm2-135m' runs one problem at a time"]


def test_http_backend_runs_n_problems_in_flight(task, tmp_path, smol):
    with LlamaServer("smollm2-135m") as srv:
        http = OpenAIHTTPBackend([srv.url], name="smol-http", tokenizer="smollm2-135m", tokenizer_family="smollm2",
                                 settings=HTTPSettings(top_logprobs=0))
        config = CONFIG  # statistics are only computed when a policy reads them
        run(task, http, tmp_path / "seq.jsonl", config)
        backend = Watch(http)
        outcome, logs = run(task, backend, tmp_path / "par.jsonl", config, concurrency=3)
    assert outcome.workers == 3 and backend.max_inflight == 3 and not logs
    assert all(name.startswith("guided-eval") for name in backend.threads)  # generation off the main thread
    # Texts may differ from the sequential run: interleaved requests change which prefix the
    # server has cached, so it reads prompts in other batch sizes (batch-vs-single numerics,
    # MODELS.md). What must hold: every problem once, whole traces, budgets, right verdicts.
    seq, par = (read_rows(tmp_path / f) for f in ("seq.jsonl", "par.jsonl"))
    assert sorted(r["unique_id"] for r in par) == sorted(r["unique_id"] for r in seq) == sorted(QUESTIONS)
    for r in par:
        assert r["error"] is None and "".join(s["output"] for s in r["interleaved_outputs"]) == r["result"]
        assert r["total_tokens_generated"] <= 24 and len(r["cheat_positions"]) <= 2
    graded_right(tmp_path / "par.jsonl")  # grading (SIGALRM, main thread) worked


def test_backend_errors_are_recorded_not_graded_and_retried(task, tmp_path):
    with LlamaServer("smollm2-135m") as srv:  # a real server, stopped before the run: every request is refused
        down = OpenAIHTTPBackend([srv.url], name="smol-down", tokenizer="smollm2-135m", tokenizer_family="smollm2",
                                 settings=HTTPSettings(retries=0, top_logprobs=0))
        chat_prompt(down, "warm-up")  # what the prompt needs is read while the server is up
        port = srv.url.rsplit(":", 1)[1]
    out = tmp_path / "r.jsonl"
    run(task, down, out)
    rows = read_rows(out)
    assert len(rows) == 6 and all(r["error"] and f"127.0.0.1:{port}" in r["error"] for r in rows)
    assert all(r["correct"] is None for r in rows)
    with LlamaServer("smollm2-135m") as srv:  # the same model served again: the rerun retries them all
        up = OpenAIHTTPBackend([srv.url], name="smol-down", tokenizer="smollm2-135m", tokenizer_family="smollm2",
                               settings=HTTPSettings(retries=0, top_logprobs=0))
        outcome, logs = run(task, up, out)
    assert (outcome.ran, outcome.skipped, outcome.retried) == (6, 0, 6)
    assert any("retrying 6 problem(s)" in m for m in logs)
    rows = read_rows(out)
    assert sorted(r["unique_id"] for r in rows) == sorted(QUESTIONS)  # no duplicates, no error lines
    assert all(r["error"] is None and r["correct"] is not None for r in rows)


def test_a_problem_that_does_not_fit_is_a_wrong_answer_not_an_error(tmp_path, smol):
    long_sum = " + ".join(str(i) for i in range(1, 90))
    questions = dict(QUESTIONS) | {"q2": (f"What is {long_sum}?", "4005"), "q5": (f"Compute {long_sum}.", "4005")}
    task = write_task(tmp_path / "toy.jsonl", questions)
    small = LlamaCppBackend(resolve("smollm2-135m")[0], name=smol.name, model_id=smol.model_id, sha256=smol.sha256,
                            n_ctx=160)
    out = tmp_path / "r.jsonl"
    run(task, small, out)  # the two long prompts do not fit in 160 tokens
    rows = {r["unique_id"]: r for r in read_rows(out)}
    for uid in ("q2", "q5"):
        assert rows[uid]["error"] is None and rows[uid]["finish_reason"] == "context"
        assert rows[uid]["correct"] is False and rows[uid]["total_tokens_generated"] == 0
    outcome, _ = run(task, small, out)  # nothing to retry: they are answers, not failures
    assert (outcome.ran, outcome.skipped, outcome.retried) == (0, 6, 0)


def test_resume_skips_done_problems_and_repairs_a_torn_line(task, tmp_path, smol):
    out = tmp_path / "r.jsonl"
    run(task, smol, out)
    reference = verdicts(out)
    full = out.read_text().splitlines(keepends=True)
    out.write_text("".join(full[:3]) + full[3][: len(full[3]) // 2])  # killed while writing line 4
    outcome, logs = run(task, smol, out)
    assert (outcome.ran, outcome.skipped) == (3, 3)
    assert any("dropping a partial last line" in m for m in logs)
    assert [r["unique_id"] for r in read_rows(out)] == list(QUESTIONS)
    assert verdicts(out) == reference
    outcome, _ = run(task, smol, out)  # nothing left to do
    assert (outcome.ran, outcome.skipped, len(outcome.rows)) == (0, 6, 6)


def test_other_configuration_is_refused(task, tmp_path, smol):
    out = tmp_path / "r.jsonl"
    run(task, smol, out, CONFIG.replace(max_new_tokens=4))
    before = out.read_text()
    with pytest.raises(ResultsError, match=rf"{out}:1 was made with a different configuration \(config.c: 2 in the file, 3 now\)"):
        run(task, smol, out, CONFIG.replace(max_new_tokens=4, c=3))
    assert out.read_text() == before


def test_regrade_in_place(task, tmp_path, smol):
    out = tmp_path / "r.jsonl"
    run(task, smol, out, CONFIG.replace(max_new_tokens=4))
    rows = read_rows(out)
    rows[0]["ground_truth"] = "99"
    rows[0]["result"] = "so it is \\boxed{99}"  # pretend the gold answer and text were fixed
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert regrade(out, timeout_s=5) == (6, int(not rows[0]["correct"]))
    assert verdicts(out)["q1"] is True
    graded_right(out)


@pytest.mark.parametrize("kw,message", [
    ({"concurrency": 0}, "concurrency must be an integer >= 1, got 0"),
    ({"grade_timeout_s": 0}, "grade_timeout must be a number of seconds > 0, got 0"),
])
def test_bad_settings(kw, message):
    with pytest.raises(ValueError, match=message):
        EvalSettings(output_file=Path("x"), **kw)
