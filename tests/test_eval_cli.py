"""`guided eval / sweep / report / compare / grade` end to end on a real model (SmolLM2-135M).

Small on purpose (a few problems, short generations): the CPU is shared. SmolLM2 is
both base and oracle, so one model is loaded; consults still alternate the sources.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from guided_inference.config import GenerationConfig
from guided_inference.evaluation.results import read_rows
from guided_inference.reporting.report import SWEEP_HEADER
from guided_inference.models import CATALOGUE
from guided_inference.tasks import get_task
from report_numbers import check_compare, check_row, table_rows

MODEL = "smollm2-135m"
PAIR = ["--base_model", MODEL, "--oracle_model", MODEL]
MATH500 = {p.unique_id: p for p in get_task("math500").load()}
ORDER = list(MATH500)
# Short questions keep prompts (prefill) small; the pipeline is the same as for a shipped dataset.
SHORT = [("What is 2+3?", "5"), ("What is 7*6?", "42"), ("What is 10-4?", "6"), ("What is 9+9?", "18"),
         ("What is 20/5?", "4")]
SHORT_IDS = [f"short/{i}" for i in range(len(SHORT))]


@pytest.fixture(scope="module")
def short_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "short.jsonl"
    path.write_text("".join(json.dumps({"problem": q, "answer": a, "unique_id": u}) + "\n"
                            for (q, a), u in zip(SHORT, SHORT_IDS)))
    return path


def run_args(data):
    return [*PAIR, "--data", data, "--c", "2", "--k", "3", "--step_size", "4", "--max_new_tokens", "10",
            "--no_progress"]


def guided(*args, timeout=900, check=True, env=None):
    proc = subprocess.run([sys.executable, "-m", "guided_inference.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "guided_inference.cli", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def complete_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def kill_after(proc, path: Path, lines: int, timeout: float = 600) -> None:
    """SIGKILL ``proc`` as soon as ``path`` holds ``lines`` complete lines."""
    deadline = time.monotonic() + timeout
    while complete_lines(path) < lines:
        assert proc.poll() is None, f"eval exited early with {proc.returncode}"
        assert time.monotonic() < deadline, "eval made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL


@pytest.fixture(scope="module")
def reference(tmp_path_factory, short_data):
    """An uninterrupted run of the short problems."""
    out = tmp_path_factory.mktemp("ref") / "ref.jsonl"
    guided("eval", *run_args(short_data), "--output_file", out)
    return out


def summary(path: Path):
    rows = read_rows(path)
    return [(r["unique_id"], r["prompt"], r["ground_truth"], r["correct"], r["parsed_answer"], r["error"]) for r in rows]


def test_every_field_of_a_real_eval(tmp_path):
    out = tmp_path / "fields.jsonl"
    proc = guided("eval", *PAIR, "--dataset", "math500", "--num_samples", 2, "--offset", 2, "--c", 2, "--k", 3,
                  "--step-size", 4, "--max-new-tokens", 12, "--concurrency", 2, "--verbose", "--output-file", out,
                  env={"FORCE_COLOR": "1"})
    assert "--concurrency 2 ignored: backend 'smollm2-135m' runs one problem at a time" in proc.stderr
    assert "\x1b[34m" in proc.stdout and "\x1b[31m" in proc.stdout  # --verbose: oracle blue, base red
    assert f"{out}: 2 run, 0 resumed" in proc.stdout
    rows = read_rows(out)
    for r in rows:  # --verbose prints each verdict as the file records it
        verdict = "correct" if r["correct"] else "wrong"
        assert f"[{r['unique_id']}] {verdict}: answer {r['parsed_answer']!r}, gold {r['ground_truth']!r}" in proc.stdout
    check_row(table_rows(proc.stdout)["fields"], rows)
    params = GenerationConfig(c=2, k=3, step_size=4, max_new_tokens=12).params()
    assert [r["unique_id"] for r in rows] == ORDER[2:4]
    for r in rows:
        p = MATH500[r["unique_id"]]
        # the original tool's fields
        assert (r["c"], r["k"]) == (2, 3)
        assert r["base_model_id"] == r["oracle_model_id"] == CATALOGUE[MODEL].model_id
        assert r["prompt"].startswith("<|im_start|>") and p.problem in r["prompt"] and "\\boxed{}" in r["prompt"]
        assert r["result"] == "".join(s["output"] for s in r["interleaved_outputs"])
        assert r["ground_truth"] == p.answer
        assert r["parsed_answer"] is None or isinstance(r["parsed_answer"], str)
        assert {s["model_type"] for s in r["interleaved_outputs"]} <= {"base", "oracle"}
        assert len(r["cheat_positions"]) <= 2 and r["cheat_positions"] == sorted(r["cheat_positions"])
        assert 0 < r["total_tokens_generated"] <= 12
        # ours
        assert (r["dataset"], r["level"], r["subject"]) == ("math500", p.level, p.subject)
        assert isinstance(r["correct"], bool) and r["grade_timeout"] is False and r["error"] is None
        assert r["config"] == params and all(r[k] == v for k, v in params.items())
        assert (r["policy"], r["p"], r["step_size"], r["seed"]) == ("random", 0.5, 4, 0)
        assert r["base_tokens"] + r["oracle_tokens"] == r["total_tokens_generated"]
        assert r["oracle_tokens"] == sum(s["n_tokens"] for s in r["interleaved_outputs"] if s["model_type"] == "oracle")
        assert r["oracle_share"] == pytest.approx(r["oracle_tokens"] / r["total_tokens_generated"])
        assert r["finish_reason"] in ("eos", "length", "stop")
        assert r["finish_reason"] != "length" or r["total_tokens_generated"] == 12
        assert r["timings"]["generation_s"] > 0 and r["timings"]["load_s"] > 0 and "grade_s" in r["timings"]
        assert r["base_sha256"] == r["oracle_sha256"] == CATALOGUE[MODEL].sha256
        assert r["version"] and r["prompt_template"].startswith("boxed-cot@")
    assert any(r["oracle_tokens"] for r in rows) and any(r["base_tokens"] for r in rows)


def test_sigkill_twice_then_resume_equals_an_uninterrupted_run(reference, short_data, tmp_path):
    out = tmp_path / "killed.jsonl"
    args = ["eval", *run_args(short_data), "--output_file", out]
    kill_after(start(*args), out, 1)
    kill_after(start(*args), out, 3)
    with open(out, "ab") as f:  # and a torn line, as if killed in the middle of a write
        f.write(b'{"unique_id": "test/half')
    proc = guided(*args)
    assert "dropping a partial last line" in proc.stderr
    assert any(f"{n} resumed" in proc.stdout for n in (3, 4))
    assert out.read_bytes().endswith(b"\n")
    assert summary(out) == summary(reference)  # same problems, order, verdicts; no duplicates
    assert [r["unique_id"] for r in read_rows(out)] == SHORT_IDS
    proc = guided(*args)  # nothing left: a rerun only reads the file
    assert "0 run, 5 resumed" in proc.stdout and summary(out) == summary(reference)


def test_shards_cover_the_unsharded_run(reference, short_data, tmp_path):
    parts = []
    for i in (1, 2):
        out = tmp_path / f"shard{i}.jsonl"
        guided("eval", *run_args(short_data), "--num_samples", 4, "--shard", f"{i}/2", "--output_file", out)
        parts += summary(out)
    assert sorted(parts) == sorted(summary(reference)[:4])
    assert len({p[0] for p in parts}) == 4


def test_a_different_configuration_is_an_error(reference, short_data):
    before = reference.read_bytes()
    proc = guided("eval", *run_args(short_data), "--c", 3, "--output_file", reference, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(
        f"error: {reference}:1 was made with a different configuration (config.c: 2 in the file, 3 now)")
    assert reference.read_bytes() == before


def test_sweep_report_compare_grade(short_data, tmp_path):
    out_dir = tmp_path / "sweep"
    args = ["sweep", *PAIR, "--data", short_data, "--num_samples", 2, "--c", "0,1", "--k", "3",
            "--max_new_tokens", 8, "--no_progress", "--out_dir", out_dir]
    proc = guided(*args)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("| k ") and "accuracy" in lines[0] and "95% CI" in lines[0]
    assert [line.split("|")[1:3] for line in lines[2:5]] == [[" 0 ", " 0 "], [" 3 ", " 1 "], [" ∞ ", " ∞ "]]
    plot = out_dir / "sweep.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    files = sorted(out_dir.glob("*.jsonl"))
    assert [f.name for f in files] == ["file-short.jsonl_smollm2-135m_smollm2-135m_always_c3_k3.jsonl",
                                       "file-short.jsonl_smollm2-135m_smollm2-135m_never_c0_k3.jsonl",
                                       "file-short.jsonl_smollm2-135m_smollm2-135m_random_c1_k3.jsonl"]
    oracle_only, base_only, guided_run = (read_rows(f) for f in files)
    assert all(r["base_tokens"] == 0 and r["oracle_tokens"] > 0 for r in oracle_only)
    assert all(r["oracle_tokens"] == 0 and r["cheat_positions"] == [] for r in base_only)
    assert all(len(r["cheat_positions"]) <= 1 for r in guided_run)
    stamps = {f: f.stat().st_mtime_ns for f in files}
    again = guided(*args)  # resumes every point: nothing is re-run
    assert again.stdout.splitlines()[:5] == lines[:5]
    assert {f: f.stat().st_mtime_ns for f in files} == stamps

    # The commands' numbers, recomputed from the files' rows (tests/report_numbers.py).
    runs = {f: read_rows(f) for f in files}
    for point in lines[2:5]:  # the sweep table: k, c, policy, n, accuracy, 95% CI, oracle share, tokens, trunc
        cells = dict(zip(SWEEP_HEADER, (c.strip() for c in point.strip("|").split("|"))))
        path = next(f for f in files if f"_{cells['policy']}_" in f.name)
        check_row(cells | {"oracle": cells["oracle share"]}, runs[path])
    report = table_rows(guided("report", *files).stdout)
    assert sorted(report) == sorted(f.stem for f in files)
    for f in files:
        check_row(report[f.stem], runs[f])
    assert report[files[0].stem]["oracle"] == "100.0%" and report[files[1].stem]["oracle"] == "0.0%"
    one = guided("report", "--by", "level", files[1]).stdout
    assert "by level" not in one  # no levels in this file: no breakdown printed
    check_row(table_rows(one)[files[1].stem], runs[files[1]])
    check_compare(guided("compare", files[1], files[0]).stdout, runs[files[1]], runs[files[0]])
    regraded = guided("grade", files[2]).stdout
    assert regraded.strip() == f"{files[2]}: re-graded 2 row(s), 0 verdict(s) changed"
    html_file = tmp_path / "r.html"
    guided("report", "--html", html_file, *files)
    page = html_file.read_text(encoding="utf-8")
    assert page.count('class="problem ') == 6
    summary = page.split("<h2>Summary</h2>")[1].split("</table>")[0]
    cells = [re.findall(r"<t[hd]>(.*?)</t[hd]>", tr) for tr in re.findall(r"<tr>(.*?)</tr>", summary)]
    for row in cells[1:]:
        check_row(dict(zip(cells[0], row)), runs[out_dir / f"{row[0]}.jsonl"])


def test_a_grading_timeout_is_wrong_and_reported(tmp_path):
    """A whole run whose grading times out: the line says so, counts as wrong, and `report` says how many.

    Qwen 0.5B answers "What is 2+3?" with a boxed 5 (greedy); grading it with a
    timeout of 1 microsecond cannot finish (math-verify parses for milliseconds).
    """
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps({"problem": "What is 2+3?", "answer": "5", "unique_id": "add"}) + "\n")
    out = tmp_path / "timeout.jsonl"
    proc = guided("eval", "--base_model", "0.5B", "--oracle_model", "0.5B", "--data", data, "--policy", "never",
                  "--c", 0, "--max_new_tokens", 80, "--grade_timeout", "0.000001", "--no_progress", "--output_file", out)
    [row] = read_rows(out)
    assert row["parsed_answer"] == "5", f"the model's answer changed: {row['result']!r}"
    assert (row["grade_timeout"], row["correct"], row["error"]) == (True, False, None)
    assert "1 grading timeout(s)" in proc.stdout
    report = guided("report", out).stdout
    assert table_rows(report)["timeout"]["accuracy"] == "0.0%"
    assert "timeout: 1 grading timeout(s), counted as wrong" in report.splitlines()
    # Re-graded with time to finish, the same answer is right: the timeout alone made it wrong.
    os.chmod(out, 0o644)
    regraded = guided("grade", out).stdout
    assert regraded.strip() == f"{out}: re-graded 1 row(s), 1 verdict(s) changed"
    [row] = read_rows(out)
    assert (row["grade_timeout"], row["correct"]) == (False, True)
    assert os.stat(out).st_mode & 0o777 == 0o644  # rewritten in place, mode kept (mkstemp would give 0600)
    report = guided("report", out).stdout
    assert table_rows(report)["timeout"]["accuracy"] == "100.0%" and "grading timeout" not in report


@pytest.mark.parametrize("args,message", [
    (["eval", "--dataset", "mmlu"], "error: dataset must be one of math500, math, gsm8k (or --data FILE.jsonl), got 'mmlu'"),
    (["eval", "--levels", "0"], "error: levels must be a comma-separated list of integers >= 1, got '0'"),
    (["eval", "--shard", "2/1"], "error: shard must be i/n with 1 <= i <= n, got '2/1'"),
    (["eval", "--subjects", "biology"], "error: subjects must be among"),
    (["eval", "--dataset", "gsm8k", "--data", "x.jsonl"], "error: give --dataset or --data, not both"),
    (["eval", "--num_samples", "5", "--offset", "600"], "error: the selection is empty"),
    (["sweep", "--c", "1,x"], "error: c must be a comma-separated list of integers, got '1,x'"),
    (["sweep", "--k", "0"], "error: k must be a comma-separated list of integers >= 1, got '0'"),
    (["compare", "a.jsonl", "b.jsonl"], "error: cannot read results file a.jsonl"),
    (["grade", "missing.jsonl"], "error: results file missing.jsonl does not exist"),
    (["report", "missing.jsonl"], "error: cannot read results file missing.jsonl"),
    # a real file, so that the --by check is what fails; it fails before anything is printed
    (["report", "--by", "colour", "results.jsonl"],
     "error: by must be a comma list of level, subject, or none; got 'colour'"),
])
def test_bad_input_is_one_line_naming_the_value(args, message, tmp_path):
    (tmp_path / "results.jsonl").write_text(json.dumps({"unique_id": "a", "correct": True, "error": None,
                                                        "level": 1, "total_tokens_generated": 3}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "guided_inference.cli", *args, "--base_model", "no-such-model"]
                          if args[0] in ("eval", "sweep") else
                          [sys.executable, "-m", "guided_inference.cli", *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith(message) and proc.stderr.count("\n") == 1
    if args[0] == "report":
        assert proc.stdout == ""  # nothing printed before the error
        assert (tmp_path / "results.jsonl").read_text().count("\n") == 1  # the input is left alone
