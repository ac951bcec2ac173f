#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite. Same command locally and in CI.
# A native crash (SIGSEGV/SIGILL in llama.cpp) kills pytest without a summary: pytest's
# faulthandler prints the Python stack to stderr, and this script then names the test
# that died, the signal, the llama.cpp build and the fix, in one line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export GUIDED_PYTEST_LAST="$(mktemp)"
trap 'rm -f "$GUIDED_PYTEST_LAST"' EXIT
set +e
python -X faulthandler -m pytest -q -p faulthandler "$@"
rc=$?
set -e
if [ "$rc" -ge 128 ]; then
  sig="SIG$(kill -l $((rc - 128)) 2>/dev/null || echo $((rc - 128)))"
  build="$(python -c 'from guided_inference import buildinfo; print(buildinfo.system_info().strip())' 2>/dev/null || echo unknown)"
  echo "error: pytest died with $sig during $(cat "$GUIDED_PYTEST_LAST" 2>/dev/null || echo 'an unknown test') (Python stack above, from faulthandler); llama.cpp build: $build; fix: rm -rf .venv && bash scripts/setup.sh (portable build, scripts/ggml_flags.sh)" >&2
fi
exit "$rc"
