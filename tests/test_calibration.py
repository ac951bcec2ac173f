"""Calibration: the replay spends what the rules say, the chosen threshold meets the target
share on the traces it was fitted on, it round-trips through the file into `eval`, and
files that do not fit are refused with one line."""
import json

import numpy as np
import pytest

from guided_inference.calibration import choose_threshold, expected_share, fires, replay
from guided_inference.config import GenerationConfig
from guided_inference.tasks.selection import math500_ids
from conftest import run_cli


@pytest.mark.parametrize("fire,c,k,cooldown,step,verify,spent", [
    ([0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 5, 3, 0, 4, False, 0),
    ([1, 0, 0, 0, 0, 0, 0, 0, 0, 0], 5, 3, 0, 4, False, 3),  # consult at 0 covers 0-2
    ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 5, 3, 0, 4, False, 10),  # 0-2, 3-5, 6-8, 9
    ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 2, 3, 0, 4, False, 6),  # budget: two consults
    ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 5, 3, 2, 4, False, 6),  # 0-2, cooling 3-4, 5-7, cooling 8-9
    ([0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 5, 3, 0, 4, False, 1),  # last token: min(k, n - i)
    ([0, 0, 1, 0, 0, 0, 0, 0, 0, 0], 5, 3, 0, 4, True, 3),  # verify: first disagreement of step 0-3 at 2
    ([0, 0, 0, 0, 0, 1, 1, 0, 0, 0], 5, 2, 0, 4, True, 2),  # step 4-7 disagrees at 5; resume at 7: no more
])
def test_replay_spends_what_the_rules_say(fire, c, k, cooldown, step, verify, spent):
    assert replay(np.array(fire, dtype=bool), c=c, k=k, cooldown=cooldown, step_size=step, verify=verify) == spent


def test_chosen_threshold_meets_the_target_share():
    rng = np.random.default_rng(0)
    scores = [rng.gamma(2.0, 1.0, size=n) for n in (300, 500, 800)]
    config = GenerationConfig(policy="entropy", c=20, k=10, cooldown=10)
    for target in (0.05, 0.10, 0.25):
        t, share, curve = choose_threshold(scores, "above", target, config, verify=False)
        assert abs(share - target) < 0.01
        assert share == expected_share(scores, "above", t, config, verify=False)
        # The curve is monotone: a higher entropy threshold never spends more.
        shares = [s for _, s in curve]
        assert all(a >= b for a, b in zip(shares, shares[1:]))
    assert fires(np.array([np.nan, 1.0]), "below", 2.0).tolist() == [False, True]


@pytest.fixture(scope="module")
def base_only(tmp_path_factory):
    d = tmp_path_factory.mktemp("cal")
    data = d / "q.jsonl"
    data.write_text("".join(json.dumps({"problem": f"Explain step by step why {i} squared is {i * i}.",
                                        "answer": str(i * i), "unique_id": f"cal/{i}"}) + "\n" for i in range(2, 6)))
    out = d / "base.jsonl"
    r = run_cli("eval", "--data", str(data), "--policy", "never", "--base_model", "smollm2-135m", "--oracle_model",
                "smollm2-135m", "--max_new_tokens", "48", "--output_file", str(out), "--no_progress")
    assert r.returncode == 0, r.stderr
    return d, data, out


@pytest.fixture(scope="module")
def cal_file(base_only):
    d, data, base = base_only
    cal = d / "cal.json"
    r = run_cli("calibrate", "--policy", "entropy", "--target_share", "0.2", "--c", "6", "--k", "4",
                "--base_model", "smollm2-135m", "--from_results", str(base), "--output_file", str(cal))
    assert r.returncode == 0, r.stderr
    return cal


def test_calibrate_from_results_round_trips_into_eval(base_only, cal_file):
    d, data, base = base_only
    cal = cal_file
    record = json.loads(cal.read_text())
    assert record["policy"] == "entropy" and (record["c"], record["k"]) == (6, 4)
    assert abs(record["expected_share"] - 0.2) < 0.05 and sorted(record["problem_ids"]) == [f"cal/{i}" for i in range(2, 6)]
    out = d / "eval.jsonl"
    r = run_cli("eval", "--data", str(data), "--policy", "entropy", "--calibration", str(cal), "--base_model",
                "smollm2-135m", "--oracle_model", "smollm2-135m", "--max_new_tokens", "48", "--output_file", str(out),
                "--no_progress")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert all(row["config"]["threshold"] == record["threshold"] for row in rows)
    assert all(row["config"]["threshold_source"].startswith("calibration cal.json sha256:") for row in rows)
    assert all((row["c"], row["k"]) == (6, 4) for row in rows)


@pytest.mark.parametrize("extra,message", [
    (["--policy", "top_prob"], "is for policy 'entropy', got --policy 'top_prob'"),
    (["--policy", "entropy", "--c", "9"], "was made for c=6, got --c 9"),
    (["--policy", "entropy", "--base_model", "gemma3-270m"], "was made with base sha256"),
])
def test_calibration_that_does_not_fit_is_refused(base_only, cal_file, extra, message):
    d, data, _ = base_only
    cal = cal_file
    out = d / "refused.jsonl"
    args = ["eval", "--data", str(data), "--calibration", str(cal), "--oracle_model", "smollm2-135m",
            "--max_new_tokens", "8", "--output_file", str(out), "--no_progress"]
    if "--base_model" not in extra:
        args += ["--base_model", "smollm2-135m"]
    r = run_cli(*args, *extra)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]  # llama.cpp may log too
    assert r.returncode == 2 and len(errors) == 1 and message in errors[0]
    assert not out.exists()


def test_calibrate_refuses_a_results_file_that_is_not_base_only(base_only, tmp_path):
    d, data, _ = base_only
    guided = tmp_path / "guided.jsonl"
    r = run_cli("eval", "--data", str(data), "--policy", "always", "--base_model", "smollm2-135m", "--oracle_model",
                "smollm2-135m", "--max_new_tokens", "8", "--output_file", str(guided), "--no_progress")
    assert r.returncode == 0, r.stderr
    r = run_cli("calibrate", "--policy", "entropy", "--target_share", "0.1", "--base_model", "smollm2-135m",
                "--from_results", str(guided), "--output_file", str(tmp_path / "c.json"))
    assert r.returncode == 2 and "is not base-only" in r.stderr and not (tmp_path / "c.json").exists()


@pytest.mark.parametrize("policy", ["entropy", "verify"])
def test_calibrate_from_divergence_matches_teacher_forcing(base_only, tmp_path, policy):
    """A divergence file holds the same teacher-forced arrays (rounded), so calibrating from it
    picks the threshold that calibrating from the base-only file picks, without a second pass."""
    d, data, base = base_only
    div = tmp_path / "div.jsonl"
    r = run_cli("divergence", "--from_results", str(base), "--base_model", "smollm2-135m", "--oracle_model",
                "smollm2-135m", "--output_file", str(div), "--findings", "none")
    assert r.returncode == 0, r.stderr
    records = {}
    for source in ("--from_results", "--from_divergence"):
        cal = tmp_path / f"{source[2:]}.json"
        r = run_cli("calibrate", "--policy", policy, "--target_share", "0.15", "--c", "6", "--k", "4",
                    "--base_model", "smollm2-135m", "--oracle_model", "smollm2-135m",
                    source, str(div if source == "--from_divergence" else base), "--output_file", str(cal))
        assert r.returncode == 0, r.stderr
        records[source] = json.loads(cal.read_text())
    a, b = records["--from_results"], records["--from_divergence"]
    assert b["source"] == f"divergence {div}" and b["problem_ids"] == a["problem_ids"]
    assert abs(a["expected_share"] - b["expected_share"]) < 0.01
    assert a["threshold"] == pytest.approx(b["threshold"], abs=1e-3)


def test_calibrate_refuses_a_divergence_file_of_math500(tmp_path):
    line = {"kind": "divergence", "unique_id": "test/precalculus/807.json", "base_sha256": None, "oracle_sha256": None}
    div = tmp_path / "div.jsonl"
    div.write_text(json.dumps(line) + "\n")
    r = run_cli("calibrate", "--policy", "entropy", "--target_share", "0.1", "--base_model", "smollm2-135m",
                "--from_divergence", str(div), "--output_file", str(tmp_path / "c.json"))
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "MATH-500 problem" in errors[0]
    assert not (tmp_path / "c.json").exists()


def test_eval_target_share_calibrates_first_and_caches_the_file(base_only, tmp_path):
    """`eval --target_share` runs the base on the calibration split (MATH minus MATH-500),
    writes calibration/<policy>_c_k_share_<base>.json under the working directory, evals
    with its threshold, and a second eval reuses the file instead of calibrating again."""
    _, data, _ = base_only
    args = ("eval", "--data", str(data), "--policy", "entropy", "--target_share", "0.2", "--c", "6", "--k", "4",
            "--base_model", "smollm2-135m", "--oracle_model", "smollm2-135m", "--max_new_tokens", "12",
            "--output_file", "out.jsonl", "--no_progress")
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cal = tmp_path / "calibration" / "entropy_c6_k4_share0.2_smollm2-135m.json"
    record = json.loads(cal.read_text())
    assert record["n_problems"] == 50 and record["target_share"] == 0.2
    assert not set(record["problem_ids"]) & math500_ids()
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert all(row["config"]["threshold"] == record["threshold"] for row in rows)
    assert "target_share 0.2" in rows[0]["config"]["threshold_source"]
    stamp = cal.stat().st_mtime_ns
    (tmp_path / "out.jsonl").unlink()
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert cal.stat().st_mtime_ns == stamp  # reused, not recalibrated
