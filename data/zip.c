/* Zip central directory (APPNOTE.TXT sections 4.3.7, 4.3.12, 4.3.16). Every offset and size read
 * from the archive is checked against the archive size before it is used. */
#include "data/zip.h"

#include <stdlib.h>
#include <string.h>

static uint32_t rd16(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t rd32(const unsigned char *p) { return rd16(p) | rd16(p + 2) << 16; }

#define EOCD_SIG 0x06054b50u
#define CDIR_SIG 0x02014b50u
#define LOCAL_SIG 0x04034b50u

void an_zip_free(an_zip *z) {
    for (size_t i = 0; i < z->n; i++) free(z->m[i].name);
    free(z->m);
    z->m = NULL;
    z->n = 0;
}

int an_zip_open(an_zip *z, const unsigned char *d, size_t size, const char *path, an_error *err) {
    z->m = NULL;
    z->n = 0;
    if (size < 22) return an_fail(err, "%s: not a zip archive (%zu bytes, no end-of-directory record)", path, size);
    /* The end record sits at the end, after a comment of up to 65535 bytes. */
    size_t lo = size > 22 + 65535 ? size - 22 - 65535 : 0, eocd = (size_t)-1;
    for (size_t i = size - 22 + 1; i-- > lo;) {
        if (rd32(d + i) == EOCD_SIG && i + 22 + rd16(d + i + 20) == size) {
            eocd = i;
            break;
        }
    }
    if (eocd == (size_t)-1) return an_fail(err, "%s: not a zip archive or truncated (no end-of-directory record)", path);
    const unsigned char *e = d + eocd;
    uint32_t disk = rd16(e + 4), cd_disk = rd16(e + 6), n_here = rd16(e + 8), n_total = rd16(e + 10);
    uint32_t cd_size = rd32(e + 12), cd_off = rd32(e + 16);
    if (disk || cd_disk || n_here != n_total) return an_fail(err, "%s: multi-disk zip archives are not supported", path);
    if (n_total == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu)
        return an_fail(err, "%s: ZIP64 archives are not supported", path);
    if ((uint64_t)cd_off + cd_size > eocd)
        return an_fail(err, "%s: central directory (offset %u, %u bytes) runs past its end record: corrupt zip", path,
                       cd_off, cd_size);
    z->m = calloc(n_total ? n_total : 1, sizeof *z->m);
    if (!z->m) return an_fail(err, "%s: out of memory", path);
    size_t p = cd_off, end = (size_t)cd_off + cd_size;
    for (uint32_t i = 0; i < n_total; i++) {
        if (p + 46 > end || rd32(d + p) != CDIR_SIG) {
            an_fail(err, "%s: central directory entry %u is damaged: corrupt zip", path, i + 1);
            goto fail;
        }
        const unsigned char *c = d + p;
        uint32_t flags = rd16(c + 8), method = rd16(c + 10), crc = rd32(c + 16);
        uint32_t csize = rd32(c + 20), usize = rd32(c + 24);
        uint32_t nlen = rd16(c + 28), xlen = rd16(c + 30), clen = rd16(c + 32), loff = rd32(c + 42);
        if (p + 46 + nlen + xlen + clen > end) {
            an_fail(err, "%s: central directory entry %u runs past the directory: corrupt zip", path, i + 1);
            goto fail;
        }
        an_zip_member *m = &z->m[z->n];
        m->name = malloc(nlen + 1);
        if (!m->name) {
            an_fail(err, "%s: out of memory", path);
            goto fail;
        }
        memcpy(m->name, c + 46, nlen);
        m->name[nlen] = 0;
        z->n++;
        if (flags & 1) {
            an_fail(err, "%s: member %s is encrypted", path, m->name);
            goto fail;
        }
        if (method != 0 && method != 8) {
            an_fail(err, "%s: member %s uses compression method %u; only stored (0) and deflate (8) are supported",
                    path, m->name, method);
            goto fail;
        }
        if (csize == 0xFFFFFFFFu || usize == 0xFFFFFFFFu || loff == 0xFFFFFFFFu) {
            an_fail(err, "%s: member %s needs ZIP64, which is not supported", path, m->name);
            goto fail;
        }
        if ((uint64_t)loff + 30 > cd_off || rd32(d + loff) != LOCAL_SIG) {
            an_fail(err, "%s: member %s: no local header at offset %u: corrupt zip", path, m->name, loff);
            goto fail;
        }
        uint64_t data_off = (uint64_t)loff + 30 + rd16(d + loff + 26) + rd16(d + loff + 28);
        if (data_off + csize > cd_off) {
            an_fail(err, "%s: member %s: %u compressed bytes at offset %llu run past the data area: corrupt zip", path,
                    m->name, csize, (unsigned long long)data_off);
            goto fail;
        }
        m->method = (int)method;
        m->crc = crc;
        m->csize = csize;
        m->usize = usize;
        m->data = d + data_off;
        p += 46 + nlen + xlen + clen;
    }
    return 0;
fail:
    an_zip_free(z);
    return -1;
}
