#!/usr/bin/env bash
# The fused LoRA ops (kernels/cpu_lora.c) against the same products through cblas_sgemm, on SmolLM2-135M's
# shapes (bench/bench_lora.c), alternating in one process; threads: OMP_NUM_THREADS (default 2).
#   bench/lora_ops.sh [REPEATS]    (default 15 calls of each side per shape)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# OpenBLAS 0.3.21 takes some virtual CPUs for an SSE3 core (see bench/gguf_llamacpp.sh): name the core
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
    if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX
    elif grep -qw avx2 /proc/cpuinfo; then export OPENBLAS_CORETYPE=Haswell; fi
fi
BUILD=${BUILD:-build}
make -s "$BUILD/libautoneg.a"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
${CC:-cc} -O3 -march=native -std=c11 -D_GNU_SOURCE -fopenmp -I. -I/usr/include/x86_64-linux-gnu/openblas-openmp \
    bench/bench_lora.c "$BUILD/libautoneg.a" -lcjson -lz -lm \
    -L/usr/lib/x86_64-linux-gnu/openblas-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas \
    -o "$TMP/bench_lora"
"$TMP/bench_lora" "${1:-15}"
