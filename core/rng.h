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

/* Stateless: a uniform [0, 1) from (seed, counter). */
float an_hash_uniform(uint64_t seed, uint64_t counter);

#endif
