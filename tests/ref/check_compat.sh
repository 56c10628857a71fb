#!/bin/sh
# make check-compat: what autoneg writes, checked by the Python reference stack (not part of make test).
#   - a virtual environment outside the repository: $AN_VENV, else ~/.cache/autoneg-venv, created on
#     first use with torch, transformers, peft, safetensors, tokenizers and tensorboard from PyPI
#     (AN_VENV=/work/venv uses an existing one and installs nothing);
#   - tests/ref/check_formats_compat.py: safetensors and config.json writers against transformers;
#   - three short training runs (a full fine-tune and a LoRA of ../shared/models/TinyStories-656K, and
#     the demo recipe from scratch with its trained tokenizer), then tests/ref/check_tensorboard.py on a
#     run folder and tests/ref/check_train_output.py on the final folders (transformers loads the
#     models, PEFT the adapter, and both give autoneg's token ids and NLL);
#   - with the SmolLM2 GGUF fetched (make model): a LoRA run on it, PEFT's NLL on transformers' model of
#     the GGUF, and the llama.cpp adapter export (tests/ref/check_smollm2_lora.py); then llama.cpp (the
#     llama-cpp-python package, which builds it from source on install) loads autoneg's f32, q8_0 and q4_0
#     exports, the merged model and the LoRA adapter GGUF, and gives autoneg's logits and greedy text
#     (tests/ref/check_llamacpp.py; a llama.cpp built already serves too: LLAMA_CPP_LIB_PATH=<its lib
#     folder> with the package's Python sources on PYTHONPATH).
set -e
BUILD=${BUILD:-build}
SHARED=${AN_SHARED:-../shared}
VENV=${AN_VENV:-$HOME/.cache/autoneg-venv}
PY="$VENV/bin/python"
if ! "$PY" -c "import torch, transformers, peft, safetensors, tokenizers, tensorboard" 2>/dev/null; then
    echo "check-compat: creating $VENV (torch, transformers, peft, safetensors, tokenizers, tensorboard from PyPI)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet torch transformers peft safetensors tokenizers tensorboard
fi
export HF_HUB_OFFLINE=1
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
TMP=$(mktemp -d /tmp/autoneg-compat-XXXXXX)
fail=0

echo "== formats"
"$PY" tests/ref/check_formats_compat.py "$BUILD" || fail=1

echo "== training runs (in $TMP)"
"$BUILD/autoneg" train --base "$SHARED/models/TinyStories-656K" --method full --data datasets/sdxl_styles_twri.json \
    --out "$TMP/finetune" --steps 6 --set train.seq_len=96 --set data.max_length=96 --set train.batch_size=4 \
    --set data.val_fraction=0.2 --set eval.every=3 --set optim.lr=0.003 --set train.threads=1 2>"$TMP/finetune.log" ||
    { cat "$TMP/finetune.log"; fail=1; }
"$BUILD/autoneg" train --base "$SHARED/models/TinyStories-656K" --method lora --data datasets/sdxl_styles_twri.json \
    --out "$TMP/lora" --steps 6 --set lora.target_modules=all-linear --set train.seq_len=96 --set data.max_length=96 \
    --set train.batch_size=4 --set optim.lr=0.01 --set train.threads=1 2>"$TMP/lora.log" || { cat "$TMP/lora.log"; fail=1; }
"$BUILD/autoneg" train configs/recipes/tiny-from-scratch.json --out "$TMP/scratch" --steps 4 \
    --set train.batch_size=2 --set eval.prompts=apocalypse --set eval.max_new_tokens=8 2>"$TMP/scratch.log" ||
    { cat "$TMP/scratch.log"; fail=1; }

echo "== TensorBoard and loss.svg"
"$PY" tests/ref/check_tensorboard.py "$TMP/finetune" || fail=1
echo "== transformers loads the trained folders"
"$PY" tests/ref/check_train_output.py "$BUILD" "$TMP/finetune/final" "$TMP/scratch/final" \
    "$SHARED/models/TinyStories-656K+$TMP/lora/final" || fail=1

# the real pretrained base, when `make model` has fetched it: a LoRA run of tens of steps on a few hundred
# pairs lowers the held-out loss, PEFT on transformers' model of the same GGUF gives autoneg's NLL, and the
# llama.cpp-format adapter export reads back with the gguf package (tests/ref/check_smollm2_lora.py)
SMOL=${AN_CACHE:-$HOME/.cache/autoneg}/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$SMOL" ]; then
    echo "== SmolLM2-135M LoRA (about 3 minutes on 2 cores)"
    "$VENV/bin/pip" show gguf >/dev/null 2>&1 || "$VENV/bin/pip" install --quiet gguf
    "$BUILD/autoneg" train --base "$SMOL" --method lora --data datasets/sdxl_styles_twri.json --out "$TMP/smollm2" \
        --steps 12 --set lora.target_modules=all-linear --set train.seq_len=128 --set data.max_length=128 \
        --set train.batch_size=4 --set data.val_fraction=0.2 --set eval.every=6 --set optim.lr=0.002 \
        2>"$TMP/smollm2.log" || { cat "$TMP/smollm2.log"; fail=1; }
    "$PY" tests/ref/check_smollm2_lora.py "$BUILD" "$SMOL" "$TMP/smollm2" || fail=1
    "$PY" -c "import llama_cpp" 2>/dev/null || {
        echo "== installing llama-cpp-python (it builds llama.cpp from source: several minutes)"
        "$VENV/bin/pip" install --quiet llama-cpp-python || true
    }
    if "$PY" -c "import llama_cpp" 2>/dev/null; then
        echo "== llama.cpp on autoneg's GGUF exports (about a minute)"
        "$PY" tests/ref/check_llamacpp.py "$BUILD" "$SMOL" "$TMP/smollm2" || fail=1
    else
        echo "== llama.cpp: FAILED (llama-cpp-python neither importable nor installable)"
        fail=1
    fi
else
    echo "== SmolLM2-135M: skipped ($SMOL absent; make model fetches it)"
fi

# the run's files (about 2 GB) go when all passed, and stay to be looked at when something failed
if [ $fail = 0 ]; then rm -rf "$TMP"; echo "check-compat: all passed"; else echo "check-compat: FAILED (files kept in $TMP)"; fi
exit $fail
