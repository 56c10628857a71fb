/* Reading the arrays bitsandbytes serializes for a Linear4bit weight (QuantState.as_dict(packed=True))
 * and checking that they agree with each other before anything computes with them. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/io/nf4_bnb.h"

static int valid_blocksize(double bs) {
    if (!(bs >= 32 && bs <= 4096) || bs != floor(bs)) return 0;
    int b = (int)bs;
    return (b & (b - 1)) == 0;
}

static const char *str_field(const cJSON *root, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Reads shape, blocksize, quant_type and the nested fields of the packed quant_state JSON. */
typedef struct bnb_state {
    int64_t rows, cols, n;
    int blocksize;
    int nested;
    int nested_blocksize;
    float offset;
} bnb_state;

static int parse_state(bnb_state *s, const char *name, const char *json, size_t len, an_error *err) {
    memset(s, 0, sizeof *s);
    if (!json || len == 0) return an_fail(err, "%s: quant_state.bitsandbytes__nf4 is missing or empty", name);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return an_fail(err, "%s: quant_state.bitsandbytes__nf4 is not a JSON object", name);
    }
    int rc = -1;
    const char *qt = str_field(root, "quant_type");
    const cJSON *bs = cJSON_GetObjectItemCaseSensitive(root, "blocksize");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(root, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(root, "nested_offset");
    const cJSON *nbs = cJSON_GetObjectItemCaseSensitive(root, "nested_blocksize");
    if (!qt) {
        an_fail(err, "%s: quant_state has no quant_type", name);
    } else if (strcmp(qt, "nf4") != 0) {
        an_fail(err, "%s: quant_state quant_type is %s, only \"nf4\" is supported", name, AN_QUOTE(qt));
    } else if (!cJSON_IsNumber(bs) || !valid_blocksize(bs->valuedouble)) {
        an_fail(err, "%s: quant_state blocksize is missing or not a power of two in 32..4096", name);
    } else if (!cJSON_IsArray(shape) || cJSON_GetArraySize(shape) < 1 || cJSON_GetArraySize(shape) > 8) {
        an_fail(err, "%s: quant_state shape is missing or not a list of 1 to 8 sizes", name);
    } else {
        s->blocksize = (int)bs->valuedouble;
        int nd = cJSON_GetArraySize(shape), ok = 1;
        int64_t n = 1, last = 0;
        for (int d = 0; d < nd && ok; d++) {
            const cJSON *e = cJSON_GetArrayItem(shape, d);
            double v = cJSON_IsNumber(e) ? e->valuedouble : -1;
            if (!(v >= 1 && v <= 1e15) || v != floor(v) || (double)n * v > 9e15) ok = 0;
            else {
                last = (int64_t)v;
                n *= last;
            }
        }
        if (!ok) {
            an_fail(err, "%s: quant_state shape has a size that is not a positive whole number (or is too large)", name);
        } else {
            s->n = n;
            s->cols = last;
            s->rows = n / last;
            s->nested = off != NULL;
            if (s->nested && (!cJSON_IsNumber(off) || !isfinite(off->valuedouble))) {
                an_fail(err, "%s: quant_state nested_offset is not a finite number", name);
            } else if (s->nested && (!cJSON_IsNumber(nbs) || !valid_blocksize(nbs->valuedouble))) {
                an_fail(err, "%s: quant_state nested_blocksize is missing or not a power of two in 32..4096", name);
            } else if (!s->nested && nbs) {
                an_fail(err, "%s: quant_state has nested_blocksize but no nested_offset", name);
            } else {
                if (s->nested) {
                    /* written by Python from a float32 value, so it converts back exactly */
                    s->offset = (float)off->valuedouble;
                    s->nested_blocksize = (int)nbs->valuedouble;
                }
                rc = 0;
            }
        }
    }
    cJSON_Delete(root);
    return rc;
}

int an_nf4_from_bnb(an_nf4_tensor *t, const an_nf4_bnb_arrays *a, an_error *err) {
    memset(t, 0, sizeof *t);
    const char *name = a->name ? a->name : "nf4 weight";
    bnb_state s;
    if (parse_state(&s, name, a->quant_state_json, a->quant_state_len, err)) return -1;
    int64_t n_blocks = (s.n + s.blocksize - 1) / s.blocksize;
    int64_t want_bytes = (s.n + 1) / 2;
    if (!a->weight || a->weight_bytes != want_bytes)
        return an_fail(err, "%s: weight holds %lld bytes but shape [%lld x %lld] needs %lld (two 4-bit codes per byte)",
                       name, (long long)a->weight_bytes, (long long)s.rows, (long long)s.cols, (long long)want_bytes);
    if (a->absmax_count != n_blocks)
        return an_fail(err, "%s: absmax has %lld values but %lld elements in blocks of %d need %lld", name,
                       (long long)a->absmax_count, (long long)s.n, s.blocksize, (long long)n_blocks);
    if (!a->quant_map || a->quant_map_count != 16)
        return an_fail(err, "%s: quant_map has %lld values, NF4 needs 16", name, (long long)a->quant_map_count);
    /* bitsandbytes ignores the stored map and uses its built-in NF4 table; a different map means
     * the file is not what its quant_type says. 1e-6 allows for nothing but float32 rounding. */
    for (int i = 0; i < 16; i++)
        if (!(fabsf(a->quant_map[i] - an_nf4_code[i]) <= 1e-6f))
            return an_fail(err, "%s: quant_map[%d] is %g, not the NF4 value %g", name, i, a->quant_map[i], an_nf4_code[i]);
    int has_nested = a->nested_absmax || a->nested_quant_map;
    if (s.nested && !has_nested)
        return an_fail(err, "%s: quant_state has nested_offset but nested_absmax / nested_quant_map are missing", name);
    if (!s.nested && has_nested)
        return an_fail(err, "%s: nested_absmax / nested_quant_map are present but quant_state has no nested_offset", name);
    if (s.nested ? !a->absmax_u8 : !a->absmax_f32)
        return an_fail(err, "%s: absmax must be %s for a %s weight", name, s.nested ? "uint8 codes" : "float32",
                       s.nested ? "double-quantized" : "plainly quantized");

    int64_t n_blocks2 = 0;
    if (s.nested) {
        n_blocks2 = (n_blocks + s.nested_blocksize - 1) / s.nested_blocksize;
        if (!a->nested_absmax || a->nested_absmax_count != n_blocks2)
            return an_fail(err, "%s: nested_absmax has %lld values but %lld absmax codes in blocks of %d need %lld", name,
                           (long long)a->nested_absmax_count, (long long)n_blocks, s.nested_blocksize, (long long)n_blocks2);
        if (!a->nested_quant_map || a->nested_quant_map_count != 256)
            return an_fail(err, "%s: nested_quant_map has %lld values, 8-bit codes need 256", name,
                           (long long)a->nested_quant_map_count);
        for (int i = 0; i < 256; i++) {
            float c = a->nested_quant_map[i];
            if (!(c >= -1.0f && c <= 1.0f) || (i > 0 && c < a->nested_quant_map[i - 1]))
                return an_fail(err, "%s: nested_quant_map[%d] = %g is not an ascending value in [-1, 1]", name, i, c);
        }
        for (int64_t b = 0; b < n_blocks2; b++)
            if (!isfinite(a->nested_absmax[b]) || a->nested_absmax[b] < 0)
                return an_fail(err, "%s: nested_absmax[%lld] is %g, scales must be finite and >= 0", name, (long long)b,
                               a->nested_absmax[b]);
    } else {
        /* An all-zero block has absmax 0 (legal); NaN, infinite or negative scales are damage. */
        for (int64_t b = 0; b < n_blocks; b++)
            if (!isfinite(a->absmax_f32[b]) || a->absmax_f32[b] < 0)
                return an_fail(err, "%s: absmax[%lld] is %g, scales must be finite and >= 0", name, (long long)b,
                               a->absmax_f32[b]);
    }

    t->rows = s.rows;
    t->cols = s.cols;
    t->n = s.n;
    t->blocksize = s.blocksize;
    t->n_blocks = n_blocks;
    t->packed = malloc((size_t)want_bytes);
    int oom = !t->packed;
    if (s.nested) {
        t->double_quant = 1;
        t->blocksize2 = s.nested_blocksize;
        t->n_blocks2 = n_blocks2;
        t->offset = s.offset;
        memcpy(t->code8, a->nested_quant_map, sizeof t->code8);
        t->qabsmax = malloc((size_t)n_blocks);
        t->absmax2 = malloc((size_t)n_blocks2 * sizeof(float));
        oom |= !t->qabsmax || !t->absmax2;
    } else {
        t->absmax = malloc((size_t)n_blocks * sizeof(float));
        oom |= !t->absmax;
    }
    if (oom) {
        an_nf4_tensor_free(t);
        return an_fail(err, "%s: out of memory reading an NF4 weight of %lld elements", name, (long long)s.n);
    }
    memcpy(t->packed, a->weight, (size_t)want_bytes);
    if (s.nested) {
        memcpy(t->qabsmax, a->absmax_u8, (size_t)n_blocks);
        memcpy(t->absmax2, a->nested_absmax, (size_t)n_blocks2 * sizeof(float));
    } else {
        memcpy(t->absmax, a->absmax_f32, (size_t)n_blocks * sizeof(float));
    }
    return 0;
}
