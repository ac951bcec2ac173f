"""PRM800K: the shipped parquet is the documented file, each rated step's token span
reproduces its text exactly (whatever it starts with), the step statistics are the
base's real distributions there, the report's numbers follow from its input, and a
parquet without a needed column is one line, exit 2.
"""
import hashlib
import json

import numpy as np
import pytest

from guided_inference.config import GuidedError, SamplingConfig
from guided_inference.prompts import chat_prompt
from guided_inference.study.prm800k import (SEPARATOR, group_problems, load_steps, run_prm800k, score_problem,
                                            shipped_parquet, step_tokens)
from guided_inference.reporting.study_tables import prm_report

from conftest import run_cli

SHA256 = "293f05ebfba3322b537dbfdfbbcf49a50d2bc3bae5243a3045d3aa056b06d2c1"


@pytest.fixture(scope="module")
def rows():
    return load_steps(shipped_parquet())


def test_shipped_parquet_is_the_documented_file(rows):
    with open(shipped_parquet(), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == SHA256
    assert len(rows) == 5449 - 367  # unrated rows skipped
    assert len(group_problems(rows)) == 98  # of 101 problems, 3 have no rated step
    assert {r["rating"] for r in rows} == {-1, 0, 1}


def _pick():
    """Rows (rated or not) whose step starts with whitespace, ends with it, starts with
    LaTeX ($), holds a newline, opens a solution (no previous steps), and sits deep in one."""
    rows = load_steps(shipped_parquet(), rated_only=False)
    picks = [next(r for r in rows if r["next_response"][:1].isspace()),
             next(r for r in rows if r["next_response"][-1:].isspace()),
             *[r for r in rows if r["next_response"].startswith("$")][:3],
             next(r for r in rows if "\n" in r["next_response"]),
             next(r for r in rows if not r["responses"]),
             max(rows, key=lambda r: len(r["responses"]))]
    assert picks[0]["next_response"].startswith(" $")
    return picks


@pytest.mark.parametrize("model", ["smol", "qwen_base"])
def test_step_tokens_reproduce_each_steps_text_exactly(model, request):
    backend = request.getfixturevalue(model)
    for r in _pick():
        prompt_ids = backend.tokenize(chat_prompt(backend, r["instruction"]), add_bos=True)
        context, ids = step_tokens(backend, prompt_ids, list(r["responses"]), r["next_response"])
        assert context[: len(prompt_ids)] == prompt_ids
        solution = backend.detokenize(context[len(prompt_ids):] + ids)
        expected = "".join(s + SEPARATOR for s in r["responses"]) + r["next_response"]
        assert solution == expected.encode("utf-8")
        assert backend.detokenize(ids) == r["next_response"].encode("utf-8")  # the step's span, exactly
        assert len(ids) >= 1


def test_step_statistics_are_the_bases_distributions(rows, smol):
    instruction, problem_rows = group_problems(rows)[0]
    problem_rows = problem_rows[:4]
    steps = score_problem(smol, instruction, problem_rows)
    assert [s["rating"] for s in steps] == [r["rating"] for r in problem_rows]
    prompt_ids = smol.tokenize(chat_prompt(smol, instruction), add_bos=True)
    for r, s in zip(problem_rows, steps):
        context, ids = step_tokens(smol, prompt_ids, list(r["responses"]), r["next_response"])
        assert s["n_tokens"] == len(ids) and s["depth"] == len(r["responses"])
        seen = []  # the distribution after the context, token by token through generate
        smol.generate(context, 1, SamplingConfig(), np.random.default_rng(0),
                      stop_before=lambda stats, written: seen.append(stats) or False)
        assert s["first_entropy"] == pytest.approx(seen[0].entropy, abs=0.1)
        assert s["first_top_prob"] == pytest.approx(seen[0].top_prob, abs=0.03)
        assert s["max_entropy"] >= s["mean_entropy"] >= 0 and 0 < s["min_top_prob"] <= 1
        assert 0 < s["mean_token_prob"] <= 1


def _line(steps):
    return {"kind": "prm800k", "base_model_id": "b", "base_sha256": "a" * 64, "source": "synthetic",
            "problem_key": str(id(steps)), "steps": steps}


def _step(rating, max_entropy):
    s = {k: 0.5 for k in ("first_entropy", "first_varentropy", "first_top_prob", "first_margin", "first_token_prob",
                          "mean_entropy", "min_top_prob", "mean_token_prob")}
    return dict(s, rating=rating, max_entropy=max_entropy, depth=0, n_tokens=3)


def test_prm_report_numbers():
    lines = [_line([_step(-1, 3.0), _step(1, 1.0), _step(0, 2.0)]), _line([_step(-1, 2.6), _step(1, 0.5)])]
    text = prm_report(lines, n_boot=50)
    assert "5 rated steps (bad 2, neutral 1, good 2)" in text
    assert "| max_entropy | 1.000" in text  # separates bad from good perfectly
    assert "| mean_entropy | 0.500" in text  # constant: no information
    assert "would fire inside 100.0% of bad steps and 0.0% of good steps" in text
    rho = text.split("| max_entropy | 1.000")[1].split("|")[1]
    # ranks of (3, 1, 2, 2.6, 0.5) = (5, 2, 3, 4, 1) against ranks of the ratings (-1, 1, 0, -1, 1)
    # = (1.5, 4.5, 3, 1.5, 4.5): r = -9 / sqrt(10 * 9) = -0.949
    assert rho.strip().startswith("-0.949")


def test_missing_column_and_bad_files_are_one_line(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = tmp_path / "no_rating.parquet"
    pq.write_table(pa.table({"instruction": ["p"], "responses": [[]], "next_response": ["s"]}), bad)
    r = run_cli("prm800k", "--data_file", str(bad), "--output_file", str(tmp_path / "o.jsonl"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "lacks column(s) rating" in r.stderr
    not_parquet = tmp_path / "x.parquet"
    not_parquet.write_text("hello")
    r = run_cli("prm800k", "--data-file", str(not_parquet), "--output-file", str(tmp_path / "o.jsonl"))
    assert r.returncode == 2 and "is not a readable parquet file" in r.stderr
    r = run_cli("prm800k", "--data_file", str(tmp_path / "none.parquet"), "--output_file", "o.jsonl")
    assert r.returncode == 2 and "PRM800K parquet not found" in r.stderr
    assert not (tmp_path / "o.jsonl").exists()
    with pytest.raises(GuidedError, match="rating must be -1, 0, 1"):
        odd = tmp_path / "odd.parquet"
        pq.write_table(pa.table({"instruction": ["p"], "responses": [[]], "next_response": ["s"], "rating": [7]}), odd)
        load_steps(str(odd))


def test_resume_drops_a_torn_last_line_and_refuses_a_foreign_line(rows, smol, tmp_path):
    """On the first two problems (3 rated steps each): a partial last line left by a kill
    is dropped and its problem scored again; a line that is not a prm800k line is refused
    and the file is left untouched."""
    problems = [(ins, steps[:3]) for ins, steps in group_problems(rows)[:2]]
    out = tmp_path / "prm.jsonl"
    full = run_prm800k(problems, smol, out, "test")
    first, second = out.read_text().splitlines(keepends=True)
    out.write_text(first + second[:40])
    again = run_prm800k(problems, smol, out, "test")
    assert [x["problem_key"] for x in again] == [x["problem_key"] for x in full]
    assert [x["steps"] for x in again] == [x["steps"] for x in full]  # rescored: same numbers
    assert out.read_text().startswith(first) and len(out.read_text().splitlines()) == 2
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text(first + json.dumps({"unique_id": "x"}) + "\n" + second)
    before = foreign.read_text()
    with pytest.raises(GuidedError, match="line 2 is not a prm800k line"):
        run_prm800k(problems, smol, foreign, "test")
    assert foreign.read_text() == before
