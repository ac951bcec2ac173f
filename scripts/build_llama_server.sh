#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` (parallel slots, continuous batching) from the
# llama.cpp sources vendored in the llama-cpp-python 0.3.36 sdist, and cache the binary:
#
#     scripts/build_llama_server.sh            # -> ~/.cache/guided-inference/bin/llama-server
#
# Nothing but the sdist is downloaded (pip, from the package index); the web UI is not
# built or fetched, HTTPS is off. About 10 min with 2 cores. Built for the instruction sets
# of scripts/ggml_flags.sh (portable x86-64-v3 by default, never -march=native, never AMX);
# the binary's path names the build, so a binary of another build is never reused.
# Re-running is a no-op once the binary exists and reports the right build. Environment:
#   GUIDED_CPU_BUILD   portable (default) or avx512 (opt-in; see scripts/ggml_flags.sh)
#   GUIDED_CACHE_DIR   cache root (default $XDG_CACHE_HOME/guided-inference or ~/.cache/...)
#   JOBS               parallel compile jobs (default 2)
#   SDIST              an already downloaded llama_cpp_python-0.3.36.tar.gz (optional)
set -euo pipefail
. "$(dirname "$0")/ggml_flags.sh"

VERSION=0.3.36
CACHE="${GUIDED_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/guided-inference}"
BIN="$CACHE/bin/llama-server-$GGML_BUILD_TAG"
LINK="$CACHE/bin/llama-server"  # the tests and benchmarks look here
JOBS="${JOBS:-2}"
PY="${PYTHON:-python}"

if [ -x "$BIN" ]; then
    ln -sfn "$(basename "$BIN")" "$LINK"
    echo "$LINK"
    exit 0
fi
mkdir -p "$CACHE/bin"
WORK="$(mktemp -d "$CACHE/.build-llama-server-XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

if [ -n "${SDIST:-}" ]; then
    cp "$SDIST" "$WORK/"
else
    "$PY" -m pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$WORK" -q
fi
tar xzf "$WORK"/llama_cpp_python-$VERSION.tar.gz -C "$WORK"
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"

cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF \
    -DBUILD_SHARED_LIBS=OFF $GGML_CMAKE_ARGS > "$WORK/cmake.log"
cmake --build "$WORK/build" --target llama-server -j "$JOBS" > "$WORK/build.log" \
    || { tail -30 "$WORK/build.log" >&2; exit 1; }
install -m 755 "$WORK/build/bin/llama-server" "$BIN.partial"
mv "$BIN.partial" "$BIN"   # atomic: a half-written binary is never used
ln -sfn "$(basename "$BIN")" "$LINK"
echo "$LINK"
