#!/bin/sh
# Load on autoneg serve with wrk (Debian's wrk): a mix of requests (bench/serve_load.lua: completions and
# chat, streamed or not, /v1/negatives; the base and three adapters) at 1, 4, 16 and 64 connections,
# SECONDS each, against 127.0.0.1. Prints per level: requests/s, latency p50/p99 (wrk's), generated
# tokens/s (from /metrics), failed requests (non-2xx, socket errors), and the server's RSS before and
# after every level (a leak shows as RSS growing level after level at the same load).
#   sh bench/serve_load.sh [SECONDS] [MODEL]
set -e
BUILD=${BUILD:-build}
SECS=${1:-10}
MODEL=${2:-${AN_SHARED:-../shared}/models/TinyStories-656K}
TMP=$(mktemp -d /tmp/autoneg-load-XXXXXX)
"$BUILD/autoneg" train --base "$MODEL" --method lora --data datasets/sdxl_styles_twri.json --out "$TMP/lora" --steps 1 \
    --set train.seq_len=64 --set data.max_length=64 --set train.batch_size=2 --set train.threads=1 2>"$TMP/train.log" ||
    { cat "$TMP/train.log"; exit 1; }
export AUTONEG_KEY=load-key
"$BUILD/autoneg" serve --model "$MODEL" --name base --adapter "a1=$TMP/lora/final" --adapter "a2=$TMP/lora/final" \
    --adapter "a3=$TMP/lora/final" --port 0 --api-key "$AUTONEG_KEY" --parallel 16 2>"$TMP/serve.log" &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf "$TMP"' EXIT
for _ in $(seq 200); do grep -q "ready:" "$TMP/serve.log" && break; kill -0 $PID || exit 1; sleep 0.1; done
PORT=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$TMP/serve.log")
URL=http://127.0.0.1:$PORT
rss() { awk '/VmRSS/ {print $2}' /proc/$PID/status; }
tokens() { curl -s -H "Authorization: Bearer $AUTONEG_KEY" "$URL/metrics" | awk '/^autoneg_generated_tokens_total/ {print $2}'; }
echo "autoneg serve on $MODEL, 16 slots, mix of 4 request kinds x 4 models, ${SECS} s per level"
printf "%-6s %10s %10s %10s %12s %8s %14s\n" conns "req/s" "p50 ms" "p99 ms" "gen tok/s" failed "RSS KiB"
for c in 1 4 16 64 64; do # 64 twice: the same load again, RSS should stay
    r0=$(rss); t0=$(tokens)
    wrk -t $([ $c -lt 4 ] && echo $c || echo 4) -c $c -d "${SECS}s" --timeout 60s --latency -s bench/serve_load.lua "$URL" >"$TMP/wrk.txt"
    t1=$(tokens); r1=$(rss)
    rps=$(awk '/Requests\/sec/ {print $2}' "$TMP/wrk.txt")
    p50=$(awk '$1=="50%" {print $2}' "$TMP/wrk.txt")
    p99=$(awk '$1=="99%" {print $2}' "$TMP/wrk.txt")
    bad=$(awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(",",""); n+=$4+$6+$8+$10} END {print n+0}' "$TMP/wrk.txt")
    printf "%-6s %10s %10s %10s %12.1f %8s %14s\n" $c "$rps" "$p50" "$p99" "$(echo "($t1 - $t0) / $SECS" | bc -l)" "$bad" "$r0 -> $r1"
done
kill -TERM $PID
wait $PID && echo "serve exited 0 on SIGTERM"
trap 'rm -rf "$TMP"' EXIT
