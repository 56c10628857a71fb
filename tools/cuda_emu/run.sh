#!/bin/sh
# Builds the CUDA backend against the host emulation (tools/cuda_emu/README.md) and runs the op tests
# on it: the kernels' code, run on the CPU. BUILD (default build-emu) is the build folder; the
# arguments are the test binaries to run (default: test_backend_ops). Not a GPU: see the README.
set -e
cd "$(dirname "$0")/../.."
B=${BUILD:-build-emu}
mkdir -p "$B/fakecuda/lib64"
g++ -std=c++17 -O1 -g -ffp-contract=off -Wall -Wextra -Werror -Itools/cuda_emu/include -c tools/cuda_emu/emu.cpp \
    -o "$B/fakecuda/emu.o"
for l in cudart cublas cublasLt; do rm -f "$B/fakecuda/lib64/lib$l.a" && ar rcs "$B/fakecuda/lib64/lib$l.a" "$B/fakecuda/emu.o"; done
TESTS=${*:-test_backend_ops}
targets=""
for t in $TESTS; do targets="$targets $B/tests/$t"; done
# the emulated library changes without make knowing: relink what uses it
rm -f "$B/libautoneg.a" $targets
make -j"${JOBS:-2}" CUDA=1 NVCC="$PWD/tools/cuda_emu/nvcc" CUDA_HOME="$PWD/$B/fakecuda" BUILD="$B" $targets
for t in $targets; do AN_OPS_VERBOSE=${AN_OPS_VERBOSE:-0} "$t"; done
