#!/bin/sh
# autoneg serve against llama.cpp's llama-server on the same GGUF, same threads, same requests
# (bench/serve_client.py: streamed /v1/completions, short SD prompts, max_tokens 32, temperature 0,
# seed 1) at 1, 4, 16 and 64 concurrent clients, SECONDS per measurement, ROUNDS rounds. Both servers
# run with SLOTS slots and THREADS threads (autoneg: OMP_NUM_THREADS), 256 positions per slot; they stay
# up, the idle one waits while the other is measured, and the order alternates from round to round.
# LLAMA_T1=1 adds llama-server with one thread as a third peer (see docs/serving.md, "Speed": ggml's
# threads spin at barriers, which collapses when the two cores are shared). Then autoneg alone at 16
# clients with every request on one adapter against requests spread over four (four PEFT adapters
# made by one-step LoRA runs). Prints the median and spread (min..max) over rounds, and the ratios.
#   sh bench/serve_llamacpp.sh LLAMA_SERVER [MODEL] [SECONDS] [ROUNDS]
# llama.cpp is not part of autoneg: build its llama-server yourself and pass its path.
set -e
LLAMA=${1:?usage: sh bench/serve_llamacpp.sh LLAMA_SERVER [MODEL] [SECONDS] [ROUNDS]}
MODEL=${2:-$HOME/.cache/autoneg/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}
SECS=${3:-10}
ROUNDS=${4:-3}
BUILD=${BUILD:-build}
THREADS=${THREADS:-2}
SLOTS=${SLOTS:-16}
LEVELS=${LEVELS:-1 4 16 64}
[ -x "$LLAMA" ] || { echo "serve_llamacpp.sh: $LLAMA: not an executable llama-server" >&2; exit 1; }
[ -f "$MODEL" ] || { echo "serve_llamacpp.sh: $MODEL: no such model file" >&2; exit 1; }
TMP=$(mktemp -d /tmp/autoneg-vs-llama-XXXXXX)
PIDS=""
trap 'for p in $PIDS; do kill $p 2>/dev/null; done; rm -rf "$TMP"' EXIT
OUT=${OUT:-$TMP/results.jsonl}
: >"$OUT"

for i in 1 2 3 4; do # four different adapters: one LoRA step each from its own seed
    OMP_NUM_THREADS=$THREADS "$BUILD/autoneg" train --base "$MODEL" --method lora --data datasets/sdxl_styles_twri.json \
        --out "$TMP/a$i" --steps 1 --set train.seq_len=64 --set data.max_length=64 --set train.batch_size=2 \
        --set train.threads="$THREADS" --set train.seed=$((100 + i)) >"$TMP/train$i.log" 2>&1 ||
        { cat "$TMP/train$i.log"; exit 1; }
done

OMP_NUM_THREADS=$THREADS "$BUILD/autoneg" serve --model "$MODEL" --name base --port 0 --parallel "$SLOTS" --ctx 256 \
    --adapter "a1=$TMP/a1/final" --adapter "a2=$TMP/a2/final" --adapter "a3=$TMP/a3/final" \
    --adapter "a4=$TMP/a4/final" 2>"$TMP/autoneg.log" &
PIDS="$PIDS $!"
for _ in $(seq 600); do grep -q "ready:" "$TMP/autoneg.log" && break; sleep 0.1; done
grep -q "ready:" "$TMP/autoneg.log" || { cat "$TMP/autoneg.log"; exit 1; }
AN=http://127.0.0.1:$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$TMP/autoneg.log")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start_llama() { # threads -> URL on stdout
    port=$(free_port)
    # -c is the whole context, split over the slots: 256 positions per slot, as autoneg's --ctx
    "$LLAMA" -m "$MODEL" --host 127.0.0.1 --port "$port" -t "$1" -np "$SLOTS" -c $((256 * SLOTS)) \
        >"$TMP/llama-t$1.log" 2>&1 &
    echo "$! http://127.0.0.1:$port"
}
wait_health() {
    for _ in $(seq 600); do curl -sf "$1/health" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "serve_llamacpp.sh: $1 never became healthy" >&2; exit 1
}
set -- $(start_llama "$THREADS"); PIDS="$PIDS $1"; LL=$2
SERVERS="autoneg=$AN llama-t$THREADS=$LL"
if [ "${LLAMA_T1:-0}" = 1 ]; then
    set -- $(start_llama 1); PIDS="$PIDS $1"; SERVERS="$SERVERS llama-t1=$2"
fi
wait_health "$LL"
[ "${LLAMA_T1:-0}" = 1 ] && wait_health "${SERVERS##*=}"

measure() { # name url clients models
    python3 bench/serve_client.py --url "$2" --clients "$3" --seconds "$SECS" --models "$4" --label "$1" >>"$OUT"
    wait_idle
}
cpu_ticks() { for p in $PIDS; do cut -d' ' -f14,15 /proc/$p/stat; done | awk '{n += $1 + $2} END {print n}'; }
wait_idle() { # until the servers together use under 10 % of a core (cancelled generations have ended), 60 s at most
    for i in $(seq 120); do
        t0=$(cpu_ticks); sleep 0.5; t1=$(cpu_ticks)
        [ $((t1 - t0)) -lt 5 ] && { [ "$i" -gt 2 ] && echo "  (waited $i x 0.5 s for the servers to go idle)" >&2; return 0; }
    done
    echo "  (servers still busy after 60 s)" >&2
}
rotate() { echo "$1" | awk -v r="$2" '{n=NF; for (i=0;i<n;i++) printf "%s ", $(((i+r)%n)+1); print ""}'; }

echo "warm-up: one request each" >&2
wait_idle
for s in $SERVERS; do python3 bench/serve_client.py --url "${s#*=}" --clients 1 --seconds 2 --label warmup >/dev/null; done
for r in $(seq "$ROUNDS"); do
    for c in $LEVELS; do
        for s in $(rotate "$SERVERS" "$r"); do
            echo "round $r, $c clients, ${s%%=*}" >&2
            measure "${s%%=*}" "${s#*=}" "$c" ""
        done
    done
    for m in $([ $((r % 2)) = 1 ] && echo "one four" || echo "four one"); do
        echo "round $r, 16 clients, autoneg adapters: $m" >&2
        if [ "$m" = one ]; then measure adapters-1 "$AN" 16 a1; else measure adapters-4 "$AN" 16 a1,a2,a3,a4; fi
    done
done
python3 bench/serve_llamacpp_summary.py "$OUT" "llama-t$THREADS"
