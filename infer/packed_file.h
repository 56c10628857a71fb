#ifndef AN_PACKED_FILE_H
#define AN_PACKED_FILE_H
/* The pieces of the retrieval files (infer/retrieval.h, infer/retrieval_pairs.h): a fixed header of
 * little-endian integers, then a zlib-deflated payload of unsigned LEB128 varints and strings. */
#include <stddef.h>
#include <stdint.h>

#include "core/strbuf.h"

int an_packed_put_varint(an_strbuf *b, uint64_t v);
void an_packed_put_le(unsigned char *p, uint64_t v, int bytes);
uint64_t an_packed_get_le(const unsigned char *p, int bytes);

typedef struct an_packed_reader {
    const unsigned char *p, *end;
} an_packed_reader;

/* 0, or -1 when the varint is cut short by the end or holds more than 64 bits. */
int an_packed_get_varint(an_packed_reader *r, uint64_t *v);

/* b's bytes after its first header bytes, deflated: a malloc'd buffer of header + *packed bytes,
 * the header zeroed for the caller to fill; NULL when out of memory. */
unsigned char *an_packed_deflate(const an_strbuf *b, size_t header, size_t *packed);

#endif
