#!/usr/bin/env bash
# Decoding speed with a KV cache, autoneg against transformers' generate (PyTorch from PyPI, fp32,
# CPU, greedy, KV cache on), same preset shape, prompt length, new tokens and threads, measured in
# one run, repeated. Usage:
#   bench/generate.sh [PYTHON] [REPEATS] [TOKENS]   PYTHON: a python with torch + transformers
# Prints each measurement (JSON lines) and, per batch size, the medians and their ratio. autoneg's
# line for one prompt also gives the fraction of this machine's memory bandwidth it reaches.
set -euo pipefail
source "$(dirname "$0")/common.sh"
TOKENS=${3:-128}
PRESET=${PRESET:-llama-60m}
OUT=/tmp/autoneg-bench-generate.jsonl
{
    for i in $(seq "$REPEATS"); do
        for B in 1 16; do
            ./build/autoneg bench generate --preset "$PRESET" --batch "$B" --tokens "$TOKENS" --json
        done
        "$PY" bench/generate_peer.py --preset "configs/models/$PRESET.json" --batch 1 16 --tokens "$TOKENS" \
            --threads "$THREADS" 2>/dev/null
    done
} | tee "$OUT"
"$PY" bench/generate_peer.py --summarize "$OUT"
