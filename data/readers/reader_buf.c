/* JSON string output and UTF-8 checks used by the pair readers and writers. */
#include <stdlib.h>
#include <string.h>

#include "data/readers/reader.h"

int an_strbuf_put_json_string(an_strbuf *b, const char *s) {
    static const char hex[] = "0123456789abcdef";
    if (an_strbuf_putc(b, '"')) return -1;
    const char *run = s;
    for (const unsigned char *p = (const unsigned char *)s;; p++) {
        unsigned c = *p;
        if (c && c >= 0x20 && c != '"' && c != '\\') continue;
        if (an_strbuf_put(b, run, (size_t)((const char *)p - run))) return -1;
        if (!c) break;
        char esc[7] = {'\\', 0};
        size_t k = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            k = 6;
        }
        if (an_strbuf_put(b, esc, k)) return -1;
        run = (const char *)p + 1;
    }
    return an_strbuf_putc(b, '"');
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 when invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if (c == 0xED) len = 3, hi = 0x9F; /* no UTF-16 surrogates */
    else if (c >= 0xE1 && c <= 0xEF) len = 3;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) len = 4, hi = 0x8F; /* nothing past U+10FFFF */
    else return 0;
    if (n < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return len;
}

size_t an_utf8_check(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_seq(u + i, n - i);
        if (!k) return i;
        i += k;
    }
    return n;
}

char *an_utf8_replace(const char *s, size_t n, size_t *out_len) {
    an_strbuf b = {0};
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    if (an_strbuf_reserve(&b, n)) return NULL;
    while (i < n) {
        size_t k = u[i] < 0x80 ? 1 : utf8_seq(u + i, n - i);
        int bad = k == 0;
        if (bad ? an_strbuf_put(&b, "\xEF\xBF\xBD", 3) : an_strbuf_put(&b, s + i, k)) {
            an_strbuf_free(&b);
            return NULL;
        }
        i += bad ? 1 : k;
    }
    if (out_len) *out_len = b.n;
    return b.v;
}
