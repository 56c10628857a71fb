#include "data/tokenizers/ids.h"

#include <stdlib.h>
#include <string.h>

static int reserve(an_ids *a, size_t need) {
    if (need <= a->cap) return 0;
    size_t cap = a->cap ? a->cap : 16;
    while (cap < need) cap *= 2;
    int32_t *v = realloc(a->v, cap * sizeof *v);
    if (!v) return -1;
    a->v = v;
    a->cap = cap;
    return 0;
}

int an_ids_push(an_ids *a, int32_t id) {
    if (reserve(a, a->n + 1)) return -1;
    a->v[a->n++] = id;
    return 0;
}

int an_ids_append(an_ids *a, const int32_t *ids, size_t n) {
    if (reserve(a, a->n + n)) return -1;
    if (n) memcpy(a->v + a->n, ids, n * sizeof *ids);
    a->n += n;
    return 0;
}

void an_ids_free(an_ids *a) {
    free(a->v);
    a->v = NULL;
    a->n = a->cap = 0;
}
