# Sourced by every script that compiles ggml (llama-cpp-python, llama-server): one place
# for the instruction sets we build for. Never -march=native: a native build made on one
# machine of our kind crashes on another (VMs that advertise AMX in CPUID fault on tile
# instructions) or rounds differently (greedy paths split at near-ties).
#
#   GUIDED_CPU_BUILD=portable  (default) x86-64-v3: SSE4.2, AVX, AVX2, FMA, F16C, BMI2;
#                              no AVX-512, no AVX-VNNI, no AMX.
#   GUIDED_CPU_BUILD=avx512    opt-in: the above plus AVX-512 F/BW/DQ/VL/VNNI, still no AMX.
#                              Only for machines that run AVX-512 (not every one of ours).
# Exports GGML_CMAKE_ARGS and GGML_BUILD_TAG (names the variant and the flags' hash, so
# cached builds are keyed by flags, not by version alone).
GUIDED_CPU_BUILD="${GUIDED_CPU_BUILD:-portable}"
_ggml_common="-DGGML_NATIVE=OFF -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_BACKEND_DL=OFF \
-DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
-DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
-DGGML_AVX512_VBMI=OFF -DGGML_AVX512_BF16=OFF"
case "$GUIDED_CPU_BUILD" in
  portable) GGML_CMAKE_ARGS="$_ggml_common -DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF" ;;
  avx512)   GGML_CMAKE_ARGS="$_ggml_common -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON" ;;
  *) echo "GUIDED_CPU_BUILD=$GUIDED_CPU_BUILD is not a build; allowed: portable, avx512" >&2; return 2 2>/dev/null || exit 2 ;;
esac
GGML_BUILD_TAG="$GUIDED_CPU_BUILD-$(printf %s "$GGML_CMAKE_ARGS" | sha256sum | cut -c1-12)"
export GUIDED_CPU_BUILD GGML_CMAKE_ARGS GGML_BUILD_TAG
