/* Zip central directory (APPNOTE.TXT sections 4.3.7, 4.3.12, 4.3.16). Every offset and size read
 * from the archive is checked against the archive size before it is used. */
#include "data/readers/zip.h"

#include <stdlib.h>
#include <string.h>

static uint32_t rd16(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t rd32(const unsigned char *p) { return rd16(p) | rd16(p + 2) << 16; }
static uint64_t rd64(const unsigned char *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

#define EOCD_SIG 0x06054b50u
#define CDIR_SIG 0x02014b50u
#define LOCAL_SIG 0x04034b50u
#define EOCD64_SIG 0x06064b50u
#define EOCD64_LOC_SIG 0x07064b50u

/* ZIP64 end record (APPNOTE 4.3.14-15): found through the locator just before the end record. */
static int read_eocd64(const unsigned char *d, size_t eocd, const char *path, uint64_t *n_total, uint64_t *cd_size,
                       uint64_t *cd_off, size_t *end_of_cd, an_error *err) {
    if (eocd < 20 || rd32(d + eocd - 20) != EOCD64_LOC_SIG)
        return an_fail(err, "%s: end record asks for ZIP64 but there is no ZIP64 locator: corrupt zip", path);
    uint64_t off = rd64(d + eocd - 20 + 8);
    if (off > eocd - 20 || eocd - 20 - off < 56 || rd32(d + off) != EOCD64_SIG)
        return an_fail(err, "%s: ZIP64 end record at offset %llu is missing: corrupt zip", path, (unsigned long long)off);
    const unsigned char *e = d + off;
    if (rd32(e + 16) || rd32(e + 20) || rd64(e + 24) != rd64(e + 32))
        return an_fail(err, "%s: multi-disk zip archives are not supported", path);
    *n_total = rd64(e + 32);
    *cd_size = rd64(e + 40);
    *cd_off = rd64(e + 48);
    *end_of_cd = (size_t)off;
    return 0;
}

/* Replaces the 32-bit fields that are 0xFFFFFFFF by their values in the ZIP64 extra field
 * (id 0x0001: usize, csize, offset, in that order, each only when needed). */
static int zip64_extra(const unsigned char *x, size_t xlen, uint64_t *usize, uint64_t *csize, uint64_t *loff) {
    for (size_t p = 0; p + 4 <= xlen;) {
        uint32_t id = rd16(x + p), len = rd16(x + p + 2);
        if (p + 4 + len > xlen) return -1;
        if (id == 1) {
            size_t q = p + 4, end = q + len;
            uint64_t *f[3] = {usize, csize, loff};
            for (int i = 0; i < 3; i++) {
                if (*f[i] != 0xFFFFFFFFu) continue;
                if (q + 8 > end) return -1;
                *f[i] = rd64(x + q);
                q += 8;
            }
            return 0;
        }
        p += 4 + len;
    }
    return *usize == 0xFFFFFFFFu || *csize == 0xFFFFFFFFu || *loff == 0xFFFFFFFFu ? -1 : 0;
}

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
    uint32_t disk = rd16(e + 4), cd_disk = rd16(e + 6), n_here = rd16(e + 8);
    uint64_t n_total = rd16(e + 10), cd_size = rd32(e + 12), cd_off = rd32(e + 16);
    size_t end_of_cd = eocd;
    if (disk || cd_disk || n_here != n_total) return an_fail(err, "%s: multi-disk zip archives are not supported", path);
    if (n_total == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu) {
        if (read_eocd64(d, eocd, path, &n_total, &cd_size, &cd_off, &end_of_cd, err)) return -1;
    }
    if (cd_off > end_of_cd || cd_size > end_of_cd - cd_off)
        return an_fail(err, "%s: central directory (offset %llu, %llu bytes) runs past its end record: corrupt zip", path,
                       (unsigned long long)cd_off, (unsigned long long)cd_size);
    if (n_total > cd_size / 46)
        return an_fail(err, "%s: %llu members cannot fit in a %llu-byte central directory: corrupt zip", path,
                       (unsigned long long)n_total, (unsigned long long)cd_size);
    z->m = calloc(n_total ? (size_t)n_total : 1, sizeof *z->m);
    if (!z->m) return an_fail(err, "%s: out of memory", path);
    size_t p = (size_t)cd_off, end = (size_t)(cd_off + cd_size);
    for (uint64_t i = 0; i < n_total; i++) {
        if (p + 46 > end || rd32(d + p) != CDIR_SIG) {
            an_fail(err, "%s: central directory entry %llu is damaged: corrupt zip", path, (unsigned long long)i + 1);
            goto fail;
        }
        const unsigned char *c = d + p;
        uint32_t flags = rd16(c + 8), method = rd16(c + 10), crc = rd32(c + 16);
        uint64_t csize = rd32(c + 20), usize = rd32(c + 24), loff = rd32(c + 42);
        uint32_t nlen = rd16(c + 28), xlen = rd16(c + 30), clen = rd16(c + 32);
        if (p + 46 + nlen + xlen + clen > end) {
            an_fail(err, "%s: central directory entry %llu runs past the directory: corrupt zip", path,
                    (unsigned long long)i + 1);
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
        if (zip64_extra(c + 46 + nlen, xlen, &usize, &csize, &loff)) {
            an_fail(err, "%s: member %s: damaged ZIP64 extra field: corrupt zip", path, m->name);
            goto fail;
        }
        if (loff > cd_off || cd_off - loff < 30 || rd32(d + loff) != LOCAL_SIG) {
            an_fail(err, "%s: member %s: no local header at offset %llu: corrupt zip", path, m->name,
                    (unsigned long long)loff);
            goto fail;
        }
        uint64_t data_off = loff + 30 + rd16(d + loff + 26) + rd16(d + loff + 28);
        if (data_off > cd_off || csize > cd_off - data_off) {
            an_fail(err, "%s: member %s: %llu compressed bytes at offset %llu run past the data area: corrupt zip",
                    path, m->name, (unsigned long long)csize, (unsigned long long)data_off);
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
