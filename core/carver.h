/* Many buffers carved from one allocation: a layout function runs twice, first with base NULL to
 * measure the total, then over the allocated block to hand out the pointers. Each piece starts on
 * a 64-byte boundary, so vector loads and cache lines never straddle two buffers. */
#ifndef AN_CORE_CARVER_H
#define AN_CORE_CARVER_H

#include <stddef.h>

typedef struct an_carver {
    char *base; /* NULL while measuring */
    size_t off;
} an_carver;

static inline void *an_carve(an_carver *c, size_t n, size_t elem) {
    size_t bytes = (n * elem + 63) / 64 * 64;
    void *p = c->base ? c->base + c->off : NULL;
    c->off += bytes;
    return p;
}

#endif
