/* Byte streams over a plain file, a .gz file (zlib gzread) or a zip member held in memory (raw
 * inflate), with a line reader whose lines may be of any length up to a limit. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "data/readers/reader.h"

#define AN_STREAM_CHUNK (1u << 16)
#define AN_DEFAULT_MAX_RECORD ((size_t)256 << 20)

static int stream_init(an_stream *s, const char *name, size_t max_record, an_error *err) {
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->max_record = max_record ? max_record : AN_DEFAULT_MAX_RECORD;
    s->buf_cap = AN_STREAM_CHUNK;
    s->buf = malloc(s->buf_cap);
    if (!s->buf) return an_fail(err, "%s: out of memory", name);
    return 0;
}

int an_stream_open_file(an_stream *s, const char *path, int gz, size_t max_record, an_error *err) {
    if (stream_init(s, path, max_record, err)) return -1;
    if (gz) {
        s->kind = AN_STREAM_GZ;
        s->gz = gzopen(path, "rb");
        if (!s->gz) {
            int e = errno;
            an_stream_close(s);
            return an_fail(err, "%s: cannot open: %s", path, e ? strerror(e) : "out of memory");
        }
        gzbuffer(s->gz, AN_STREAM_CHUNK);
    } else {
        s->kind = AN_STREAM_FILE;
        s->f = fopen(path, "rb");
        if (!s->f) {
            int e = errno;
            an_stream_close(s);
            return an_fail(err, "%s: cannot open: %s", path, strerror(e));
        }
    }
    return 0;
}

int an_stream_open_zip_member(an_stream *s, const char *name, const unsigned char *data, size_t len,
                              int method, uint32_t crc, uint64_t size, size_t max_record, an_error *err) {
    if (stream_init(s, name, max_record, err)) return -1;
    s->src = data;
    s->src_len = len;
    s->want_crc = crc;
    s->want_size = size;
    s->crc = (uint32_t)crc32(0L, Z_NULL, 0);
    if (method == 0) {
        s->kind = AN_STREAM_MEM;
        if (len != size) {
            an_stream_close(s);
            return an_fail(err, "%s: stored member is %zu bytes but the directory says %llu", name, len,
                           (unsigned long long)size);
        }
        return 0;
    }
    s->kind = AN_STREAM_MEM_INFLATE;
    if (inflateInit2(&s->zs, -15) != Z_OK) {
        an_stream_close(s);
        return an_fail(err, "%s: cannot start inflate", name);
    }
    s->zs_init = 1;
    return 0;
}

void an_stream_close(an_stream *s) {
    if (s->f) fclose(s->f);
    if (s->gz) gzclose_r(s->gz);
    if (s->zs_init) inflateEnd(&s->zs);
    free(s->buf);
    an_strbuf_free(&s->line);
    s->f = NULL;
    s->gz = NULL;
    s->zs_init = 0;
    s->buf = NULL;
}

/* Member end: the bytes must add up to the size and CRC the zip directory promised. */
static int check_member_end(an_stream *s, an_error *err) {
    if (s->out_total != s->want_size)
        return an_fail(err, "%s: member is %llu bytes but the zip directory says %llu (corrupt zip)", s->name,
                       (unsigned long long)s->out_total, (unsigned long long)s->want_size);
    if (s->crc != s->want_crc)
        return an_fail(err, "%s: CRC-32 mismatch (%08x, directory says %08x): corrupt zip", s->name, s->crc,
                       s->want_crc);
    return 0;
}

/* zlib's message without the path it puts in front. */
static const char *gz_message(const an_stream *s, const char *m) {
    if (!m || !*m) return "unknown error";
    size_t n = strlen(s->name);
    if (!strncmp(m, s->name, n) && !strncmp(m + n, ": ", 2)) return m + n + 2;
    return m;
}

/* Refills buf; returns bytes available, 0 at the end, -1 on error. */
static long stream_fill(an_stream *s, an_error *err) {
    if (s->eof) return 0;
    size_t got = 0;
    switch (s->kind) {
    case AN_STREAM_FILE:
        got = fread(s->buf, 1, s->buf_cap, s->f);
        if (got == 0 && ferror(s->f)) return an_fail(err, "%s: read error: %s", s->name, strerror(errno));
        break;
    case AN_STREAM_GZ: {
        int r = gzread(s->gz, s->buf, (unsigned)s->buf_cap);
        if (r < 0) {
            int code = 0;
            const char *m = gzerror(s->gz, &code);
            return an_fail(err, "%s: gzip error after %llu bytes: %s", s->name, (unsigned long long)s->bytes_read,
                           gz_message(s, m));
        }
        got = (size_t)r;
        if (got == 0) {
            /* zlib reports a truncated stream only through gzerror at the end */
            int code = 0;
            const char *m = gzerror(s->gz, &code);
            if (code != Z_OK)
                return an_fail(err, "%s: gzip error after %llu bytes: %s", s->name,
                               (unsigned long long)s->bytes_read, gz_message(s, m));
        }
        break;
    }
    case AN_STREAM_MEM: {
        size_t left = s->src_len - s->src_pos;
        got = left < s->buf_cap ? left : s->buf_cap;
        memcpy(s->buf, s->src + s->src_pos, got);
        s->src_pos += got;
        s->out_total += got;
        s->crc = (uint32_t)crc32(s->crc, s->buf, (uInt)got);
        if (got == 0 && check_member_end(s, err)) return -1;
        break;
    }
    case AN_STREAM_MEM_INFLATE: {
        if (s->z_done) break;
        s->zs.next_out = s->buf;
        s->zs.avail_out = (uInt)s->buf_cap;
        while (s->zs.avail_out > 0) {
            if (s->zs.avail_in == 0) {
                size_t left = s->src_len - s->src_pos;
                uInt take = left > (1u << 30) ? (1u << 30) : (uInt)left;
                s->zs.next_in = (Bytef *)(s->src + s->src_pos);
                s->zs.avail_in = take;
                s->src_pos += take;
            }
            int zr = inflate(&s->zs, Z_NO_FLUSH);
            if (zr == Z_STREAM_END) {
                s->z_done = 1;
                break;
            }
            if (zr == Z_BUF_ERROR && s->zs.avail_in == 0 && s->src_pos == s->src_len)
                return an_fail(err, "%s: compressed data ends early after %llu bytes (corrupt zip)", s->name,
                               (unsigned long long)(s->out_total + (s->buf_cap - s->zs.avail_out)));
            if (zr != Z_OK && zr != Z_BUF_ERROR)
                return an_fail(err, "%s: inflate failed: %s (corrupt zip)", s->name, s->zs.msg ? s->zs.msg : "bad data");
        }
        got = s->buf_cap - s->zs.avail_out;
        s->out_total += got;
        s->crc = (uint32_t)crc32(s->crc, s->buf, (uInt)got);
        if (s->z_done && check_member_end(s, err)) return -1;
        break;
    }
    }
    s->buf_len = got;
    s->buf_pos = 0;
    if (got == 0) s->eof = 1;
    return (long)got;
}

int an_stream_getc(an_stream *s, an_error *err) {
    if (s->buf_pos == s->buf_len) {
        long r = stream_fill(s, err);
        if (r < 0) return -2;
        if (r == 0) return -1;
    }
    s->bytes_read++;
    return s->buf[s->buf_pos++];
}

int an_stream_getline(an_stream *s, an_error *err) {
    s->line.n = 0;
    if (an_strbuf_reserve(&s->line, 0)) return an_fail(err, "%s: out of memory", s->name);
    s->line.v[0] = 0;
    int any = 0;
    for (;;) {
        if (s->buf_pos == s->buf_len) {
            long r = stream_fill(s, err);
            if (r < 0) return -1;
            if (r == 0) break;
        }
        any = 1;
        const unsigned char *start = s->buf + s->buf_pos;
        size_t avail = s->buf_len - s->buf_pos;
        const unsigned char *nl = memchr(start, '\n', avail);
        size_t take = nl ? (size_t)(nl - start) : avail;
        if (s->line.n + take > s->max_record)
            return an_fail(err, "%s: line %zu is longer than the limit of %zu bytes", s->name, s->line_no + 1,
                           s->max_record);
        if (an_strbuf_put(&s->line, (const char *)start, take)) return an_fail(err, "%s: out of memory", s->name);
        s->buf_pos += take + (nl ? 1 : 0);
        s->bytes_read += take + (nl ? 1 : 0);
        if (nl) break;
    }
    if (!any) return 0;
    s->line_no++;
    if (s->line.n && s->line.v[s->line.n - 1] == '\r') s->line.v[--s->line.n] = 0;
    return 1;
}

char *an_stream_slurp(an_stream *s, size_t *len, an_error *err) {
    an_strbuf b = {0};
    if (an_strbuf_reserve(&b, 0)) goto oom;
    for (;;) {
        if (s->buf_pos == s->buf_len) {
            long r = stream_fill(s, err);
            if (r < 0) goto fail;
            if (r == 0) break;
        }
        size_t take = s->buf_len - s->buf_pos;
        if (b.n + take > s->max_record) {
            an_fail(err, "%s: document is longer than the limit of %zu bytes", s->name, s->max_record);
            goto fail;
        }
        if (an_strbuf_put(&b, (const char *)s->buf + s->buf_pos, take)) goto oom;
        s->buf_pos += take;
        s->bytes_read += take;
    }
    *len = b.n;
    return b.v;
oom:
    an_fail(err, "%s: out of memory", s->name);
fail:
    an_strbuf_free(&b);
    return NULL;
}
