#ifndef AN_STATS_STRMAP_H
#define AN_STATS_STRMAP_H
/* A string -> count hash map (open addressing, owned key copies) for distinct counts, tag counts and
 * duplicate detection in data stats and data clean. */
#include <stddef.h>
#include <stdint.h>

typedef struct an_strmap {
    char **keys;
    size_t *lens, *vals;
    size_t cap, n;
} an_strmap;

/* Finds or inserts key[0..len); *val points at its count (0 when new). Returns 1 inserted, 0 found,
 * -1 out of memory. */
int an_strmap_get(an_strmap *m, const char *key, size_t len, size_t **val);
void an_strmap_free(an_strmap *m);
uint64_t an_hash_bytes(const void *p, size_t n); /* FNV-1a 64 */

#endif
