#ifndef AN_IDS_H
#define AN_IDS_H
/* A growable array of token ids. */
#include <stddef.h>
#include <stdint.h>

typedef struct an_ids {
    int32_t *v;
    size_t n, cap;
} an_ids;

int an_ids_push(an_ids *a, int32_t id); /* 0, or -1 when out of memory */
int an_ids_append(an_ids *a, const int32_t *ids, size_t n);
void an_ids_free(an_ids *a);

#endif
