#!/usr/bin/env bash
# Data parallel over MPI on this machine: llama-60m full fine-tuning (random weights, the TinyStories
# tokenizer, real prompt pairs), 2 ranks x 1 OpenMP thread against 1 process x 2 threads, the same
# recipe and global batch, alternating, REPEATS times each. Prints tokens/s of each run (steps 2 to the
# last: the first step pays for first-touch allocations), the median and spread of each and their
# ratio, and rank 0's time in collectives per step for the 2-rank runs.
#   bench/mpi.sh [REPEATS] [STEPS]      (needs make MPI=1 BUILD=build-mpi; docs/distributed.md)
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${1:-3}
STEPS=${2:-4}
make -s MPI=1 BUILD=build-mpi build-mpi/autoneg
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/recipe.json" <<JSON
{"model": {"method": "full"}, "model_config": "llama-60m",
 "tokenizer": {"path": "${AN_SHARED:-../shared}/models/TinyStories-656K"},
 "data": {"train": ["${AN_SHARED:-../shared}/data/sdxl-prompt-styler/sdxl_styles_twri.json"], "max_length": 128},
 "optim": {"lr": 0.0003}, "schedule": {"type": "constant"},
 "train": {"batch_size": 4, "seq_len": 128, "steps": $STEPS, "seed": 1}, "eval": {"every": 0}}
JSON
# tokens/s over steps 2..last from metrics.jsonl (tokens and elapsed_s of each step)
rate() {
    python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if "\"loss\"" in l]
print((rows[-1]["tokens"] - rows[0]["tokens"]) / (rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]))' "$1"
}
: > "$tmp/results"
for i in $(seq "$REPEATS"); do
    rm -rf "$tmp/two" "$tmp/one"
    OMP_NUM_THREADS=1 nice mpirun --allow-run-as-root --oversubscribe -np 2 build-mpi/autoneg train "$tmp/recipe.json" \
        --out "$tmp/two" 2> "$tmp/two.log"
    comm=$(sed -n 's/.*rank 0 spent \([0-9.]*\) s per step in collectives.*/\1/p' "$tmp/two.log")
    OMP_NUM_THREADS=2 nice build-mpi/autoneg train "$tmp/recipe.json" --out "$tmp/one" --set train.threads=2 2> "$tmp/one.log"
    r2=$(rate "$tmp/two/metrics.jsonl") r1=$(rate "$tmp/one/metrics.jsonl")
    echo "repeat $i: 2 ranks x 1 thread $r2 tok/s (rank 0: $comm s per step in collectives); 1 rank x 2 threads $r1 tok/s"
    echo "$r2 $r1 $comm" >> "$tmp/results"
done
python3 - "$tmp/results" "$STEPS" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
steps = int(sys.argv[2])
def show(name, v): print(f"{name}: median {statistics.median(v):.1f}, spread {min(v):.1f}..{max(v):.1f}")
two, one, comm = [r[0] for r in rows], [r[1] for r in rows], [r[2] * 1000 for r in rows]
show("2 ranks x 1 thread, tok/s", two)
show("1 rank x 2 threads, tok/s", one)
show("collectives per step on rank 0, ms", comm)
ratio = [a / b for a, b in zip(two, one)]
print("(collectives: rank 0's time inside them during the steps, waits for the slower rank included)")
print(f"ratio 2 ranks / 1 rank: median {statistics.median(ratio):.3f}, spread {min(ratio):.3f}..{max(ratio):.3f}")
PY
