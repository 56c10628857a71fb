#include "data/pairs/stats_strmap.h"

#include <stdlib.h>
#include <string.h>

uint64_t an_hash_bytes(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
    return h;
}

static int grow(an_strmap *m) {
    size_t cap = m->cap ? m->cap * 2 : 1024;
    char **keys = calloc(cap, sizeof *keys);
    size_t *lens = calloc(cap, sizeof *lens), *vals = calloc(cap, sizeof *vals);
    if (!keys || !lens || !vals) {
        free(keys), free(lens), free(vals);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i]) continue;
        size_t j = an_hash_bytes(m->keys[i], m->lens[i]) & (cap - 1);
        while (keys[j]) j = (j + 1) & (cap - 1);
        keys[j] = m->keys[i], lens[j] = m->lens[i], vals[j] = m->vals[i];
    }
    free(m->keys), free(m->lens), free(m->vals);
    m->keys = keys, m->lens = lens, m->vals = vals, m->cap = cap;
    return 0;
}

int an_strmap_get(an_strmap *m, const char *key, size_t len, size_t **val) {
    if ((m->n + 1) * 2 > m->cap && grow(m)) return -1;
    size_t j = an_hash_bytes(key, len) & (m->cap - 1);
    for (; m->keys[j]; j = (j + 1) & (m->cap - 1)) {
        if (m->lens[j] == len && !memcmp(m->keys[j], key, len)) {
            *val = &m->vals[j];
            return 0;
        }
    }
    char *k = malloc(len + 1);
    if (!k) return -1;
    memcpy(k, key, len);
    k[len] = 0;
    m->keys[j] = k, m->lens[j] = len, m->vals[j] = 0;
    m->n++;
    *val = &m->vals[j];
    return 1;
}

void an_strmap_free(an_strmap *m) {
    for (size_t i = 0; i < m->cap; i++) free(m->keys[i]);
    free(m->keys), free(m->lens), free(m->vals);
    memset(m, 0, sizeof *m);
}
