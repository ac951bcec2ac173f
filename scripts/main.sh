#!/usr/bin/env bash
# Set up, then the main job: a guided MATH-500 evaluation on the embedded Qwen pair
# (0.5B base, 1.5B oracle, c=20, k=10), printing the results table. The policy is the frontier
# study's best consult moment at 10% oracle share with its committed calibration once the study
# has named it (scripts/frontier_study.py --main_flags), random until then.
# More problems: NUM_SAMPLES=100 bash scripts/main.sh
set -euo pipefail
cd "$(dirname "$0")/.."
GUIDED_EXTRAS="${GUIDED_EXTRAS:-server}" GUIDED_MODELS="qwen2.5-coder-0.5b qwen2.5-coder-1.5b" \
  GUIDED_SKIP_CHROMIUM=1 bash scripts/setup.sh
. .venv/bin/activate
mkdir -p out
FLAGS="$(python scripts/frontier_study.py --main_flags)"
POLICY="$(set -- $FLAGS; echo "$2")"
# shellcheck disable=SC2086  # FLAGS is a list of flags
guided eval --base_model 0.5B --oracle_model 1.5B $FLAGS \
  --dataset math500 --num_samples "${NUM_SAMPLES:-10}" --output_file "out/main_math500_${POLICY}_c20_k10.jsonl"
# guided eval prints the results table once; `guided report FILE` adds breakdowns by level/subject.
