#!/usr/bin/env bash
# Full fine-tuning speed, autoneg against PyTorch (PyPI build, fp32, CPU), same presets, batch,
# sequence and threads, measured in one run; then autoneg's LoRA (rank 16 on every linear but the head)
# on the same presets and batches, with its speed and peak memory beside full fine-tuning's. Usage:
#   bench/train.sh [PYTHON] [REPEATS]     PYTHON: a python with torch + transformers (default: python3)
# Prints each measurement and the ratio of medians; the fraction of this machine's sgemm peak comes
# from autoneg's own measurement in the same command.
set -euo pipefail
source "$(dirname "$0")/common.sh"
# The machine's speed drifts over minutes, so each repeat measures full, PyTorch and LoRA back to back
# rather than all of one kind first: the ratios compare runs taken close together.
run() { # preset batch seq
    local preset=$1 B=$2 T=$3
    ./build/autoneg bench train --preset "$preset" --batch "$B" --seq "$T" --steps 3 --method full --json
    "$PY" bench/train_peer.py --preset "configs/models/$preset.json" --batch "$B" --seq "$T" --steps 3 --threads "$THREADS" 2>/dev/null
    ./build/autoneg bench train --preset "$preset" --batch "$B" --seq "$T" --steps 3 --method lora --json
}
{
    for i in $(seq "$REPEATS"); do
        run gpt2-124m 4 64
        run llama-60m 4 256
    done
} | tee /tmp/autoneg-bench-train.jsonl
"$PY" bench/summarize.py /tmp/autoneg-bench-train.jsonl
