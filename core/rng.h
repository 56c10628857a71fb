#ifndef AN_RNG_H
#define AN_RNG_H
/* Random numbers that are repeatable across runs and thread counts.
 * an_rng is a small sequential generator (its state is one uint64, easy to checkpoint);
 * an_hash_uniform is counter-based, so a dropout mask can be regenerated in backward from (seed, index). */
#include <stdint.h>

typedef struct an_rng {
    uint64_t state;
} an_rng;

void an_rng_seed(an_rng *r, uint64_t seed);
uint64_t an_rng_u64(an_rng *r);
float an_rng_uniform(an_rng *r);          /* [0, 1) */
float an_rng_normal(an_rng *r);           /* N(0, 1), Box-Muller */
uint64_t an_rng_below(an_rng *r, uint64_t n); /* [0, n) without modulo bias */

/* Stateless: a uniform [0, 1) from (seed, counter): the splitmix64 output for state
 * seed ^ (counter * 0xD1B54A32D192ED03). Inline because dropout calls it once per element. */
static inline float an_hash_uniform(uint64_t seed, uint64_t counter) {
    uint64_t z = (seed ^ (counter * 0xD1B54A32D192ED03ull)) + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

#endif
