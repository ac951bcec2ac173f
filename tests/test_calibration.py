"""Calibration: the chosen value meets the target share on the traces it was fitted on, it
round-trips through the file into `eval`, files that do not fit are refused with one line,
and `--dry_run_on` replays the evaluation set's own base-only traces. (The replay's rules
and its equality with online spend: tests/test_replay.py.)"""
import json

import numpy as np
import pytest

from guided_inference.replay import choose_value, realised_share, recorded
from guided_inference.config import GenerationConfig
from guided_inference.policies import make_policy
from guided_inference.tasks.selection import math500_ids
from conftest import run_cli


def test_chosen_threshold_meets_the_target_share():
    rng = np.random.default_rng(0)
    recs = [recorded(f"s/{n}", np.zeros(n, dtype=np.int64), [b"x"] * n,
                     {"entropy": rng.gamma(2.0, 1.0, size=n), "varentropy": np.ones(n), "top_prob": np.ones(n),
                      "margin": np.ones(n)}) for n in (300, 500, 800)]
    config = GenerationConfig(policy="entropy", c=20, k=10, cooldown=10, max_new_tokens=1024)
    for target in (0.05, 0.10, 0.25):
        t, share, curve = choose_value(config, recs, target)
        assert abs(share - target) < 0.01
        chosen = config.replace(threshold=t)
        assert share == realised_share(make_policy(chosen), chosen, recs)
        # The curve is monotone: a higher entropy threshold never spends more.
        shares = [s for _, s in curve]
        assert all(a >= b for a, b in zip(shares, shares[1:]))


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
    assert record["n_problems"] == 100 and record["target_share"] == 0.2  # the default calibration set
    assert not set(record["problem_ids"]) & math500_ids()
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert all(row["config"]["threshold"] == record["threshold"] for row in rows)
    assert "target_share 0.2" in rows[0]["config"]["threshold_source"]
    stamp = cal.stat().st_mtime_ns
    (tmp_path / "out.jsonl").unlink()
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert cal.stat().st_mtime_ns == stamp  # reused, not recalibrated
    # A second policy calibrates on the same base-only traces: replayed, not generated again.
    base_file = tmp_path / "calibration" / "base-only_smollm2-135m_math_first100_max12.jsonl"
    base_stamp = base_file.stat().st_mtime_ns
    other = [a if a != "entropy" else "top_prob" for a in args]
    r = run_cli(*other[:-3], "--output_file", "out2.jsonl", "--no_progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    second = json.loads((tmp_path / "calibration" / "top_prob_c6_k4_share0.2_smollm2-135m.json").read_text())
    assert second["problem_ids"] == record["problem_ids"]
    assert base_file.stat().st_mtime_ns == base_stamp and len(base_file.read_text().splitlines()) == 100


def test_dry_run_replays_the_evaluation_sets_own_base_only_traces(base_only, tmp_path):
    """`--dry_run_on` reads a base-only file of the evaluation set (MATH-500 problems are its
    point, not refused) and records the share the chosen threshold spends there; on the
    calibration traces themselves that is the calibration's own expected share."""
    d, data, base = base_only
    evaluation = tmp_path / "math500_never.jsonl"
    r = run_cli("eval", "--dataset", "math500", "--num_samples", "2", "--policy", "never", "--base_model",
                "smollm2-135m", "--oracle_model", "smollm2-135m", "--max_new_tokens", "24", "--output_file",
                str(evaluation), "--no_progress")
    assert r.returncode == 0, r.stderr
    for dry, n in ((evaluation, 2), (base, 4)):
        cal = tmp_path / f"cal_{n}.json"
        r = run_cli("calibrate", "--policy", "top_prob", "--target_share", "0.2", "--c", "6", "--k", "4",
                    "--base_model", "smollm2-135m", "--from_results", str(base), "--dry_run_on", str(dry),
                    "--output_file", str(cal))
        assert r.returncode == 0, r.stderr
        record = json.loads(cal.read_text())
        assert record["dry_run"]["file"] == str(dry) and record["dry_run"]["n_problems"] == n
        assert 0.0 <= record["dry_run"]["share"] <= 1.0
        assert f"dry run on {dry} ({n} base-only traces" in r.stdout
    # Teacher forcing twice reads the same statistics up to batch noise far below the gaps the threshold sits in.
    assert record["dry_run"]["share"] == pytest.approx(record["expected_share"], abs=0.02)
    # --transductive: the same MATH-500 file as the calibration set itself; refused without the
    # flag (one line naming it), and the flag needs a file (calibrate never runs the evaluation set).
    common = ("calibrate", "--policy", "top_prob", "--target_share", "0.2", "--c", "6", "--k", "4",
              "--base_model", "smollm2-135m", "--from_results", str(evaluation))
    refused = run_cli(*common, "--output_file", str(tmp_path / "refused.json"))
    errors = [x for x in refused.stderr.splitlines() if x.startswith("error:")]
    assert refused.returncode == 2 and len(errors) == 1 and "--transductive" in errors[0]
    assert not (tmp_path / "refused.json").exists()
    r = run_cli(*common, "--transductive", "--drift", "2", "--dry_run_on", str(evaluation),
                "--output_file", str(tmp_path / "trans.json"))
    assert r.returncode == 0, r.stderr
    trans = json.loads((tmp_path / "trans.json").read_text())
    assert trans["transductive"] is True and record["transductive"] is False
    assert set(trans["problem_ids"]) <= math500_ids() and len(trans["problem_ids"]) == 2
    # --drift 2: the file keeps the online target and the replay aims at half of it
    assert (trans["target_share"], trans["drift"], trans["replay_target"]) == (0.2, 2.0, 0.1)
    assert "replay target 10.0% for 20.0% online at drift 2" in r.stdout
    # On the evaluation set's own traces the dry run there spends what the calibration expected.
    assert trans["dry_run"]["share"] == pytest.approx(trans["expected_share"], abs=0.02)
    bad = run_cli(*common, "--transductive", "--drift", "0.1", "--output_file", str(tmp_path / "bad.json"))
    assert bad.returncode == 2 and "got --drift 0.1" in bad.stderr and not (tmp_path / "bad.json").exists()
    alone = run_cli("calibrate", "--policy", "top_prob", "--target_share", "0.2", "--base_model", "smollm2-135m",
                    "--transductive", "--output_file", str(tmp_path / "none.json"))
    assert alone.returncode == 2 and "--transductive needs --from_results or --from_divergence" in alone.stderr
