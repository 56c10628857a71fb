#include "data/pairs/split.h"

#include <stdlib.h>
#include <string.h>

#include "data/pairs/stats_strmap.h"

/* splitmix64's finaliser: FNV-1a alone mixes its last bytes poorly into the high bits. */
static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

int an_split_is_val(const char *group, size_t len, double val_frac, uint64_t seed) {
    uint64_t h = mix64(an_hash_bytes(group, len) ^ mix64(seed + 0x9e3779b97f4a7c15ull));
    double u = (double)(h >> 11) * (1.0 / 9007199254740992.0);
    return u < val_frac;
}

int an_pairs_split(const an_pairs *in, double val_frac, an_split_by by, uint64_t seed, an_pairs *train,
                   an_pairs *val, an_error *err) {
    if (!(val_frac >= 0 && val_frac <= 1)) return an_fail(err, "data split: --val %g is not in [0, 1]", val_frac);
    for (size_t i = 0; i < in->n; i++) {
        const an_pair *e = &in->v[i];
        const char *g;
        size_t gl;
        char *tmp = NULL;
        switch (by) {
        case AN_SPLIT_BY_SOURCE: g = e->source ? e->source : e->negative; break;
        case AN_SPLIT_BY_NEGATIVE: g = e->negative; break;
        case AN_SPLIT_BY_PROMPT: g = e->prompt; break;
        default: {
            size_t a = strlen(e->prompt), b = strlen(e->negative);
            if (!(tmp = malloc(a + b + 2))) return an_fail(err, "data split: out of memory");
            memcpy(tmp, e->prompt, a);
            tmp[a] = 0x1f;
            memcpy(tmp + a + 1, e->negative, b + 1);
            g = tmp;
        }
        }
        gl = strlen(g);
        an_pairs *to = an_split_is_val(g, gl, val_frac, seed) ? val : train;
        free(tmp);
        if (an_pairs_add(to, e->prompt, e->negative, e->source)) return an_fail(err, "data split: out of memory");
    }
    return 0;
}
