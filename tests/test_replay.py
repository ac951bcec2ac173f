"""The calibration replay drives the policy objects themselves: with the same model as base
and oracle (the text cannot change after a consult), the replayed spend and consult
positions equal the online run's for every calibratable policy (and the new ones); the
calibrated value is the exact best over every candidate, not a grid point; the replay keeps
the engine's budget, cooldown and verify rules.
"""
from dataclasses import replace

import numpy as np
import pytest

from guided_inference.replay import (choose_value, realised_share, recorded, replay, threshold_candidates)
from guided_inference.config import GenerationConfig
from guided_inference.engine import guided_generate
from guided_inference.policies import POLICIES, Policy, make_policy
from guided_inference.prompts import chat_prompt, prompt_ids
from guided_inference.router import feature_matrix, fit_router, save_router
from guided_inference.teacher import teacher_force, token_texts
from guided_inference.transcript import check_invariants

from conftest import _load

PROMPTS = {  # SmolLM2-135M writes a numbered list that loops, and a short \boxed{} answer
    "list": "Solve 3x + 5 = 20. Write each step on its own line as a numbered list, then put the final answer "
            "in \\boxed{}.",
    "box": "What is 7 + 5? Put the final answer in \\boxed{}.",
}
BUDGET = dict(c=6, k=4, step_size=8, cooldown=3, max_new_tokens=160)


def fresh(backend):
    """An empty KV cache: llama.cpp's logits depend slightly on how a prefix was batched."""
    backend.keep(0)
    backend._logits_at = -1


@pytest.fixture(scope="module")
def smol():
    """SmolLM2, one token per llama.cpp batch. Batched and one-by-one logits differ in the last
    bits, and verify's check re-reads a step in one batch (then the base continues from that
    cache), which can flip a near-tie later on; evaluated one token at a time, every logit is
    computed the same way however the engine groups tokens, so the text truly cannot change."""
    backend = _load("smollm2-135m")
    backend.llm.n_batch = 1
    return backend


@pytest.fixture(scope="module")
def runs(smol, tmp_path_factory):
    """Base-only runs of both prompts, recorded as the replay reads them: ids, each token's
    bytes, the base's statistics exactly as the engine computed them (a per-token policy
    that only records), and the oracle's teacher-forced scores (oracle = the same model)."""
    out = {}
    for name, question in PROMPTS.items():
        prompt = chat_prompt(smol, question)
        seen = []
        recorder = Policy("record", lambda point, rng: seen.append(point.stats) or False, per_token=True,
                          needs_stats=True)
        fresh(smol)
        trace = guided_generate(prompt, smol, smol, GenerationConfig(policy="entropy", **BUDGET), policy=recorder)
        ids = trace.token_ids
        stats = {k: [getattr(s, k) for s in seen[:len(ids)]] for k in ("entropy", "varentropy", "top_prob", "margin")}
        tf = teacher_force(smol, prompt_ids(smol, prompt), ids, oracle=smol)
        out[name] = (prompt, recorded(None, ids, token_texts(smol, ids), stats, tf.oracle_top1, tf.oracle_p), tf)
    router = fit_router([feature_matrix(out["list"][2])], [out["list"][2].token_prob < 0.6], label="disagree", meta={})
    path = tmp_path_factory.mktemp("router") / "router.json"
    out["router"] = (str(path), save_router(router, path))
    return out


CASES = [  # policy, prompt, extra config, target share (None: the policy's own parameters)
    ("entropy", "list", {}, 0.15), ("varentropy", "list", {}, 0.15), ("top_prob", "list", {}, 0.15),
    ("margin", "list", {}, 0.15), ("rolling_entropy", "list", {"window": 6}, 0.15), ("boundary", "list", {}, 0.15),
    ("learned", "list", {}, 0.15), ("verify", "list", {}, 0.15), ("random", "list", {}, 0.15),
    ("ramp", "list", {}, 0.15), ("prefix", "list", {}, 0.15), ("repetition", "list", {}, 0.15),
    ("answer", "box", {}, None), ("boundary", "list", {"threshold": 1.0, "cooldown": 0}, None),
]


def test_every_calibratable_policy_is_covered():
    assert {name for name, spec in POLICIES.items() if spec.calibrate} <= {c[0] for c in CASES if c[3]}


@pytest.mark.parametrize("name,prompt_name,extra,target", CASES, ids=[f"{c[0]}-{c[3]}" for c in CASES])
def test_replayed_spend_equals_online_spend(smol, runs, name, prompt_name, extra, target):
    prompt, rec, _ = runs[prompt_name]
    if name == "learned":
        extra = dict(extra, router=runs["router"][0], router_sha256=runs["router"][1])
    config = GenerationConfig(policy=name, **{**BUDGET, **extra})
    if target is not None:
        value, share, _ = choose_value(config, [rec], target)
        config = config.replace(**{POLICIES[name].calibrate: value})
    replayed = replay(make_policy(config), config, rec)
    fresh(smol)
    online = guided_generate(prompt, smol, smol, config)
    check_invariants(online)
    assert online.token_ids == rec.ids.tolist(), "the oracle is the base: the text cannot change"
    assert replayed.oracle_tokens > 0, "a case that spends nothing proves nothing"
    # The replay cannot ask at the EOS position (no statistics are recorded there); a consult
    # there writes nothing.
    assert [p for p in online.cheat_positions if p < rec.n] == replayed.consults
    assert online.oracle_tokens == replayed.oracle_tokens


def _synthetic(n: int, seed: int):
    rng = np.random.default_rng(seed)
    stats = {"entropy": rng.gamma(2.0, 1.0, n), "varentropy": rng.gamma(2.0, 2.0, n),
             "top_prob": rng.random(n), "margin": rng.random(n) / 2}
    ids = rng.integers(0, 50, n)
    return recorded(f"synthetic/{seed}", ids, [b"w " for _ in range(n)], stats, ids, rng.random(n))


@pytest.mark.parametrize("name", ["entropy", "top_prob", "verify"])
def test_chosen_threshold_is_the_exact_best_over_every_candidate(name):
    recs = [_synthetic(n, s) for s, n in enumerate((300, 500, 800))]
    config = GenerationConfig(policy=name, c=20, k=10, cooldown=10, max_new_tokens=1024)
    cands = threshold_candidates(config, recs)
    # Every distinct score yields a candidate (two more at the ends), so any share a threshold
    # can spend is reachable: no grid.
    assert cands.size > 1500
    sample = cands[:: max(1, cands.size // 300)]  # brute force over a dense sample, plus the chosen one
    for target in (0.05, 0.10, 0.25):
        t, share, curve = choose_value(config, recs, target)
        assert share == realised_share(make_policy(config.replace(threshold=t)), config.replace(threshold=t), recs)
        brute = [realised_share(make_policy(config.replace(threshold=float(v))), config.replace(threshold=float(v)),
                                recs) for v in sample]
        assert abs(share - target) <= min(abs(s - target) for s in brute) + 1e-12
        assert abs(share - target) < 0.005  # one consult of k = 10 is 0.6% of these 1,600 tokens
        # The share moves monotonically along the candidates the bisection visited.
        shares = [s for _, s in curve]
        spec = POLICIES[name]
        assert shares == sorted(shares, reverse=not spec.more_spends)


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
def test_replay_spends_what_the_engine_rules_say(fire, c, k, cooldown, step, verify, spent):
    """A per-token signal policy firing where ``fire`` is set (takeover), or verify's check
    rejecting the base's token there: the budget, cooldown and step rules of the engine."""
    n = len(fire)
    ids = np.arange(n)
    top1 = np.where(np.array(fire, dtype=bool), ids + 100, ids)  # the oracle disagrees where fire is set
    rec = recorded(None, ids, [b"x"] * n, {k_: np.full(n, 0.5) for k_ in ("entropy", "varentropy", "top_prob",
                                                                           "margin")}, top1, np.full(n, 0.5))
    config = GenerationConfig(policy="verify" if verify else "entropy", c=c, k=k, cooldown=cooldown, step_size=step,
                              max_new_tokens=100)
    policy = make_policy(config)
    if not verify:
        policy = replace(policy, decide=lambda point, rng: bool(fire[point.position]))
    assert replay(policy, config, rec).oracle_tokens == spent
