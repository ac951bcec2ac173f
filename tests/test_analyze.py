"""``guided analyze`` and ``guided plots`` on real models and real results files.

- Qwen 0.5B (transformers, fp32 dequantized from the same GGUF) against the engine's
  ``consult_stats`` (llama.cpp, Q4_K_M) on a real trace of the Qwen pair.
- A 1,024-token line of the committed random c=20 results: attention rows sum to 1 over
  the causal prefix, eager weights equal the softmax of the captured pre-softmax scores,
  and no statistic is NaN or infinite at any of the 1,024 positions.
- SmolLM2 (fast) through the real CLI: ``guided eval`` writes a results file, ``guided
  analyze`` is killed mid-file and resumed, ``guided plots`` draws it.
- Bad input: one line, exit 2, nothing overwritten.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from guided_inference.study.analyze import AnalyzeSettings, analyze_row, positions_of
from guided_inference.study.attention_stats import FIELDS
from guided_inference.reporting.analysis_summary import position_groups, summarize_groups
from guided_inference.config import GenerationConfig
from guided_inference.engine import guided_generate
from guided_inference.intervals import mean_ci
from guided_inference.policies import Policy
from guided_inference.prompts import chat_prompt

ROOT = Path(__file__).resolve().parents[1]
RANDOM_C20 = ROOT / "results" / "math500-first100" / "math500_0.5B_1.5B_random_c20_k10.jsonl"
QWEN_SHA = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
PROBLEM = "What is the sum of the first 10 positive odd integers? Reason step by step."
FIRE_AT = (3, 17, 33, 50)  # generated positions where the test policy consults (if the base is writing then)

# Measured (bench/analyze_agreement.py, docs/findings.md): llama.cpp Q4_K_M (quantized activations, prompt
# read in a batch, then token by token) vs transformers with the dequantized fp32 weights in one pass, same
# token ids, 600 positions: median |entropy gap| 3e-4 bits, p99 0.063, max 0.17; |top_prob| max 0.065;
# |margin| max 0.12; |varentropy| max 0.17. Bounds: above the largest gap seen, and a typical gap of 0.01.
ENTROPY_TOL = 0.25  # bits, any one position
PROB_TOL = 0.15  # top_prob and prob_top2_diff, any one position
TYPICAL_TOL = 0.01  # the median entropy gap over the consults, bits


@pytest.fixture(scope="module")
def tf_qwen():
    pytest.importorskip("torch")
    from guided_inference.backends.transformers_backend import TransformersBackend

    return TransformersBackend("qwen2.5-coder-0.5b", collect_stats=False)


def fire_at(positions) -> Policy:
    """A per-token policy that consults at fixed positions, so the engine records consult_stats there."""
    return Policy("fire_at", lambda point, rng: point.stats is not None and point.position in positions,
                  per_token=True, needs_stats=True)


@pytest.fixture(scope="module")
def qwen_row(qwen_base, qwen_oracle):
    prompt = chat_prompt(qwen_base, PROBLEM)
    config = GenerationConfig(c=len(FIRE_AT), k=4, max_new_tokens=64)
    trace = guided_generate(prompt, qwen_base, qwen_oracle, config, policy=fire_at(set(FIRE_AT)))
    row = trace.to_dict()
    row.update(prompt=prompt, base_sha256=qwen_base.sha256, base_model="qwen2.5-coder-0.5b", correct=True, error=None)
    return row


def test_logit_statistics_match_the_engines_consult_stats(tf_qwen, qwen_row):
    recorded = [s for s in qwen_row["consult_stats"] if s is not None]
    assert len(recorded) >= 2, qwen_row["cheat_positions"]  # the policy fired where the base was writing
    result = {it["position"]: it for it in analyze_row(tf_qwen, qwen_row, AnalyzeSettings(Path("a"), Path("b")))}
    assert sorted(result) == sorted(set(qwen_row["cheat_positions"]))
    gaps = []
    for s in recorded:
        mine = result[s["position"]]
        gaps.append((abs(mine["entropy"] - s["entropy"]), abs(mine["top_prob"] - s["top_prob"]),
                     abs(mine["prob_top2_diff"] - s["margin"])))
        assert mine["entropy"] == pytest.approx(s["entropy"], abs=ENTROPY_TOL), s
        assert mine["top_prob"] == pytest.approx(s["top_prob"], abs=PROB_TOL), s
        assert mine["prob_top2_diff"] == pytest.approx(s["margin"], abs=PROB_TOL), s
        assert mine["varentropy"] == pytest.approx(s["varentropy"], abs=ENTROPY_TOL + 0.1 * s["varentropy"]), s
    assert np.median([g[0] for g in gaps]) < TYPICAL_TOL, gaps


def longest_line() -> dict:
    rows = [json.loads(line) for line in RANDOM_C20.read_text().splitlines()]
    return max(rows, key=lambda r: len(r["token_ids"]))


def test_attention_rows_over_the_causal_prefix(tf_qwen):
    row = longest_line()
    ids = tf_qwen.tokenize(row["prompt"], add_bos=True) + row["token_ids"]
    rows = [0, 5, len(ids) // 2, len(ids) - 1]
    tf = tf_qwen.teacher_forced(ids, rows, layers=[0, -1])
    assert tf.logits.shape == (len(rows), 151936) and sorted(tf.attention) == [0, 23]
    for layer in (0, 23):
        for r, (scores, probs) in zip(rows, tf.attention[layer]):
            assert probs.shape == scores.shape == (14, r + 1)  # 14 query heads, keys 0..r only
            np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
            e = np.exp(scores - scores.max(axis=1, keepdims=True))
            np.testing.assert_allclose(e / e.sum(axis=1, keepdims=True), probs, atol=1e-5)  # the scores are eager's


def test_no_statistic_is_nan_or_infinite_on_a_1024_token_trace(tf_qwen):
    row = longest_line()
    assert len(row["token_ids"]) == 1024
    result = analyze_row(tf_qwen, row, AnalyzeSettings(Path("a"), Path("b"), positions="all"))
    assert [it["position"] for it in result] == list(range(1024))
    values = np.array([[it[k] for k in FIELDS] for it in result])
    assert np.isfinite(values).all()
    assert (values[:, [0, 1, 4, 5, 6, 7]] >= 0).all() and (values[:, 2] <= 1).all()
    assert values[:, 4].max() <= math.log2(len(tf_qwen.tokenize(row["prompt"], add_bos=True)) + 1024)


def test_consult_positions_are_the_cheat_positions_once_each():
    row = {"token_ids": list(range(30)), "cheat_positions": [10, 0, 10, 30, 31]}
    assert positions_of(row, "consults") == [0, 10, 30]  # 30: a consult right after the last token; 31 impossible
    assert positions_of(row, "all") == list(range(30))


def test_mean_ci_is_cluster_robust():
    c = mean_ci([1.0, 2.0, 3.0, 4.0], ["a", "a", "b", "b"])
    # cluster sums of deviations -2 and +2: SE^2 = 2/1 * 8 / 16 = 1
    assert (c.mean, c.n, c.lines) == (2.5, 4, 2)
    assert c.low == pytest.approx(2.5 - 1.959964) and c.high == pytest.approx(2.5 + 1.959964)
    assert math.isnan(mean_ci([1.0, 2.0], [0, 0]).low)  # one line: no interval


def test_summary_groups_split_correct_wrong_and_consult_other():
    item = dict.fromkeys(FIELDS, 1.0)
    rows = [{"correct": True, "cheat_positions": [1], "analysis_result": [{**item, "position": 1}, {**item, "position": 2}]},
            {"correct": False, "cheat_positions": [0], "analysis_result": [{**item, "position": 0}]},
            {"error": "BackendError", "cheat_positions": [], "analysis_result": []}]
    groups = position_groups(rows)
    assert {k: len(v) for k, v in groups.items()} == {"correct, consults": 1, "wrong, consults": 1,
                                                      "all lines, consults": 2, "all lines, other positions": 1}
    assert summarize_groups(groups)["entropy"]["all lines, consults"].mean == 1.0


# --- the real CLI on SmolLM2: eval -> analyze (killed, resumed) -> plots

@pytest.fixture(scope="module")
def smol_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("smol") / "smol.jsonl"
    proc = run_cli("eval", "--base_model", "smollm2-135m", "--oracle_model", "smollm2-135m", "--dataset", "math500",
                   "--num_samples", "6", "--max_new_tokens", "40", "--c", "3", "--k", "4", "--policy", "random",
                   "--output_file", str(out), "--no_progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(out.read_text().splitlines()) == 6
    return out


def analyze_cmd(src: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "guided_inference.cli", "analyze", "--stats_file", str(src), "--output_file",
            str(out), "--positions", "all", "--layers", "all", "--no_progress"]


def test_resume_after_a_kill_gives_the_uninterrupted_output(smol_results, tmp_path):
    whole = tmp_path / "whole.jsonl"
    proc = subprocess.run(analyze_cmd(smol_results, whole), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "6 analysed, 0 resumed" in proc.stdout and "all lines, other positions" in proc.stdout

    killed = tmp_path / "killed.jsonl"
    child = subprocess.Popen(analyze_cmd(smol_results, killed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and child.poll() is None:
        if killed.exists() and killed.read_bytes().count(b"\n") >= 1:
            break
        time.sleep(0.01)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    done = killed.read_bytes().count(b"\n")
    assert 1 <= done < 6, f"the kill came after {done} of 6 lines"
    with killed.open("ab") as f:
        f.write(b'{"analysis_result": [{"posit')  # as if killed in the middle of a write

    proc = subprocess.run(analyze_cmd(smol_results, killed), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{6 - done} analysed, {done} resumed" in proc.stdout
    assert "dropping a partial last line" in proc.stderr
    assert killed.read_text() == whole.read_text()  # same lines, same order, none twice

    rows = [json.loads(line) for line in whole.read_text().splitlines()]
    source = [json.loads(line) for line in smol_results.read_text().splitlines()]
    for row, src in zip(rows, source):
        assert {k: row[k] for k in src} == src  # the input line, unchanged
        assert row["acc"] == (1 if src["correct"] else 0)
        assert row["analysis"]["positions"] == "all" and row["analysis"]["layers"] == "all"
        assert [it["position"] for it in row["analysis_result"]] == list(range(len(src["token_ids"])))
        grid = row["analysis_result"][0]["attn_entropy_by_layer_head"]
        assert len(grid) == 30 and {len(g) for g in grid} == {9}  # SmolLM2-135M: 30 layers, 9 query heads


def test_error_lines_are_copied_with_an_empty_result(smol_results, tmp_path):
    rows = [json.loads(line) for line in smol_results.read_text().splitlines()[:2]]
    failed = {**rows[0], "error": "BackendError: server down", "token_ids": None, "correct": None}
    src = write(tmp_path / "in.jsonl", [rows[0], failed, rows[1]])
    out = tmp_path / "out.jsonl"
    proc = run_cli("analyze", "--stats_file", str(src), "--output_file", str(out), "--no_progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["analysis"]["line"] for r in got] == [1, 2, 3]
    assert got[1]["analysis_result"] == [] and got[1]["acc"] == 0 and got[1]["error"] == failed["error"]
    for r in (got[0], got[2]):
        assert [it["position"] for it in r["analysis_result"]] == sorted(set(r["cheat_positions"]))
        assert all(set(FIELDS) <= set(it) and "attn_entropy_by_layer_head" not in it for it in r["analysis_result"])


def test_plots_draws_every_figure(smol_results, tmp_path):
    analysis = tmp_path / "a.jsonl"
    assert subprocess.run(analyze_cmd(smol_results, analysis), capture_output=True, timeout=600).returncode == 0
    out = tmp_path / "plots"
    proc = run_cli("plots", "--analysis_file", str(analysis), "--out_dir", str(out), "--traces", "2")
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir())
    assert {"entropy_varentropy.png", "correlation.png", "attn_entropy_by_layer_head.png",
            "distributions_consult_vs_other.png"} <= set(names)
    assert len([n for n in names if n.startswith("trace_")]) == 2
    for p in out.iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


# --- bad input: one line, exit 2, nothing overwritten

def write(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def first_line_of_random_c20() -> dict:
    return json.loads(RANDOM_C20.read_text().splitlines()[0])


@pytest.mark.parametrize("case, rows, extra, message", [
    ("not results", [{"problem": "1+1", "answer": "2"}], [], "is not a guided eval results line (no prompt, "),
    ("not json", ["this is not json", "{}"], [], "not a JSON object"),
    ("old format", "no_token_ids", [], "has no token_ids"),
    ("other model", "qwen", ["--base_model", "smollm2-135m"], "is not the base model of"),
    ("bad positions", "qwen", ["--positions", "some"], "positions must be one of consults, all; got 'some'"),
    ("bad device", "qwen", ["--device", "tpu"], "device must be one of cpu, cuda; got 'tpu'"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_overwritten(tmp_path, case, rows, extra, message):
    line = first_line_of_random_c20()
    if rows == "qwen":
        rows = [line]
    elif rows == "no_token_ids":
        rows = [{k: v for k, v in line.items() if k != "token_ids"}]
    src = write(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    proc = run_cli("analyze", "--stats_file", str(src), "--output_file", str(out), *extra)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert out.read_text() == "precious\n"
    if case == "other model":
        assert QWEN_SHA in proc.stderr and "smollm2-135m" in proc.stderr  # names both


def test_plots_refuses_a_results_file(tmp_path):
    proc = run_cli("plots", "--analysis_file", str(RANDOM_C20), "--out_dir", str(tmp_path / "p"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "has no analysis_result" in proc.stderr
    assert not (tmp_path / "p").exists()
