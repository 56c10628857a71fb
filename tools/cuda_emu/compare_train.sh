#!/bin/sh
# Whole training steps on the emulated CUDA backend against the CPU (tools/cuda_emu/README.md): a
# 2-layer Llama (vocabulary 512, width 128, grouped-query heads) on random weights, a warm-up and 3 steps
# of LoRA and of QLoRA (the NF4 base's device copy, read by kernels/cuda/weights.cu), with the same seed
# on `--device cpu` and `--device cuda`. Each step's loss must agree to 1e-4 relative, as in
# tools/gpu_check.sh: the losses print with 4 decimals, and the kernels differ from the CPU's only in
# the order of float32 sums. The same and full fine-tuning on `--device cuda-bf16`, and full fine-tuning
# of a 2-layer GPT-2 in both modes (below). Not a GPU run: tools/gpu_check.sh is.
set -e
cd "$(dirname "$0")/../.."
. tools/cuda_emu/make.sh
emu_make "$B/autoneg"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cat > "$TMP/config.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 512, "hidden_size": 128,
 "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "max_position_embeddings": 256, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "hidden_act": "silu",
 "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}
JSON
# GPT-2 (LayerNorm, GELU, learned positions, biases): in cuda-bf16 its MLP's first product takes the
# GELU into the GEMM's epilogue (kernels/cuda/matmul.cu; the MLP's width, 512, a multiple of 8 as
# cuBLASLt's GELU epilogue wants)
cat > "$TMP/gpt2.json" <<'JSON'
{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": 512, "n_embd": 128, "n_layer": 2,
 "n_head": 4, "n_positions": 256, "n_inner": null, "layer_norm_epsilon": 1e-05, "activation_function": "gelu_new",
 "tie_word_embeddings": true, "bos_token_id": 0, "eos_token_id": 0, "torch_dtype": "float32"}
JSON
fail=0
# METHOD DEVICE TOLERANCE CONFIG: the float32 test mode to 1e-4 as above; "cuda-bf16" (bf16 GEMM inputs) to
# 2e-3, the size of bf16's input rounding (2^-8) passed through a few steps, which these runs show at
# 4e-5 and which a rounding kept to fewer bits would exceed (the op harness bounds it exactly)
while read -r method dev tol cfg; do
    ref="$TMP/cpu.$method.$cfg"
    if [ ! -s "$ref" ]; then
        "$B/autoneg" bench train --preset "$TMP/$cfg.json" --batch 2 --seq 32 --steps 3 --method "$method" --seed 7 \
            --threads 1 --device cpu 2> "$TMP/cpu.err" > /dev/null
        grep -o 'loss [0-9.]*' "$TMP/cpu.err" | tr '\n' ' ' > "$ref"
    fi
    "$B/autoneg" bench train --preset "$TMP/$cfg.json" --batch 2 --seq 32 --steps 3 --method "$method" --seed 7 \
        --threads 1 --device "$dev" 2> "$TMP/dev.err" > /dev/null
    grep -o 'loss [0-9.]*' "$TMP/dev.err" | tr '\n' ' ' > "$TMP/dev.loss"
    if [ -s "$ref" ] && awk -v a="$(cat "$ref")" -v b="$(cat "$TMP/dev.loss")" -v t="$tol" 'BEGIN {
        n = split(a, x, " "); m = split(b, y, " "); if (n != m || n < 8) exit 1
        for (i = 2; i <= n; i += 2) { d = x[i] - y[i]; if (d < 0) d = -d; if (!(d <= t * x[i])) exit 1 }
    }'; then
        echo "[ ok ] $cfg $method on the emulated $dev (to $tol): $(cat "$TMP/dev.loss")"
    else
        echo "[FAIL] $cfg $method: cpu $(cat "$ref"); emulated $dev $(cat "$TMP/dev.loss") (tolerance $tol)"
        fail=1
    fi
done << 'RUNS'
lora cuda 1e-4 config
qlora cuda 1e-4 config
lora cuda-bf16 2e-3 config
qlora cuda-bf16 2e-3 config
full cuda-bf16 2e-3 config
full cuda 1e-4 gpt2
full cuda-bf16 2e-3 gpt2
RUNS
exit $fail
