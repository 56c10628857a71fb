#include "core/strbuf.h"

#include <stdlib.h>
#include <string.h>

int an_strbuf_reserve(an_strbuf *b, size_t extra) {
    if (b->n + extra + 1 <= b->cap) {
        b->v[b->n] = 0;
        return 0;
    }
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1) {
        if (cap > (size_t)-1 / 2) return -1;
        cap *= 2;
    }
    char *v = realloc(b->v, cap);
    if (!v) return -1;
    b->v = v;
    b->cap = cap;
    b->v[b->n] = 0;
    return 0;
}

int an_strbuf_put(an_strbuf *b, const char *s, size_t n) {
    if (an_strbuf_reserve(b, n)) return -1;
    if (n) memcpy(b->v + b->n, s, n);
    b->n += n;
    b->v[b->n] = 0;
    return 0;
}

int an_strbuf_str(an_strbuf *b, const char *s) { return an_strbuf_put(b, s, strlen(s)); }
int an_strbuf_putc(an_strbuf *b, char c) { return an_strbuf_put(b, &c, 1); }

int an_strbuf_rep(an_strbuf *b, char c, long n) {
    for (long i = 0; i < n; i++)
        if (an_strbuf_putc(b, c)) return -1;
    return 0;
}

void an_strbuf_free(an_strbuf *b) {
    free(b->v);
    b->v = NULL;
    b->n = b->cap = 0;
}
