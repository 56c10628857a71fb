#include "core/rng.h"

#include <math.h>

/* splitmix64: a full-period 64-bit generator whose whole state is one word. */
static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void an_rng_seed(an_rng *r, uint64_t seed) { r->state = seed; }
uint64_t an_rng_u64(an_rng *r) { return splitmix64(&r->state); }
float an_rng_uniform(an_rng *r) { return (float)(an_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

float an_rng_normal(an_rng *r) {
    float u1 = an_rng_uniform(r), u2 = an_rng_uniform(r);
    if (u1 < 1e-12f) u1 = 1e-12f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864f * u2);
}

uint64_t an_rng_below(an_rng *r, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = an_rng_u64(r);
    while (x >= limit);
    return x % n;
}
