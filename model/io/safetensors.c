/* safetensors reader: maps each file, checks the header completely before any tensor is used
 * (the checks follow the reference Rust implementation: offsets must tile the data section exactly),
 * and presents one sorted table of tensors across all shards. */
#include "model/io/safetensors.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The reference implementation refuses headers over 100 MB; so do we. */
#define AN_ST_MAX_HEADER 100000000ull

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static int dtype_parse(const char *s, an_dtype *out) {
    for (int t = AN_F32; t <= AN_BOOL; t++) {
        if (strcmp(s, an_dtype_name((an_dtype)t)) == 0) {
            *out = (an_dtype)t;
            return 0;
        }
    }
    return -1;
}

/* A JSON number that is a non-negative integer below 2^53 (exact in a double). */
static int json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return -1;
    double d = j->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(uint64_t)d) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int grow_tensors(an_safetensors *st, int *cap) {
    if (st->n_tensors < *cap) return 0;
    int nc = *cap ? *cap * 2 : 64;
    an_st_tensor *t = realloc(st->tensors, (size_t)nc * sizeof *t);
    if (!t) return -1;
    st->tensors = t;
    *cap = nc;
    return 0;
}

typedef struct span {
    uint64_t begin, end;
    const char *name;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int tensor_name_cmp(const void *a, const void *b) {
    return strcmp(((const an_st_tensor *)a)->name, ((const an_st_tensor *)b)->name);
}

static int read_metadata(an_safetensors *st, const cJSON *meta, const char *path, an_error *err) {
    if (!cJSON_IsObject(meta)) return an_fail(err, "%s: \"__metadata__\" is not an object", path);
    int n = cJSON_GetArraySize(meta);
    st->meta_keys = calloc((size_t)n + 1, sizeof(char *));
    st->meta_values = calloc((size_t)n + 1, sizeof(char *));
    if (!st->meta_keys || !st->meta_values) return an_fail(err, "%s: out of memory", path);
    for (const cJSON *m = meta->child; m; m = m->next) {
        if (!cJSON_IsString(m))
            return an_fail(err, "%s: \"__metadata__\" value of %s is not a string", path, AN_QUOTE(m->string));
        st->meta_keys[st->n_meta] = dup_str(m->string);
        st->meta_values[st->n_meta] = dup_str(m->valuestring);
        if (!st->meta_keys[st->n_meta] || !st->meta_values[st->n_meta]) return an_fail(err, "%s: out of memory", path);
        st->n_meta++;
    }
    return 0;
}

/* Checks and appends one tensor entry of shard `shard`. */
static int read_entry(an_safetensors *st, const cJSON *e, const char *path, int shard, const unsigned char *data,
                      uint64_t data_size, span *sp, an_error *err) {
    const char *name = e->string;
    /* the name comes from the file: quoted short, a 100 KB one cut (an_quote) */
    char qbuf[AN_QUOTE_CAP];
    const char *qname = an_quote_str(qbuf, sizeof qbuf, name);
    if (!cJSON_IsObject(e)) return an_fail(err, "%s: tensor %s: entry is not an object", path, qname);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!jd) return an_fail(err, "%s: tensor %s: missing \"dtype\"", path, qname);
    if (!js) return an_fail(err, "%s: tensor %s: missing \"shape\"", path, qname);
    if (!jo) return an_fail(err, "%s: tensor %s: missing \"data_offsets\"", path, qname);
    an_st_tensor t;
    memset(&t, 0, sizeof t);
    if (!cJSON_IsString(jd) || dtype_parse(jd->valuestring, &t.dtype) != 0)
        return an_fail(err, "%s: tensor %s: unknown dtype %s", path, qname,
                       cJSON_IsString(jd) ? AN_QUOTE(jd->valuestring) : "(not a string)");
    if (!cJSON_IsArray(js)) return an_fail(err, "%s: tensor %s: \"shape\" is not an array", path, qname);
    int nd = cJSON_GetArraySize(js);
    if (nd > AN_MAX_DIMS) return an_fail(err, "%s: tensor %s: %d dimensions, at most %d supported", path, qname, nd, AN_MAX_DIMS);
    t.ndim = nd;
    /* numel * element size is computed with an overflow check against the data section size */
    uint64_t esz = an_dtype_size(t.dtype), nbytes = esz;
    int i = 0;
    for (const cJSON *d = js->child; d; d = d->next, i++) {
        uint64_t v;
        if (json_uint(d, &v) != 0)
            return an_fail(err, "%s: tensor %s: shape[%d] is not a non-negative integer", path, qname, i);
        t.shape[i] = (int64_t)v;
        if (v && nbytes > UINT64_MAX / v)
            return an_fail(err, "%s: tensor %s: shape is too large", path, qname);
        nbytes *= v;
    }
    uint64_t b, en;
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 || json_uint(jo->child, &b) != 0 ||
        json_uint(jo->child->next, &en) != 0)
        return an_fail(err, "%s: tensor %s: \"data_offsets\" is not two non-negative integers", path, qname);
    if (en < b) return an_fail(err, "%s: tensor %s: data_offsets [%llu, %llu] end before they begin", path, qname,
                               (unsigned long long)b, (unsigned long long)en);
    if (en > data_size)
        return an_fail(err, "%s: tensor %s: data_offsets [%llu, %llu] run past the end of the data (%llu bytes; "
                            "truncated file?)",
                       path, qname, (unsigned long long)b, (unsigned long long)en, (unsigned long long)data_size);
    if (en - b != nbytes)
        return an_fail(err, "%s: tensor %s: shape and dtype %s need %llu bytes but data_offsets hold %llu", path,
                       qname, an_dtype_name(t.dtype), (unsigned long long)nbytes, (unsigned long long)(en - b));
    t.name = dup_str(name);
    if (!t.name) return an_fail(err, "%s: out of memory", path);
    t.data = data + b;
    t.nbytes = (size_t)nbytes;
    t.shard = shard;
    st->tensors[st->n_tensors++] = t;
    sp->begin = b;
    sp->end = en;
    sp->name = name;
    return 0;
}

/* Maps `path` as shard number st->n_files and appends its tensors. */
static int read_shard(an_safetensors *st, const char *path, int *cap, an_error *err) {
    if (an_st_add_file(st, path, err) != 0) return -1;
    int shard = st->n_files - 1;
    const unsigned char *p = st->files[shard].data;
    uint64_t size = st->files[shard].size;
    if (size < 8) return an_fail(err, "%s: %llu bytes, too short for a safetensors file (truncated?)", path, (unsigned long long)size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | p[i];
    if (hlen > AN_ST_MAX_HEADER)
        return an_fail(err, "%s: header length %llu is absurd (limit %llu): not a safetensors file?", path,
                       (unsigned long long)hlen, AN_ST_MAX_HEADER);
    if (hlen > size - 8)
        return an_fail(err, "%s: header length %llu runs past the end of the file (%llu bytes; truncated?)", path,
                       (unsigned long long)hlen, (unsigned long long)size);
    cJSON *root = cJSON_ParseWithLength((const char *)p + 8, (size_t)hlen);
    if (!root) return an_fail(err, "%s: header is not valid JSON", path);
    int rc = 0, n_entries = 0;
    span *spans = NULL;
    if (!cJSON_IsObject(root)) {
        rc = an_fail(err, "%s: header is not a JSON object", path);
        goto done;
    }
    spans = malloc(((size_t)cJSON_GetArraySize(root) + 1) * sizeof *spans);
    if (!spans) {
        rc = an_fail(err, "%s: out of memory", path);
        goto done;
    }
    const unsigned char *data = p + 8 + hlen;
    uint64_t data_size = size - 8 - hlen;
    int seen_meta = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (seen_meta++) {
                rc = an_fail(err, "%s: \"__metadata__\" appears twice", path);
                goto done;
            }
            /* sharded models: the first shard's metadata stands for the set */
            if (shard == 0 && (rc = read_metadata(st, e, path, err)) != 0) goto done;
            continue;
        }
        if (grow_tensors(st, cap) != 0) {
            rc = an_fail(err, "%s: out of memory", path);
            goto done;
        }
        if ((rc = read_entry(st, e, path, shard, data, data_size, &spans[n_entries], err)) != 0) goto done;
        n_entries++;
    }
    /* The tensors must tile [0, data_size) without gaps or overlaps (as the reference library demands). */
    qsort(spans, (size_t)n_entries, sizeof *spans, span_cmp);
    uint64_t at = 0;
    for (int i = 0; i < n_entries; i++) {
        if (spans[i].begin != at) {
            rc = an_fail(err, "%s: tensor %s: data_offsets begin at %llu but the previous tensor ends at %llu "
                              "(overlapping or out-of-order offsets)",
                         path, AN_QUOTE(spans[i].name), (unsigned long long)spans[i].begin, (unsigned long long)at);
            goto done;
        }
        at = spans[i].end;
    }
    if (at != data_size)
        rc = an_fail(err, "%s: tensors cover %llu bytes of data but the file holds %llu after the header", path,
                     (unsigned long long)at, (unsigned long long)data_size);
done:
    free(spans);
    cJSON_Delete(root);
    return rc;
}

int an_st_add_file(an_safetensors *st, const char *path, an_error *err) {
    an_mapped_file *files = realloc(st->files, (size_t)(st->n_files + 1) * sizeof *files);
    if (!files) return an_fail(err, "%s: out of memory", path);
    st->files = files;
    char **paths = realloc(st->paths, (size_t)(st->n_files + 1) * sizeof *paths);
    if (!paths) return an_fail(err, "%s: out of memory", path);
    st->paths = paths;
    if (!(paths[st->n_files] = dup_str(path))) return an_fail(err, "%s: out of memory", path);
    if (an_map_file(&st->files[st->n_files], path, err) != 0) {
        free(paths[st->n_files]);
        return -1;
    }
    st->n_files++;
    return 0;
}

static int check_duplicates(const an_safetensors *st, const char *path, an_error *err) {
    for (int i = 1; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0)
            return an_fail(err, "%s: tensor %s appears twice", path, AN_QUOTE(st->tensors[i].name));
    return 0;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int read_index(an_safetensors *st, const char *index_path, int *cap, an_error *err) {
    char *text = an_read_file(index_path, NULL, err);
    if (!text) return -1;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root) return an_fail(err, "%s: not valid JSON", index_path);
    int rc = 0;
    char dir[4096];
    const char **shard_names = NULL;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm) || !wm->child) {
        rc = an_fail(err, "%s: missing or empty \"weight_map\" object", index_path);
        goto done;
    }
    /* shards are named relative to the index's folder */
    size_t dl = strlen(index_path);
    while (dl && index_path[dl - 1] != '/') dl--;
    if (dl >= sizeof dir) {
        rc = an_fail(err, "%s: path too long", index_path);
        goto done;
    }
    memcpy(dir, index_path, dl);
    dir[dl] = 0;
    int n = cJSON_GetArraySize(wm);
    shard_names = calloc((size_t)n, sizeof *shard_names);
    if (!shard_names) {
        rc = an_fail(err, "%s: out of memory", index_path);
        goto done;
    }
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !e->valuestring[0] || strstr(e->valuestring, "/")) {
            rc = an_fail(err, "%s: weight_map entry %s is not a shard file name", index_path, AN_QUOTE(e->string));
            goto done;
        }
        int s = 0;
        while (s < st->n_files && strcmp(shard_names[s], e->valuestring) != 0) s++;
        if (s < st->n_files) continue;
        char shard_path[4096];
        if (snprintf(shard_path, sizeof shard_path, "%s%s", dir, e->valuestring) >= (int)sizeof shard_path) {
            rc = an_fail(err, "%s: shard path too long", index_path);
            goto done;
        }
        shard_names[st->n_files] = e->valuestring;
        if ((rc = read_shard(st, shard_path, cap, err)) != 0) goto done;
    }
    qsort(st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, tensor_name_cmp);
    if ((rc = check_duplicates(st, index_path, err)) != 0) goto done;
    for (const cJSON *e = wm->child; e; e = e->next) {
        const an_st_tensor *t = an_st_find(st, e->string);
        if (!t || strcmp(shard_names[t->shard], e->valuestring) != 0) {
            rc = an_fail(err, "%s: tensor %s is listed in shard %s but that shard does not hold it", index_path,
                         AN_QUOTE(e->string), AN_QUOTE(e->valuestring));
            goto done;
        }
    }
done:
    free(shard_names);
    cJSON_Delete(root);
    return rc;
}

int an_st_open(an_safetensors *st, const char *path, an_error *err) {
    memset(st, 0, sizeof *st);
    int cap = 0, rc;
    if (an_is_dir(path)) {
        char p[4096];
        if (an_path_join(p, sizeof p, path, "model.safetensors") != 0) return an_fail(err, "%s: path too long", path);
        if (an_file_exists(p)) return an_st_open(st, p, err);
        if (an_path_join(p, sizeof p, path, "model.safetensors.index.json") != 0)
            return an_fail(err, "%s: path too long", path);
        if (an_file_exists(p)) return an_st_open(st, p, err);
        return an_fail(err, "%s: no model.safetensors or model.safetensors.index.json in this folder", path);
    }
    if (ends_with(path, ".json")) {
        rc = read_index(st, path, &cap, err);
    } else {
        rc = read_shard(st, path, &cap, err);
        if (rc == 0) {
            qsort(st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, tensor_name_cmp);
            rc = check_duplicates(st, path, err);
        }
    }
    if (rc != 0) an_st_close(st);
    return rc;
}

void an_st_close(an_safetensors *st) {
    for (int i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    free(st->tensors);
    for (int i = 0; i < st->n_files; i++) {
        an_unmap_file(&st->files[i]);
        free(st->paths[i]);
    }
    free(st->files);
    free(st->paths);
    for (int i = 0; i < st->n_meta; i++) {
        free(st->meta_keys[i]);
        free(st->meta_values[i]);
    }
    free(st->meta_keys);
    free(st->meta_values);
    memset(st, 0, sizeof *st);
}

const an_st_tensor *an_st_find(const an_safetensors *st, const char *name) {
    int lo = 0, hi = st->n_tensors - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(st->tensors[mid].name, name);
        if (c == 0) return &st->tensors[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

static void format_shape(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t at = 0;
    at += (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && at < n; i++) at += (size_t)snprintf(buf + at, n - at, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (at < n) snprintf(buf + at, n - at, "]");
}

const an_st_tensor *an_st_expect(const an_safetensors *st, const char *name, int ndim, const int64_t *shape,
                                 an_error *err) {
    const an_st_tensor *t = an_st_find(st, name);
    if (!t) {
        an_fail(err, "%s: tensor %s is missing", st->n_files ? st->paths[0] : "(no file)", AN_QUOTE(name));
        return NULL;
    }
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char have[160], want[160];
        format_shape(have, sizeof have, t->ndim, t->shape);
        format_shape(want, sizeof want, ndim, shape);
        an_fail(err, "%s: tensor %s has shape %s but %s was expected", st->paths[t->shard], AN_QUOTE(name), have, want);
        return NULL;
    }
    return t;
}

const char *an_st_meta(const an_safetensors *st, const char *key) {
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_values[i];
    return NULL;
}

int64_t an_st_numel(const an_st_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* Elements are read with memcpy: a file whose header is not padded to 8 bytes leaves data unaligned. */
int an_st_to_f32(const an_st_tensor *t, float *dst, an_error *err) {
    size_t n = (size_t)an_st_numel(t);
    const unsigned char *s = t->data;
    switch (t->dtype) {
    case AN_F32:
        if (n) memcpy(dst, s, n * 4);
        return 0;
    case AN_F16:
    case AN_BF16:
        if ((uintptr_t)s % 2 == 0) {
            if (t->dtype == AN_F16) an_f16_to_f32_n(dst, (const uint16_t *)s, n);
            else an_bf16_to_f32_n(dst, (const uint16_t *)s, n);
            return 0;
        }
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = t->dtype == AN_F16 ? an_f16_to_f32(h) : an_bf16_to_f32(h);
        }
        return 0;
    case AN_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, s + 8 * i, 8);
            dst[i] = (float)d;
        }
        return 0;
    default:
        return an_fail(err, "tensor %s: dtype %s is not a floating-point type", AN_QUOTE(t->name), an_dtype_name(t->dtype));
    }
}

int an_st_check_finite(const an_st_tensor *t, const float *v, const char *file, an_error *err) {
    size_t n = (size_t)an_st_numel(t);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return an_fail(err, "%s: tensor %s holds a NaN or infinite value (first at element %zu)", file, t->name, i);
    return 0;
}
