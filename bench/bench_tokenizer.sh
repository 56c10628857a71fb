#!/bin/sh
# Encode speed, one thread, of autoneg's tokenizers next to HF tokenizers and sentencepiece on the
# same prompt text (civitai prompts and negatives from ../shared, never copied into the repo).
#   sh bench/bench_tokenizer.sh [MB] [REPS]      (defaults: 4 MB, 5 repetitions; run after `make`)
# Times are process CPU time (one thread; robust when the machine is shared).
# Prints the median MB/s with min..max per tool, the token count (which must agree), and the ratio.
set -e
MB=${1:-4}
REPS=${2:-5}
SHARED=${AN_SHARED:-../shared}
PY=${PYTHON:-python3}
BUILD=${BUILD:-build}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1

"$PY" - "$SHARED/data/real-pairs/civitai-sfw/train.jsonl.gz" "$MB" > "$TMP/text.txt" <<'PYEOF'
import gzip, json, sys
limit, n = float(sys.argv[2]) * 1e6, 0
out = sys.stdout
for line in gzip.open(sys.argv[1], "rt", encoding="utf-8"):
    d = json.loads(line)
    for f in ("prompt", "negative_prompt"):
        s = d[f].replace("\r", " ").replace("\n", " ")
        out.write(s + "\n")
        n += len(s.encode()) + 1
    if n >= limit:
        break
PYEOF
${CC:-cc} -O3 -march=native -std=c11 -D_GNU_SOURCE -I. bench/bench_tokenizer.c "$BUILD/libautoneg.a" -lcjson -lz -lm \
    -o "$TMP/bench_tokenizer"

summary() { # name file
    sort -n "$2" | awk -v name="$1" '{v[NR]=$1; ids=$2} END {
        printf "%-24s median %8.2f MB/s  (min %.2f, max %.2f)  %d ids\n", name, v[int((NR+1)/2)], v[1], v[NR], ids }'
}
median() { sort -n "$1" | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

run() { # label autoneg-path ref-kind ref-path ref-label
    "$TMP/bench_tokenizer" "$2" "$TMP/text.txt" "$REPS" > "$TMP/a.txt"
    "$PY" bench/bench_tokenizer.py "$3" "$4" "$TMP/text.txt" "$REPS" > "$TMP/b.txt"
    echo "== $1 ($(wc -c < "$TMP/text.txt") bytes, $(wc -l < "$TMP/text.txt") lines, $REPS reps)"
    summary "autoneg" "$TMP/a.txt"
    summary "$5" "$TMP/b.txt"
    awk -v a="$(median "$TMP/a.txt")" -v b="$(median "$TMP/b.txt")" 'BEGIN { printf "ratio autoneg / reference: %.2fx\n", a / b }'
}

T="$SHARED/data/tokenizers"
run "GPT-2 byte-level BPE" "$T/gpt2" hf-bytelevel "$T/gpt2" "HF tokenizers"
run "Llama 2 SentencePiece" "$T/llama2/tokenizer.model" spm "$T/llama2/tokenizer.model" "sentencepiece"
run "InternLM2 SentencePiece" "$T/internlm2/tokenizer_internlm2.model" spm "$T/internlm2/tokenizer_internlm2.model" "sentencepiece"
run "TinyStories tokenizer.json" "$SHARED/models/TinyStories-656K" hf-json "$SHARED/models/TinyStories-656K/tokenizer.json" "HF tokenizers"
