#!/usr/bin/env bash
# Prompt processing (pp512) and single-sequence decoding (tg128) on GGUF files, autoneg against
# llama.cpp's llama-bench on the same file, same threads, alternating run by run, in one invocation.
#   LLAMA_BENCH=/path/to/llama-bench bench/gguf_llamacpp.sh [REPEATS] F.gguf...
# (or the llama-bench path as the first argument). llama.cpp is not part of autoneg: build it yourself,
# e.g. from PyPI's llama-cpp-python sdist (vendor/llama.cpp, cmake -DGGML_NATIVE=ON, target
# llama-bench). Threads: OMP_NUM_THREADS (default 2) on both sides; LLAMA_BENCH_ARGS adds options to
# llama-bench (e.g. "--poll 0" with OMP_WAIT_POLICY=passive: neither side spin-waits, which matters on
# a machine shared with other jobs). For each file and test it prints
# both tools' median tokens/s with min..max over the repeats, the ratio of the medians (autoneg /
# llama.cpp) and the median (min..max) of each round's own ratio, and the fraction of the measured
# memory bandwidth autoneg's decoding reaches.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -gt 0 ] && [ -x "$1" ] && [[ "$1" == *llama-bench* ]]; then LLAMA_BENCH=$1; shift; fi
: "${LLAMA_BENCH:?set LLAMA_BENCH to the path of llama-bench (or pass it first)}"
REPEATS=5
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then REPEATS=$1; shift; fi
[ $# -gt 0 ] || { echo "usage: LLAMA_BENCH=... bench/gguf_llamacpp.sh [REPEATS] F.gguf..." >&2; exit 2; }
THREADS=${OMP_NUM_THREADS:-2}
export OMP_NUM_THREADS=$THREADS
# OpenBLAS 0.3.21 takes some virtual CPUs for a Prescott (SSE3) and runs its sgemm 4x slower there
# (OPENBLAS_VERBOSE=2 prints the core it chose); llama.cpp uses the CPU's AVX2 / AVX-512 either way,
# so unless told otherwise name the core the CPU's flags say it is.
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
    if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX
    elif grep -qw avx2 /proc/cpuinfo; then export OPENBLAS_CORETYPE=Haswell; fi
    [ -n "${OPENBLAS_CORETYPE:-}" ] && echo "OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE (from /proc/cpuinfo)"
fi
BUILD=${BUILD:-build}
make -s "$BUILD/libautoneg.a"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
${CC:-cc} -O3 -march=native -std=c11 -D_GNU_SOURCE -fopenmp -I. bench/bench_gguf.c "$BUILD/libautoneg.a" -lcjson -lz -lm \
    -L/usr/lib/x86_64-linux-gnu/openblas-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas \
    -o "$TMP/bench_gguf"
OUT=$TMP/runs.jsonl
for f in "$@"; do
    for i in $(seq "$REPEATS"); do
        # autoneg: one process gives pp512 and tg128, then measures the read bandwidth (every round: the
        # machine's speed drifts, and the fraction below uses the best of them)
        AN_BENCH_BW=1 "$TMP/bench_gguf" "$f" keep 512 128 |
            sed "s|^{|{\"file\": \"$f\", |" >> "$OUT"
        "$LLAMA_BENCH" -m "$f" -p 512 -n 128 -t "$THREADS" -r 1 ${LLAMA_BENCH_ARGS:-} -o jsonl 2>/dev/null |
            sed "s|^{|{\"file\": \"$f\", \"tool\": \"llama.cpp\", |" >> "$OUT"
    done
done
python3 - "$OUT" "$THREADS" <<'PYEOF'
import json, sys, statistics
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
files = list(dict.fromkeys(r["file"] for r in runs))
print(f"threads {sys.argv[2]}, {len(runs) // max(1, 3 * len(files))} alternating rounds per file")
def stat(v):
    return statistics.median(v), min(v), max(v)
for f in files:
    an = [r for r in runs if r["file"] == f and r["tool"] == "autoneg"]
    lc = [r for r in runs if r["file"] == f and r["tool"] == "llama.cpp"]
    print(f"{f}:")
    for test, key, ngen in (("pp512", "pp_tps", 0), ("tg128", "tg_tps", 128)):
        av = [r[key] for r in an]
        lv = [r["avg_ts"] for r in lc if (r["n_gen"] > 0) == (ngen > 0)]
        a, l = stat(av), stat(lv)
        # each round's two runs are next to each other in time: their ratio cancels the machine's drift
        p = stat([x / y for x, y in zip(av, lv)])
        print(f"  {test}: autoneg {a[0]:8.2f} t/s ({a[1]:.2f}..{a[2]:.2f})   llama.cpp {l[0]:8.2f} t/s "
              f"({l[1]:.2f}..{l[2]:.2f})   ratio of medians {a[0] / l[0]:.2f}x, "
              f"per round {p[0]:.2f}x ({p[1]:.2f}..{p[2]:.2f})")
    bw = [r for r in an if r.get("bandwidth_gbs", 0) > 0]
    if bw:
        r = max(bw, key=lambda x: x["bandwidth_gbs"])
        tg = stat([x["tg_tps"] for x in an])[0]
        print(f"  decoding reads {r['weight_mb_per_step']:.1f} MB of weights a token: {tg * r['weight_mb_per_step'] / 1e3:.2f} GB/s "
              f"of {r['bandwidth_gbs']:.2f} GB/s measured (best of {len(bw)}: "
              f"{tg * r['weight_mb_per_step'] / 1e3 / r['bandwidth_gbs']:.0%})")
PYEOF
