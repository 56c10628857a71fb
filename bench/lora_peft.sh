#!/usr/bin/env bash
# LoRA training speed on SmolLM2-135M's shape (configs/models/smollm2-135m.json: 30 layers, dim 576,
# tied 49,152-token embedding), autoneg against PyTorch + PEFT: float32 on the CPU, random weights,
# rank 16 (alpha 32) on every linear layer but the head, no dropout, AdamW and gradient clipping on
# both sides, the same batch, sequence and threads, measured back to back in each repeat. Usage:
#   bench/lora_peft.sh [PYTHON] [REPEATS]    PYTHON: a python with torch, transformers and peft
# B and T (default 4 and 256) set the batch. Prints each measurement, then the medians and ratios.
set -euo pipefail
source "$(dirname "$0")/common.sh"
B=${B:-4}
T=${T:-256}
OUT=$(mktemp /tmp/autoneg-bench-lora-XXXXXX.jsonl)
trap 'rm -f "$OUT"' EXIT
for i in $(seq "$REPEATS"); do
    ./build/autoneg bench train --preset smollm2-135m --batch "$B" --seq "$T" --steps 3 --method lora --dropout 0 \
        --threads "$THREADS" --json
    "$PY" bench/train_peer.py --preset configs/models/smollm2-135m.json --batch "$B" --seq "$T" --steps 3 \
        --threads "$THREADS" --lora --rank 16 2>/dev/null
done | tee "$OUT"
"$PY" bench/summarize.py "$OUT"
