#ifndef AN_STRBUF_H
#define AN_STRBUF_H
/* A growable byte string, NUL-terminated whenever v != NULL. Functions return 0, or -1 when out of
 * memory (the buffer then keeps what it had). Zero-initialise to start; an_strbuf_free to release. */
#include <stddef.h>

typedef struct an_strbuf {
    char *v;
    size_t n, cap;
} an_strbuf;

int an_strbuf_reserve(an_strbuf *b, size_t extra);
int an_strbuf_put(an_strbuf *b, const char *s, size_t n);
int an_strbuf_str(an_strbuf *b, const char *s);
int an_strbuf_putc(an_strbuf *b, char c);
int an_strbuf_rep(an_strbuf *b, char c, long n); /* c, n times */
void an_strbuf_free(an_strbuf *b);

#endif
