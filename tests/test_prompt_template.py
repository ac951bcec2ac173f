"""--prompt_template FILE and --system_prompt TEXT (issue 17): the prompt the models read,
the fields every results line records, and one-line refusals, on a real model (SmolLM2)."""
import json
import os
import subprocess
import sys

import pytest

from guided_inference.evaluation.results import read_rows
from guided_inference.tasks import DataError, get_task

MODEL = "smollm2-135m"


def guided(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "guided_inference.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "GUIDED_THREADS": "1"})


@pytest.fixture()
def data(tmp_path):
    path = tmp_path / "two.jsonl"
    path.write_text("".join(json.dumps({"problem": q, "answer": a, "unique_id": f"t/{i}"}) + "\n"
                            for i, (q, a) in enumerate([("What is 2+3?", "5"), ("What is 7*6?", "42")])))
    return path


def test_template_and_system_prompt_reach_the_prompt_and_every_line(tmp_path, data):
    template = tmp_path / "tpl.txt"
    template.write_text("Solve: {problem}\nEnd with \\boxed{} around the answer.")
    out = tmp_path / "r.jsonl"
    args = ["eval", "--base_model", MODEL, "--oracle_model", MODEL, "--data", data, "--policy", "never",
            "--c", "0", "--max_new_tokens", "4", "--no_progress", "--output_file", out,
            "--prompt_template", template, "--system_prompt", "You are terse."]
    proc = guided(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = read_rows(out)
    assert len(rows) == 2
    task = get_task("math500").with_prompt(str(template))
    for row in rows:
        assert row["prompt_template"] == task.template_id and row["prompt_template"].startswith("custom@")
        assert row["system_prompt"] == "You are terse."
        assert row["prompt_template_file"] == str(template)
        # Braces other than {problem} stay as written; the system message precedes the user's.
        assert "Solve: What is" in row["prompt"] and "End with \\boxed{} around" in row["prompt"]
        assert row["prompt"].index("You are terse.") < row["prompt"].index("Solve: ")
    # A resume with another system prompt is refused: the run key includes it.
    proc = guided(*args[:-1], "You are verbose.")
    assert proc.returncode == 2 and "system_prompt" in proc.stderr


def test_the_default_prompt_is_unchanged():
    task = get_task("math500")
    assert task.template_id == "boxed-cot@1e989b2d"  # the id every committed results file records
    assert task.with_prompt().template_id == task.template_id and task.with_prompt().system is None


@pytest.mark.parametrize("text, message", [
    ("Solve this: {question}", "lacks {problem}"),
    ("no field at all", "lacks {problem}"),
])
def test_a_template_without_problem_is_refused_in_one_line(tmp_path, data, text, message):
    template = tmp_path / "bad.txt"
    template.write_text(text)
    with pytest.raises(DataError, match=message):
        get_task("math500").with_prompt(str(template))
    out = tmp_path / "r.jsonl"
    proc = guided("eval", "--base_model", MODEL, "--oracle_model", MODEL, "--data", data, "--max_new_tokens", "2",
                  "--output_file", out, "--prompt_template", template, "--no_progress")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and message in proc.stderr
    assert not out.exists()  # refused before anything is written


def test_missing_template_file_and_empty_system_prompt(tmp_path):
    with pytest.raises(DataError, match="cannot read prompt template .*nope.txt"):
        get_task("math500").with_prompt(str(tmp_path / "nope.txt"))
    with pytest.raises(DataError, match="system_prompt must be non-empty text, got ' '"):
        get_task("math500").with_prompt(None, " ")
