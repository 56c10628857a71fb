#!/usr/bin/env bash
# The CUDA backend's checks, for a session that has a GPU (docs/cuda.md): one script, bounded well under
# 10 minutes, that builds with CUDA=1 for the GPU it finds, runs the op tests against the CPU backend,
# whole-model runs on CUDA against the same runs on the CPU, compute-sanitizer memcheck over the op
# harness, and a short timing. Everything goes to $OUT/gpu_check.log, one PASS/FAIL/SKIP line per step
# to $OUT/summary.txt (and the terminal). Exit status: the number of failed steps (0: all passed).
#
#   OUT=/tmp/out tools/gpu_check.sh            # from the repository root
#   AN_SHARED=path/to/shared tools/gpu_check.sh  # where stories260K/ and TinyStories-656K/ are
#                                                # (default: ./shared, then ../shared; absent: SKIP)
# JOBS (default: nproc) sets make's parallelism; CUDA_ARCH overrides the detected architecture.
# AN_GPU_CHECK_DRY=1 checks this script itself on a machine without a GPU: a CPU-only build, the GPU
# steps skipped, and "cuda" in the model comparisons replaced by "cpu" (so they compare cpu with cpu).
set -u
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
SUM=$OUT/summary.txt
: > "$LOG"
: > "$SUM"
BUILD=${GPU_CHECK_BUILD:-build-gpu} # a build folder of its own (CUDA_ARCH of this GPU)
JOBS=${JOBS:-$(nproc)}
FAILED=0
# float32 test mode: no TF32 anywhere, even where a library would allow it
export NVIDIA_TF32_OVERRIDE=0
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}

device_of() { [ "$1" = cpu ] && echo cpu || echo "$DEV"; } # the device of a side: cpu, or cuda (cpu when dry)
log() { printf '%s\n' "$*" | tee -a "$LOG"; }
result() { # STATUS NAME DETAIL
    printf '%-4s %-34s %s\n' "$1" "$2" "$3" | tee -a "$SUM" | tee -a "$LOG"
    [ "$1" = FAIL ] && FAILED=$((FAILED + 1))
    return 0
}
# step NAME SECONDS CMD...: runs CMD under a timeout, output to the log; PASS on exit status 0
step() {
    local name=$1 secs=$2 t0 rc
    shift 2
    log "==== $name: $* (timeout ${secs}s)"
    t0=$(date +%s)
    timeout "$secs" "$@" >> "$LOG" 2>&1
    rc=$?
    local dt=$(($(date +%s) - t0))
    if [ $rc = 0 ]; then result PASS "$name" "${dt}s"; else result FAIL "$name" "exit $rc after ${dt}s (see gpu_check.log)"; fi
    return $rc
}

log "==== gpu_check $(date -u +%FT%TZ) at $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
DRY=${AN_GPU_CHECK_DRY:-0}
DEV=cuda
if [ "$DRY" = 1 ]; then
    DEV=cpu
    result INFO "dry run" "no GPU: checking the script only (cpu against cpu)"
elif ! command -v nvidia-smi > /dev/null; then
    result FAIL "nvidia-smi" "not found: is this a GPU machine?"
    exit 1
fi
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
CUDA=1
if [ "$DRY" = 1 ]; then
    CUDA=0
    ARCH=none
else
    nvidia-smi >> "$LOG" 2>&1
    GPU=$(nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader | head -n 1)
    result INFO "gpu" "$GPU"
    result INFO "nvcc" "$("$NVCC" --version 2>&1 | tail -n 2 | tr '\n' ' ')"
    # the architecture of the GPU at hand only: one fat-binary slice compiles in a fraction of the time
    CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d ' .')
    ARCH=${CUDA_ARCH:-$CAP}
fi

# ---- build ----
if ! step "build (make CUDA=$CUDA CUDA_ARCH=$ARCH)" 420 make -j"$JOBS" CUDA=$CUDA CUDA_ARCH="$ARCH" NVCC="$NVCC" BUILD=$BUILD all \
    $BUILD/tests/test_backend_ops $BUILD/tests/test_cuda_ops $BUILD/tests/test_backend $BUILD/tests/test_model_families \
    $BUILD/tests/test_gguf_quant_model $BUILD/tests/test_no_alloc $BUILD/tests/test_generate_device \
    $BUILD/tests/test_lora $BUILD/tests/test_qlora $BUILD/tests/test_lora_dropout $BUILD/tests/test_recompute \
    $BUILD/tests/test_infer $BUILD/tests/test_engine $BUILD/tests/test_train; then
    log "the build failed; nothing else can run"
    cat "$SUM"
    exit "$FAILED"
fi
if [ "$DRY" != 1 ] && ! $BUILD/autoneg --version | grep -q "CUDA: built"; then
    result FAIL "CUDA: built" "the binary has no CUDA backend (is nvcc where make looks?)"
    exit "$FAILED"
fi

# the shared models (stories260K, TinyStories-656K), for the tests that read them (tests/harness.c's
# test_shared: AN_SHARED) and the whole-model runs below
SHARED=${AN_SHARED:-}
for d in shared ../shared; do [ -z "$SHARED" ] && [ -d "$d/models/stories260K" ] && SHARED=$d; done
[ -n "$SHARED" ] && export AN_SHARED="$(cd "$SHARED" && pwd)"
# step, or SKIP where the shared models are not here
shared_step() {
    if [ -n "$SHARED" ]; then step "$@"; else result SKIP "$1" "no shared/models here (set AN_SHARED)"; fi
}

# ---- op tests: every op against the CPU backend, small odd shapes and model shapes ----
step "test_backend (opens cuda)" 60 env BUILD=$BUILD $BUILD/tests/test_backend
step "test_backend_ops (cpu + cuda)" 180 env AN_OPS_VERBOSE=1 $BUILD/tests/test_backend_ops
grep -E "^backend cuda" "$LOG" | tail -n 1 | sed 's/^/     /' | tee -a "$SUM"
step "test_cuda_ops (model shapes)" 180 env AN_OPS_VERBOSE=1 $BUILD/tests/test_cuda_ops
# the PyTorch fixtures of whole models (GPT-2, Llama, Qwen2, InternLM2: logits, loss, every gradient,
# 5 AdamW steps) with the models on the backend under test
step "test_model_families on $DEV" 300 env AN_TEST_DEVICE=$DEV $BUILD/tests/test_model_families
# LoRA against PEFT (four families, and on NF4 bases) and QLoRA against bitsandbytes + PEFT: logits,
# loss and every adapter gradient with the models on the backend under test
step "test_lora on $DEV" 120 env AN_TEST_DEVICE=$DEV $BUILD/tests/test_lora
step "test_qlora on $DEV" 120 env AN_TEST_DEVICE=$DEV $BUILD/tests/test_qlora
# LoRA dropout's gradient against finite differences (the masks regenerated in the backward); layer
# recomputation bit for bit with the plan's device memory; decoding (KV cache, batches) against the
# fixtures; the server's engine
step "test_lora_dropout on $DEV" 120 env AN_TEST_DEVICE=$DEV $BUILD/tests/test_lora_dropout
step "test_recompute on $DEV" 120 env AN_TEST_DEVICE=$DEV $BUILD/tests/test_recompute
shared_step "test_infer on $DEV" 120 env AN_TEST_DEVICE=$DEV $BUILD/tests/test_infer
step "test_engine on $DEV" 120 env AN_TEST_DEVICE=$DEV $BUILD/tests/test_engine
# the training loop on the device: a run resumed from its checkpoint gives the uninterrupted run's
# losses and final weights bit for bit (full, and LoRA with dropout), accumulation, real fine-tunes
shared_step "test_train on $DEV" 300 env AN_TEST_DEVICE=$DEV $BUILD/tests/test_train
# a GGUF model written as Q8_0 / Q4_0, its blocks kept on the backend under test, against the float model
step "test_gguf_quant_model on $DEV" 120 env AN_TEST_DEVICE=$DEV $BUILD/tests/test_gguf_quant_model
# nothing allocated in a training or decode step, on the device too (the backend's own count)
step "test_no_alloc on $DEV" 120 env AN_TEST_DEVICE=$DEV $BUILD/tests/test_no_alloc
# generation with the sampler on the device draws the host sampler's tokens from the same logits
shared_step "test_generate_device on $DEV" 120 env AN_TEST_DEVICE=$DEV $BUILD/tests/test_generate_device
grep -E "^fixture models on" "$LOG" | tail -n 1 | sed 's/^/     /' | tee -a "$SUM"
# on a GPU the op tests must have run, not skipped
if [ "$DRY" != 1 ] && grep -qE "^(backend cuda: skipped|skipped: no CUDA device)" "$LOG"; then
    result FAIL "cuda op tests ran" "they skipped: the backend did not open (see gpu_check.log)"
fi

# ---- compute-sanitizer over the op harness (small shapes: memcheck costs 10-100x) ----
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [ "$DRY" = 1 ]; then
    result SKIP "compute-sanitizer" "dry run"
elif [ -x "$SAN" ]; then
    step "compute-sanitizer memcheck" 300 "$SAN" --tool memcheck --error-exitcode 1 --leak-check full \
        $BUILD/tests/test_backend_ops
    step "compute-sanitizer racecheck" 300 "$SAN" --tool racecheck --error-exitcode 1 $BUILD/tests/test_backend_ops
else
    result SKIP "compute-sanitizer" "not found"
fi

# ---- whole models: the same run on the CPU and on CUDA ----
if [ -n "$SHARED" ] && [ -f "$SHARED/models/stories260K/stories260K.bin" ]; then
    S260=$SHARED/models/stories260K
    for side in cpu gpu; do
        timeout 120 $BUILD/autoneg generate --model "$S260/stories260K.bin" --tokenizer "$S260/tok512.bin" --raw \
            --prompt "Once upon a time" --temperature 0 --max-tokens 100 --device "$(device_of $side)" \
            > "$OUT/stories260K.$side.txt" 2>> "$LOG"
        log "$side ($(device_of $side)): $(head -c 300 "$OUT/stories260K.$side.txt")"
    done
    if [ -s "$OUT/stories260K.gpu.txt" ] && cmp -s "$OUT/stories260K.cpu.txt" "$OUT/stories260K.gpu.txt"; then
        result PASS "stories260K greedy cpu = $DEV" "100 tokens, the same text"
    else
        result FAIL "stories260K greedy cpu = $DEV" "texts differ (greedy decoding may flip on a near-tie: read them)"
    fi
    TS=$SHARED/models/TinyStories-656K
    if [ -d "$TS" ]; then
        head -c 20000 README.md > "$OUT/ppl.txt"
        for side in cpu gpu; do
            timeout 120 $BUILD/autoneg perplexity --model "$TS" --file "$OUT/ppl.txt" --ctx 256 --device "$(device_of $side)" \
                > "$OUT/ppl.$side.txt" 2>> "$LOG"
            log "perplexity $side ($(device_of $side)): $(cat "$OUT/ppl.$side.txt")"
        done
        # nll is a mean over thousands of tokens of float32 sums: 1e-5 relative
        if python3 - "$OUT/ppl.cpu.txt" "$OUT/ppl.gpu.txt" >> "$LOG" 2>&1 << 'EOF'; then
import re, sys
def nll(p):
    return float(re.search(r"nll=([0-9.eE+-]+)", open(p).read()).group(1))
a, b = nll(sys.argv[1]), nll(sys.argv[2])
print("nll cpu %.8f gpu %.8f rel %.3g" % (a, b, abs(a - b) / abs(a)))
sys.exit(0 if abs(a - b) <= 1e-5 * abs(a) else 1)
EOF
            result PASS "TinyStories-656K perplexity" "$(tail -n 1 "$LOG")"
        else
            result FAIL "TinyStories-656K perplexity" "$(tail -n 1 "$LOG")"
        fi
    fi
else
    result SKIP "stories260K / TinyStories-656K" "no shared/models here (set AN_SHARED)"
fi

# Training steps on random weights (bench train prints each step's loss on stderr): the same seed on
# the CPU and on CUDA must give the same losses to float32 rounding, step after step (forward,
# backward, AdamW; with LoRA also the dropout masks). 1e-4 relative: the losses print with 4 decimals
# (1e-5 of a loss near 10), and each AdamW step compounds the rounding differences of the ones before.
# On cuda-bf16 (GEMM inputs rounded to bf16, u = 2^-8) 2e-3 relative.
compare_losses() { # NAME PRESET METHOD [GPU-DEVICE TOLERANCE]
    local name=$1 preset=$2 method=$3 gdev=${4:-cuda} tol=${5:-1e-4}
    for side in cpu gpu; do
        local dev=$(device_of $side)
        [ "$side" = gpu ] && [ "$DRY" != 1 ] && dev=$gdev
        timeout 240 $BUILD/autoneg bench train --preset "$preset" --batch 2 --seq 64 --steps 4 --method "$method" \
            --seed 7 --device "$dev" > "$OUT/bench.$name.$side.txt" 2> "$OUT/bench.$name.$side.err"
        log "bench train $name $side ($dev): $(grep -E 'tokens/s' "$OUT/bench.$name.$side.txt" | head -n 1)"
        cat "$OUT/bench.$name.$side.err" >> "$LOG"
    done
    if TOL=$tol python3 - "$OUT/bench.$name.cpu.err" "$OUT/bench.$name.gpu.err" >> "$LOG" 2>&1 << 'EOF'; then
import os, re, sys
def losses(p):
    return [float(x) for x in re.findall(r"loss ([0-9.eE+-]+)", open(p).read())]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
worst = max([abs(x - y) / abs(x) for x, y in zip(a, b)] or [float("inf")])
print("losses cpu %s gpu %s worst rel %.3g" % (a, b, worst))
sys.exit(0 if len(a) == len(b) and len(a) > 0 and worst <= float(os.environ["TOL"]) else 1)
EOF
        result PASS "train $name cpu = $DEV" "$(tail -n 1 "$LOG")"
    else
        result FAIL "train $name cpu = $DEV" "$(tail -n 1 "$LOG")"
    fi
}
compare_losses gpt2-full gpt2-124m full
compare_losses llama-lora llama-60m lora
compare_losses llama-qlora llama-60m qlora
compare_losses gpt2-full-bf16 gpt2-124m full cuda-bf16 2e-3
compare_losses llama-qlora-bf16 llama-60m qlora cuda-bf16 2e-3

# ---- device memory: the plan of a QLoRA step against the backend's count of what it held ----
if timeout 240 $BUILD/autoneg bench memory --preset llama-60m --method qlora --seq 256 --measure \
    --device "$(device_of gpu)" > "$OUT/memory.txt" 2>> "$LOG"; then
    result INFO "bench memory llama-60m qlora" "$(grep -E 'measured - plan' "$OUT/memory.txt" | head -n 1 | sed 's/^ *//')"
    cat "$OUT/memory.txt" >> "$LOG"
else
    result FAIL "bench memory on $DEV" "bench memory failed"
fi

# ---- a short timing (the same GPU): the float32 test mode, then bf16 GEMM inputs ----
for tdev in cuda cuda-bf16; do
    if [ "$DRY" = 1 ]; then
        result SKIP "timing $tdev" "dry run"
    elif timeout 240 $BUILD/autoneg bench train --preset gpt2-124m --batch 8 --seq 256 --steps 5 --device $tdev \
        > "$OUT/timing.$tdev.txt" 2>> "$LOG"; then
        result INFO "timing gpt2-124m full, 8 x 256, $tdev" "$(grep -E 'tokens/s' "$OUT/timing.$tdev.txt" | head -n 1)"
        cat "$OUT/timing.$tdev.txt" >> "$LOG"
    else
        result FAIL "timing gpt2-124m on $tdev" "bench train failed"
    fi
done

# ---- where the step's time goes: Nsight Systems' kernel summary of a short bf16 run, when the GPU
# machine has nsys (the toolkit here has not): the kernels by total time, so the next change goes to the
# op that costs most ----
if [ "$DRY" = 1 ]; then
    result SKIP "kernel profile" "dry run"
elif ! command -v nsys > /dev/null 2>&1; then
    result SKIP "kernel profile" "no nsys on this machine"
elif timeout 120 nsys profile --force-overwrite true -o "$OUT/profile" $BUILD/autoneg bench train --preset gpt2-124m \
        --batch 8 --seq 1024 --steps 2 --device cuda-bf16 > /dev/null 2>> "$LOG" &&
    timeout 60 nsys stats --report cuda_gpu_kern_sum --format csv "$OUT/profile.nsys-rep" > "$OUT/kernels.csv" 2>> "$LOG"; then
    # the csv's rows: time share (%), total time, instances, ..., name (quoted, may hold commas)
    top=$(grep -E '^"?[0-9]' "$OUT/kernels.csv" | head -n 5 | awk -F, '{printf "%s%% %s; ", $1, $NF}')
    result INFO "kernel profile gpt2-124m 8 x 1024 cuda-bf16" "top kernels by time: $top"
    head -n 30 "$OUT/kernels.csv" >> "$LOG"
else
    result INFO "kernel profile" "nsys failed or ran past its time (see gpu_check.log)"
fi

# ---- against PyTorch on the same GPU (bench/train_gpu.sh: gpt2-124m, 8 x 1024, bf16 on both sides) ----
if [ "$DRY" = 1 ]; then
    result SKIP "autoneg / pytorch gpt2-124m" "dry run"
elif BUILD=$BUILD STEPS=3 timeout 240 bench/train_gpu.sh python3 2 > "$OUT/train_gpu.txt" 2>> "$LOG"; then
    result INFO "autoneg / pytorch gpt2-124m" "$(grep -E 'autoneg / pytorch' "$OUT/train_gpu.txt" | sed 's/^ *//')"
    cat "$OUT/train_gpu.txt" >> "$LOG"
else
    result FAIL "autoneg / pytorch gpt2-124m" "bench/train_gpu.sh failed or ran past 240 s (see gpu_check.log)"
fi

log "==== done: $FAILED failed"
cat "$SUM"
exit "$FAILED"
