#!/usr/bin/env bash
# Install llama-cpp-python 0.3.36 built for the instruction sets in scripts/ggml_flags.sh,
# into the active Python. pip caches wheels by version, not by build flags, so a native
# wheel left by an earlier set-up would be reused silently: we build the wheel ourselves
# into a cache folder named by the flags' hash, install exactly that file, and check what
# the installed library reports (llama_print_system_info) against the variant.
#
#     scripts/build_llama_cpp_python.sh     # no-op when the installed build is right
#
# Environment: GUIDED_CPU_BUILD (portable | avx512), GUIDED_CACHE_DIR, PYTHON,
# CMAKE_BUILD_PARALLEL_LEVEL (default 2), SDIST (an already downloaded sdist).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ggml_flags.sh
VERSION=0.3.36
PY="${PYTHON:-python}"
CACHE="${GUIDED_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/guided-inference}"
WHEELS="$CACHE/wheels/llama-cpp-python-$VERSION-$GGML_BUILD_TAG"

# The check runs in a subprocess of its own: importing a wrong build may itself crash.
if "$PY" scripts/check_llama_build.py --quiet 2>/dev/null; then
  exit 0
fi
if ! ls "$WHEELS"/llama_cpp_python-$VERSION-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $VERSION ($GGML_BUILD_TAG; about 10 min on 2 cores)" >&2
  mkdir -p "$CACHE/wheels"
  TMP="$(mktemp -d "$CACHE/wheels/.build-XXXXXX")"
  trap 'rm -rf "$TMP"' EXIT
  SRC="llama-cpp-python==$VERSION"
  [ -n "${SDIST:-}" ] && SRC="$SDIST"
  CMAKE_ARGS="$GGML_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    "$PY" -m pip wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-python "$SRC" -w "$TMP"
  mkdir -p "$WHEELS.partial" && mv "$TMP"/llama_cpp_python-*.whl "$WHEELS.partial/"
  rm -rf "$WHEELS" && mv "$WHEELS.partial" "$WHEELS"   # a half-built folder is never used
fi
"$PY" -m pip install -q --force-reinstall --no-deps "$WHEELS"/llama_cpp_python-$VERSION-*.whl
"$PY" -m pip install -q "$(ls "$WHEELS"/llama_cpp_python-$VERSION-*.whl)"   # its dependencies
"$PY" scripts/check_llama_build.py
