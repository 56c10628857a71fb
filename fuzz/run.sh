#!/bin/sh
# make fuzz: builds every fuzz target (fuzz/fuzz.h) with clang's libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer in build-fuzz/, and runs each on its seed corpus (fuzz/corpus/NAME/) and
# its regression inputs. FUZZ_SECONDS (default 30) per target; or FUZZ_RUNS inputs per target with a
# fixed seed (CI: the same inputs on every run, so a red CI is a real, reproducible finding);
# FUZZ_TARGETS="NAME ..." runs only those. New
# interesting inputs go to build-fuzz/corpus/NAME/, findings to build-fuzz/findings/NAME/ with the
# command that reproduces them; a fixed finding is committed to fuzz/regressions/NAME/.
set -e
cd "$(dirname "$0")/.."
B=build-fuzz
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
if ! echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { (void)d; (void)n; return 0; }' |
    clang -x c - -fsanitize=fuzzer -o /tmp/an-fuzz-probe 2>/dev/null; then
    echo "fuzz: clang's libFuzzer runtime is missing (Debian: apt-get install clang libclang-rt-dev); skipped"
    exit 0
fi
# the target names, from the X-macro list in fuzz/fuzz.h (up to the blank line after it)
targets=$(sed -n '/define AN_FUZZ_TARGETS(X)/,/^$/p' fuzz/fuzz.h | grep -o 'X([a-z0-9_]*)' | sed 's/X(\(.*\))/\1/')
targets=${FUZZ_TARGETS:-$targets} # FUZZ_TARGETS="gguf pairs": only those
make -s BUILD=$B CC=clang OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link $SAN" $B/libautoneg.a \
    $(for f in fuzz/*.c; do [ "$f" = fuzz/libfuzzer_main.c ] || echo "$B/${f%.c}.o"; done)
objs=$(for f in fuzz/*.c; do [ "$f" = fuzz/libfuzzer_main.c ] || echo "$B/${f%.c}.o"; done)
LIBS="-lcjson -lz -lm -fopenmp -lmicrohttpd -lpthread"
[ -d /usr/lib/x86_64-linux-gnu/openblas-openmp ] && LIBS="$LIBS -L/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas"
export OMP_NUM_THREADS=1 # libgomp is not instrumented; one thread keeps the findings about our code
found=0
for t in $targets; do
    mkdir -p $B/fuzz/bin $B/corpus/$t $B/findings/$t fuzz/regressions/$t
    clang -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer $SAN -std=c11 -D_GNU_SOURCE -I. -DAN_FUZZ_TARGET=$t \
        fuzz/libfuzzer_main.c $objs $B/libautoneg.a $LIBS -o $B/fuzz/bin/$t
    if [ -n "${FUZZ_RUNS:-}" ]; then limit="-runs=$FUZZ_RUNS -seed=1"; else limit="-max_total_time=${FUZZ_SECONDS:-30}"; fi
    # shellcheck disable=SC2086
    if $B/fuzz/bin/$t $limit -timeout=10 -rss_limit_mb=2048 -artifact_prefix=$B/findings/$t/ \
        $B/corpus/$t fuzz/corpus/$t fuzz/regressions/$t > $B/fuzz/$t.log 2>&1; then
        echo "fuzz $t: $(grep -o 'Done [0-9]* runs' $B/fuzz/$t.log | tail -n 1 || echo done), no finding"
    else
        found=1
        echo "fuzz $t: FINDING, see $B/fuzz/$t.log; reproduce with $B/fuzz/bin/$t $(ls $B/findings/$t/* 2>/dev/null | head -n 1)"
        tail -n 30 $B/fuzz/$t.log
    fi
done
exit $found
