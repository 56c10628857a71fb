#ifndef AN_SPLIT_H
#define AN_SPLIT_H
/* `autoneg data split`: a train / validation split decided by a hash of each row's group, so rows
 * that share a group (one author, one style file) always land on the same side. */
#include <stdint.h>

#include "core/error.h"
#include "data/pairs/pairs.h"

typedef enum an_split_by {
    AN_SPLIT_BY_SOURCE = 0, /* the source field; rows without one fall back to their negative */
    AN_SPLIT_BY_NEGATIVE,
    AN_SPLIT_BY_PROMPT,
    AN_SPLIT_BY_PAIR
} an_split_by;

/* Whether a group goes to validation: a 64-bit hash of (seed, group) mapped to [0, 1) is below
 * val_frac. Stable across runs, platforms and input order. */
int an_split_is_val(const char *group, size_t len, double val_frac, uint64_t seed);

/* Appends each row of in to train or val. */
int an_pairs_split(const an_pairs *in, double val_frac, an_split_by by, uint64_t seed, an_pairs *train,
                   an_pairs *val, an_error *err);

#endif
