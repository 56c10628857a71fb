#!/usr/bin/env bash
# Where a full fine-tuning step's time goes, autoneg beside PyTorch: the matrix products of the linear
# layers and the LM head, and everything else. autoneg times its matmul ops (`bench train` always
# reports them); PyTorch's come from torch.profiler (`train_peer.py --profile`), which slows its step
# by a few percent, so these runs give the breakdown, and bench/train.sh gives the speed ratio.
#   bench/matmul_share.sh [PYTHON] [REPEATS]     PYTHON: a python with torch + transformers
set -euo pipefail
source "$(dirname "$0")/common.sh"
{
    for i in $(seq "$REPEATS"); do
        for shape in "gpt2-124m 4 64" "llama-60m 4 256"; do
            read -r preset B T <<<"$shape"
            ./build/autoneg bench train --preset "$preset" --batch "$B" --seq "$T" --steps 3 --method full --json
            "$PY" bench/train_peer.py --preset "configs/models/$preset.json" --batch "$B" --seq "$T" --steps 3 \
                --threads "$THREADS" --profile 2>/dev/null
        done
    done
} | tee /tmp/autoneg-bench-matmul.jsonl
"$PY" bench/summarize.py /tmp/autoneg-bench-matmul.jsonl
