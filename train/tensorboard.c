#include "train/tensorboard.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/file.h"
#include "train/crc32c.h"

/* ---- protobuf, the little we need ---- */

enum { WT_VARINT = 0, WT_FIXED64 = 1, WT_LEN = 2, WT_FIXED32 = 5 };

typedef struct pbuf {
    unsigned char *p;
    size_t n, cap;
    int overflow;
} pbuf;

static void put_byte(pbuf *b, unsigned char c) {
    if (b->n < b->cap) b->p[b->n] = c;
    else b->overflow = 1;
    b->n++;
}

static void put_varint(pbuf *b, uint64_t v) {
    while (v >= 0x80) {
        put_byte(b, (unsigned char)(v | 0x80));
        v >>= 7;
    }
    put_byte(b, (unsigned char)v);
}

static void put_key(pbuf *b, int field, int wt) { put_varint(b, (uint64_t)(field << 3 | wt)); }

static void put_le(pbuf *b, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) put_byte(b, (unsigned char)(v >> (8 * i)));
}

static void put_bytes(pbuf *b, int field, const void *s, size_t n) {
    put_key(b, field, WT_LEN);
    put_varint(b, n);
    for (size_t i = 0; i < n; i++) put_byte(b, ((const unsigned char *)s)[i]);
}

static size_t varint_len(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) v >>= 7, n++;
    return n;
}

long an_tb_encode_event(unsigned char *buf, size_t bufsz, double wall_time, long long step, const char *file_version,
                        const char *tag, float value) {
    pbuf b = {buf, 0, bufsz, 0};
    uint64_t wt;
    memcpy(&wt, &wall_time, 8);
    put_key(&b, 1, WT_FIXED64);
    put_le(&b, wt, 8);
    if (step != 0) { /* proto3 leaves out zero values */
        put_key(&b, 2, WT_VARINT);
        put_varint(&b, (uint64_t)step);
    }
    if (file_version) put_bytes(&b, 3, file_version, strlen(file_version));
    if (tag) {
        size_t tn = strlen(tag);
        size_t value_len = 1 + varint_len(tn) + tn + 1 + 4;   /* Value { tag, simple_value } */
        size_t summary_len = 1 + varint_len(value_len) + value_len; /* Summary { value } */
        put_key(&b, 5, WT_LEN);
        put_varint(&b, summary_len);
        put_key(&b, 1, WT_LEN);
        put_varint(&b, value_len);
        put_bytes(&b, 1, tag, tn);
        uint32_t fv;
        memcpy(&fv, &value, 4);
        put_key(&b, 2, WT_FIXED32);
        put_le(&b, fv, 4);
    }
    return b.overflow ? -1 : (long)b.n;
}

/* ---- writing ---- */

static int write_record(an_tb_writer *w, const unsigned char *data, size_t n, an_error *err) {
    unsigned char head[12], tail[4];
    for (int i = 0; i < 8; i++) head[i] = (unsigned char)((uint64_t)n >> (8 * i));
    uint32_t c = an_crc32c_masked(head, 8);
    for (int i = 0; i < 4; i++) head[8 + i] = (unsigned char)(c >> (8 * i));
    c = an_crc32c_masked(data, n);
    for (int i = 0; i < 4; i++) tail[i] = (unsigned char)(c >> (8 * i));
    if (fwrite(head, 1, 12, w->f) != 12 || fwrite(data, 1, n, w->f) != n || fwrite(tail, 1, 4, w->f) != 4 ||
        fflush(w->f) != 0)
        return an_fail(err, "%s: write failed: %s", w->path, strerror(errno));
    return 0;
}

int an_tb_open_path(an_tb_writer *w, const char *path, double wall_time, an_error *err) {
    memset(w, 0, sizeof *w);
    if (strlen(path) >= sizeof w->path) return an_fail(err, "%s: path too long", path);
    strcpy(w->path, path);
    w->f = fopen(path, "wb");
    if (!w->f) return an_fail(err, "%s: cannot create: %s", path, strerror(errno));
    unsigned char buf[64];
    long n = an_tb_encode_event(buf, sizeof buf, wall_time, 0, "brain.Event:2", NULL, 0);
    if (n < 0 || write_record(w, buf, (size_t)n, err)) {
        fclose(w->f);
        w->f = NULL;
        return -1;
    }
    return 0;
}

int an_tb_open(an_tb_writer *w, const char *dir, double wall_time, an_error *err) {
    char host[256] = "localhost";
    if (gethostname(host, sizeof host) != 0 || !host[0]) strcpy(host, "localhost");
    host[sizeof host - 1] = 0;
    for (char *p = host; *p; p++)
        if (*p == '/') *p = '_';
    char name[400], path[1024];
    snprintf(name, sizeof name, "events.out.tfevents.%lld.%s", (long long)wall_time, host);
    if (an_path_join(path, sizeof path, dir, name)) return an_fail(err, "%s: path too long", dir);
    return an_tb_open_path(w, path, wall_time, err);
}

int an_tb_scalar(an_tb_writer *w, const char *tag, long long step, float value, double wall_time, an_error *err) {
    if (!w->f) return an_fail(err, "%s: event file is not open", w->path);
    unsigned char stack[512], *buf = stack;
    size_t need = strlen(tag) + 64;
    if (need > sizeof stack && !(buf = malloc(need))) return an_fail(err, "%s: out of memory", w->path);
    long n = an_tb_encode_event(buf, need > sizeof stack ? need : sizeof stack, wall_time, step, NULL, tag, value);
    int rc = n < 0 ? an_fail(err, "%s: event too large", w->path) : write_record(w, buf, (size_t)n, err);
    if (buf != stack) free(buf);
    return rc;
}

int an_tb_close(an_tb_writer *w, an_error *err) {
    if (!w->f) return 0;
    int rc = fclose(w->f);
    w->f = NULL;
    return rc ? an_fail(err, "%s: close failed: %s", w->path, strerror(errno)) : 0;
}

/* ---- reading ---- */

typedef struct rd {
    const unsigned char *p, *end;
} rd;

static int get_varint(rd *r, uint64_t *v) {
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) return -1;
        unsigned char c = *r->p++;
        x |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1; /* more than 10 bytes */
}

/* Reads one field key and, for length-delimited fields, the bounded sub-reader. */
static int get_field(rd *r, int *field, int *wt, rd *sub, uint64_t *num, const char **why) {
    uint64_t key;
    if (get_varint(r, &key)) return *why = "truncated field key", -1;
    *field = (int)(key >> 3);
    *wt = (int)(key & 7);
    switch (*wt) {
    case WT_VARINT:
        if (get_varint(r, num)) return *why = "truncated varint", -1;
        return 0;
    case WT_FIXED64:
    case WT_FIXED32: {
        size_t n = *wt == WT_FIXED64 ? 8 : 4;
        if ((size_t)(r->end - r->p) < n) return *why = "truncated fixed-size field", -1;
        *num = 0;
        for (size_t i = 0; i < n; i++) *num |= (uint64_t)r->p[i] << (8 * i);
        r->p += n;
        return 0;
    }
    case WT_LEN: {
        uint64_t n;
        if (get_varint(r, &n)) return *why = "truncated length", -1;
        if (n > (uint64_t)(r->end - r->p)) return *why = "length runs past the end of the record", -1;
        sub->p = r->p;
        sub->end = r->p + n;
        r->p += n;
        return 0;
    }
    default: return *why = "unsupported wire type", -1;
    }
}

static int push_entry(an_tb_entries *e, const an_tb_entry *x) {
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 64;
        an_tb_entry *nv = realloc(e->v, cap * sizeof *nv);
        if (!nv) return -1;
        e->v = nv;
        e->cap = cap;
    }
    e->v[e->n++] = *x;
    return 0;
}

static int copy_str(char *dst, size_t size, rd s) {
    size_t n = (size_t)(s.end - s.p);
    if (n >= size) return -1;
    memcpy(dst, s.p, n);
    dst[n] = 0;
    return 0;
}

/* Decodes one Value into x (tag, simple_value). */
static int decode_value(rd r, an_tb_entry *x, const char **why) {
    x->tag[0] = 0;
    x->has_value = 0;
    while (r.p < r.end) {
        int f, wt;
        rd sub;
        uint64_t num;
        if (get_field(&r, &f, &wt, &sub, &num, why)) return -1;
        if (f == 1) {
            if (wt != WT_LEN) return *why = "Value.tag is not a string", -1;
            if (copy_str(x->tag, sizeof x->tag, sub)) return *why = "Value.tag longer than 127 bytes", -1;
        } else if (f == 2) {
            if (wt != WT_FIXED32) return *why = "Value.simple_value is not a float", -1;
            uint32_t u = (uint32_t)num;
            memcpy(&x->value, &u, 4);
            x->has_value = 1;
        }
    }
    return 0;
}

static int decode_event(rd r, an_tb_entries *out, const char **why) {
    an_tb_entry head = {0};
    rd summary = {NULL, NULL};
    int has_summary = 0;
    while (r.p < r.end) {
        int f, wt;
        rd sub;
        uint64_t num;
        if (get_field(&r, &f, &wt, &sub, &num, why)) return -1;
        if (f == 1) {
            if (wt != WT_FIXED64) return *why = "Event.wall_time is not a double", -1;
            memcpy(&head.wall_time, &num, 8);
        } else if (f == 2) {
            if (wt != WT_VARINT) return *why = "Event.step is not a varint", -1;
            head.step = (long long)num;
        } else if (f == 3) {
            if (wt != WT_LEN) return *why = "Event.file_version is not a string", -1;
            if (copy_str(head.file_version, sizeof head.file_version, sub)) return *why = "Event.file_version too long", -1;
        } else if (f == 5) {
            if (wt != WT_LEN) return *why = "Event.summary is not a message", -1;
            summary = sub; /* fields may come in any order: decode once the step is known */
            has_summary = 1;
        }
    }
    int n_values = 0;
    while (has_summary && summary.p < summary.end) {
        int f, wt;
        rd sub;
        uint64_t num;
        if (get_field(&summary, &f, &wt, &sub, &num, why)) return -1;
        if (f != 1) continue;
        if (wt != WT_LEN) return *why = "Summary.value is not a message", -1;
        an_tb_entry x = head;
        if (decode_value(sub, &x, why)) return -1;
        if (push_entry(out, &x)) return *why = "out of memory", -1;
        n_values++;
    }
    if (n_values == 0 && push_entry(out, &head)) return *why = "out of memory", -1;
    return 0;
}

static uint32_t le32(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

int an_tb_read(const char *path, an_tb_entries *out, an_error *err) {
    memset(out, 0, sizeof *out);
    an_mapped_file m;
    if (an_map_file(&m, path, err)) return -1;
    size_t off = 0;
    int rc = 0;
    while (off < m.size) {
        const unsigned char *p = m.data + off;
        size_t left = m.size - off;
        if (left < 12) {
            rc = an_fail(err, "%s: offset %zu: truncated record header (%zu bytes left)", path, off, left);
            break;
        }
        uint64_t len = 0;
        for (int i = 0; i < 8; i++) len |= (uint64_t)p[i] << (8 * i);
        if (an_crc32c_masked(p, 8) != le32(p + 8)) {
            rc = an_fail(err, "%s: offset %zu: record length CRC mismatch", path, off);
            break;
        }
        if (len > left - 12 || left - 12 - len < 4) {
            rc = an_fail(err, "%s: offset %zu: record of %llu bytes runs past the end of the file", path, off,
                         (unsigned long long)len);
            break;
        }
        if (an_crc32c_masked(p + 12, (size_t)len) != le32(p + 12 + len)) {
            rc = an_fail(err, "%s: offset %zu: record data CRC mismatch", path, off);
            break;
        }
        const char *why = NULL;
        rd r = {p + 12, p + 12 + len};
        if (decode_event(r, out, &why)) {
            rc = an_fail(err, "%s: offset %zu: bad Event: %s", path, off, why);
            break;
        }
        off += 12 + (size_t)len + 4;
    }
    an_unmap_file(&m);
    if (rc) an_tb_entries_free(out);
    return rc;
}

void an_tb_entries_free(an_tb_entries *e) {
    free(e->v);
    memset(e, 0, sizeof *e);
}
