/* GGUF reader: maps the file, then walks the header once with a cursor that checks every read
 * against the end of the file, so a bad length, count, type or offset is reported ("path: what is
 * wrong") before any value or tensor is used. The layout is in gguf.h. */
#include "model/io/gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Arrays inside arrays are legal; a file nesting them deeper than this is refused rather than
 * recursed into (each level is a stack frame). */
#define MAX_NESTING 8
#define DEFAULT_ALIGNMENT 32

typedef struct cursor {
    const unsigned char *p, *begin, *end;
    const char *path;
    an_error *err;
} cursor;

static uint64_t le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static unsigned long long at(const cursor *c) { return (unsigned long long)(c->p - c->begin); }

/* Makes sure n more bytes exist; what names them in the error. */
static int need(cursor *c, uint64_t n, const char *ctx, const char *what) {
    if ((uint64_t)(c->end - c->p) >= n) return 0;
    return an_fail(c->err, "%s: %s%s%s at byte %llu runs past the end of the file (%llu bytes; truncated?)", c->path,
                   ctx, *ctx ? ": " : "", what, at(c), (unsigned long long)(c->end - c->begin));
}

static int read_u(cursor *c, int n, uint64_t *out, const char *ctx, const char *what) {
    if (need(c, (uint64_t)n, ctx, what) != 0) return -1;
    *out = le(c->p, n);
    c->p += n;
    return 0;
}

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static int read_string(cursor *c, const char **s, uint64_t *len, const char *ctx, const char *what) {
    uint64_t n;
    if (read_u(c, 8, &n, ctx, what) != 0) return -1;
    if (n > (uint64_t)(c->end - c->p))
        return an_fail(c->err, "%s: %s%s%s length %llu at byte %llu runs past the end of the file (%llu bytes)",
                       c->path, ctx, *ctx ? ": " : "", what, (unsigned long long)n, at(c) - 8,
                       (unsigned long long)(c->end - c->begin));
    *s = (const char *)c->p;
    *len = n;
    c->p += n;
    return 0;
}

int an_gguf_scalar_size(uint64_t t) {
    switch (t) {
    case AN_GGUF_U8: case AN_GGUF_I8: case AN_GGUF_BOOL: return 1;
    case AN_GGUF_U16: case AN_GGUF_I16: return 2;
    case AN_GGUF_U32: case AN_GGUF_I32: case AN_GGUF_F32: return 4;
    case AN_GGUF_U64: case AN_GGUF_I64: case AN_GGUF_F64: return 8;
    default: return 0;
    }
}

const char *an_gguf_type_name(an_gguf_type t) {
    static const char *names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64",
                                  "i64", "f64"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

static void decode_scalar(an_gguf_type t, const unsigned char *p, an_gguf_value *v) {
    v->type = t;
    uint64_t raw = le(p, an_gguf_scalar_size(t));
    switch (t) {
    case AN_GGUF_I8: v->v.i = (int8_t)raw; break;
    case AN_GGUF_I16: v->v.i = (int16_t)raw; break;
    case AN_GGUF_I32: v->v.i = (int32_t)raw; break;
    case AN_GGUF_I64: memcpy(&v->v.i, &raw, 8); break;
    case AN_GGUF_F32: {
        uint32_t r32 = (uint32_t)raw;
        float f;
        memcpy(&f, &r32, 4);
        v->v.f = f;
        break;
    }
    case AN_GGUF_F64: memcpy(&v->v.f, &raw, 8); break;
    default: v->v.u = raw; break; /* unsigned types and bool */
    }
}

/* Reads (and checks) one value of type t at the cursor. index: build the element index of a string or
 * array array (top-level values only). */
static int read_value(cursor *c, uint64_t t, an_gguf_value *out, int depth, int index, const char *ctx) {
    memset(out, 0, sizeof *out);
    int sz = an_gguf_scalar_size(t);
    if (sz) {
        if (need(c, (uint64_t)sz, ctx, "value") != 0) return -1;
        if (t == AN_GGUF_BOOL && c->p[0] > 1)
            return an_fail(c->err, "%s: %s: bool value %u at byte %llu is neither 0 nor 1", c->path, ctx, c->p[0], at(c));
        decode_scalar((an_gguf_type)t, c->p, out);
        c->p += sz;
        return 0;
    }
    if (t == AN_GGUF_STRING) {
        out->type = AN_GGUF_STRING;
        return read_string(c, &out->v.str.ptr, &out->v.str.len, ctx, "string");
    }
    if (t != AN_GGUF_ARRAY)
        return an_fail(c->err, "%s: %s: unknown value type %llu at byte %llu", c->path, ctx, (unsigned long long)t,
                       at(c) - 4);
    if (depth >= MAX_NESTING)
        return an_fail(c->err, "%s: %s: arrays nested more than %d deep", c->path, ctx, MAX_NESTING);
    uint64_t elem, n;
    if (read_u(c, 4, &elem, ctx, "array element type") != 0 || read_u(c, 8, &n, ctx, "array length") != 0) return -1;
    if (elem > AN_GGUF_F64)
        return an_fail(c->err, "%s: %s: unknown array element type %llu at byte %llu", c->path, ctx,
                       (unsigned long long)elem, at(c) - 12);
    out->type = AN_GGUF_ARRAY;
    out->v.arr.elem = (an_gguf_type)elem;
    out->v.arr.n = n;
    out->v.arr.data = c->p;
    out->v.arr.end = c->end;
    uint64_t left = (uint64_t)(c->end - c->p);
    /* The smallest element (1 byte, or 8 for a string's length, 12 for an array's header) bounds the
     * count before any loop or allocation depends on it. */
    uint64_t min_size = elem == AN_GGUF_STRING ? 8 : elem == AN_GGUF_ARRAY ? 12 : (uint64_t)an_gguf_scalar_size(elem);
    if (n > left / min_size)
        return an_fail(c->err, "%s: %s: array length %llu at byte %llu runs past the end of the file (%llu bytes)",
                       c->path, ctx, (unsigned long long)n, at(c) - 8, (unsigned long long)(c->end - c->begin));
    if (elem != AN_GGUF_STRING && elem != AN_GGUF_ARRAY) {
        if (elem == AN_GGUF_BOOL)
            for (uint64_t i = 0; i < n; i++)
                if (c->p[i] > 1)
                    return an_fail(c->err, "%s: %s: bool element %llu is %u, neither 0 nor 1", c->path, ctx,
                                   (unsigned long long)i, c->p[i]);
        c->p += n * min_size;
        return 0;
    }
    uint64_t *idx = NULL;
    if (index && n) {
        idx = malloc(n * sizeof *idx);
        if (!idx) return an_fail(c->err, "%s: %s: out of memory for %llu array elements", c->path, ctx, (unsigned long long)n);
    }
    for (uint64_t i = 0; i < n; i++) {
        if (idx) idx[i] = (uint64_t)(c->p - out->v.arr.data);
        an_gguf_value sub;
        char sub_ctx[256]; /* errors inside say which element: key "k"[12][3] */
        snprintf(sub_ctx, sizeof sub_ctx, "%.200s[%llu]", ctx, (unsigned long long)i);
        if (read_value(c, elem, &sub, depth + 1, 0, sub_ctx) != 0) {
            free(idx);
            return -1;
        }
    }
    out->v.arr.index = idx;
    return 0;
}

static int check_magic_version(cursor *c, an_gguf *g) {
    uint64_t size = (uint64_t)(c->end - c->begin);
    if (size < 4)
        return an_fail(c->err, "%s: %llu bytes, too short for a GGUF file (not a GGUF file, or truncated)", c->path,
                       (unsigned long long)size);
    if (memcmp(c->p, "GGUF", 4) != 0) {
        char m[5] = {0};
        for (int i = 0; i < 4; i++) m[i] = (c->p[i] >= 32 && c->p[i] < 127) ? (char)c->p[i] : '?';
        return an_fail(c->err, "%s: not a GGUF file (it starts with \"%s\", not \"GGUF\")", c->path, m);
    }
    c->p += 4;
    uint64_t v;
    if (read_u(c, 4, &v, "", "version") != 0) return -1;
    uint32_t swapped = (uint32_t)((v >> 24) | ((v >> 8) & 0xff00) | ((v << 8) & 0xff0000) | (v << 24));
    if (v != 2 && v != 3) {
        if (swapped >= 1 && swapped <= 3)
            return an_fail(c->err, "%s: a big-endian GGUF file (version %u); only little-endian files are supported",
                           c->path, swapped);
        if (v == 1)
            return an_fail(c->err, "%s: GGUF version 1 is not supported (versions 2 and 3 are; convert it with a newer llama.cpp)",
                           c->path);
        return an_fail(c->err, "%s: GGUF version %llu is not supported (versions 2 and 3 are)", c->path,
                       (unsigned long long)v);
    }
    g->version = (uint32_t)v;
    return 0;
}

static int cmp_str_ptr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int read_kvs(cursor *c, an_gguf *g, uint64_t n) {
    /* each entry needs at least a key length, a type and one byte of value */
    if (n > (uint64_t)(c->end - c->p) / 13)
        return an_fail(c->err, "%s: %llu metadata entries cannot fit in the file (%llu bytes; truncated or corrupt?)",
                       c->path, (unsigned long long)n, (unsigned long long)(c->end - c->begin));
    g->kvs = calloc(n ? n : 1, sizeof *g->kvs);
    if (!g->kvs) return an_fail(c->err, "%s: out of memory", c->path);
    for (uint64_t i = 0; i < n; i++) {
        char ctx[256];
        snprintf(ctx, sizeof ctx, "metadata entry %llu", (unsigned long long)i);
        const char *k;
        uint64_t klen, t;
        if (read_string(c, &k, &klen, ctx, "key") != 0) return -1;
        an_gguf_kv *kv = &g->kvs[g->n_kv];
        if (!(kv->key = dup_n(k, (size_t)klen))) return an_fail(c->err, "%s: out of memory", c->path);
        g->n_kv++;
        snprintf(ctx, sizeof ctx, "key \"%.200s\"", kv->key);
        if (read_u(c, 4, &t, ctx, "value type") != 0 || read_value(c, t, &kv->value, 0, 1, ctx) != 0) return -1;
    }
    char **keys = malloc((n ? n : 1) * sizeof *keys);
    if (!keys) return an_fail(c->err, "%s: out of memory", c->path);
    for (uint64_t i = 0; i < n; i++) keys[i] = g->kvs[i].key;
    qsort(keys, (size_t)n, sizeof *keys, cmp_str_ptr);
    for (uint64_t i = 1; i < n; i++)
        if (strcmp(keys[i - 1], keys[i]) == 0) {
            an_fail(c->err, "%s: key \"%.200s\" appears twice", c->path, keys[i]);
            free(keys);
            return -1;
        }
    free(keys);
    return 0;
}

static int read_tensor_info(cursor *c, an_gguf_tensor *t, uint64_t i) {
    char ctx[256];
    snprintf(ctx, sizeof ctx, "tensor info %llu", (unsigned long long)i);
    const char *name;
    uint64_t nlen, nd, type;
    if (read_string(c, &name, &nlen, ctx, "name") != 0) return -1;
    if (!(t->name = dup_n(name, (size_t)nlen))) return an_fail(c->err, "%s: out of memory", c->path);
    snprintf(ctx, sizeof ctx, "tensor \"%.200s\"", t->name);
    if (read_u(c, 4, &nd, ctx, "n_dims") != 0) return -1;
    if (nd > AN_GGUF_MAX_DIMS)
        return an_fail(c->err, "%s: %s: %llu dimensions, at most %d are allowed", c->path, ctx, (unsigned long long)nd,
                       AN_GGUF_MAX_DIMS);
    t->n_dims = (int)nd;
    int64_t numel = 1;
    for (int d = 0; d < AN_GGUF_MAX_DIMS; d++) {
        uint64_t ne = 1;
        if (d < t->n_dims && read_u(c, 8, &ne, ctx, "dimension") != 0) return -1;
        if (ne > (uint64_t)INT64_MAX)
            return an_fail(c->err, "%s: %s: dimension %d is negative (%lld)", c->path, ctx, d, (long long)(int64_t)ne);
        t->ne[d] = (int64_t)ne;
        if (ne && (uint64_t)numel > (uint64_t)INT64_MAX / ne)
            return an_fail(c->err, "%s: %s: dimensions [%lld, %lld, ...] overflow a 64-bit element count", c->path, ctx,
                           (long long)t->ne[0], (long long)(d ? t->ne[1] : 0));
        numel *= (int64_t)ne;
    }
    t->numel = numel;
    if (read_u(c, 4, &type, ctx, "type") != 0) return -1;
    const an_ggml_type_info *ti = an_ggml_type_get((uint32_t)type);
    if (!ti) return an_fail(c->err, "%s: %s: unknown tensor type %llu", c->path, ctx, (unsigned long long)type);
    t->type = (uint32_t)type;
    if (t->ne[0] % ti->block)
        return an_fail(c->err, "%s: %s: type %s needs rows of whole %d-element blocks but ne[0] is %lld", c->path, ctx,
                       ti->name, ti->block, (long long)t->ne[0]);
    uint64_t blocks = (uint64_t)numel / (uint64_t)ti->block;
    if (blocks > SIZE_MAX / (uint64_t)ti->block_bytes)
        return an_fail(c->err, "%s: %s: size overflows", c->path, ctx);
    t->nbytes = (size_t)(blocks * (uint64_t)ti->block_bytes);
    return read_u(c, 8, &t->offset, ctx, "offset");
}

typedef struct name_idx {
    const char *name;
    int64_t i;
} name_idx;

static int cmp_name_idx(const void *a, const void *b) {
    return strcmp(((const name_idx *)a)->name, ((const name_idx *)b)->name);
}

/* g->by_name: tensor indices in name order (plain qsort on (name, index) pairs: qsort_r differs
 * between C libraries). */
static int sort_names(cursor *c, an_gguf *g, uint64_t n) {
    name_idx *v = malloc((n ? n : 1) * sizeof *v);
    if (!v) return an_fail(c->err, "%s: out of memory", c->path);
    for (uint64_t i = 0; i < n; i++) v[i] = (name_idx){g->tensors[i].name, (int64_t)i};
    qsort(v, (size_t)n, sizeof *v, cmp_name_idx);
    int rc = 0;
    for (uint64_t i = 0; i < n; i++) {
        g->by_name[i] = v[i].i;
        if (i && rc == 0 && strcmp(v[i - 1].name, v[i].name) == 0)
            rc = an_fail(c->err, "%s: tensor \"%s\" appears twice", c->path, v[i].name);
    }
    free(v);
    return rc;
}

static int read_tensors(cursor *c, an_gguf *g, uint64_t n) {
    /* name length + n_dims + type + offset: 24 bytes at least */
    if (n > (uint64_t)(c->end - c->p) / 24)
        return an_fail(c->err, "%s: %llu tensor infos cannot fit in the file (%llu bytes; truncated or corrupt?)", c->path,
                       (unsigned long long)n, (unsigned long long)(c->end - c->begin));
    g->tensors = calloc(n ? n : 1, sizeof *g->tensors);
    g->by_name = malloc((n ? n : 1) * sizeof *g->by_name);
    if (!g->tensors || !g->by_name) return an_fail(c->err, "%s: out of memory", c->path);
    for (uint64_t i = 0; i < n; i++) {
        g->n_tensors++;
        if (read_tensor_info(c, &g->tensors[i], i) != 0) return -1;
    }
    /* The data section starts at the next multiple of the alignment. */
    uint64_t pos = (uint64_t)(c->p - c->begin), size = (uint64_t)(c->end - c->begin), al = g->alignment;
    uint64_t data = (pos + al - 1) / al * al;
    g->data_offset = data;
    for (uint64_t i = 0; i < n; i++) {
        an_gguf_tensor *t = &g->tensors[i];
        if (t->offset % al)
            return an_fail(c->err, "%s: tensor \"%s\": offset %llu is not a multiple of the alignment %llu", c->path,
                           t->name, (unsigned long long)t->offset, (unsigned long long)al);
        if (data > size || t->offset > size - data || t->nbytes > size - data - t->offset)
            return an_fail(c->err, "%s: tensor \"%s\": data at offset %llu + %llu bytes runs past the end of the file "
                                   "(data section starts at byte %llu, file has %llu bytes; truncated?)",
                           c->path, t->name, (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                           (unsigned long long)data, (unsigned long long)size);
        t->data = c->begin + data + t->offset;
    }
    return sort_names(c, g, n);
}

static int read_alignment(an_gguf *g, an_error *err) {
    g->alignment = DEFAULT_ALIGNMENT;
    const an_gguf_kv *kv = an_gguf_find_key(g, "general.alignment");
    if (!kv) return 0;
    if (kv->value.type != AN_GGUF_U32)
        return an_fail(err, "%s: key \"general.alignment\" has type %s, not u32", g->path, an_gguf_type_name(kv->value.type));
    uint64_t a = kv->value.v.u;
    if (a == 0 || (a & (a - 1)))
        return an_fail(err, "%s: general.alignment %llu is not a power of two", g->path, (unsigned long long)a);
    g->alignment = (uint32_t)a;
    return 0;
}

int an_gguf_open(an_gguf *g, const char *path, an_error *err) {
    memset(g, 0, sizeof *g);
    if (!(g->path = dup_n(path, strlen(path)))) return an_fail(err, "%s: out of memory", path);
    if (an_map_file(&g->file, path, err) != 0) {
        free(g->path);
        g->path = NULL;
        return -1;
    }
    static const unsigned char empty[1];
    const unsigned char *base = g->file.data ? g->file.data : empty;
    cursor c = {base, base, base + g->file.size, path, err};
    uint64_t n_tensors, n_kv;
    int rc = check_magic_version(&c, g);
    if (rc == 0) rc = read_u(&c, 8, &n_tensors, "", "tensor count");
    if (rc == 0) rc = read_u(&c, 8, &n_kv, "", "metadata count");
    if (rc == 0 && (int64_t)n_tensors < 0) rc = an_fail(err, "%s: tensor count %lld is negative", path, (long long)n_tensors);
    if (rc == 0 && (int64_t)n_kv < 0) rc = an_fail(err, "%s: metadata count %lld is negative", path, (long long)n_kv);
    if (rc == 0) rc = read_kvs(&c, g, n_kv);
    if (rc == 0) rc = read_alignment(g, err);
    if (rc == 0) rc = read_tensors(&c, g, n_tensors);
    if (rc != 0) an_gguf_close(g);
    return rc;
}

void an_gguf_close(an_gguf *g) {
    for (int64_t i = 0; i < g->n_kv; i++) {
        free(g->kvs[i].key);
        if (g->kvs[i].value.type == AN_GGUF_ARRAY) free((void *)g->kvs[i].value.v.arr.index);
    }
    free(g->kvs);
    for (int64_t i = 0; i < g->n_tensors; i++) free(g->tensors[i].name);
    free(g->tensors);
    free(g->by_name);
    if (g->path) an_unmap_file(&g->file);
    free(g->path);
    memset(g, 0, sizeof *g);
}

const an_gguf_kv *an_gguf_find_key(const an_gguf *g, const char *key) {
    for (int64_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kvs[i].key, key) == 0) return &g->kvs[i];
    return NULL;
}

const an_gguf_tensor *an_gguf_find_tensor(const an_gguf *g, const char *name) {
    int64_t lo = 0, hi = g->n_tensors - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        const an_gguf_tensor *t = &g->tensors[g->by_name[mid]];
        int c = strcmp(t->name, name);
        if (c == 0) return t;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

static const an_gguf_value *get(const an_gguf *g, const char *key, an_error *err) {
    const an_gguf_kv *kv = an_gguf_find_key(g, key);
    if (!kv) an_fail(err, "%s: key \"%s\" is missing", g->path, key);
    return kv ? &kv->value : NULL;
}

static int wrong_type(const an_gguf *g, const char *key, const an_gguf_value *v, const char *want, an_error *err) {
    return an_fail(err, "%s: key \"%s\" has type %s, not %s", g->path, key, an_gguf_type_name(v->type), want);
}

int an_gguf_get_int(const an_gguf *g, const char *key, int64_t *out, an_error *err) {
    const an_gguf_value *v = get(g, key, err);
    if (!v) return -1;
    switch (v->type) {
    case AN_GGUF_I8: case AN_GGUF_I16: case AN_GGUF_I32: case AN_GGUF_I64: *out = v->v.i; return 0;
    case AN_GGUF_U8: case AN_GGUF_U16: case AN_GGUF_U32: case AN_GGUF_U64:
        if (v->v.u > (uint64_t)INT64_MAX)
            return an_fail(err, "%s: key \"%s\" = %llu is too large", g->path, key, (unsigned long long)v->v.u);
        *out = (int64_t)v->v.u;
        return 0;
    default: return wrong_type(g, key, v, "an integer", err);
    }
}

int an_gguf_get_float(const an_gguf *g, const char *key, double *out, an_error *err) {
    const an_gguf_value *v = get(g, key, err);
    if (!v) return -1;
    if (v->type != AN_GGUF_F32 && v->type != AN_GGUF_F64) return wrong_type(g, key, v, "a float", err);
    *out = v->v.f;
    return 0;
}

int an_gguf_get_bool(const an_gguf *g, const char *key, int *out, an_error *err) {
    const an_gguf_value *v = get(g, key, err);
    if (!v) return -1;
    if (v->type != AN_GGUF_BOOL) return wrong_type(g, key, v, "a bool", err);
    *out = (int)v->v.u;
    return 0;
}

int an_gguf_get_str(const an_gguf *g, const char *key, const char **s, uint64_t *len, an_error *err) {
    const an_gguf_value *v = get(g, key, err);
    if (!v) return -1;
    if (v->type != AN_GGUF_STRING) return wrong_type(g, key, v, "a string", err);
    *s = v->v.str.ptr;
    *len = v->v.str.len;
    return 0;
}

int an_gguf_get_array(const an_gguf *g, const char *key, int elem, const an_gguf_value **arr, an_error *err) {
    const an_gguf_value *v = get(g, key, err);
    if (!v) return -1;
    if (v->type != AN_GGUF_ARRAY) return wrong_type(g, key, v, "an array", err);
    if (elem >= 0 && (int)v->v.arr.elem != elem)
        return an_fail(err, "%s: key \"%s\" is an array of %s, not of %s", g->path, key, an_gguf_type_name(v->v.arr.elem),
                       an_gguf_type_name((an_gguf_type)elem));
    *arr = v;
    return 0;
}

int an_gguf_array_get(const an_gguf_value *arr, uint64_t i, an_gguf_value *out) {
    if (arr->type != AN_GGUF_ARRAY || i >= arr->v.arr.n) return -1;
    int sz = an_gguf_scalar_size(arr->v.arr.elem);
    if (sz) {
        decode_scalar(arr->v.arr.elem, arr->v.arr.data + i * (uint64_t)sz, out);
        return 0;
    }
    /* Strings and arrays: jump through the index, or walk (nested arrays have none). The file was
     * checked at open, so these reads cannot fail; the cursor keeps them inside it regardless. */
    an_error ignored;
    cursor c = {arr->v.arr.data, arr->v.arr.data, arr->v.arr.end, "", &ignored};
    uint64_t from = 0;
    if (arr->v.arr.index) {
        c.p += arr->v.arr.index[i];
        from = i;
    }
    for (uint64_t k = from; k <= i; k++)
        if (read_value(&c, arr->v.arr.elem, out, 1, 0, "") != 0) return -1;
    return 0;
}

int an_gguf_tensor_to_f32(const an_gguf *g, const an_gguf_tensor *t, float *dst, an_error *err) {
    if (an_ggml_dequantize(t->type, t->data, dst, t->numel, err) != 0)
        return an_fail_prefix(err, "%s: tensor \"%s\"", g->path, t->name);
    return 0;
}
