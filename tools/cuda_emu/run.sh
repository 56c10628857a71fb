#!/bin/sh
# Builds the CUDA backend against the host emulation (tools/cuda_emu/README.md) and runs the op tests
# on it: the kernels' code, run on the CPU. BUILD (default build-emu) is the build folder; the
# arguments are the test binaries to run (default: test_backend_ops). Not a GPU: see the README.
set -e
cd "$(dirname "$0")/../.."
. tools/cuda_emu/make.sh
TESTS=${*:-test_backend_ops}
targets=""
for t in $TESTS; do targets="$targets $B/tests/$t"; done
# shellcheck disable=SC2086
emu_make $targets
for t in $targets; do AN_OPS_VERBOSE=${AN_OPS_VERBOSE:-0} "$t"; done
