#!/usr/bin/env bash
# Two builds of autoneg against each other, measured in the same run, alternating: before and after a
# change (issue 12 asked for this with the backend refactor). Usage:
#   bench/ab.sh OLD_AUTONEG NEW_AUTONEG [REPEATS]
# e.g. build the old commit in a worktree (git worktree add /tmp/old COMMIT; make -C /tmp/old) and
#   bash bench/ab.sh /tmp/old/build/autoneg build/autoneg 5
# Each repeat runs old then new (then new then old on the next repeat, so drift falls on both) for:
# bench train llama-60m 4 x 256 full / lora / qlora, and bench generate llama-60m batch 1 and 16.
# Prints the JSON lines and, per case, each side's median tokens/s and the median of the paired
# new/old ratios with their range. Standard tools and python3 only.
# PRESET (default llama-60m) picks the model shape; CASES (an extended regex, default all) keeps the
# cases it matches, e.g. PRESET=smollm2-135m CASES='method lora' for LoRA on SmolLM2's shape.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1
NEW=$2
REPEATS=${3:-5}
OUT=/tmp/autoneg-bench-ab.jsonl
: > "$OUT"
P=${PRESET:-llama-60m}
all=("train --preset $P --batch 4 --seq 256 --steps 3 --method full --json"
     "train --preset $P --batch 4 --seq 256 --steps 3 --method lora --json"
     "train --preset $P --batch 4 --seq 256 --steps 3 --method qlora --json"
     "generate --preset $P --batch 1 --tokens 64 --json"
     "generate --preset $P --batch 16 --tokens 64 --json")
cases=()
for c in "${all[@]}"; do
    if [[ $c =~ ${CASES:-.} ]]; then cases+=("$c"); fi
done
[ ${#cases[@]} -gt 0 ] || { echo "ab.sh: CASES '${CASES:-}' matches no case" >&2; exit 2; }
for i in $(seq "$REPEATS"); do
    for c in "${cases[@]}"; do
        if [ $((i % 2)) = 1 ]; then order="old new"; else order="new old"; fi
        for side in $order; do
            bin=$OLD
            [ "$side" = new ] && bin=$NEW
            # bench generate prints one JSON line per batch; bench train one per run
            "$bin" bench $c 2>/dev/null | grep '^{' | sed "s/^{/{\"side\": \"$side\", \"case\": \"$c\", /" >> "$OUT"
        done
    done
done
python3 - "$OUT" <<'PY'
import collections, json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = collections.OrderedDict()
for r in rows:
    by.setdefault(r["case"], {"old": [], "new": []})[r["side"]].append(r["tokens_per_s"])
for case, s in by.items():
    o, n = s["old"], s["new"]
    ratios = [b / a for a, b in zip(o, n)]
    print(f"{case}\n  old {statistics.median(o):8.1f} tokens/s  new {statistics.median(n):8.1f} tokens/s  "
          f"new/old paired median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}, n={len(ratios)})")
PY
