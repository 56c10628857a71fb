#!/bin/sh
# GPU ranks under the host emulation (tools/cuda_emu/README.md): `make CUDA=1 MPI=1` against the
# emulated CUDA runtime and NCCL (emu_nccl.cpp: NCCL's collectives done by MPI on the ranks' host
# memory), then `mpirun -np 2 autoneg train --device cuda` (train/comm_nccl.c: the NCCL communicator,
# each rank its own emulated device) against one process on the emulated device, for a plain
# all-reduce (train.zero 0) and for ZeRO-1 (reduce-scatter and all-gather of uneven slices). A
# 1-layer Llama from scratch, 3 steps of 4 rows (2 a rank), clipping at 0.5 (it acts: the norms are
# 1.1 to 1.5, so a norm of one rank's gradients alone would show). Every step's loss and gradient norm
# must agree to 1e-5 relative: the ranks' float32 gradients are summed in another order than one
# process's (a few float32 roundings, 4e-8 seen), while a rank's rows lost or counted twice moves the
# loss by more than 1e-2. Then one rank with AN_COMM_ONE_RANK=1 (its collectives through NCCL): the
# same steps as one process, bit for bit. BUILD (default build-emu-mpi) is the build folder. Not a GPU run.
set -e
cd "$(dirname "$0")/../.."
if ! command -v mpirun > /dev/null 2>&1 || ! command -v mpicxx > /dev/null 2>&1; then
    echo "tools/cuda_emu/nccl.sh: skipped: no MPI (mpirun, mpicxx; make deps installs OpenMPI)"
    exit 0
fi
BUILD=${BUILD:-build-emu-mpi}
. tools/cuda_emu/make.sh
emu_make MPI=1 "$B/autoneg"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cat > "$TMP/recipe.json" <<'JSON'
{
  "model": { "base": "", "method": "full" },
  "model_config": {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 320, "hidden_size": 32,
    "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
    "max_position_embeddings": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "hidden_act": "silu",
    "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"
  },
  "tokenizer": { "path": "", "train_vocab": 320 },
  "data": { "train": ["datasets/sdxl_styles_twri.json"], "max_length": 96, "val_fraction": 0.1, "shuffle_seed": 1 },
  "optim": { "lr": 0.01, "clip": 0.5, "weight_decay": 0.1 },
  "schedule": { "type": "constant" },
  "train": { "batch_size": 4, "seq_len": 96, "steps": 3, "seed": 7, "threads": 1 },
  "eval": { "every": 0 },
  "checkpoint": { "every": 0 }
}
JSON
export OMP_NUM_THREADS=1 CUDA_EMU_DEVICES=2
# "loss grad_norm" of each step of a run's metrics
steps() { grep '"loss"' "$1/metrics.jsonl" | sed 's/.*"loss":\([^,]*\).*"grad_norm":\([^,]*\).*/\1 \2/'; }
"$B/autoneg" train "$TMP/recipe.json" --device cuda --out "$TMP/one" 2> "$TMP/one.log" || { cat "$TMP/one.log"; exit 1; }
steps "$TMP/one" > "$TMP/one.steps"
fail=0
for zero in 0 1; do
    if ! timeout 600 mpirun --allow-run-as-root --oversubscribe -np 2 "$B/autoneg" train "$TMP/recipe.json" --device cuda \
        --set train.zero=$zero --out "$TMP/two$zero" > "$TMP/two$zero.log" 2>&1; then
        echo "[FAIL] 2 GPU ranks, zero $zero: the job failed"
        cat "$TMP/two$zero.log"
        fail=1
        continue
    fi
    grep -q 'data parallel: 2 ranks (nccl)' "$TMP/two$zero.log" || { echo "[FAIL] zero $zero: not the NCCL communicator"; fail=1; }
    steps "$TMP/two$zero" > "$TMP/two$zero.steps"
    if paste "$TMP/one.steps" "$TMP/two$zero.steps" | awk 'NF == 4 {
        n++; for (i = 1; i <= 2; i++) { d = $i - $(i + 2); if (d < 0) d = -d; if (!(d <= 1e-5 * ($i < 0 ? -$i : $i))) bad = 1 }
    } END { exit (bad || n != 3) }'; then
        echo "[ ok ] 2 GPU ranks (NCCL, zero $zero) against one process on the emulated device: $(tr '\n' ' ' < "$TMP/two$zero.steps")"
    else
        echo "[FAIL] zero $zero: one process $(tr '\n' ' ' < "$TMP/one.steps"); 2 ranks $(tr '\n' ' ' < "$TMP/two$zero.steps")"
        fail=1
    fi
done
# one GPU rank whose collectives still go through NCCL (AN_COMM_ONE_RANK=1: how a machine with one GPU
# times that path): the same losses as one process, and the time in collectives reported
if ! timeout 600 mpirun --allow-run-as-root --oversubscribe -np 1 env AN_COMM_ONE_RANK=1 "$B/autoneg" train \
    "$TMP/recipe.json" --device cuda --out "$TMP/alone" > "$TMP/alone.log" 2>&1; then
    echo "[FAIL] 1 GPU rank through NCCL: the job failed"
    cat "$TMP/alone.log"
    fail=1
elif ! grep -q 'data parallel: 1 ranks (nccl)' "$TMP/alone.log" || ! grep -q 'per step in collectives' "$TMP/alone.log"; then
    echo "[FAIL] 1 GPU rank: not the NCCL communicator, or no time in collectives reported"
    cat "$TMP/alone.log"
    fail=1
else
    steps "$TMP/alone" > "$TMP/alone.steps"
    if cmp -s "$TMP/one.steps" "$TMP/alone.steps"; then
        echo "[ ok ] 1 GPU rank through NCCL = one process: $(tr '\n' ' ' < "$TMP/alone.steps")($(grep -o '[0-9.]* s per step in collectives' "$TMP/alone.log"))"
    else
        echo "[FAIL] 1 GPU rank: one process $(tr '\n' ' ' < "$TMP/one.steps"); through NCCL $(tr '\n' ' ' < "$TMP/alone.steps")"
        fail=1
    fi
fi
exit $fail
