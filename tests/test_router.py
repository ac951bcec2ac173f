"""The learned router: fitting recovers known weights, the file round-trips, the
``learned`` policy decides online exactly as the fitted model predicts offline on the
same trace, and fitting on the evaluation set is refused with one line.
"""
import json
from dataclasses import replace

import numpy as np
import pytest

from guided_inference.config import GenerationConfig, GuidedError
from guided_inference.engine import guided_generate
from guided_inference.models import file_sha256
from guided_inference.policies import make_policy
from guided_inference.prompts import chat_prompt
from guided_inference.router import FEATURES, feature_matrix, fit_logistic, fit_router, load_router, save_router
from guided_inference.teacher import features_from_stats, teacher_force
from guided_inference.evaluation.recorded import FLOAT_ARRAYS, INT_ARRAYS

from conftest import run_cli

PROMPT = "List three prime numbers and explain briefly why each is prime."


def test_fit_logistic_recovers_known_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40_000, 3))
    true_w, true_b = np.array([1.5, -2.0, 0.0]), -1.0
    y = rng.random(40_000) < 1 / (1 + np.exp(-(x @ true_w + true_b)))
    w, b = fit_logistic(x, y, l2=0.0)
    assert np.allclose(w, true_w, atol=0.08) and abs(b - true_b) < 0.08


def _synthetic_router(tmp_path, n=3000, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES))) * 2 + 1
    y = x[:, 0] + rng.normal(size=n) > 1.5  # "entropy" drives the label
    router = fit_router([x], [y], label="disagree", meta={"training_problems": ["test/algebra/1.json"]})
    path = tmp_path / "router.json"
    return router, path, save_router(router, path), x


def test_router_round_trips_through_its_file(tmp_path):
    router, path, sha, x = _synthetic_router(tmp_path)
    back = load_router(path, expected_sha256=sha)
    for name in ("mean", "scale", "weights"):
        assert np.array_equal(getattr(back, name), getattr(router, name))
    assert back.bias == router.bias and back.features == FEATURES
    assert back.meta["training_problems"] == ["test/algebra/1.json"]
    assert np.array_equal(back._predict(x), router._predict(x))
    assert router.weights[0] > 1.0 and abs(router.weights[1:]).max() < 0.2  # the label's driver wins
    assert path.stat().st_size < 5000  # small JSON


def test_router_file_errors_are_one_line(tmp_path):
    _, path, sha, _ = _synthetic_router(tmp_path)
    with pytest.raises(GuidedError, match="router file not found"):
        load_router(tmp_path / "nope.json")
    with pytest.raises(GuidedError, match="changed: sha256"):
        load_router(path, expected_sha256="0" * 64)
    garbled = tmp_path / "garbled.json"
    garbled.write_text(path.read_text()[:200])
    with pytest.raises(GuidedError, match="is not a router file") as e:
        load_router(garbled)
    assert "\n" not in str(e.value)
    wrong = tmp_path / "wrong.json"
    d = json.loads(path.read_text())
    d["weights"] = d["weights"][:3]
    wrong.write_text(json.dumps(d))
    with pytest.raises(GuidedError, match="weights must be 9 finite numbers"):
        load_router(wrong)


def test_learned_policy_decides_as_the_fitted_model_predicts(smol, smol2, tmp_path):
    prompt = chat_prompt(smol, PROMPT)
    # Fit a real router on teacher-forced features of one SmolLM2 trace (label: a low-probability token).
    never = guided_generate(prompt, smol, smol2, GenerationConfig(policy="never", max_new_tokens=60, save_stats=True))
    tf = teacher_force(smol, smol.tokenize(prompt, add_bos=True), never.token_ids)
    router = fit_router([feature_matrix(tf)], [tf.token_prob < 0.6], label="disagree", meta={})
    path = tmp_path / "router.json"
    sha = save_router(router, path)

    # Online: the learned policy's probability at every decision point of a base-only run.
    config = GenerationConfig(policy="learned", router=str(path), router_sha256=sha, threshold=0.5, c=1,
                              max_new_tokens=60, save_stats=True)
    learned = make_policy(config)
    assert learned.needs_text, "the router reads the boundary feature from the text tail"
    seen, loaded = {}, load_router(path)

    def record(point, rng):
        seen[point.position] = (loaded.probability(point), point.stats)
        return False

    trace = guided_generate(prompt, smol, smol2, config, policy=replace(learned, decide=record))
    assert trace.cheat_positions == [] and trace.token_ids == never.token_ids
    # Offline: the same trace's online statistics (unrounded, as the policy saw them) as
    # TokenFeatures; rolling entropy, boundary and position are recomputed offline from them
    # and from the text -> the fitted model's predictions.
    assert sorted(seen) == list(range(trace.total_tokens_generated))
    stats = {k: [getattr(seen[i][1], k) for i in sorted(seen)] for k in ("entropy", "varentropy", "top_prob", "margin")}
    online = features_from_stats(smol, trace.token_ids, stats)
    offline = router.predict_features(online)
    assert np.allclose([seen[i][0] for i in sorted(seen)], offline, rtol=0, atol=1e-12)
    assert np.allclose(stats["entropy"], trace.token_stats["entropy"], atol=1e-6)  # the trace's rounded copy
    # Teacher forcing gives the same text features, and statistics within batch-vs-token noise.
    a, b = feature_matrix(tf), feature_matrix(online)
    text_cols = [FEATURES.index("boundary"), FEATURES.index("log_position")]
    assert np.array_equal(a[:, text_cols], b[:, text_cols])
    assert np.median(np.abs(a[:, 0] - b[:, 0])) < 0.05

    # Decisions: with a threshold between the predictions, the first consult is where the
    # offline prediction first exceeds it.
    t = float(np.quantile(offline, 0.8))
    expected = int(np.flatnonzero(offline > t)[0])
    fired = guided_generate(prompt, smol, smol2, config.replace(threshold=t))
    assert fired.cheat_positions[:1] == [expected]


def _divergence_line(uid: str, n: int = 40, seed: int = 0, base_sha: str = "a" * 64) -> dict:
    rng = np.random.default_rng(seed)
    line = {"kind": "divergence", "unique_id": uid, "level": 3, "correct": False, "n": n,
            "base_model_id": "b.gguf", "base_sha256": base_sha, "oracle_model_id": "o.gguf",
            "oracle_sha256": "c" * 64, "source": "synthetic"}
    for k in FLOAT_ARRAYS:
        line[k] = rng.random(n).round(4).tolist()
    for k in INT_ARRAYS:
        line[k] = rng.integers(0, 5, n).tolist()
    line["boundary"] = (rng.random(n) < 0.1).astype(int).tolist()
    return line


def _write(path, lines):
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return str(path)


def test_router_fit_refuses_the_evaluation_set(tmp_path):
    # test/precalculus/807.json is a MATH-500 problem; test/algebra/1.json is not.
    mixed = _write(tmp_path / "div.jsonl", [_divergence_line("test/algebra/1.json"),
                                            _divergence_line("test/precalculus/807.json", seed=1)])
    r = run_cli("router", "fit", "--divergence_file", mixed, "--output_file", str(tmp_path / "r.json"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "1 problem(s) of the evaluation set math500 (e.g. test/precalculus/807.json)" in r.stderr
    assert not (tmp_path / "r.json").exists()


def test_router_fit_cli_writes_router_and_refuses_foreign_or_shared_eval_files(tmp_path):
    train = _write(tmp_path / "train.jsonl", [_divergence_line(f"test/algebra/{i}.json", seed=i) for i in (1, 2)])
    out = tmp_path / "r.json"
    r = run_cli("router", "fit", "--divergence-file", train, "--output-file", str(out))
    assert r.returncode == 0, r.stderr
    assert load_router(out).meta["training_problems"] == ["test/algebra/1.json", "test/algebra/2.json"]
    foreign = _write(tmp_path / "foreign.jsonl", [_divergence_line("test/algebra/3.json", base_sha="f" * 64)])
    r = run_cli("router", "fit", "--divergence_file", train, "--output_file", str(out), "--eval_file", foreign,
                "--findings", "none")
    assert r.returncode == 2 and "comes from another model pair" in r.stderr and r.stderr.count("\n") == 1
    shared = _write(tmp_path / "shared.jsonl", [_divergence_line("test/algebra/2.json", seed=5)])
    r = run_cli("router", "fit", "--divergence_file", train, "--output_file", str(out), "--eval_file", shared,
                "--findings", "none")
    assert r.returncode == 2 and "shares 1 problem(s) with the training file" in r.stderr
    findings = tmp_path / "findings.md"
    held = _write(tmp_path / "held.jsonl", [_divergence_line(f"test/algebra/{i}.json", seed=i) for i in (7, 8)])
    r = run_cli("router", "fit", "--divergence_file", train, "--output_file", str(out), "--eval_file", held,
                "--findings", str(findings), "--n_boot", "20")
    assert r.returncode == 0, r.stderr
    text = findings.read_text()
    assert text.count("## Learned router") == 1 and "| router |" in text and "Router minus the best single" in text


def test_generate_cli_with_the_learned_policy_and_a_router_file(tmp_path):
    _, path, _, _ = _synthetic_router(tmp_path)
    common = ["generate", "--base_model", "smollm2-135m", "--oracle_model", "smollm2-135m", "--policy", "learned",
              "--router", str(path), "--c", "1", "--k", "2", "--max_new_tokens", "6", "--prompt", "Hi", "--json"]
    r = run_cli(*common, "--threshold", "0")  # every probability is > 0: consult at once
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["cheat_positions"] == [0] and out["config"]["router_sha256"] == file_sha256(path)
    r = run_cli(*common, "--threshold", "1")  # no probability is > 1: never
    assert r.returncode == 0 and json.loads(r.stdout)["cheat_positions"] == []
    path.write_text("{}")
    r = run_cli(*common)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "is not a router file" in r.stderr
