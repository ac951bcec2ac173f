"""Write the held-out problem ids of the frontier study (issue 19): MATH test minus MATH-500.

    python scripts/heldout_ids.py            # writes results/heldout/math_heldout_ids.txt
    python scripts/heldout_ids.py --check    # exit 1 if the committed file differs

The held-out split (``tasks.selection.held_out_split``: MATH test minus MATH-500, in
sha256(unique_id) order, so every prefix mixes subjects and levels) is shared with calibration,
which takes its first ``CAL_NUM_SAMPLES`` (100) problems. The confirmation runs take the next
``COUNT`` ids, so no problem they are scored on was used to choose a threshold:

    guided eval --dataset math --ids results/heldout/math_heldout_ids.txt --num_samples 60 ...
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from guided_inference.evaluation.calibrate import CAL_NUM_SAMPLES  # noqa: E402
from guided_inference.tasks import get_task  # noqa: E402
from guided_inference.tasks.selection import held_out_split  # noqa: E402

OUT = ROOT / "results" / "heldout" / "math_heldout_ids.txt"
COUNT = 100


def text() -> str:
    split = held_out_split(get_task("math"))
    ids = [p.unique_id for p in split[CAL_NUM_SAMPLES:CAL_NUM_SAMPLES + COUNT]]
    header = [f"# {COUNT} held-out MATH test problems for the frontier study's confirmation runs (issue 19).",
              "# MATH test minus MATH-500, in sha256(unique_id) order (tasks.selection.held_out_split),",
              f"# positions {CAL_NUM_SAMPLES}-{CAL_NUM_SAMPLES + COUNT - 1}: after the {CAL_NUM_SAMPLES} problems guided "
              "calibrate uses by default.",
              f"# Made by: python scripts/heldout_ids.py (split of {len(split)} problems)."]
    return "\n".join(header + ids) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    new = text()
    if args.check:
        same = OUT.exists() and OUT.read_text(encoding="utf-8") == new
        print("same" if same else f"differs: {OUT}")
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(new, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
