"""Datasets and selection: shipped files, loaders, malformed lines, the Meta format, shards."""
import hashlib
import json
import math
import re
import subprocess
import sys

import pytest

from guided_inference.config import ConfigError, GuidedError
from guided_inference.tasks import DataError, common_defaults, get_task, shipped, task_for_file
from guided_inference.tasks.selection import (Selection, held_out_split, math500_ids, parse_int_list, parse_shard,
                                              subject_key)

SHIPPED = [
    ("math500_test.jsonl", "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132"),
    ("math_test.jsonl", "bf7f7579489fc1bd951b1213e45cc80333249daa874e4b91f768f1a134bd034e"),
    ("gsm8k_test.jsonl", "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"),
]


@pytest.mark.parametrize("name,sha", SHIPPED)
def test_shipped_files_are_the_documented_ones(name, sha):
    assert hashlib.sha256(shipped(name).read_bytes()).hexdigest() == sha
    assert sha in (shipped("README.md").read_text())


@pytest.mark.parametrize("dataset,n,first_id,first_answer,level,subject", [
    ("math500", 500, "test/precalculus/807.json", "\\left( 3, \\frac{\\pi}{2} \\right)", 2, "Precalculus"),
    ("math", 5000, "test/algebra/1.json", "2", 3, "Algebra"),
    ("gsm8k", 1319, "gsm8k/test/1", "18", None, None),
])
def test_loaders(dataset, n, first_id, first_answer, level, subject):
    problems = get_task(dataset).load()
    assert len(problems) == n
    p = problems[0]
    assert (p.unique_id, p.answer, p.level, p.subject, p.line) == (first_id, first_answer, level, subject, 1)
    assert len({q.unique_id for q in problems}) == n


def test_math500_is_a_subset_of_math_with_the_same_answers():
    full = {p.unique_id: p for p in get_task("math").load()}
    for p in get_task("math500").load():
        assert full[p.unique_id].answer == p.answer and full[p.unique_id].level == p.level


def test_gsm8k_gold_is_a_plain_number_without_thousands_separators():
    problems = get_task("gsm8k").load()
    raw = [json.loads(line)["answer"].rsplit("####", 1)[1].strip()
           for line in shipped("gsm8k_test.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(raw) == len(problems) == 1319
    for p, r in zip(problems, raw):
        # every gold answer is an integer written plainly (the file has no decimals), and a finite number
        assert re.fullmatch(r"-?\d+", p.answer), (p.unique_id, p.answer)
        assert math.isfinite(float(p.answer)) and int(p.answer) == float(p.answer)
        # the same digits as the file's final answer, only the separators gone
        assert p.answer == r.replace(",", "")
    separated = {p.unique_id: (r, p.answer) for p, r in zip(problems, raw) if "," in r}
    assert len(separated) == 14
    assert all(re.fullmatch(r"\d{1,3}(,\d{3})+", r) for r, _ in separated.values())  # true thousands groups
    assert separated["gsm8k/test/147"] == ("2,125", "2125")
    assert separated["gsm8k/test/612"] == ("1,450,000", "1450000")


def test_prompt_asks_for_a_boxed_answer():
    task = get_task("math500")
    text = task.prompt(task.load()[0])
    assert text.startswith("Convert the point") and "\\boxed{}" in text
    assert task.template_id.startswith("boxed-cot@")


def write(tmp_path, lines, name="data.jsonl"):
    p = tmp_path / name
    p.write_text("".join(line if isinstance(line, str) else json.dumps(line) + "\n" for line in lines))
    return p


GOOD = {"problem": "1+1?", "answer": "2"}


@pytest.mark.parametrize("bad_line,message", [
    ('{"problem": "1+1?", "answer": \n', "invalid JSON"),
    ("[1, 2]\n", "expected a JSON object, got list"),
    ({"problem": "1+1?"}, "missing field 'answer'"),
    ({"question_text": "1+1?", "answer": "2"}, "missing field 'problem or question'"),
    ({"problem": "", "answer": "2"}, "field 'problem' must be a non-empty string"),
    ({"problem": "x", "answer": "2", "level": "hard"}, "field 'level' must be an integer"),
    ({"input_correct_responses": [], "input_question": "x"}, "field 'input_correct_responses' must be a non-empty list"),
    ({"input_correct_responses": ["2"], "input_question": "x", "eval_config": {"max_gen_len": "lots"}},
     "eval_config.max_gen_len must be an integer"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    path = write(tmp_path, [GOOD, GOOD | {"unique_id": "two"}, bad_line, GOOD])
    with pytest.raises(DataError) as e:
        task_for_file(path).load()
    assert str(e.value).startswith(f"{path}:3: ") and message in str(e.value)


def test_duplicate_ids_and_empty_files(tmp_path):
    path = write(tmp_path, [GOOD | {"id": 7}, GOOD | {"id": 7}])
    with pytest.raises(DataError, match=r":2: unique_id '7' repeats line 1"):
        task_for_file(path).load()
    with pytest.raises(DataError, match="no problems"):
        task_for_file(write(tmp_path, ["\n"], "empty.jsonl")).load()
    with pytest.raises(DataError, match="cannot read data file"):
        task_for_file(tmp_path / "missing.jsonl").load()


def test_plain_file_fields(tmp_path):
    path = write(tmp_path, [{"question": "How many?", "answer": "He has 3.\n#### 1,234"},
                            {"problem": "p", "answer": "\\frac12", "unique_id": "u2", "level": "Level 4", "type": "Geometry"}])
    task = task_for_file(path)
    a, b = task.load()
    assert task.name == "file:data.jsonl"
    assert (a.unique_id, a.problem, a.answer, a.level) == ("data/1", "How many?", "1234", None)
    assert (b.unique_id, b.answer, b.level, b.subject) == ("u2", "\\frac12", 4, "Geometry")


def test_meta_evals_format(tmp_path):
    meta = {"input_final_prompts": ["<|start_header_id|>user<|end_header_id|>\n\nSolve 2+3"],
            "input_correct_responses": ["5"], "input_question_hash": "abc",
            "eval_config": {"max_gen_len": "512", "temperature": "0.0", "top_p": "0"}}
    path = write(tmp_path, [meta, meta | {"input_question": "What is 2+3?"}])
    a, b = task_for_file(path).load()
    assert a.problem.endswith("Solve 2+3") and b.problem == "What is 2+3?"
    assert a.answer == "5"
    assert common_defaults([a, b]) == {"max_new_tokens": 512, "temperature": 0.0}
    odd = write(tmp_path, [meta, meta | {"eval_config": {"max_gen_len": "100"}}], "odd.jsonl")
    with pytest.raises(DataError, match="line 2: eval_config"):
        common_defaults(task_for_file(odd).load())


def test_unknown_dataset():
    with pytest.raises(DataError, match="dataset must be one of math500, math, gsm8k .*got 'mmlu'"):
        get_task("mmlu")


MATH500 = get_task("math500").load()


@pytest.mark.parametrize("selection,n,check", [
    (Selection(), 500, None),
    (Selection(num_samples=10), 10, lambda ps: ps == MATH500[:10]),
    (Selection(num_samples=10, offset=495), 5, lambda ps: ps == MATH500[495:]),
    (Selection(levels=(1,)), 43, lambda ps: {p.level for p in ps} == {1}),
    (Selection(levels=(1, 2), num_samples=50), 50, lambda ps: {p.level for p in ps} == {1, 2}),
    (Selection(subjects=("counting_and_probability",)), 38, lambda ps: {p.subject for p in ps} == {"Counting & Probability"}),
    (Selection(subjects=("Number Theory", "geometry")), 103, None),
    (Selection(levels=(5,), subjects=("algebra",)), None, lambda ps: all(p.level == 5 and p.subject == "Algebra" for p in ps)),
])
def test_selection(selection, n, check):
    got = selection.apply(MATH500)
    if n is not None:
        assert len(got) == n
    if check:
        assert check(got)


@pytest.mark.parametrize("base", [Selection(), Selection(num_samples=37, offset=5), Selection(levels=(3,))])
@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_shards_are_disjoint_and_cover(base, n):
    whole = base.apply(MATH500)
    shards = [Selection(base.num_samples, base.offset, base.levels, base.subjects, (i, n)).apply(MATH500)
              for i in range(1, n + 1)]
    ids = [p.unique_id for s in shards for p in s]
    assert len(ids) == len(set(ids))  # disjoint
    assert sorted(ids) == sorted(p.unique_id for p in whole)  # covering
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced


@pytest.mark.parametrize("make,message", [
    (lambda: Selection(levels=(6,)).apply(MATH500), "levels must be among 1,2,3,4,5, got 6"),
    (lambda: Selection(subjects=("biology",)).apply(MATH500), "subjects must be among"),
    (lambda: Selection(levels=(1,)).apply(get_task("gsm8k").load()), "this dataset has no levels"),
    (lambda: Selection(num_samples=0), "num_samples must be an integer >= 1, got 0"),
    (lambda: Selection(offset=-1), "offset must be an integer >= 0, got -1"),
    (lambda: parse_shard("3/2"), "shard must be i/n with 1 <= i <= n, got '3/2'"),
    (lambda: parse_shard("0/2"), "shard must be i/n with 1 <= i <= n, got '0/2'"),
    (lambda: parse_shard("half"), "shard must look like i/n (e.g. 1/4), got 'half'"),
    (lambda: parse_int_list("levels", "1,x"), "levels must be a comma-separated list of integers, got '1,x'"),
])
def test_bad_selection_values(make, message):
    with pytest.raises(ConfigError) as e:
        make()
    assert message in str(e.value)
    assert isinstance(e.value, GuidedError)


def test_held_out_split_is_math_minus_math500_with_subjects_mixed():
    split = held_out_split(get_task("math"))
    ids = [p.unique_id for p in split]
    assert len(ids) == 4500 and len(set(ids)) == 4500
    assert not set(ids) & math500_ids()
    # stable order (sha256 of the id), not file order: the file starts with 1,000 Algebra problems
    assert ids == sorted(ids, key=lambda u: hashlib.sha256(u.encode()).hexdigest())
    first50 = split[:50]
    assert len({p.subject for p in first50}) == 7 and len({p.level for p in first50}) == 5
    assert held_out_split(get_task("gsm8k")) == get_task("gsm8k").load()  # other datasets: file order


def test_subject_key():
    assert subject_key("Counting & Probability") == subject_key("counting_and_probability") == "counting_and_probability"


def test_cli_stops_on_a_malformed_file_before_loading_models(tmp_path):
    path = write(tmp_path, [GOOD, GOOD | {"unique_id": "x"}, '{"problem": 1, "answer": }\n'])
    out = tmp_path / "out.jsonl"
    proc = subprocess.run([sys.executable, "-m", "guided_inference.cli", "eval", "--data", str(path),
                           "--base_model", "no-such-model", "--output-file", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {path}:3: invalid JSON (Expecting value at column 26)"
    assert not out.exists()


@pytest.mark.parametrize("extra,max_new_tokens,temperature", [
    ([], 512, 0.25),  # the Meta file's eval_config
    (["--max_new_tokens", "64"], 64, 0.25),  # an explicit flag wins
    (["--temperature", "0"], 512, 0.0),
])
def test_file_defaults_then_flags(tmp_path, extra, max_new_tokens, temperature):
    from guided_inference.cli import build_parser
    from guided_inference.cli.evaluate import _apply_defaults, load_selection

    meta = {"input_question": "2+3?", "input_correct_responses": ["5"],
            "eval_config": {"max_gen_len": "512", "temperature": "0.25"}}
    args = build_parser().parse_args(["eval", "--data", str(write(tmp_path, [meta, meta | {"input_question": "1+1?"}])),
                                      *extra])
    task, problems, defaults, _ = load_selection(args)
    _apply_defaults(args, defaults)
    config = args.make_config(args)
    assert (config.max_new_tokens, config.temperature) == (max_new_tokens, temperature)
    assert len(problems) == 2


def test_eval_default_generation_length():
    from guided_inference.cli import build_parser
    from guided_inference.cli.evaluate import _apply_defaults, load_selection
    from guided_inference.evaluation.runner import EVAL_MAX_NEW_TOKENS

    args = build_parser().parse_args(["eval", "--num_samples", "3", "--policy", "always", "--k", "8"])
    _, problems, defaults, _ = load_selection(args)
    _apply_defaults(args, defaults)
    config = args.make_config(args)
    assert config.max_new_tokens == EVAL_MAX_NEW_TOKENS == 1024
    assert config.c == 128  # oracle only: enough consults of 8 tokens to cover 1024
    assert [p.unique_id for p in problems] == [p.unique_id for p in MATH500[:3]]


def test_an_id_file_selects_exactly_those_problems_in_its_order(tmp_path):
    from guided_inference.cli import build_parser
    from guided_inference.cli.evaluate import _dataset_label, load_selection

    wanted = [MATH500[7].unique_id, MATH500[2].unique_id, MATH500[7].unique_id]  # a repeat runs once
    ids = tmp_path / "ids.txt"
    ids.write_text("# two problems\n\n" + "\n".join(wanted) + "\n")
    args = build_parser().parse_args(["eval", "--ids", str(ids), "--num_samples", "1"])
    task, problems, _, _ = load_selection(args)
    assert [p.unique_id for p in problems] == [MATH500[7].unique_id]  # ids first, then the window
    args = build_parser().parse_args(["eval", "--ids", str(ids)])
    assert [p.unique_id for p in load_selection(args)[1]] == wanted[:2]
    label = _dataset_label(task, args)  # a default file name of its own, named by the file and its ids
    assert label.startswith("math500_ids-") and len(label) == len("math500_ids-") + 8
    other = tmp_path / "other" / "ids.txt"  # the same file name, other ids: another default file
    other.parent.mkdir()
    other.write_text(wanted[1] + "\n")
    assert _dataset_label(task, build_parser().parse_args(["eval", "--ids", str(other)])) != label
    other.write_text("\n".join(wanted) + "\n")  # the same ids: the same file, comments aside
    assert _dataset_label(task, build_parser().parse_args(["eval", "--ids", str(other)])) == label
    ids.write_text("test/no/such.json\n")
    with pytest.raises(ConfigError, match=r"ids: 'test/no/such.json' is not a problem of this dataset \(500 problems\)"):
        load_selection(args)
    ids.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="holds no unique_id"):
        load_selection(args)


def test_the_committed_held_out_ids_were_never_calibrated_on_nor_in_math500():
    from guided_inference.evaluation.calibrate import CAL_NUM_SAMPLES
    from guided_inference.tasks.selection import read_ids

    from pathlib import Path

    committed = read_ids(str(Path(__file__).resolve().parents[1] / "results/heldout/math_heldout_ids.txt"))
    split = [p.unique_id for p in held_out_split(get_task("math"))]
    assert len(committed) == 100 and len(set(committed)) == 100
    assert list(committed) == split[CAL_NUM_SAMPLES:CAL_NUM_SAMPLES + 100]  # what scripts/heldout_ids.py writes
    assert not set(committed) & set(split[:CAL_NUM_SAMPLES]) and not set(committed) & math500_ids()
