/* safetensors writer. Layout as the Python library writes it: tensors ordered by dtype (the reference
 * implementation's dtype order, largest first: I64 F64 F32 I32 BF16 F16 I16 I8 U8 BOOL) then name, so
 * every tensor is naturally aligned; header JSON in the same order,
 * "__metadata__" first with "format": "pt"; header padded with spaces to a multiple of 8 bytes.
 * The file is streamed to path.tmp, fsync'd and renamed, so a large model is never copied in memory. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/io/safetensors.h"

struct an_st_wentry {
    char *name;
    an_dtype dtype;
    int ndim;
    int64_t shape[AN_MAX_DIMS];
    const void *data;
    size_t nbytes;
};

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

void an_st_writer_init(an_st_writer *w) { memset(w, 0, sizeof *w); }

void an_st_writer_free(an_st_writer *w) {
    for (int i = 0; i < w->n; i++) free(w->entries[i].name);
    free(w->entries);
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta_keys[i]);
        free(w->meta_values[i]);
    }
    free(w->meta_keys);
    free(w->meta_values);
    memset(w, 0, sizeof *w);
}

int an_st_writer_add(an_st_writer *w, const char *name, an_dtype dtype, int ndim, const int64_t *shape,
                     const void *data, an_error *err) {
    if (!name || !name[0] || strcmp(name, "__metadata__") == 0)
        return an_fail(err, "safetensors writer: invalid tensor name \"%s\"", name ? name : "(null)");
    if (an_dtype_size(dtype) == 0) return an_fail(err, "safetensors writer: tensor \"%s\": unknown dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > AN_MAX_DIMS)
        return an_fail(err, "safetensors writer: tensor \"%s\": %d dimensions (0..%d allowed)", name, ndim, AN_MAX_DIMS);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->entries[i].name, name) == 0) return an_fail(err, "safetensors writer: tensor \"%s\" added twice", name);
    size_t nbytes = an_dtype_size(dtype);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return an_fail(err, "safetensors writer: tensor \"%s\": negative shape[%d]", name, i);
        if (shape[i] && nbytes > SIZE_MAX / (size_t)shape[i])
            return an_fail(err, "safetensors writer: tensor \"%s\": too large", name);
        nbytes *= (size_t)shape[i];
    }
    if (nbytes && !data) return an_fail(err, "safetensors writer: tensor \"%s\": no data", name);
    if (w->n == w->cap) {
        int nc = w->cap ? w->cap * 2 : 32;
        struct an_st_wentry *e = realloc(w->entries, (size_t)nc * sizeof *e);
        if (!e) return an_fail(err, "safetensors writer: out of memory");
        w->entries = e;
        w->cap = nc;
    }
    struct an_st_wentry *e = &w->entries[w->n];
    memset(e, 0, sizeof *e);
    if (!(e->name = dup_str(name))) return an_fail(err, "safetensors writer: out of memory");
    e->dtype = dtype;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
    e->data = data;
    e->nbytes = nbytes;
    w->n++;
    return 0;
}

int an_st_writer_meta(an_st_writer *w, const char *key, const char *value, an_error *err) {
    if (!key || !value) return an_fail(err, "safetensors writer: metadata key and value must be strings");
    for (int i = 0; i < w->n_meta; i++) {
        if (strcmp(w->meta_keys[i], key) == 0) {
            char *v = dup_str(value);
            if (!v) return an_fail(err, "safetensors writer: out of memory");
            free(w->meta_values[i]);
            w->meta_values[i] = v;
            return 0;
        }
    }
    char **k = realloc(w->meta_keys, (size_t)(w->n_meta + 1) * sizeof *k);
    if (!k) return an_fail(err, "safetensors writer: out of memory");
    w->meta_keys = k;
    char **v = realloc(w->meta_values, (size_t)(w->n_meta + 1) * sizeof *v);
    if (!v) return an_fail(err, "safetensors writer: out of memory");
    w->meta_values = v;
    k[w->n_meta] = dup_str(key);
    v[w->n_meta] = dup_str(value);
    if (!k[w->n_meta] || !v[w->n_meta]) {
        free(k[w->n_meta]);
        free(v[w->n_meta]);
        return an_fail(err, "safetensors writer: out of memory");
    }
    w->n_meta++;
    return 0;
}

/* A growing string for the header. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 1024;
        while (nc < b->n + n + 1) nc *= 2;
        char *p = realloc(b->p, nc);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_json_string(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char esc[8];
        if (*c == '"' || *c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*c;
            sb_put(b, esc, 2);
        } else if (*c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *c);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, (const char *)c, 1); /* UTF-8 bytes pass through */
        }
    }
    sb_put(b, "\"", 1);
}

static int dtype_rank(an_dtype t) {
    static const an_dtype order[] = {AN_I64, AN_F64, AN_F32, AN_I32, AN_BF16, AN_F16, AN_I16, AN_I8, AN_U8, AN_BOOL};
    for (int i = 0; i < (int)(sizeof order / sizeof order[0]); i++)
        if (order[i] == t) return i;
    return 99;
}

static int entry_order(const void *a, const void *b) {
    const struct an_st_wentry *x = *(const struct an_st_wentry *const *)a, *y = *(const struct an_st_wentry *const *)b;
    int rx = dtype_rank(x->dtype), ry = dtype_rank(y->dtype);
    if (rx != ry) return rx < ry ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n > (1u << 30) ? (1u << 30) : n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Builds the padded header; order[] is the data order. */
static int build_header(const an_st_writer *w, struct an_st_wentry **order, sbuf *b) {
    sb_str(b, "{\"__metadata__\":{\"format\":\"pt\"");
    for (int i = 0; i < w->n_meta; i++) {
        if (strcmp(w->meta_keys[i], "format") == 0) continue; /* always "pt": transformers checks it */
        sb_str(b, ",");
        sb_json_string(b, w->meta_keys[i]);
        sb_str(b, ":");
        sb_json_string(b, w->meta_values[i]);
    }
    sb_str(b, "}");
    unsigned long long off = 0;
    for (int i = 0; i < w->n; i++) {
        const struct an_st_wentry *e = order[i];
        char num[64];
        sb_str(b, ",");
        sb_json_string(b, e->name);
        sb_str(b, ":{\"dtype\":\"");
        sb_str(b, an_dtype_name(e->dtype));
        sb_str(b, "\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            snprintf(num, sizeof num, d ? ",%lld" : "%lld", (long long)e->shape[d]);
            sb_str(b, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", off, off + e->nbytes);
        sb_str(b, num);
        off += e->nbytes;
    }
    sb_str(b, "}");
    while (!b->oom && b->n % 8) sb_str(b, " ");
    return b->oom ? -1 : 0;
}

int an_st_write(const an_st_writer *w, const char *path, an_error *err) {
    struct an_st_wentry **order = malloc(((size_t)w->n + 1) * sizeof *order);
    if (!order) return an_fail(err, "%s: out of memory", path);
    for (int i = 0; i < w->n; i++) order[i] = &w->entries[i];
    qsort(order, (size_t)w->n, sizeof *order, entry_order);
    sbuf b = {0};
    if (build_header(w, order, &b) != 0) {
        free(order);
        free(b.p);
        return an_fail(err, "%s: out of memory", path);
    }
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        free(order);
        free(b.p);
        return an_fail(err, "%s: path too long", path);
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        free(order);
        free(b.p);
        return an_fail(err, "%s: cannot create: %s", tmp, strerror(e));
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((unsigned long long)b.n >> (8 * i));
    int ok = write_all(fd, len8, 8) == 0 && write_all(fd, b.p, b.n) == 0;
    for (int i = 0; ok && i < w->n; i++)
        if (order[i]->nbytes) ok = write_all(fd, order[i]->data, order[i]->nbytes) == 0;
    int saved = ok ? 0 : errno;
    if (ok && fsync(fd) != 0) {
        ok = 0;
        saved = errno;
    }
    if (close(fd) != 0 && ok) {
        ok = 0;
        saved = errno;
    }
    free(order);
    free(b.p);
    if (!ok) {
        unlink(tmp);
        return an_fail(err, "%s: write failed: %s", path, strerror(saved ? saved : EIO));
    }
    if (rename(tmp, path) != 0) {
        saved = errno;
        unlink(tmp);
        return an_fail(err, "%s: cannot rename into place: %s", path, strerror(saved));
    }
    return 0;
}
