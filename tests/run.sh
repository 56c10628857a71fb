#!/bin/sh
# Runs each test binary given, shows its output, and adds up the "N passed, N failed" lines.
# A binary that crashes or prints no summary counts as one failure.
# Spin briefly, then sleep, when waiting for work: see wait_politely() in cli/main.c.
[ -n "${OMP_WAIT_POLICY:-}${GOMP_SPINCOUNT:-}" ] || export GOMP_SPINCOUNT=10000
total_pass=0
total_fail=0
bad=""
for t in "$@"; do
    name=$(basename "$t")
    out=$("$t" 2>&1)
    rc=$?
    printf '%s\n' "$out" | sed "s/^/$name: /"
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -n 1)
    if [ -z "$line" ]; then
        total_fail=$((total_fail + 1)); bad="$bad $name(rc=$rc, no summary)"
        continue
    fi
    p=$(echo "$line" | cut -d' ' -f1)
    f=$(echo "$line" | cut -d' ' -f3)
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
        total_fail=$((total_fail + 1)); bad="$bad $name(rc=$rc)"
    elif [ "$f" != 0 ]; then
        bad="$bad $name"
    fi
done
[ -n "$bad" ] && echo "failing:$bad"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ]
