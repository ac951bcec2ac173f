"""scripts/frontier_study.py (issue 19): the study's commands are ones the CLI accepts and write
where the tables read, and a run file dropped in place shows up in its tables with the paired
figures `guided compare` gives."""
from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("frontier_study", ROOT / "scripts" / "frontier_study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["frontier_study"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tables(study):
    spec = importlib.util.spec_from_file_location("study_tables", ROOT / "scripts" / "study_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports frontier_study: the fixture's module, in sys.modules
    return module


def parsed(command: str):
    from guided_inference.cli import build_parser

    words = shlex.split(command)
    words = words[words.index("guided") + 1:]
    return build_parser().parse_args(words)


def test_every_command_parses_and_writes_where_the_tables_read(study):
    runs = study.study_runs("top_prob")
    assert {r.group for r in runs} == {0, 1, 2, 3, 4}  # 0: the committed references
    for run in runs:
        *cal, ev = run.commands()
        args = parsed(ev)
        assert args.output_file == run.path and args.policy == run.policy
        assert args.max_new_tokens == 1024 and args.step_size == 10
        if run.heldout:
            assert args.ids == study.HELDOUT_IDS and args.num_samples == study.HELDOUT_N and args.dataset == "math"
        else:
            assert args.dataset == "math500" and args.num_samples == 100
        if run.calibration:
            from guided_inference.replay import check_calibratable

            c = parsed(cal[0])
            check_calibratable(c.make_config(c))  # a calibration the CLI would accept (no model needed)
            assert args.calibration == c.output_file == run.calibration
            assert (c.policy, c.target_share, c.c, c.k) == (run.policy, run.share, run.c, run.k)
            # transductive: the evaluation set's own base traces (MATH-500 for held-out runs too:
            # group 4 re-uses group 1's files, so no held-out problem is calibrated on)
            assert c.transductive and c.from_divergence == study.EVAL_DIV and c.from_results is None
            assert c.step_size == 10
            assert ("--oracle_model" in cal[0]) == (run.policy == "verify")  # verify's oracle scores the base traces
    d = parsed(study.CAL_COMMAND)
    assert (d.dataset, d.num_samples, d.output_file, d.base_model, d.oracle_model) == (
        "math", 100, study.CAL_DIV, study.BASE, study.ORACLE)
    e = parsed(study.EVAL_DIV_COMMAND)
    assert e.output_file == study.EVAL_DIV and e.from_results == study.REFERENCES[0].path  # base only
    paths = [r.path for r in runs]
    assert len(paths) == len(set(paths))  # no two runs share a file


def test_the_replay_aims_below_the_target_only_where_a_run_drifted(study):
    """verify's committed run spent 13.3% online where its replay spent 11.7% (online_drift.json):
    its calibration passes --drift 1.137; every other committed 100-problem run stayed within half
    a point of its replay, and their policies aim at the target."""
    drift = study._drift_records()["runs"]
    before = set(_script("online_drift").RUNS)  # the runs made before the study (its own runs check it)
    drifted = {r["file"] for r in drift if r["file"] in before and r["n"] == 100
               and abs(r["online_share"] - r["replay_share"]) > 0.005}
    assert drifted == set(study.DRIFT_SOURCE.values())
    verify = next(r for r in drift if r["file"] == study.DRIFT_SOURCE["verify"])
    assert verify["ratio"] == pytest.approx(verify["online_share"] / verify["replay_share"])
    assert verify["ratio_ci"][0] <= verify["ratio"] <= verify["ratio_ci"][1]
    runs = {(r.group, r.policy): r for r in study.study_runs("top_prob") if r.calibration}
    assert "--drift 1.137 " in runs[(1, "verify")].commands()[0]
    assert "--drift" not in runs[(1, "top_prob")].commands()[0]
    assert runs[(4, "verify")].calibration == runs[(1, "verify")].calibration  # held out: group 1's file


def test_the_runs_that_missed_their_share_run_again_with_their_own_drift(study):
    """DRIFT_RERUNS is exactly the complete calibrated MATH-500 runs that realised their target
    more than a point off (top_prob at 20%: 21.2%; at (2, 50): 8.9%); each re-run keeps its first
    run's settings, writes its own calibration and file, and aims its replay at share / the
    online-over-replayed ratio online_drift.json records for its first run (1.059, 0.880)."""
    loaded = study.load()
    missed = {r for r, got in loaded.items() if r.calibration and not r.heldout and not r.drift_rerun
              and len(got) == 100 and not study._within(study.summarize(got).oracle_share, r.share)}
    again = [r for r in loaded if r.drift_rerun]
    assert {r.first for r in again} == missed and len(again) == len(missed) == 2
    records = {r["file"]: r for r in study._drift_records()["runs"]}
    for run in again:
        first = run.first
        assert run.drift_source == first.path and run.drift == round(records[first.path]["ratio"], 3) != 1.0
        assert run.path != first.path and run.calibration != first.calibration
        assert run.label == first.label + " (drift re-run)"
        cal, ev = run.commands()
        c, e = parsed(cal), parsed(ev)
        assert (c.policy, c.target_share, c.c, c.k, c.drift) == (first.policy, first.share, first.c, first.k, run.drift)
        assert e.calibration == run.calibration and e.output_file == run.path
        first_eval = parsed(first.commands()[-1])
        assert (e.c, e.k, e.cooldown, e.num_samples, e.dataset) == (
            first_eval.c, first_eval.k, first_eval.cooldown, first_eval.num_samples, first_eval.dataset)
    assert {(r.share, r.drift) for r in again} == {(0.2, 1.059), (0.1, 0.88)}


def test_the_committed_calibrations_are_what_their_commands_make(study):
    """Every calibration file of the study (queue() skips a file that exists) records the target,
    drift and source its command names now: a changed drift would otherwise leave a stale file."""
    import json

    for run in study.study_runs():
        if not run.calibration or run.heldout:
            continue
        c = parsed(run.commands()[0])
        record = json.loads((ROOT / run.calibration).read_text())
        assert record["target_share"] == c.target_share == run.share, run.label
        # top_prob's file predates --drift (its run's rows carry that file's sha256): no drift recorded is 1.0
        assert record.get("drift", 1.0) == c.drift == run.drift, run.label
        assert record.get("replay_target", record["target_share"]) == pytest.approx(run.share / c.drift)
        assert record["expected_share"] == pytest.approx(run.share / c.drift, abs=0.0015)
        assert record["transductive"] and record["source"] == f"divergence {study.EVAL_DIV}"
        assert (record["c"], record["k"], record["policy"]) == (run.c, run.k, run.policy)
        assert record["cooldown"] == (c.cooldown or study.COOLDOWN) == run.cooldown, run.label  # None: the default


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def math500_traces(study):
    """MATH-500's committed base traces as the replay reads them (both Qwen models loaded, for the
    oracle's scores)."""
    return _script("online_drift").base_traces()


def test_the_committed_drift_is_what_online_drift_computes(math500_traces):
    """online_drift.json's records for random p=0.1 and verify v2 (the one the study's verify
    target rests on), recomputed here from the committed runs' own configs, match the file."""
    import json

    drift = _script("online_drift")
    committed = {r["file"]: r for r in json.loads((ROOT / drift.DRIFT_FILE).read_text())["runs"]}
    for path in (p for p in drift.RUNS if "_random_p0.1_" in p or "_verify_share0.1_c20_k10_v2" in p):
        again, want = drift.drift(path, math500_traces), committed[path]
        assert again.pop("ratio_ci") == pytest.approx(want.pop("ratio_ci")), path
        assert again == pytest.approx(want), path


def test_a_drift_ratio_without_a_defined_ci_is_recorded_as_none_not_nan(math500_traces, tmp_path):
    """Two problems of the committed top_prob (c, k) = (2, 50) run, one it consulted on and one it
    never did: a quarter of the resamples replay no consult (0 / 0), so the record has its ratio
    but no CI (no NaN in the JSON), and the table says why."""
    import json

    drift = _script("online_drift")
    src = ROOT / "results/math500-first100/math500_0.5B_1.5B_top_prob_share0.1_c2_k50_calm500.jsonl"
    rows = {r["unique_id"]: r for r in map(json.loads, src.read_text().splitlines())}
    part = tmp_path / "two.jsonl"
    part.write_text("".join(json.dumps(rows[u]) + "\n" for u in ("test/precalculus/807.json", "test/algebra/2584.json")))
    record = drift.drift(str(part), math500_traces)
    assert record["n"] == 2 and record["ratio"] > 0
    assert record["ratio_ci"] is None
    assert "NaN" not in json.dumps(record)
    assert drift.ratio_cell(record).startswith(f"{record['ratio']:.3f} (no CI")


def test_first_change_is_the_first_consulted_token_the_oracle_would_write_differently(study, math500_traces):
    """replay.first_change on real traces: the position is inside a replayed consult, the oracle's
    teacher-forced top-1 differs from the base's token there and nowhere in an earlier consult,
    and the tokens counted before it are those earlier consults' widths; random p=0.1's committed
    record in first_change.json is what the script computes."""
    import json

    from guided_inference.policies import POLICIES
    from guided_inference.replay import first_change, replay

    fc = _script("first_change")
    label, config, online = next(c for c in fc.configs() if c[0].startswith("random (p=0.1)"))
    policy = POLICIES[config.policy].build(config)
    seen = 0
    for rec in math500_traces.values():
        done = replay(policy, config, rec)
        where, before = first_change(rec, done)
        windows = [(p, p + w) for p, w in zip(done.consults, done.widths)]
        differs = rec.oracle_top1 != rec.ids
        earlier = [(a, b) for a, b in windows if b <= (where if where is not None else rec.n)]
        assert not any(differs[a:b].any() for a, b in earlier)
        if where is None:
            assert before == sum(b - a for a, b in windows)
            continue
        seen += 1
        a, b = next((a, b) for a, b in windows if a <= where < b)
        assert differs[where] and not differs[a:where].any()
        assert before == sum(y - x for x, y in windows if y <= a) + (where - a)
    assert seen >= 50  # most answers change at 10%
    base = {r["unique_id"]: r for r in _rows(ROOT / study.REFERENCES[0].path)}
    committed = next(r for r in json.loads((ROOT / fc.CHANGE_FILE).read_text())["runs"] if r["run"] == label)
    assert fc.record(label, config, online, math500_traces, base) == committed


def _rows(path):
    from guided_inference.evaluation.results import read_rows

    return read_rows(path)


def test_groups_two_to_four_wait_for_the_best_policy(study):
    without = study.study_runs(None)
    with_best = study.study_runs("top_prob")
    added = [r for r in with_best if r not in without]
    assert sorted((r.group, r.share, r.c, r.k, r.drift_rerun) for r in added) == [
        (2, 0.05, 20, 10, False), (2, 0.2, 20, 10, False), (2, 0.2, 20, 10, True), (3, 0.1, 2, 50, False),
        (3, 0.1, 2, 50, True), (3, 0.1, 100, 1, False), (4, 0.1, 20, 10, False), (4, 0.1, 100, 1, False),
        (4, 0.1, 100, 1, False)]
    # every run the best adds is the best's, but held-out random at (100, 1), which its held-out row needs
    assert [r.policy for r in added if r.policy != "top_prob"] == ["random"]
    # the held-out (100, 1) rows were added after group 3: their labels say so, and each replays the
    # MATH-500 calibration of its group-3 row on the held-out problems
    post = [r for r in added if r.post_hoc]
    assert sorted((r.group, r.c, r.k, r.policy) for r in post) == [(4, 100, 1, "random"), (4, 100, 1, "top_prob")]
    for p in post:
        ours = next(r for r in without + with_best if (r.group, r.c, r.k, r.policy) == (3, 100, 1, p.policy))
        assert p.label.endswith("(post hoc)") and p.calibration == ours.calibration
        assert p.path.startswith(study.HELDOUT_DIR) and p.path != ours.path


def test_a_run_file_in_place_fills_its_rows(study, tables, tmp_path):
    """The committed issue-9 entropy file (calibrated on 30 problems: 12.1% for a 10% target)
    stands in the entropy row: the table flags the share miss and gives the paired difference
    against random p=0.1 that docs/results.md's policies table gives (+2.0 [-5.0, +9.0])."""
    entropy = next(r for r in study.study_runs() if r.policy == "entropy" and r.group == 1)
    for src, dst in (("results/math500-first100/math500_0.5B_1.5B_entropy_share0.1_c20_k10.jsonl", entropy.path),
                     *((r.path, r.path) for r in (study.RANDOM10, *study.REFERENCES))):
        (tmp_path / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / src, tmp_path / dst)
    runs = study.load(tmp_path)
    assert len(runs[entropy]) == 100
    row = next(line for line in tables.share10(runs).splitlines() if line.startswith("| entropy"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:] == ["100", "**11.0%**", "6.3%-18.6%", "10.0%", "12.1%", "**no**", "+2.0 [-5.0, +9.0] (n=100)"]
    figure = parsed(study.figure_command(runs))  # the findings' figure reads every MATH-500 run with rows
    assert entropy.path in figure.files and study.RANDOM10.path in figure.files and figure.plot == study.FIGURE
    assert not any(r.path in figure.files for r in runs if not runs[r])
    top_prob = next(line for line in tables.share10(runs).splitlines() if line.startswith("| top_prob"))
    assert "not run yet" in top_prob
    from guided_inference.reporting.costs import CostSettings

    frontier = tables.frontier(runs, [("compute", CostSettings("compute"))])
    assert sum(line.startswith("| compute | entropy") for line in frontier.splitlines()) == 1
    # in words: under compute all three cost more than the oracle alone (speculative 2.02, random 1.11
    # and entropy 1.05 in docs/results.md)
    words = tables.summary(runs, [("compute", CostSettings("compute"))])
    assert words.startswith("- compute: At least the oracle's cost: speculative (+0.0 [-8.0, +8.0] points at cost "
                            "2.02); random (p=0.1), 10.0% (") and words.count("\n") == 1
    assert "; entropy (calibrated), 10.0% (-33.0 [" in words and "at cost 1.05)" in words


def test_a_budget_row_is_paired_with_random_at_its_own_share(study, tables, tmp_path):
    """Group 2: the best policy's 5% row against random's 5% row (not random p=0.1). Two committed
    files stand in for them (entropy as the best at 5%, random p=0.1 as random at 5%), so the
    paired figure is the one docs/results.md gives for entropy - random p=0.1."""
    runs = study.study_runs("entropy")
    best5 = next(r for r in runs if r.group == 2 and r.policy == "entropy" and r.share == 0.05)
    random5 = next(r for r in runs if r.group == 2 and r.policy == "random" and r.share == 0.05)
    for src, dst in (("results/math500-first100/math500_0.5B_1.5B_entropy_share0.1_c20_k10.jsonl", best5.path),
                     (study.RANDOM10.path, random5.path)):
        (tmp_path / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / src, tmp_path / dst)
    loaded = study.load(tmp_path, best="entropy")
    lines = tables.budget(loaded).splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:]] == [
        "random (calibrated), 5.0%", "random (p=0.1), 10.0%", "random (calibrated), 20.0%",
        "entropy (calibrated), 5.0%", "entropy (calibrated), 10.0%", "entropy (calibrated), 20.0%",
        "entropy (calibrated), 20.0% (drift re-run)"]  # beside its first run, not in place of it
    row = next(line for line in lines if line.startswith("| entropy (calibrated), 5.0%"))
    assert row.rstrip(" |").endswith("+2.0 [-5.0, +9.0] (n=100)")
    # the target is the run's own share in the study (5%), whatever the stand-in aimed at: flagged
    assert "| 5.0% | 12.1% | **no** |" in row


def test_the_queue_runs_calibrations_first_then_every_missing_run_once(study, tmp_path):
    """``--queue | bash``: with the calibration traces incomplete only their command; once they are
    complete, each missing calibration (serially), then every incomplete run through xargs -P 2.
    Executed here by bash with `guided` a shell function that logs its arguments."""
    import subprocess

    runs = {r: [] for r in study.study_runs()}  # nothing run yet
    assert study.queue(runs, 30) == f"set -e\n{study.EVAL_DIV_COMMAND}\n"
    script = study.queue(runs, 100, root=tmp_path)  # no calibration made yet under tmp_path
    log = tmp_path / "log"
    shim = f'guided() {{ echo "$GUIDED_THREADS $*" >> {log}; }}; export -f guided\n'
    env = {k: v for k, v in os.environ.items() if k != "GUIDED_THREADS"}  # each run sets its own
    proc = subprocess.run(["bash", "-c", shim + script], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    called = log.read_text().splitlines()
    evals = [c for c in called if c.startswith("1 eval ")]
    cals = [c for c in called if c.startswith(" calibrate ")]
    expected = [r for r in runs if r.group != 0]  # none has rows here, random p=0.1 included
    assert sorted(e.split(" --output_file ")[1] for e in evals) == sorted(r.path for r in expected)
    made = {r.calibration for r in expected if r.calibration}
    assert sorted(c.split(" --output_file ")[1] for c in cals) == sorted(made)
    # a calibration already committed is not made again
    committed = study.queue(runs, 100, root=study.ROOT)
    assert all(f"--output_file {m}\n" not in committed for m in made if (study.ROOT / m).exists())
    assert called.index(cals[-1]) < min(called.index(e) for e in evals)  # every calibration before any run


def test_the_best_policy_rule_skips_runs_that_missed_their_share(study, tmp_path):
    """best_of_group1: None while a group-1 takeover run is incomplete; then the most problems
    solved among runs within 1 point of their target. Committed files stand in: the verify file
    (36% solved, but 13.3% written for 10%) as top_prob, entropy and boundary (12.1%, 12.8%) as
    themselves and others, random p=0.1 (9.2%, within) as rolling_entropy only."""
    R = "results/math500-first100/math500_0.5B_1.5B_"
    source = {"top_prob": "verify_share0.1_c20_k10_v2", "rolling_entropy": "random_p0.1_c20_k10",
              "entropy": "entropy_share0.1_c20_k10", "boundary": "boundary_share0.1_c20_k10",
              "prefix": "entropy_share0.1_c20_k10", "repetition": "boundary_share0.1_c20_k10"}
    runs = study.study_runs()
    for r in (study.RANDOM10,):
        (tmp_path / r.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / r.path, tmp_path / r.path)
    group = {r.policy: r for r in runs if r.group == 1 and r.policy in source}
    for policy, name in list(source.items())[:-1]:
        shutil.copy(ROOT / f"{R}{name}.jsonl", tmp_path / group[policy].path)
    assert study.best_of_group1(study.load(tmp_path)) is None  # repetition not run yet
    shutil.copy(ROOT / f"{R}{source['repetition']}.jsonl", tmp_path / group["repetition"].path)
    assert study.best_of_group1(study.load(tmp_path)) == "rolling_entropy"


def test_held_out_runs_are_paired_with_the_held_out_base_and_oracle(study, tables, tmp_path):
    """study-heldout-ends: the committed held-out oracle file standing in for held-out speculative
    is +0.0 [+0.0, +0.0] against the oracle and the oracle's own margin over the held-out base
    (36.7% against 15.0%) against the base; a run without rows has no row."""
    runs = study.study_runs()
    ends = {r.policy: r for r in runs if r.group == 4 and r.policy in ("never", "always", "speculative")}
    for src, dst in ((ends["never"].path, ends["never"].path), (ends["always"].path, ends["always"].path),
                     (ends["always"].path, ends["speculative"].path)):
        (tmp_path / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / src, tmp_path / dst)
    lines = tables.heldout_ends(study.load(tmp_path)).splitlines()[2:]
    assert len(lines) == 1  # only speculative has rows besides the two ends
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    assert cells[:2] == ["speculative", "60"]
    assert cells[3] == "+0.0 [+0.0, +0.0] (n=60)"
    assert cells[2].startswith("+21.7 [") and cells[2].endswith("(n=60)")


def test_a_held_out_row_is_paired_with_held_out_random_at_its_own_c_and_k(study, tables, tmp_path):
    """The post-hoc held-out top_prob at (100, 1) is compared with held-out random at (100, 1),
    not with random p=0.1 at (20, 10). The committed held-out random p=0.1 file stands in for
    random at (100, 1) (and p=0.1 itself is absent), so the cell is the +5.0 [-5.0, +15.0] that
    `guided compare` gives for those two files."""
    runs = study.study_runs()
    top, rand = (next(r for r in runs if r.group == 4 and r.policy == p and (r.c, r.k) == (100, 1))
                 for p in ("top_prob", "random"))
    p01 = next(r for r in runs if r.group == 4 and r.policy == "random" and (r.c, r.k) == (20, 10))
    for src, dst in ((top.path, top.path), (p01.path, rand.path)):
        (tmp_path / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / src, tmp_path / dst)
    lines = tables.heldout(study.load(tmp_path)).splitlines()
    row = next(line for line in lines if line.startswith(f"| {top.label} |"))
    assert row.rstrip(" |").endswith("+5.0 [-5.0, +15.0] (n=60)")
    assert next(line for line in lines if line.startswith(f"| {rand.label} |")).rstrip(" |").endswith("| -")
