#ifndef AN_PAIRS_H
#define AN_PAIRS_H
/* Prompt pairs: a positive prompt and the negative prompt written for it, plus where it came from. */
#include <stddef.h>
#include "core/error.h"

typedef struct an_pair {
    char *prompt;
    char *negative;
    char *source; /* group field used by split (author, style file, ...); may be NULL */
} an_pair;

typedef struct an_pairs {
    an_pair *v;
    size_t n, cap;
} an_pairs;

/* Takes ownership copies of the strings. */
int an_pairs_add(an_pairs *p, const char *prompt, const char *negative, const char *source);
void an_pairs_free(an_pairs *p);

#endif
