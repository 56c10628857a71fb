#ifndef AN_ZIP_H
#define AN_ZIP_H
/* Reading zip archives in memory: the central directory is parsed here, members are inflated by
 * zlib through an_stream_open_zip_member. ZIP64 records are read; encrypted members and multi-disk
 * archives are refused with a message. */
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct an_zip_member {
    char *name;
    int method;                     /* 0 stored, 8 deflate */
    uint32_t crc;
    uint64_t csize, usize;
    const unsigned char *data;      /* compressed bytes inside the archive */
} an_zip_member;

typedef struct an_zip {
    an_zip_member *m;
    size_t n;
} an_zip;

/* Parses the archive in data[0..size); path names it in messages. Members point into data. */
int an_zip_open(an_zip *z, const unsigned char *data, size_t size, const char *path, an_error *err);
void an_zip_free(an_zip *z);

#endif
