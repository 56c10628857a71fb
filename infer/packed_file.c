/* Varints, little-endian header fields and the deflated payload of the retrieval files (packed_file.h). */
#include "infer/packed_file.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

int an_packed_put_varint(an_strbuf *b, uint64_t v) {
    char c[10];
    int n = 0;
    do {
        c[n++] = (char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return an_strbuf_put(b, c, (size_t)n);
}

void an_packed_put_le(unsigned char *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
}

uint64_t an_packed_get_le(const unsigned char *p, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

int an_packed_get_varint(an_packed_reader *r, uint64_t *v) {
    *v = 0;
    for (int shift = 0; shift < 64 && r->p < r->end; shift += 7) {
        unsigned char c = *r->p++;
        if (shift == 63 && (c & 0x7e)) return -1; /* more than 64 bits */
        *v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) return 0;
    }
    return -1; /* cut short or too long */
}

unsigned char *an_packed_deflate(const an_strbuf *b, size_t header, size_t *packed) {
    size_t raw = b->n - header;
    uLongf n = compressBound((uLong)raw);
    unsigned char *h = malloc(header + n);
    if (!h || compress2(h + header, &n, (const Bytef *)b->v + header, (uLong)raw, 6) != Z_OK) {
        free(h);
        return NULL;
    }
    memset(h, 0, header);
    *packed = (size_t)n;
    return h;
}
