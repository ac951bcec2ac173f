"""Counts derived for takeover rows made before the cost record (reporting/derived_costs.py).

- The real engine (SmolLM2, `guided eval` on a small data file, as the runner makes rows):
  with its cost record deleted, every row's derived counts equal the record's, field by field,
  for a between-steps policy (random), a per-token one (entropy) and one shared backend.
- The committed old files (Qwen pair, no cost record): the schedule, with each model's cache
  carried from problem to problem as the runner keeps it, reproduces their timings row by row.
- The gpu and api costs of such a file are numbers; a verify file stays n/a for api.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from guided_inference.models import resolve
from guided_inference.prompts import prompt_ids
from guided_inference.reporting.costs import NA, Counts, CostSettings, counts, row_cost, run_cost
from guided_inference.reporting.derived_costs import derive_takeover, not_derived, schedule, vocabulary

RESULTS = Path(__file__).resolve().parent.parent / "results" / "math500-first100"
OLD = ("random_p0.1", "entropy_share0.1", "boundary_share0.1", "random")  # the takeover files, _c20_k10
ROLES = ("base", "oracle")
FIELDS = ("read_prompt", "read_catchup", "read_check", "read", "written", "decoded", "calls", "requests",
          "context_tokens", "batches")
# A prompt of ~880 tokens: read in two forward calls (n_batch 512), the first without logits.
LONG = ("Here are facts about the solar system. " + " ".join(
    f"Fact {i}: planet number {i % 8 + 1} has {i * 3 + 1} small moons and a ring of dust." for i in range(40))
    + " Which planet has the most moons?")
PROBLEMS = [("a", "What is 2+3? Answer with one number."), ("b", "Name a color."), ("long", LONG),
            ("c", "Explain in a few sentences why the sky is blue.")]
# name: (policy flags, oracle model). "smollm2" is SmolLM2 under another name: its own backend and
# KV cache; the same name as the base shares one backend (model_pair.load_pair).
# entropy stops at 68 tokens: its consult at 66 is then cut to 2 tokens by the limit.
RUNS = {"random": (["--policy", "random", "--p", "0.5", "--max_new_tokens", "70"], "smollm2"),
        "entropy": (["--policy", "entropy", "--threshold", "1.5", "--cooldown", "2", "--max_new_tokens", "68"],
                    "smollm2"),
        "random-one-backend": (["--policy", "random", "--p", "0.5", "--max_new_tokens", "70"], "smollm2-135m")}


@pytest.fixture(scope="module")
def engine_rows(tmp_path_factory):
    """Rows of three real `guided eval` runs (greedy, k 4, step 5), as the runner writes them."""
    d = tmp_path_factory.mktemp("derived")
    data = d / "data.jsonl"
    data.write_text("".join(json.dumps({"problem": q, "answer": "x", "unique_id": u}) + "\n" for u, q in PROBLEMS))
    out = {}
    for name, (flags, oracle) in RUNS.items():
        path = d / f"{name}.jsonl"
        proc = run_cli("eval", "--base_model", "smollm2-135m", "--oracle_model", oracle, "--data", str(data), *flags,
                       "--c", "20", "--k", "4", "--step_size", "5", "--no_progress",
                       "--output_file", str(path), env={"GUIDED_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[name] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return out


def without_cost(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "cost"}


@pytest.mark.parametrize("name", list(RUNS))
def test_derived_counts_equal_the_engines_cost_record(engine_rows, name):
    for row in engine_rows[name]:
        assert not_derived(without_cost(row)) is None, row["unique_id"]
        for role in ROLES:
            recorded, derived = counts(row, role), counts(without_cost(row), role)
            assert not recorded.derived and derived.derived
            for field in FIELDS:
                assert getattr(derived, field) == getattr(recorded, field), (row["unique_id"], role, field)
            assert [list(b) for b in derived.batches] == row["cost"][role]["batches"]


def test_the_engine_runs_cover_the_schedules_cases(engine_rows):
    """The equality above means something only if the runs hold each case of the schedule."""
    rows = [r for runs in engine_rows.values() for r in runs]
    plans = {(name, r["unique_id"]): schedule(r, name == "entropy") for name, runs in engine_rows.items()
             for r in runs}
    segs = lambda r: r["interleaved_outputs"]  # noqa: E731
    assert any(r["finish_reason"] == "eos" and segs(r)[-1]["model_type"] == "oracle" for r in rows)  # oracle EOS
    assert any(r["finish_reason"] == "eos" and segs(r)[-1]["model_type"] == "base" for r in rows)  # base EOS
    # a consult cut by max_new_tokens (fewer than k tokens, no EOS)
    assert any(r["finish_reason"] == "length" and segs(r)[-1]["model_type"] == "oracle"
               and segs(r)[-1]["n_tokens"] < r["k"] for r in rows)
    assert any(a["model_type"] == b["model_type"] == "oracle" for r in rows for a, b in zip(segs(r), segs(r)[1:]))
    # per-token: a base request stopped before its first token
    assert any(role == "base" and n == 0 and not eos for plan in plans.values() for role, _, n, eos in plan)
    assert any([512, 0, 1] in r["cost"][role]["batches"] for r in rows for role in ROLES)  # a split prompt
    # the runner keeps each cache from the previous problem: a later prompt is read only in part
    n_prompt = {r["prompt"]: len(prompt_ids(vocabulary("smollm2-135m"), r["prompt"])) for r in rows}
    assert any(0 < r["cost"]["oracle"]["read_prompt"] < n_prompt[r["prompt"]] for r in engine_rows["random"])
    assert all(r["cost"]["oracle"]["read_prompt"] == 0 for r in engine_rows["random-one-backend"])


def test_rows_off_the_schedule_stay_unknown(engine_rows):
    row = without_cost(next(r for r in engine_rows["random"] if r["cheat_positions"]))
    segs = [dict(s) for s in row["interleaved_outputs"]]
    i = next(i for i, s in enumerate(segs) if s["model_type"] == "oracle")
    segs[i - 1]["n_tokens"] += 1  # the consult starts off a step boundary: random asks between steps
    segs[i]["n_tokens"] -= 1
    segs[i]["start"] += 1
    moved = dict(row, interleaved_outputs=segs, cheat_positions=[s["start"] for s in segs if s["model_type"] == "oracle"])
    stopped = dict(row, finish_reason="stop")
    checked = dict(row, consult="verify", config=dict(row["config"], consult="verify"))
    for bad, why in ((moved, "off the engine's schedule"), (stopped, "finish 'stop'"), (checked, "not a takeover")):
        assert why in not_derived(bad)
        c = counts(bad, "base")
        assert c.batches is None and c.context_tokens is None and c.requests is None  # unknown, not 0
        assert row_cost(bad, CostSettings("gpu")) is None
    assert row_cost(checked, CostSettings("api")) == NA


def old_rows(key: str) -> list[dict]:
    path = RESULTS / f"math500_0.5B_1.5B_{key}_c20_k10.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def qwen_vocab():
    resolve("qwen2.5-coder-0.5b")  # pulled if missing: the report counts prompts with its vocabulary
    return vocabulary("qwen2.5-coder-0.5b")


@pytest.mark.parametrize("key", OLD)
def test_the_schedule_reproduces_the_old_files_timings(key, qwen_vocab):
    """What this proves: the engine that made these files (before the cost record) worked by the
    schedule derived_costs assumes. The prompt tokens each model read are computed here without the
    timings: the prompt (Qwen vocabulary) minus what the model's cache already held from its last
    problem in the same process (the runner keeps its caches; a new process, seen as a new load_s,
    starts empty). With those, derived reads equal prefill_tokens and derived decoded tokens equal
    decode_tokens on every row; written adds the EOS the model sampled, which decode_tokens leaves out."""
    rows = old_rows(key)
    held, load, agree = {}, None, 0
    for row in rows:
        if row["timings"]["load_s"] != load:  # a new process: empty caches
            held, load = {}, row["timings"]["load_s"]
        ids, gen = prompt_ids(qwen_vocab, row["prompt"]), row["token_ids"]
        plan = schedule(row, key.split("_")[0] in ("entropy", "boundary"))
        first = {role: next((p for r, p, _, _ in plan if r == role), None) for role in ROLES}
        end = {role: max((p + n for r, p, n, _ in plan if r == role), default=None) for role in ROLES}
        read = {}
        for role in ROLES:
            if first[role] is None:
                read[role] = 0
                continue
            context = ids + gen[:first[role]]
            cached = sum(1 for _ in _common(held.get(role, []), context))
            read[role] = len(ids) - min(cached, len(context) - 1)
            held[role] = ids + gen[:end[role]]
        derived = derive_takeover(row, n_prompt=len(ids), prompt_read=read)
        eos = {role: int(row["finish_reason"] == "eos" and row["interleaved_outputs"][-1]["model_type"] == role)
               for role in ROLES}
        t = row["timings"]
        assert derived is not None, row["unique_id"]
        for role in ROLES:
            assert derived[role]["read"] == t[role]["prefill_tokens"], (row["unique_id"], role)
            assert derived[role]["decoded"] == t[role]["decode_tokens"], (row["unique_id"], role)
            assert derived[role]["written"] == t[role]["decode_tokens"] + eos[role]
            # the report, which solves the prompt part from the timings, gets the same counts
            assert counts(row, role) == Counts(**derived[role], derived=True)
        agree += 1
    assert agree == len(rows) == 100


def _common(a, b):
    for x, y in zip(a, b):
        if x != y:
            return
        yield x


def test_old_takeover_files_have_gpu_and_api_costs(qwen_vocab):
    rows = old_rows("random_p0.1")
    for model in ("compute", "gpu", "api"):
        cost = run_cost(rows, CostSettings(model))
        assert isinstance(cost.value, float) and cost.value > 0 and cost.derived, model
    # by hand, the first problem: a 92-token prompt (the process's first: read whole), 29 base
    # steps of 10 tokens, one consult at 290 writing 9 tokens and the EOS
    first = rows[0]
    assert [(s["model_type"], s["start"], s["n_tokens"]) for s in first["interleaved_outputs"]] == \
        [("base", 0, 290), ("oracle", 290, 9)] and first["finish_reason"] == "eos"
    base_bytes, oracle_bytes = 491_400_064, 1_117_320_768  # the catalogue's file sizes
    # base: the prompt in one call, 290 decode calls; oracle: prompt + 290 catch-up (382 < 512) in one call,
    # priced 382/256 weight passes (over gpu_batch 256), then 9 decode calls
    gpu = ((1 + 290) * base_bytes + (382 / 256 + 9) * oracle_bytes) / 3.35e12
    assert row_cost(first, CostSettings("gpu")) == pytest.approx(gpu)
    # api: base 29 requests, contexts 92 + 0, 92 + 10, ... 92 + 280; 92 uncached, the rest cached; 290 out.
    # oracle: one request of 382 uncached, 10 out (9 tokens and the EOS). Prices: parameters in billions.
    base_context = 29 * 92 + 10 * sum(range(29))
    api = (0.49 * 92 + 0.049 * (base_context - 92) + 1.96 * 290 + 1.54 * 382 + 6.16 * 10) / 1e6
    assert row_cost(first, CostSettings("api")) == pytest.approx(api)
    verify = old_rows("verify_share0.1")
    assert run_cost(verify, CostSettings("api")).value == NA
    assert run_cost(verify, CostSettings("gpu")).value is None  # checks: not derived, unknown


def test_one_model_alone_is_one_request_of_the_whole_prompt():
    """Base-only and oracle-only rows (no cost record): the api request holds the whole prompt
    (counted with the base's vocabulary), though the local cache kept the 24-token system turn
    from the problem before (prefill_tokens is less), and the answer out includes the EOS the
    model sampled, as a takeover row's counts do."""
    resolve("qwen2.5-coder-0.5b")
    for name, role, price in (("never_c0_k10", "base", 0.49), ("always_c103_k10", "oracle", 1.54)):
        path = RESULTS / f"math500_0.5B_1.5B_{name}.jsonl"
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        for r in rows[:20]:
            c = counts(r, role)
            full = len(prompt_ids(vocabulary("qwen2.5-coder-0.5b"), r["prompt"]))
            eos = r["finish_reason"] == "eos"
            assert full >= c.read == r["timings"][role]["prefill_tokens"]
            assert c.written == len(r["token_ids"]) + eos and c.decoded == r["timings"][role]["decode_tokens"]
            assert row_cost(r, CostSettings("api")) == pytest.approx((price * full + 4 * price * c.written) / 1e6)
        # the system turn was cached for most problems: the old figure read fewer prompt tokens
        full = [len(prompt_ids(vocabulary("qwen2.5-coder-0.5b"), r["prompt"])) for r in rows]
        assert sum(n - counts(r, role).read for n, r in zip(full, rows)) >= 24 * (len(rows) - 5)
