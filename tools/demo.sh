#!/bin/sh
# make demo: train configs/recipes/tiny-from-scratch.json (a small Llama and its BPE tokenizer, from
# nothing) on the MIT/CC0 style pairs in datasets/, evaluate it on the held-out split, and write
# negatives for a few prompts. About 5 minutes on 2 cores. Run from the repository root after `make`.
set -e
BUILD=${BUILD:-build}
OUT=${AN_DEMO_OUT:-runs/tiny-from-scratch}
AN=$BUILD/autoneg
# Sleep instead of spinning at OpenMP barriers: on a machine shared with other jobs, spinning threads
# make small models several times slower.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

start=$(date +%s)
echo "== 1/3 train: $AN train configs/recipes/tiny-from-scratch.json --out $OUT"
rm -rf "$OUT"
$AN train configs/recipes/tiny-from-scratch.json --out "$OUT"

echo
echo "== 2/3 evaluate on the held-out split (the groups the trainer held out: data.val_fraction 0.05, by source, seed 1,"
echo "        each template's {prompt} filled with 4 subjects from datasets/subjects.txt as in training)"
$AN data split datasets/sdxl_styles_mh.json datasets/sdxl_styles_horror.json datasets/sdxl_styles_twri.json \
    datasets/sdxl_styles_sai.json datasets/ai_horde_styles.json --subjects datasets/subjects.txt --subjects-per-pair 4 \
    --subject-seed 1 --out-dir "$OUT/split" --val 0.05 --by source --seed 1 2>/dev/null
# data clean drops the pairs with an empty negative, which the trainer leaves out too
$AN data clean "$OUT/split/val.jsonl" --out "$OUT/split/val.clean.jsonl" 2>/dev/null
$AN data clean "$OUT/split/train.jsonl" --out "$OUT/split/train.clean.jsonl" 2>/dev/null
$AN eval --model "$OUT/final" --data "$OUT/split/val.clean.jsonl" --train "$OUT/split/train.clean.jsonl" --max-tokens 40

echo
echo "== 3/3 negatives for new prompts: $AN generate --model $OUT/final --temperature 0 --repeat-penalty 1.4"
$AN generate --model "$OUT/final" --temperature 0 --repeat-penalty 1.4 --max-tokens 40 \
    --prompt "husky with heterochromia" --prompt "apocalypse" --prompt "Mercedes-Benz, AMG" \
    --prompt "a watercolor of a lighthouse at dawn"

end=$(date +%s)
echo
echo "demo: done in $((end - start)) s. Run folder: $OUT (metrics.jsonl, loss.svg, events for TensorBoard, final/)"
