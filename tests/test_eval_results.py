"""The results file: atomic appends, partial-tail repair, corruption, locking, run-key checks."""
import json
import os

import pytest

from guided_inference.atomic import write_atomic
from guided_inference.evaluation.results import (ResultsError, ResultsFile, check_same_run, first_difference,
                                                 read_rows, run_key, write_rows)

KEY = {"dataset": "math500", "prompt_template": "boxed-cot@x", "base_model_id": "b", "oracle_model_id": "o",
       "base_sha256": "1", "oracle_sha256": "2", "config": {"c": 5, "k": 10, "stop": []}}


def lines(*rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


ROW1, ROW2 = KEY | {"unique_id": "a"}, KEY | {"unique_id": "b"}


@pytest.mark.parametrize("tail,dropped", [
    ("", 0),
    ('{"unique_id": "c", "res', len('{"unique_id": "c", "res')),  # killed mid-line: no newline
    ('{"unique_id": "c", "res\n', len('{"unique_id": "c", "res\n')),  # torn line that did get its newline
    ("[1, 2]\n", len("[1, 2]\n")),  # not an object
])
def test_open_sets_aside_only_the_tail_and_append_removes_it(tmp_path, tail, dropped):
    p = tmp_path / "r.jsonl"
    p.write_text(lines(ROW1, ROW2) + tail)
    with ResultsFile.open(p) as rf:
        assert [r["unique_id"] for _, r in rf.rows] == ["a", "b"]
        assert rf.dropped_bytes == dropped
    assert p.read_text() == lines(ROW1, ROW2) + tail  # nothing written, nothing removed
    with ResultsFile.open(p) as rf:
        rf.append(KEY | {"unique_id": "c"})
        rf.append(KEY | {"unique_id": "d"})
        assert rf.dropped_bytes == 0
    assert p.read_text() == lines(ROW1, ROW2, KEY | {"unique_id": "c"}, KEY | {"unique_id": "d"})


def test_a_run_refused_as_foreign_leaves_a_torn_tail_in_place(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text(lines(ROW1) + '{"unique_id": "b", "res')
    with ResultsFile.open(p) as rf, pytest.raises(ResultsError, match="config"):
        check_same_run(rf, KEY | {"config": {"c": 6, "k": 10, "stop": []}})
    assert p.read_text() == lines(ROW1) + '{"unique_id": "b", "res'  # byte for byte


def test_rewrite_removes_the_tail_too(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text(lines(ROW1, ROW2) + '{"unique')
    with ResultsFile.open(p) as rf:
        rf.rewrite([ROW2])
        rf.append(ROW1)
    assert p.read_text() == lines(ROW2, ROW1)


def test_read_rows_ignores_a_partial_tail_without_touching_the_file(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text(lines(ROW1) + '{"unique')
    assert [r["unique_id"] for r in read_rows(p)] == ["a"]
    assert p.read_text().endswith('{"unique')


def test_corrupt_middle_line_is_an_error_naming_the_line(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text(lines(ROW1) + "garbage\n" + lines(ROW2))
    with pytest.raises(ResultsError, match=rf"{p}:2: not a JSON object"):
        ResultsFile.open(p)
    assert p.read_text() == lines(ROW1) + "garbage\n" + lines(ROW2)  # untouched


def test_append_writes_whole_lines_and_numbers_them(tmp_path):
    p = tmp_path / "sub" / "r.jsonl"
    with ResultsFile.open(p) as rf:
        rf.append(ROW1)
        rf.append(ROW2 | {"text": "ünïcode \u2713"})
        assert [n for n, _ in rf.rows] == [1, 2]
    assert [r["unique_id"] for r in read_rows(p)] == ["a", "b"]
    assert p.read_bytes().endswith(b"}\n") and "\u2713" in p.read_text(encoding="utf-8")


def test_a_second_writer_is_refused(tmp_path):
    p = tmp_path / "r.jsonl"
    with ResultsFile.open(p):
        with pytest.raises(ResultsError, match="being written by another run"):
            ResultsFile.open(p)
    ResultsFile.open(p).close()  # released on close


def test_rewrite_is_atomic_and_keeps_the_lock(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text(lines(ROW1, ROW2))
    inode = os.stat(p).st_ino
    with ResultsFile.open(p) as rf:
        rf.rewrite([ROW2])
        assert os.stat(p).st_ino != inode  # replaced, not edited in place
        with pytest.raises(ResultsError, match="another run"):
            ResultsFile.open(p)
        rf.append(ROW1)
    assert [r["unique_id"] for r in read_rows(p)] == ["b", "a"]
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_write_rows_leaves_the_old_file_on_failure(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text(lines(ROW1))
    with pytest.raises(TypeError):
        write_rows(p, [ROW2, {"bad": object()}])
    assert p.read_text() == lines(ROW1)
    assert os.listdir(tmp_path) == ["r.jsonl"]


@pytest.mark.parametrize("change,expected", [
    ({}, None),
    ({"dataset": "gsm8k"}, "dataset: 'math500' in the file, 'gsm8k' now"),
    ({"config": KEY["config"] | {"c": 20}}, "config.c: 5 in the file, 20 now"),
    ({"base_sha256": "9"}, "base_sha256: '1' in the file, '9' now"),
    ({"prompt_template": "custom@y"}, "prompt_template: 'boxed-cot@x' in the file, 'custom@y' now"),
])
def test_first_difference(change, expected):
    assert first_difference(run_key(ROW1), run_key(KEY | change)) == expected


def test_a_base_only_run_resumes_whatever_oracle_was_loaded_beside_it():
    """The oracle writes nothing in a base-only run: its rows resume with another oracle (a
    verify calibration loads the real oracle, the others load the base twice); a guided run
    with another oracle is still refused."""
    never = ROW1 | {"config": ROW1["config"] | {"policy": "never", "c": 0}}
    assert first_difference(run_key(never), run_key(never | {"oracle_model_id": "other", "oracle_sha256": "9"})) is None
    assert first_difference(run_key(ROW1), run_key(ROW1 | {"oracle_sha256": "9"})) == \
        f"oracle_sha256: {ROW1['oracle_sha256']!r} in the file, '9' now"


def test_a_config_field_a_file_predates_counts_as_its_default():
    """A line written before a GenerationConfig field existed resumes with that field at its
    default (verify_threshold None, ngram 64), and is refused with any other value."""
    old = ROW1 | {"config": {k: v for k, v in ROW1["config"].items() if k not in ("verify_threshold", "ngram")}}
    assert first_difference(run_key(old), run_key(ROW1)) is None
    changed = ROW1 | {"config": ROW1["config"] | {"ngram": 16}}
    assert first_difference(run_key(old), run_key(changed)) == "config.ngram: 64 in the file, 16 now"


def test_check_same_run_names_file_line_and_field(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text(lines(ROW1, ROW2 | {"config": KEY["config"] | {"k": 5}}))
    with ResultsFile.open(p) as rf:
        with pytest.raises(ResultsError) as e:
            check_same_run(rf, KEY)
    assert str(e.value).startswith(f"{p}:2 was made with a different configuration (config.k: 5 in the file, 10 now)")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o664], ids=oct)
def test_rewrite_keeps_the_files_mode(tmp_path, mode):
    # mkstemp creates 0600: a rewrite (retry of error lines, `guided grade`) must not narrow the file's mode.
    p = tmp_path / "r.jsonl"
    p.write_text(lines(ROW1, ROW2))
    os.chmod(p, mode)
    with ResultsFile.open(p) as rf:
        rf.rewrite([ROW2])
    assert os.stat(p).st_mode & 0o7777 == mode
    assert [r["unique_id"] for r in read_rows(p)] == ["b"]


def test_write_atomic_of_a_new_file_gets_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "new.jsonl", lines(ROW1))
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "new.jsonl").st_mode & 0o7777 == 0o640  # 0644 less the umask, as open() would give
