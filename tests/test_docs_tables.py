"""The results tables in README.md, docs/results.md and docs/findings.md are what scripts/docs_tables.py writes
from the committed results files: a hand edit, or a results file changed without its docs, fails.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "docs_tables.py"


@pytest.fixture(scope="module")
def docs_tables():
    spec = importlib.util.spec_from_file_location("docs_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_tables"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs(docs_tables):
    from guided_inference.models import resolve

    # The api cost of the old takeover files counts their prompts with the base's vocabulary
    # (reporting/derived_costs.py): without the model file those cells would read "?".
    resolve("qwen2.5-coder-0.5b")
    return docs_tables.load(ROOT)


EXPECTED_BLOCKS = {"README.md": ["readme-first100"],
                   "docs/results.md": ["first100", "guided-usage", "paired", "by-level", "reseeded", "policies",
                                       "costs", "speculative"],
                   "docs/findings.md": ["deployments", "study-summary", "study-calibration", "study-drift",
                                        "study-first-change", "study-share10", "study-budget", "study-ck",
                                        "study-heldout", "study-heldout-ends", "study-figure", "study-frontier"]}


@pytest.mark.parametrize("doc", sorted(EXPECTED_BLOCKS))
def test_committed_docs_equal_what_the_script_writes(docs_tables, runs, doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    # The blocks are there (a deleted marker would otherwise make this test pass vacuously).
    assert [m.group(1) for m in docs_tables.MARKER.finditer(text)] == EXPECTED_BLOCKS[doc]
    new = docs_tables.render(text, runs)
    if new != text:
        stale = [a.group(1) for a, b in zip(docs_tables.MARKER.finditer(text), docs_tables.MARKER.finditer(new))
                 if a.group(0) != b.group(0)]
        pytest.fail(f"{doc}: tables {stale} differ from the results files; run python scripts/docs_tables.py")


def test_a_hand_edited_number_is_caught_and_restored(docs_tables, runs):
    text = (ROOT / "docs/results.md").read_text(encoding="utf-8")
    edited = text.replace("| **20.0%** | 13.3%-28.9% |", "| **21.0%** | 13.3%-28.9% |", 1)
    assert edited != text
    assert docs_tables.render(edited, runs) == text


def test_a_changed_results_file_changes_the_tables(docs_tables, runs):
    # One more problem solved in the guided run: accuracy, its CI and the paired rows all move.
    changed = {k: [dict(r) for r in v] if k != docs_tables.STUDY else v for k, v in runs.items()}
    wrong = next(r for r in changed["random"] if not r["correct"])
    wrong["correct"] = True
    text = (ROOT / "docs/results.md").read_text(encoding="utf-8")
    new = docs_tables.render(text, changed)
    assert "| **21.0%** |" in new and "| **20.0%** |" not in new
    assert new.split("<!-- table:paired -->")[1] != text.split("<!-- table:paired -->")[1]


def test_text_outside_the_markers_is_untouched(docs_tables, runs):
    text = "# Title\n\nbefore\n<!-- table:readme-first100 -->\nstale\n<!-- /table -->\nafter | 1 |\n"
    out = docs_tables.render(text, runs)
    assert out.startswith("# Title\n\nbefore\n<!-- table:readme-first100 -->\n| run | accuracy |")
    assert out.endswith("| oracle only | 44.0% | 34.7%-53.8% | 100% | 1.00* | 1.00* |\n<!-- /table -->\nafter | 1 |\n")
    with pytest.raises(KeyError, match="unknown table 'nope'"):
        docs_tables.render("<!-- table:nope -->\n<!-- /table -->", runs)


def test_script_check_mode_passes_on_the_committed_tree():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == ""


def test_the_readme_shows_the_study_best_in_place_of_random_once_it_is_set(docs_tables, runs):
    """With BEST set (here: entropy, whose committed issue-9 file stands in for its study run), the
    README's first table has its 10% row where random c=20 k=10 was, with its own accuracy and costs,
    and no random row; main.sh's flags name its committed calibration, which the CLI accepts."""
    import shlex

    from guided_inference.cli import build_parser
    from guided_inference.evaluation.results import read_rows

    study = docs_tables.frontier_study
    entropy = next(r for r in runs[docs_tables.STUDY] if r.group == 1 and r.policy == "entropy")
    stand_in = read_rows(ROOT / "results/math500-first100/math500_0.5B_1.5B_entropy_share0.1_c20_k10.jsonl")
    given = {**runs, docs_tables.STUDY: {**runs[docs_tables.STUDY], entropy: stand_in}}
    lines = docs_tables.readme_first100(given, best="entropy").splitlines()
    labels = [line.split("|")[1].strip() for line in lines[2:]]
    assert labels[0] == "base only" and labels[-1] == "oracle only"
    assert labels[1] == "entropy at 10% oracle share (the frontier study's best consult moment)"
    assert not any(label.startswith("random consults") for label in labels)
    assert [c.strip() for c in lines[3].split("|")[2:5]] == ["11.0%", "6.3%-18.6%", "12.1%"]
    assert "random consults, c=20 k=10" in docs_tables.readme_first100(runs, best=None)
    flags = study.main_flags("entropy")
    args = build_parser().parse_args(["eval", *shlex.split(flags)])
    assert (args.policy, args.c, args.k) == ("entropy", 20, 10)
    assert args.calibration == entropy.calibration and (ROOT / args.calibration).exists()
    assert study.main_flags(None) == "--policy random --c 20 --k 10"
