"""The frontier study (issue 19): its runs, the commands that make them, the rule that picks the
best takeover policy; its tables are ``scripts/study_tables.py`` (written by ``scripts/docs_tables.py``).

    python scripts/frontier_study.py             # every run: its file, problems done, its commands
    python scripts/frontier_study.py --missing   # the commands of the runs not complete yet
    python scripts/frontier_study.py --queue | bash   # run them: calibrations, then two runs at a time

Four groups, greedy, 1,024 tokens, ``--step_size 10``:
1. at 10% written oracle share (calibrated, see below): every takeover policy the offline replay
   kept, ``verify``, and ``random p=0.1`` (the committed row);
2. ``random`` and the best takeover policy of group 1 (``BEST``) at 5% and 20%;
3. the same two at 10% with (c, k) = (100, 1) and (2, 50), beside the k = 10 rows;
4. held out: base, oracle, random, BEST, verify and speculative on the first ``HELDOUT_N``
   problems of ``results/heldout/math_heldout_ids.txt`` (MATH test minus MATH-500, none used
   for calibration), with the calibration files of group 1: the held-out share tests the transfer;
   and, added post hoc after group 3 (labelled so), BEST at (c, k) = (100, 1), group 3's one
   paired CI above 0, and random at (100, 1) beside it, each with its MATH-500 calibration file.

Calibration (``guided calibrate --transductive``): each value is set on the evaluation set's own
base-only traces (``EVAL_DIV``, made by ``EVAL_DIV_COMMAND``: the first 100 MATH-500 problems,
teacher-forced through base and oracle; their text, no label). The first calibrations, on 100
other MATH problems (``CAL_DIV``, the default split, made by ``CAL_COMMAND``), spent 11.4-12.2% on
MATH-500 for four of the seven 10% values (``calibrations``); a miss of that size is consistent
with the sampling spread of two 100-problem sets (``scripts/online_drift.py`` records each
share's bootstrap SD) and with MATH-500's shorter base answers. The replay cannot see the text a
consult changes: where a committed online run of the same policy spent more than half a point
more or less than its replay (``DRIFT_SOURCE``, measured by ``scripts/online_drift.py``), the
calibration passes that ratio as ``--drift`` and the replay aims at share / drift. The runs of
groups 2 and 3 that missed their target by more than a point are run again (``DRIFT_RERUNS``,
labelled "drift re-run") with the ratio their own first run measured; both rows are kept.

``BEST`` stays None until group 1 is complete; then it is set by hand to what ``best_of_group1``
names (the rule, fixed before the runs: the takeover policy with the most problems solved at 10%,
among complete runs within 1 point of their target; ties go to the larger paired difference
against random p=0.1), and the commands of groups 2-4 that need it appear.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from guided_inference.config import GenerationConfig  # noqa: E402
from guided_inference.evaluation.results import read_rows  # noqa: E402
from guided_inference.reporting.report import compare, is_graded, latest, pct, summarize  # noqa: E402

BASE, ORACLE = "0.5B", "1.5B"
EVAL_DIR, HELDOUT_DIR, CAL_DIR = "results/math500-first100", "results/heldout", "results/calibration/study"
# The calibration traces: the base alone on the first 100 problems of MATH test minus MATH-500
# (hash order), then teacher-forced once through base and oracle; every calibration replays
# them (--from_divergence) instead of teacher-forcing again (~20 s per trace and model here).
CAL_DIV = "results/calibration/divergence_0.5B_1.5B_math_first100.jsonl"
CAL_COMMAND = (f"GUIDED_THREADS=1 guided divergence --base_model {BASE} --oracle_model {ORACLE} --dataset math "
               f"--num_samples 100 --output_file {CAL_DIV} --findings none")
EVAL_DIV = "results/math500-first100/divergence_0.5B_1.5B.jsonl"  # MATH-500's base traces, teacher-forced
EVAL_DIV_COMMAND = (f"guided divergence --from_results {EVAL_DIR}/math500_{BASE}_{ORACLE}_never_c0_k10.jsonl "
                    f"--output_file {EVAL_DIV}")  # as docs/findings.md ("Divergence labels") gives it
DRIFT_FILE = "results/calibration/study/online_drift.json"  # scripts/online_drift.py
# The committed run whose drift a policy's calibration corrects for: those of online_drift.RUNS
# (100 problems) whose online share is more than half a point from their replay (the test checks it).
DRIFT_SOURCE = {"verify": f"{EVAL_DIR}/math500_{BASE}_{ORACLE}_verify_share0.1_c20_k10_v2.jsonl"}
# Decided after groups 2 and 3 (their first rows stay in the tables): the calibrated MATH-500 runs
# of BEST that realised their target share more than a point off, run again with the online /
# replayed share their first run measured as --drift (the test checks this is exactly the misses).
DRIFT_RERUNS = ((2, 0.2, 20, 10), (3, 0.1, 2, 50))  # (group, share, c, k)
HELDOUT_IDS, HELDOUT_N = "results/heldout/math_heldout_ids.txt", 60
TAKEOVER = ("top_prob", "rolling_entropy", "entropy", "boundary", "prefix", "repetition")
COOLDOWN = GenerationConfig.cooldown  # the engine's default (10 base tokens)
BEST: str | None = "top_prob"  # group 1's best takeover policy: what best_of_group1 names (set by hand)


@dataclass(frozen=True)
class StudyRun:
    group: int
    policy: str
    share: float | None  # the written share aimed at (None: base, oracle, speculative)
    calibrated: bool = True  # False: fixed flags (random p=0.1, the committed row)
    c: int = 20
    k: int = 10
    flags: str = ""
    file: str | None = None  # a committed file re-used as it is
    post_hoc: bool = False  # added after seeing the results it follows up (its label says so)
    drift_rerun: bool = False  # the same run again, its replay corrected by the drift its first run measured

    @property
    def heldout(self) -> bool:
        return self.group == 4

    @property
    def label(self) -> str:
        if self.share is None:
            return {"never": "base only", "always": "oracle only"}.get(self.policy, self.policy)
        what = f"{self.policy} ({self.fixed.replace('_', '=') if self.fixed else 'calibrated'})"
        return (f"{what}, {pct(self.share)}" + ("" if (self.c, self.k) == (20, 10) else f", c={self.c} k={self.k}")
                + (" (post hoc)" if self.post_hoc else "") + (" (drift re-run)" if self.drift_rerun else ""))

    @property
    def first(self) -> "StudyRun":
        """The run a drift re-run repeats (itself for any other run)."""
        return replace(self, drift_rerun=False)

    @property
    def drift_source(self) -> str | None:
        """The committed run whose online / replayed share this run's calibration corrects for: a
        drift re-run's own first run, else the policy's ``DRIFT_SOURCE`` (None: no correction)."""
        return self.first.path if self.drift_rerun else DRIFT_SOURCE.get(self.policy)

    @property
    def drift(self) -> float:
        """``--drift``: the online / replayed share of ``drift_source`` (``drift_ratio``), 1.0 without one."""
        return 1.0 if self.drift_source is None else drift_ratio(self.drift_source)

    @property
    def fixed(self) -> str:
        """``--p 0.1`` -> ``p_0.1`` ('' when calibrated): the file name's and label's setting."""
        return "_".join(x.lstrip("-") for x in self.flags.split())

    @property
    def cooldown(self) -> int:
        """The engine's cooldown (10 base tokens after a consult before a signal policy may fire
        again) caps a signal policy's written share at k / (k + 10): 9.1% at k = 1, under the 10%
        target (top_prob's replay reaches 8.5%). Below k = 10 the study scales it with k, so the
        (c, k) rows vary the consult's length, not that cap; random ignores it."""
        return min(COOLDOWN, self.k)

    @property
    def calibration(self) -> str | None:
        if not self.calibrated or self.share is None:
            return None
        return f"{CAL_DIR}/{self.policy}_c{self.c}_k{self.k}_share{self.share:g}_{BASE}_math500{self._again}.json"

    @property
    def _again(self) -> str:
        """The file-name suffix of a drift re-run (its calibration and its results beside the first run's)."""
        return "_drift" if self.drift_rerun else ""

    @property
    def path(self) -> str:
        if self.file:
            return self.file
        where, data = (HELDOUT_DIR, "math-heldout") if self.heldout else (EVAL_DIR, "math500")
        if self.share is None:
            tail = {"never": "never_c0_k10", "always": "always_c103_k10", "speculative": "speculative_s10"}[self.policy]
        elif self.calibrated:
            tail = f"{self.policy}_share{self.share:g}_c{self.c}_k{self.k}_calm500{self._again}"
        else:
            tail = f"{self.policy}_{self.fixed.replace('_', '')}_c{self.c}_k{self.k}"
        return f"{where}/{data}_{BASE}_{ORACLE}_{tail}.jsonl"

    def commands(self) -> list[str]:
        out = []
        cal = self.calibration
        cool = f" --cooldown {self.cooldown}" if self.cooldown != COOLDOWN else ""
        if cal:
            oracle = f" --oracle_model {ORACLE}" if self.policy == "verify" else ""
            ratio = self.drift  # reads DRIFT_FILE: once
            drift = f" --drift {ratio:g}" if ratio != 1.0 else ""
            out.append(f"guided calibrate --policy {self.policy} --target_share {self.share:g}{drift} "
                       f"--c {self.c} --k {self.k}{cool} --step_size 10 --base_model {BASE}{oracle} --transductive "
                       f"--from_divergence {EVAL_DIV} --output_file {cal}")
        data = (f"--dataset math --ids {HELDOUT_IDS} --num_samples {HELDOUT_N}" if self.heldout
                else "--dataset math500 --num_samples 100")
        how = {"never": "--policy never --c 0", "always": "--policy always",
               "speculative": "--policy speculative"}.get(self.policy) if self.share is None else \
            f"--policy {self.policy} --c {self.c} --k {self.k}{cool} " + (f"--calibration {cal}" if cal else self.flags)
        out.append(f"GUIDED_THREADS=1 guided eval --base_model {BASE} --oracle_model {ORACLE} {data} "
                   f"--max_new_tokens 1024 --step_size 10 {how} --output_file {self.path}")
        return out


def drift_ratio(source: str, root: Path = ROOT) -> float:
    """Online over replayed share of the committed run ``source`` in ``DRIFT_FILE``, to 3 decimals."""
    records = _drift_records(root)["runs"]
    return round(next(r["ratio"] for r in records if r["file"] == source), 3)


RANDOM10 = StudyRun(1, "random", 0.1, calibrated=False, flags="--p 0.1",
                    file=f"{EVAL_DIR}/math500_{BASE}_{ORACLE}_random_p0.1_c20_k10.jsonl")
# Group 0: the committed MATH-500 references (the straight line's ends, and issue 18's lossless point).
REFERENCES = tuple(StudyRun(0, p, None, file=f"{EVAL_DIR}/math500_{BASE}_{ORACLE}_{t}.jsonl") for p, t in
                   (("never", "never_c0_k10"), ("always", "always_c103_k10"), ("speculative", "speculative_s10")))


def study_runs(best: str | None = BEST) -> list[StudyRun]:
    """Every run of the study; those that need ``best`` only once it is known."""
    runs = [*REFERENCES, RANDOM10, *(StudyRun(1, p, 0.1) for p in TAKEOVER), StudyRun(1, "verify", 0.1)]
    for policy in ("random", best):
        if policy is None:
            continue
        runs += [StudyRun(2, policy, s) for s in (0.05, 0.2)]
        runs += [StudyRun(3, policy, 0.1, c=c, k=k) for c, k in ((100, 1), (2, 50))]
    if best:
        runs += [StudyRun(g, best, s, c=c, k=k, drift_rerun=True) for g, s, c, k in DRIFT_RERUNS]
    runs += [StudyRun(4, "never", None), StudyRun(4, "always", None), StudyRun(4, "random", 0.1, calibrated=False,
                                                                               flags="--p 0.1")]
    runs += [StudyRun(4, p, 0.1) for p in (best, "verify") if p] + [StudyRun(4, "speculative", None)]
    if best:  # post hoc: group 3's one CI above 0 (best at (100, 1)), checked on the held-out problems,
        # beside random at the same (c, k) (what it is compared with there)
        runs += [StudyRun(4, p, 0.1, c=100, k=1, post_hoc=True) for p in (best, "random")]
    return runs


def load(root: Path = ROOT, best: str | None = BEST) -> dict[StudyRun, list[dict]]:
    """Each study run's latest graded rows ([] where the file does not exist yet)."""
    out = {}
    for run in study_runs(best):
        path = root / run.path
        out[run] = [r for r in latest(read_rows(path)) if is_graded(r)] if path.exists() else []
    return out


def _within(share: float, target: float) -> bool:
    """Realised share within 1 point of the target, on the tenths of a point the tables print
    (9.0% for 10% is within)."""
    return abs(round(1000 * (share - target))) <= 10


def best_of_group1(runs: dict[StudyRun, list[dict]]) -> str | None:
    """The rule that picks ``BEST`` (module docstring); None until every group-1 takeover run has
    all 100 problems."""
    group = [r for r in runs if r.group == 1 and r.policy in TAKEOVER]
    if not group or any(len(runs[r]) < 100 for r in group):
        return None
    ok = []
    for r in group:
        s = summarize(runs[r])
        if _within(s.oracle_share, r.share):
            ok.append((s.correct, compare(runs[RANDOM10], runs[r], n_boot=1000, seed=0).diff, r.policy))
    return max(ok)[2] if ok else None


def default_split_calibration(run: StudyRun) -> str:
    """The first calibration of ``run``, on the default split (``CAL_DIV``), kept for comparison."""
    return f"{CAL_DIR}/{run.policy}_c{run.c}_k{run.k}_share{run.share:g}_{BASE}.json"


def _drift_records(root: Path = ROOT) -> dict:
    import json

    return json.loads((root / DRIFT_FILE).read_text())


FIGURE = "docs/figures/frontier_study.png"
RATES = "results/rates/rates_epyc_2threads.json"


def figure_command(runs: dict[StudyRun, list[dict]]) -> str:
    """``guided report --plot`` over base, oracle, speculative and every MATH-500 study run that has
    rows: accuracy against normalized cost, one panel per cost model (the findings' figure)."""
    files = [r.path for r, got in runs.items() if got and not r.heldout]
    return (f"guided report --cost compute,cpu,gpu,api --rates {RATES} --by none --plot {FIGURE} "
            + " ".join(files))


def main_flags(best: str | None = BEST) -> str:
    """``scripts/main.sh``'s policy flags: the study's best consult moment at 10% with its committed
    calibration once ``BEST`` is set, random c=20 k=10 until then."""
    if best is None:
        return "--policy random --c 20 --k 10"
    return f"--policy {best} --c 20 --k 10 --calibration {StudyRun(1, best, 0.1).calibration}"


def queue(runs: dict[StudyRun, list[dict]], have: int, root: Path = ROOT) -> str:
    """A bash script that finishes the study: the evaluation set's teacher-forced traces if
    incomplete (``have`` of 100 in ``EVAL_DIV``; then stop: the calibrations read them), else every
    missing calibration one after another (seconds each), then the incomplete runs two at a time
    (``GUIDED_THREADS=1`` each, each resumable)."""
    if have < 100:
        return f"set -e\n{EVAL_DIV_COMMAND}\n"
    cals, evals = [], []
    for run, got in runs.items():
        if run.group == 0 or len(got) >= (HELDOUT_N if run.heldout else 100):
            continue
        *cal, ev = run.commands()
        cals += [c for c in cal if not (root / run.calibration).exists() and c not in cals]
        evals.append(ev)
    lines = ["set -e", *cals]
    if evals:
        lines.append("printf '%s\\n' " + " ".join(shlex.quote(e) for e in evals) + " | xargs -P 2 -d '\\n' -I{} bash -c {}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--missing", action="store_true", help="only the runs not complete yet")
    ap.add_argument("--queue", action="store_true",
                    help="print a bash script that runs what is missing (python scripts/frontier_study.py --queue | bash)")
    ap.add_argument("--main_flags", action="store_true", help="print scripts/main.sh's policy flags and stop")
    args = ap.parse_args(argv)
    if args.main_flags:
        print(main_flags())
        return 0
    runs, printed = load(), set()
    have = len(read_rows(ROOT / EVAL_DIV)) if (ROOT / EVAL_DIV).exists() else 0
    if args.queue:
        print(queue(runs, have), end="")
        return 0
    if not (args.missing and have >= 100):
        print(f"# calibration traces: {have} of 100 in {EVAL_DIV}\n{EVAL_DIV_COMMAND}")
    for run, got in runs.items():
        if run.group == 0:  # the committed references (docs/results.md has their commands)
            continue
        want = HELDOUT_N if run.heldout else 100
        if args.missing and len(got) >= want:
            continue
        print(f"# group {run.group}: {run.label}: {len(got)} of {want} in {run.path}")
        for cmd in run.commands():
            print(cmd if cmd not in printed else f"# (made above) {cmd.split(' --output_file ')[-1]}")
            printed.add(cmd)
    print(f"# the figure, from the runs so far\n{figure_command(runs)}")
    if BEST is None:
        pick = best_of_group1(runs)
        print("# BEST is not set: groups 2-4 list only their random, base, oracle, verify and speculative runs"
              + (f"; group 1 is complete and the rule picks {pick!r}" if pick else "; group 1 is not complete"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
