"""Divergence labels: the teacher-forced labels agree with an independent token-by-token
pass of the oracle on a real Qwen-pair trace, the statistics agree with the engine's own
StepStats, the metrics match hand-computed cases, and bad input is one line, exit 2.
"""
import json
import math

import numpy as np
import pytest

from guided_inference.config import GenerationConfig, SamplingConfig
from guided_inference.engine import guided_generate
from guided_inference.prompts import chat_prompt
from guided_inference.evaluation.recorded import features_from_row, read_divergence
from guided_inference.study.divergence import divergence_row, label, statistics
from guided_inference.intervals import bootstrap_ci
from guided_inference.study.metrics import auroc, average_ranks, pooled, precision_at_share, spearman
from guided_inference.reporting.study_tables import KEEP, divergence_report, write_section
from guided_inference.teacher import teacher_force

from conftest import run_cli

MATH = "What is 17 * 23? Think step by step."


def test_disagree_matches_a_token_by_token_oracle_and_stats_match_the_engine(qwen_base, qwen_oracle):
    prompt = chat_prompt(qwen_base, MATH)
    trace = guided_generate(prompt, qwen_base, qwen_oracle,
                            GenerationConfig(policy="never", max_new_tokens=40, save_stats=True))
    prompt_ids = qwen_base.tokenize(prompt, add_bos=True)
    ids = trace.token_ids
    feats = teacher_force(qwen_base, prompt_ids, ids, oracle=qwen_oracle)
    # Independently: the embedded oracle's own greedy next token after each prefix, one call per position.
    rng = np.random.default_rng(0)
    independent, margins = [], []
    for i in range(len(ids)):
        seen = []
        chunk = qwen_oracle.generate(prompt_ids + ids[:i], 1, SamplingConfig(), rng,
                                     stop_before=lambda stats, written: seen.append(stats) or False)
        independent.append(chunk.tokens[0] if chunk.tokens else -1)  # -1: the oracle would end here
        margins.append(seen[0].margin)
    independent, margins = np.array(independent), np.array(margins)
    recomputed = independent != np.array(ids)  # an oracle EOS where the base kept writing disagrees too
    differ = np.flatnonzero(recomputed != feats.disagree)
    # Batch and token-by-token logits differ slightly (up to ~0.7 in llama.cpp): the argmax may
    # flip only at a near tie of the oracle's top two tokens, and rarely.
    assert all(margins[i] < 0.1 for i in differ), [(int(i), float(margins[i])) for i in differ]
    assert len(differ) <= max(1, len(ids) // 20)
    assert feats.disagree.sum() >= 1  # this trace has real disagreements to compare
    # Statistics at the same positions as the engine's StepStats (batch vs token-by-token logits).
    # Measured on this trace: entropy max 0.10 bits (median 0.004), top_prob max 0.04 (median 0.001).
    for name, max_diff, median_diff in (("entropy", 0.25, 0.02), ("top_prob", 0.1, 0.005), ("margin", 0.15, 0.01)):
        d = np.abs(getattr(feats, name) - np.array(trace.token_stats[name]))
        assert d.max() < max_diff and np.median(d) < median_diff, (name, d.max(), np.median(d))
    # A stored line reproduces the features and labels (rounded to 1e-4).
    row = divergence_row({"unique_id": "x", "level": 1, "correct": True}, feats, {"kind": "divergence"}, 1.0)
    back = features_from_row(json.loads(json.dumps(row)))
    assert np.array_equal(label(back, "disagree"), feats.disagree)
    assert np.allclose(back.entropy, feats.entropy, atol=1e-4)
    assert np.allclose(back.oracle_p, feats.oracle_p, atol=1e-4) and back.oracle_top1.tolist() == feats.oracle_top1.tolist()


@pytest.mark.parametrize("scores, labels, expected", [
    ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),  # the textbook case
    ([1, 1, 0, 0.5], [1, 0, 0, 1], 0.625),  # one tie across classes counts 1/2: (0.5 + 1 + 0 + 1) / 4
    ([2, 2, 2, 2], [1, 0, 1, 0], 0.5),  # all tied
    ([3, 2, 1], [1, 1, 0], 1.0),
    ([1, 2, 3], [1, 1, 0], 0.0),
    ([1, math.nan, 3, 2], [0, 1, 1, 0], 1.0),  # NaN dropped with its label
])
def test_auroc_hand_computed(scores, labels, expected):
    assert auroc(scores, labels) == pytest.approx(expected)


def test_auroc_one_class_is_nan_and_ranks_average_ties():
    assert math.isnan(auroc([1, 2], [1, 1]))
    assert average_ranks(np.array([3, 1, 2, 2, 5])).tolist() == [4, 1, 2.5, 2.5, 5]


def test_precision_at_share_and_spearman():
    s = np.arange(100, dtype=float)
    y = s >= 95  # the top 5 scores are the positives
    assert precision_at_share(s, y, 0.05) == 1.0
    assert precision_at_share(s, y, 0.10) == 0.5
    assert precision_at_share(s, y, 0.01) == 1.0  # ceil(1) token
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)  # ties: Pearson of ranks


def test_bootstrap_ci_contains_the_estimate_and_narrows_with_more_problems():
    rng = np.random.default_rng(3)

    def problems(n):
        out = []
        for _ in range(n):
            y = rng.random(50) < 0.2
            out.append((y + rng.normal(scale=1.0, size=50), y))
        return out

    small, large = problems(10), problems(200)
    est, lo, hi = bootstrap_ci(small, pooled(auroc), n_boot=300)
    assert lo <= est <= hi and 0.5 < est < 1.0
    est2, lo2, hi2 = bootstrap_ci(large, pooled(auroc), n_boot=300)
    assert lo2 <= est2 <= hi2 and hi2 - lo2 < hi - lo


def _line(uid, level, correct, entropy, disagree):
    n = len(entropy)
    ids = list(range(n))
    return {"kind": "divergence", "unique_id": uid, "level": level, "correct": correct, "n": n,
            "base_model_id": "b", "base_sha256": "a" * 64, "oracle_model_id": "o", "oracle_sha256": "c" * 64,
            "source": "synthetic", "entropy": entropy, "varentropy": [0.0] * n, "top_prob": [1 - e / 10 for e in entropy],
            "margin": [0.5] * n, "token_prob": [0.9] * n, "oracle_p": [0.05 if d else 0.9 for d in disagree],
            "token_ids": ids, "since_newline": [0] * n, "boundary": [0] * n,
            "oracle_top1": [i + 1 if d else i for i, d in zip(ids, disagree)]}


def test_divergence_report_numbers_on_a_hand_made_file(tmp_path):
    lines = [_line("a", 1, True, [0.1, 0.2, 3.0, 0.1], [0, 0, 1, 0]),
             _line("b", 2, False, [2.5, 0.3, 0.2, 0.1], [1, 0, 0, 0])]
    feats = [features_from_row(x) for x in lines]
    assert [label(f, "disagree").tolist() for f in feats] == [[False, False, True, False], [True, False, False, False]]
    assert statistics(feats[0])["-top_prob"][2] == pytest.approx(-0.7)
    text = divergence_report(lines, n_boot=50)
    assert "`disagree`: 25.0%" in text  # 2 of 8 tokens
    assert "| entropy | 1.000" in text  # entropy separates the two disagreements perfectly
    assert "| 1 | 1 | 4 | 25.0%" in text and "| correct | 1 | 4 | 25.0%" in text
    path = tmp_path / "findings.md"
    path.write_text("# Findings\n\n## Other helper\n\nkeep me\n\n## Divergence labels\n\nold\n\n## Last\n\nend\n")
    write_section(path, "Divergence labels", text)
    new = path.read_text()
    assert "keep me" in new and "end" in new and "old" not in new and new.count("## Divergence labels") == 1
    # A reading written below the generated part survives the next rewrite.
    path.write_text(new.replace(KEEP + "\n", KEEP + "\n\n**Reading.** by hand\n"))
    write_section(path, "Divergence labels", text.replace("25.0%", "26.0%"))
    again = path.read_text()
    assert "**Reading.** by hand" in again and "26.0%" in again and again.count(KEEP) == 1
    assert again.endswith("## Last\n\nend\n") and "keep me" in again


def _results_row(uid, **kw):
    row = {"unique_id": uid, "prompt": "<|im_start|>user\nhi<|im_end|>\n", "token_ids": [1, 2, 3],
           "oracle_tokens": 0, "cheat_positions": [], "error": None, "correct": False, "level": 1,
           "base_sha256": None, "config": {"policy": "never"}}
    row.update(kw)
    return json.dumps(row) + "\n"


def test_bad_inputs_are_one_line_exit_2(tmp_path):
    guided = tmp_path / "guided.jsonl"
    guided.write_text(_results_row("a") + _results_row("b", oracle_tokens=10, cheat_positions=[3],
                                                       config={"policy": "random"}))
    r = run_cli("divergence", "--from_results", str(guided), "--output_file", str(tmp_path / "d.jsonl"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "is not base-only: b has 10 oracle tokens" in r.stderr
    r = run_cli("divergence", "--from-results", str(tmp_path / "missing.jsonl"), "--output-file", "x.jsonl")
    assert r.returncode == 2 and "results file not found" in r.stderr and r.stderr.count("\n") == 1
    no_ids = tmp_path / "noids.jsonl"
    no_ids.write_text(json.dumps({"unique_id": "a", "prompt": "p", "error": None}) + "\n")
    r = run_cli("divergence", "--from_results", str(no_ids), "--output_file", "x.jsonl")
    assert r.returncode == 2 and "not a results file with token ids" in r.stderr
    mixed = tmp_path / "mixed.jsonl"
    a, b = _line("a", 1, True, [0.1], [0]), _line("b", 1, True, [0.1], [0])
    b["oracle_sha256"] = "d" * 64
    mixed.write_text(json.dumps(a) + "\n" + json.dumps(b) + "\n")
    with pytest.raises(Exception, match="mixes 2 model pairs"):
        read_divergence(str(mixed))


def test_divergence_cli_on_a_real_base_only_file_and_refuses_another_pair(smol, tmp_path):
    """SmolLM2 as its own oracle: on its own greedy trace it never disagrees; resuming the
    output with a different model pair is refused before anything is appended."""
    prompt = chat_prompt(smol, "Name two colours.")
    trace = guided_generate(prompt, smol, smol, GenerationConfig(policy="never", max_new_tokens=24))
    results = tmp_path / "base.jsonl"
    results.write_text(_results_row("test/algebra/1.json", prompt=prompt, token_ids=trace.token_ids,
                                    base_sha256=smol.sha256))
    out, findings = tmp_path / "div.jsonl", tmp_path / "findings.md"
    args = ["divergence", "--base_model", "smollm2-135m", "--oracle_model", "smollm2-135m", "--from_results",
            str(results), "--output_file", str(out), "--findings", str(findings), "--n_boot", "20"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    (line,) = read_divergence(str(out))
    assert line["n"] == len(trace.token_ids) and line["oracle_sha256"] == smol.sha256
    assert sum(label(features_from_row(line), "disagree")) == 0
    assert "## Divergence labels" in findings.read_text() and "problems/min" in r.stderr
    before = out.read_text()
    r = run_cli(*[a if a != "smollm2-135m" or i != 4 else "qwen2.5-coder-0.5b" for i, a in enumerate(args)])
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "was made with another model pair" in r.stderr
    assert out.read_text() == before


def test_resume_drops_a_torn_last_line_and_a_second_writer_is_refused(smol, tmp_path):
    """A kill mid-write leaves a partial last line: the next run drops it and redoes that
    problem. While one run holds the file, another is refused in one line, exit 2."""
    prompts = [chat_prompt(smol, q) for q in ("Name two colours.", "Name a fruit.")]
    traces = [guided_generate(p, smol, smol, GenerationConfig(policy="never", max_new_tokens=12)) for p in prompts]
    results = tmp_path / "base.jsonl"
    results.write_text("".join(_results_row(f"test/algebra/{i}.json", prompt=p, token_ids=t.token_ids,
                                            base_sha256=smol.sha256) for i, (p, t) in enumerate(zip(prompts, traces))))
    out = tmp_path / "div.jsonl"
    args = ["divergence", "--base_model", "smollm2-135m", "--oracle_model", "smollm2-135m", "--from_results",
            str(results), "--output_file", str(out), "--findings", str(tmp_path / "f.md"), "--n_boot", "20"]
    assert run_cli(*args).returncode == 0
    first, second = out.read_text().splitlines(keepends=True)
    out.write_text(first + second[: len(second) // 2])  # the second problem's line, torn
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert [json.loads(x)["unique_id"] for x in out.read_text().splitlines()] == ["test/algebra/0.json",
                                                                                  "test/algebra/1.json"]
    assert out.read_text().startswith(first) and "teacher-forced 1/1" in r.stderr
    from guided_inference.evaluation.results import ResultsFile
    with ResultsFile.open(out):
        r = run_cli(*args)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "locked" in r.stderr
