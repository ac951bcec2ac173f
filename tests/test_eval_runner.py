"""The runner with a scripted backend (no model): concurrency, grading thread, errors and retries, resume.

The backend speaks the real protocol (token ids = characters) and writes a scripted
answer per problem, so the engine, the grader and the results file are all real.
"""
import json
import threading
import time
from pathlib import Path

import pytest

from guided_inference.backends.protocol import BackendError, Chunk
from guided_inference.config import GenerationConfig
from guided_inference.evaluation.results import ResultsError, read_rows
from guided_inference.evaluation.runner import EvalSettings, regrade, run_eval
from guided_inference.runner import Pair
from guided_inference.tasks import task_for_file

ANSWERS = {f"q{i}": (str(i), f"Adding up gives \\boxed{{{i if i % 3 else i + 1}}}.") for i in range(1, 7)}


class ScriptedBackend:
    name = model_id = "scripted"
    sha256 = "0" * 64
    tokenizer_key = "chars"
    chat_template = None
    bos_text = ""
    has_stats = False
    token_ids = True

    def __init__(self, *, concurrent=True, fail=(), delay=0.02):
        self.concurrent = concurrent
        self.fail = set(fail)
        self.delay = delay
        self.lock = threading.Lock()
        self.inflight = self.max_inflight = 0
        self.threads = set()

    def tokenize(self, text, *, add_bos=False):
        return [ord(ch) for ch in text]

    def detokenize(self, ids):
        return "".join(map(chr, ids)).encode("utf-8")

    def generate(self, context, max_tokens, sampling, rng, stop_before=None, position=0):
        prompt = "".join(map(chr, context))
        question = next(q for q in ANSWERS if f"Question: {q} " in prompt)
        if question in self.fail:
            raise BackendError(f"server down for {question}")
        with self.lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        with self.lock:
            self.inflight -= 1
        text = ANSWERS[question][1]
        piece = text[position:position + max_tokens]
        return Chunk(tokens=[ord(ch) for ch in piece], eos=position + max_tokens >= len(text), decode_tokens=len(piece))


@pytest.fixture
def task(tmp_path):
    path = tmp_path / "toy.jsonl"
    path.write_text("".join(json.dumps({"problem": f"{q} ?", "answer": a, "unique_id": q}) + "\n"
                            for q, (a, _) in ANSWERS.items()))
    return task_for_file(path)


def run(task, backend, out, config=GenerationConfig(c=2, k=4, step_size=5, max_new_tokens=200), **kw):
    settings = EvalSettings(output_file=out, progress=False, **kw)
    logs = []
    outcome = run_eval(task, task.load(), Pair(backend, backend, 0.0), config, settings, log=logs.append)
    return outcome, logs


def verdicts(path: Path) -> dict:
    return {r["unique_id"]: r["correct"] for r in read_rows(path)}


EXPECTED = {q: int(a) % 3 != 0 for q, (a, _) in ANSWERS.items()}


def test_concurrent_backend_runs_n_problems_in_flight(task, tmp_path):
    backend = ScriptedBackend(concurrent=True, delay=0.05)
    outcome, logs = run(task, backend, tmp_path / "r.jsonl", concurrency=3)
    assert outcome.workers == 3 and backend.max_inflight == 3
    assert all(name.startswith("guided-eval") for name in backend.threads)  # generation off the main thread
    assert verdicts(tmp_path / "r.jsonl") == EXPECTED  # grading (SIGALRM, main thread) worked
    assert not logs


def test_embedded_style_backend_runs_one_at_a_time_and_says_so(task, tmp_path):
    backend = ScriptedBackend(concurrent=False)
    outcome, logs = run(task, backend, tmp_path / "r.jsonl", concurrency=4)
    assert outcome.workers == 1 and backend.max_inflight == 1
    assert backend.threads == {"MainThread"}
    assert logs == ["--concurrency 4 ignored: backend 'scripted' runs one problem at a time"]
    assert [r["unique_id"] for r in read_rows(tmp_path / "r.jsonl")] == list(ANSWERS)  # in order


def test_rows_carry_the_trace_verdict_and_provenance(task, tmp_path):
    run(task, ScriptedBackend(), tmp_path / "r.jsonl")
    row = read_rows(tmp_path / "r.jsonl")[0]
    assert row["result"] == ANSWERS["q1"][1]
    assert "".join(s["output"] for s in row["interleaved_outputs"]) == row["result"]
    assert (row["parsed_answer"], row["ground_truth"], row["correct"], row["grade_timeout"]) == ("1", "1", True, False)
    assert row["dataset"] == "file:toy.jsonl" and row["unique_id"] == "q1" and row["error"] is None
    assert row["config"]["c"] == row["c"] == 2 and row["k"] == 4 and row["policy"] == "random"
    assert row["total_tokens_generated"] == row["base_tokens"] + row["oracle_tokens"] == len(row["result"])
    assert row["finish_reason"] == "eos" and "grade_s" in row["timings"]


def test_backend_errors_are_recorded_not_graded_and_retried(task, tmp_path):
    out = tmp_path / "r.jsonl"
    outcome, _ = run(task, ScriptedBackend(fail={"q2", "q5"}), out)
    rows = read_rows(out)
    errors = {r["unique_id"]: r["error"] for r in rows if r["error"]}
    assert errors == {"q2": "BackendError: server down for q2", "q5": "BackendError: server down for q5"}
    assert all(r["correct"] is None for r in rows if r["error"])
    backend = ScriptedBackend()
    outcome, logs = run(task, backend, out)
    assert (outcome.ran, outcome.skipped, outcome.retried) == (2, 4, 2)
    assert any("retrying 2 problem(s)" in m for m in logs)
    rows = read_rows(out)
    assert sorted(r["unique_id"] for r in rows) == sorted(ANSWERS)  # no duplicates, no error lines
    assert verdicts(out) == EXPECTED


def test_resume_skips_done_problems_and_repairs_a_torn_line(task, tmp_path):
    out = tmp_path / "r.jsonl"
    run(task, ScriptedBackend(), out)
    full = out.read_text().splitlines(keepends=True)
    out.write_text("".join(full[:3]) + full[3][: len(full[3]) // 2])  # killed while writing line 4
    backend = ScriptedBackend()
    outcome, logs = run(task, backend, out)
    assert (outcome.ran, outcome.skipped) == (3, 3)
    assert any("removed a partial last line" in m for m in logs)
    assert [r["unique_id"] for r in read_rows(out)] == list(ANSWERS)
    assert verdicts(out) == EXPECTED
    outcome, _ = run(task, backend, out)  # nothing left to do
    assert (outcome.ran, outcome.skipped, len(outcome.rows)) == (0, 6, 6)


def test_other_configuration_is_refused(task, tmp_path):
    out = tmp_path / "r.jsonl"
    run(task, ScriptedBackend(), out)
    before = out.read_text()
    with pytest.raises(ResultsError, match=rf"{out}:1 was made with a different configuration \(config.c: 2 in the file, 3 now\)"):
        run(task, ScriptedBackend(), out, config=GenerationConfig(c=3, k=4, step_size=5, max_new_tokens=200))
    assert out.read_text() == before


def test_regrade_in_place(task, tmp_path):
    out = tmp_path / "r.jsonl"
    run(task, ScriptedBackend(), out)
    rows = read_rows(out)
    rows[0]["ground_truth"] = "99"  # pretend the gold answer was fixed
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert regrade(out, timeout_s=5) == (6, 1)
    assert verdicts(out) == EXPECTED | {"q1": False}


@pytest.mark.parametrize("kw,message", [
    ({"concurrency": 0}, "concurrency must be an integer >= 1, got 0"),
    ({"grade_timeout_s": 0}, "grade_timeout must be a number of seconds > 0, got 0"),
])
def test_bad_settings(kw, message):
    with pytest.raises(ValueError, match=message):
        EvalSettings(output_file=Path("x"), **kw)
