#!/usr/bin/env bash
# Full fine-tuning on a GPU, autoneg against PyTorch in the same run (the CUDA issue's speed target):
# gpt2-124m at T = 1024 as llm.c's GPT-2 runs, autoneg's `--device cuda-bf16` (bf16 GEMM inputs,
# float32 accumulation) against PyTorch with bf16 autocast, scaled_dot_product_attention and the fused
# AdamW (bench/train_peer.py --device cuda --bf16), alternating run by run. Prints each side's median
# tokens/s with min..max, the ratio of medians, the median of each repeat's own ratio, and each side's
# model FLOPs utilisation: 6 N + 12 L C T FLOPs a token (PaLM's count, as nanoGPT's estimate_mfu: N
# parameters, L layers, width C) over the GPU's dense bf16 peak.
#   bench/train_gpu.sh [PYTHON] [REPEATS]     PYTHON: a python with torch + transformers on the GPU
# Environment: BUILD (default build: a `make CUDA=1` build), PRESET (gpt2-124m), B (8), T (1024),
# STEPS (5 timed steps after a warm-up), PEAK_TFLOPS (the bf16 peak; default from the GPU's name: H100
# and H200 989, A100 312), AUTONEG_DEVICE (cuda-bf16) and PEER_DEVICE (cuda). AUTONEG_DEVICE=cpu
# PEER_DEVICE=cpu with a small B and T checks the script itself on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
REPEATS=${2:-3}
BUILD=${BUILD:-build}
PRESET=${PRESET:-gpt2-124m}
B=${B:-8}
T=${T:-1024}
STEPS=${STEPS:-5}
AUTONEG_DEVICE=${AUTONEG_DEVICE:-cuda-bf16}
PEER_DEVICE=${PEER_DEVICE:-cuda}
export HF_HUB_OFFLINE=1
[ -x "$BUILD/autoneg" ] || { echo "train_gpu.sh: no $BUILD/autoneg: build it with make CUDA=1 BUILD=$BUILD" >&2; exit 2; }
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
peer_flags="--device $PEER_DEVICE"
[ "$PEER_DEVICE" = cuda ] && peer_flags="$peer_flags --bf16"
for i in $(seq "$REPEATS"); do
    "$BUILD/autoneg" bench train --preset "$PRESET" --batch "$B" --seq "$T" --steps "$STEPS" --method full \
        --device "$AUTONEG_DEVICE" --json 2> /dev/null | tee -a "$OUT"
    # shellcheck disable=SC2086
    "$PY" bench/train_peer.py --preset "configs/models/$PRESET.json" --batch "$B" --seq "$T" --steps "$STEPS" \
        --threads "$(nproc)" $peer_flags 2> /dev/null | tee -a "$OUT"
done
"$PY" - "$OUT" "configs/models/$PRESET.json" "$T" << 'EOF'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
cfg = json.load(open(sys.argv[2]))
T = int(sys.argv[3])
an = [r for r in rows if r.get("peer") == "autoneg"]
pt = [r for r in rows if r.get("peer") == "pytorch"]
if not an or not pt:
    sys.exit("train_gpu.sh: a side printed no result (run its command alone to see why)")
L = cfg.get("n_layer", cfg.get("num_hidden_layers"))
C = cfg.get("n_embd", cfg.get("hidden_size"))
flops_per_token = 6 * an[0]["params"] + 12 * L * C * T
device = pt[0].get("device", "?")
peaks = {"H100": 989.4, "H200": 989.4, "A100": 312.0}
peak = float(os.environ.get("PEAK_TFLOPS") or next((v for k, v in peaks.items() if k in device), 0.0))
def show(name, rs):
    tps = [r["tokens_per_s"] for r in rs]
    med = statistics.median(tps)
    mfu = f", MFU {flops_per_token * med / (peak * 1e12) * 100:.1f}% of {peak:.0f} TFLOP/s" if peak else ""
    print(f"  {name:8s} {med:10.0f} tokens/s ({min(tps):.0f}..{max(tps):.0f}, n={len(tps)}){mfu}")
    return med
print(f"{cfg['architectures'][0]} ({an[0]['params'] / 1e6:.0f}M), full fine-tuning, batch {an[0]['batch']} x {T}, on {device}")
a, p = show("autoneg", an), show("pytorch", pt)
per = [x["tokens_per_s"] / y["tokens_per_s"] for x, y in zip(an, pt)]
print(f"  autoneg / pytorch: {a / p:.2f}x (ratio of medians); per repeat {statistics.median(per):.2f}x "
      f"({min(per):.2f}..{max(per):.2f}); target: at least 1.0x")
EOF
