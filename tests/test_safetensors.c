/* model/safetensors: reading files written by the Python library, writing files it writes byte for byte,
 * f16/bf16 rounding against torch, real model files, and a bad-input case for every check. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "model/io/safetensors.h"
#include "tests/test.h"

#define REF "tests/ref/"

static double json_value(const cJSON *v) {
    if (cJSON_IsString(v)) {
        if (strcmp(v->valuestring, "nan") == 0) return NAN;
        return strcmp(v->valuestring, "inf") == 0 ? INFINITY : -INFINITY;
    }
    return v->valuedouble;
}

static int64_t raw_int(const an_st_tensor *t, int64_t i) {
    const unsigned char *p = (const unsigned char *)t->data + (size_t)i * an_dtype_size(t->dtype);
    switch (t->dtype) {
    case AN_I64: { int64_t v; memcpy(&v, p, 8); return v; }
    case AN_I32: { int32_t v; memcpy(&v, p, 4); return v; }
    case AN_I16: { int16_t v; memcpy(&v, p, 2); return v; }
    case AN_I8: return (int8_t)p[0];
    default: return p[0]; /* U8, BOOL */
    }
}

/* Every tensor of the Python-written file: dtype, shape, and values exactly as torch reads them
 * (exact equality: the conversions are exact, f16/bf16 -> f32 loses nothing). */
static void test_reads_python_file_exactly(void) {
    an_safetensors st;
    an_error e;
    CHECK_MSG(an_st_open(&st, REF "st_python.safetensors", &e) == 0, "%s", e.msg);
    char *text = an_read_file(REF "st_python_expected.json", NULL, &e);
    cJSON *exp = text ? cJSON_Parse(text) : NULL;
    free(text);
    CHECK(exp != NULL);
    if (!exp) return;
    CHECK(st.n_tensors == cJSON_GetArraySize(exp));
    CHECK_STR(an_st_meta(&st, "note"), "autoneg fixture");
    CHECK_STR(an_st_meta(&st, "format"), "pt");
    for (const cJSON *x = exp->child; x; x = x->next) {
        const an_st_tensor *t = an_st_find(&st, x->string);
        CHECK_MSG(t != NULL, "tensor %s missing", x->string);
        if (!t) continue;
        const cJSON *shape = cJSON_GetObjectItem(x, "shape"), *vals = cJSON_GetObjectItem(x, "values");
        CHECK(t->ndim == cJSON_GetArraySize(shape));
        int d = 0;
        for (const cJSON *s = shape->child; s; s = s->next, d++) CHECK(t->shape[d] == (int64_t)s->valuedouble);
        int64_t n = an_st_numel(t);
        CHECK(n == cJSON_GetArraySize(vals));
        CHECK(t->nbytes == (size_t)n * an_dtype_size(t->dtype));
        const char *tdt = cJSON_GetObjectItem(x, "dtype")->valuestring;
        int is_float = t->dtype == AN_F32 || t->dtype == AN_F16 || t->dtype == AN_BF16 || t->dtype == AN_F64;
        CHECK(is_float == (strstr(tdt, "float") != NULL));
        float *f = malloc((size_t)(n ? n : 1) * sizeof *f);
        if (is_float) CHECK(an_st_to_f32(t, f, &e) == 0);
        int64_t i = 0;
        for (const cJSON *v = vals->child; v; v = v->next, i++) {
            double want = json_value(v);
            if (t->dtype == AN_F64) {
                double got;
                memcpy(&got, (const char *)t->data + 8 * i, 8);
                CHECK_MSG(got == want, "%s[%lld] = %.17g, want %.17g", t->name, (long long)i, got, want);
                CHECK(f[i] == (float)want); /* 1e300 becomes inf, as torch's .float() does */
            } else if (is_float) {
                CHECK_MSG(isnan(want) ? isnan(f[i]) : (double)f[i] == want && !signbit(f[i]) == !signbit(want),
                          "%s[%lld] = %.9g, want %.17g", t->name, (long long)i, (double)f[i], want);
            } else {
                CHECK_MSG(raw_int(t, i) == (int64_t)want, "%s[%lld] = %lld, want %.17g", t->name, (long long)i,
                          (long long)raw_int(t, i), want);
            }
        }
        free(f);
    }
    /* aligned data: the Python library pads the header to 8 bytes and orders tensors by dtype */
    for (int i = 0; i < st.n_tensors; i++)
        CHECK(((uintptr_t)st.tensors[i].data) % an_dtype_size(st.tensors[i].dtype) == 0);
    const an_st_tensor *t = an_st_find(&st, "i64.values");
    CHECK(an_st_to_f32(t, (float[3]){0}, &e) == -1);
    CHECK_CONTAINS(e.msg, "i64.values");
    CHECK_CONTAINS(e.msg, "not a floating-point type");
    CHECK(an_st_find(&st, "nope") == NULL);
    cJSON_Delete(exp);
    an_st_close(&st);
}

/* f32 -> f16 / bf16 against torch's .half() / .bfloat16() of the same inputs, bit for bit. */
static void test_half_rounding_matches_torch(void) {
    an_safetensors st;
    an_error e;
    CHECK_MSG(an_st_open(&st, REF "st_rounding.safetensors", &e) == 0, "%s", e.msg);
    const an_st_tensor *x = an_st_find(&st, "f32"), *h = an_st_find(&st, "f16"), *b = an_st_find(&st, "bf16");
    CHECK(x && h && b && an_st_numel(x) == an_st_numel(h) && an_st_numel(x) == an_st_numel(b) && an_st_numel(x) > 1500);
    if (!x || !h || !b) return;
    int bad16 = 0, badb = 0;
    for (int64_t i = 0; i < an_st_numel(x); i++) {
        float f;
        uint16_t want_h, want_b;
        memcpy(&f, (const char *)x->data + 4 * i, 4);
        memcpy(&want_h, (const char *)h->data + 2 * i, 2);
        memcpy(&want_b, (const char *)b->data + 2 * i, 2);
        if (an_f32_to_f16(f) != want_h && bad16++ < 5)
            CHECK_MSG(0, "f16(%.9g) = 0x%04x, torch 0x%04x", (double)f, an_f32_to_f16(f), want_h);
        if (an_f32_to_bf16(f) != want_b && badb++ < 5)
            CHECK_MSG(0, "bf16(%.9g) = 0x%04x, torch 0x%04x", (double)f, an_f32_to_bf16(f), want_b);
    }
    CHECK(bad16 == 0 && badb == 0);
    /* the array forms agree with the scalar ones bit for bit */
    size_t n = (size_t)an_st_numel(x);
    float *xs = malloc(n * sizeof *xs);
    uint16_t *hs = malloc(n * sizeof *hs), *bs = malloc(n * sizeof *bs);
    memcpy(xs, x->data, n * 4);
    an_f32_to_f16_n(hs, xs, n);
    an_f32_to_bf16_n(bs, xs, n);
    CHECK(memcmp(hs, h->data, n * 2) == 0 && memcmp(bs, b->data, n * 2) == 0);
    free(xs);
    free(hs);
    free(bs);
    an_st_close(&st);
    static uint16_t all[65536];
    static float f16s[65536], bf16s[65536];
    for (uint32_t u = 0; u < 65536; u++) all[u] = (uint16_t)u;
    an_f16_to_f32_n(f16s, all, 65536);
    an_bf16_to_f32_n(bf16s, all, 65536);
    int same = 1;
    for (uint32_t u = 0; u < 65536; u++) {
        float a = an_f16_to_f32((uint16_t)u), c = an_bf16_to_f32((uint16_t)u);
        same &= memcmp(&a, &f16s[u], 4) == 0 && memcmp(&c, &bf16s[u], 4) == 0;
    }
    CHECK(same);
    uint16_t back[65536];
    an_f32_to_bf16_n(back, bf16s, 65536);
    for (uint32_t u = 0; u < 65536; u++)
        if (!isnan(bf16s[u])) same &= back[u] == u;
    CHECK(same);
    /* Every half value survives f16 -> f32 -> f16 (the decode is exact), NaN stays NaN; same for bf16. */
    for (uint32_t u = 0; u < 65536; u++) {
        uint16_t v = (uint16_t)u;
        float f = an_f16_to_f32(v), g = an_bf16_to_f32(v);
        int nan16 = (v & 0x7c00) == 0x7c00 && (v & 0x3ff), nanb = (v & 0x7f80) == 0x7f80 && (v & 0x7f);
        CHECK(nan16 ? isnan(f) && isnan(an_f16_to_f32(an_f32_to_f16(f))) : an_f32_to_f16(f) == v);
        CHECK(nanb ? isnan(g) && isnan(an_bf16_to_f32(an_f32_to_bf16(g))) : an_f32_to_bf16(g) == v);
    }
    /* hand-computed: smallest f16 subnormal 2^-24, largest 65504, 0x3c00 = 1 */
    CHECK(an_f16_to_f32(0x0001) == 0x1p-24f && an_f16_to_f32(0x7bff) == 65504.0f && an_f16_to_f32(0x3c00) == 1.0f);
    CHECK(an_bf16_to_f32(0x3f80) == 1.0f);
}

static void fill_bytes(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)((i * 131u + seed * 17u + 7u) >> 1);
}

/* Every dtype, odd sizes (which would misalign a naive layout), a scalar, an empty tensor, metadata. */
static void test_write_read_round_trip_all_dtypes(void) {
    const char *path = test_tmp_path("roundtrip.safetensors");
    an_st_writer w;
    an_st_writer_init(&w);
    an_error e;
    unsigned char buf[10][3 * 5 * 8];
    char names[10][16];
    for (int t = AN_F32; t <= AN_BOOL; t++) {
        int k = t - AN_F32;
        fill_bytes(buf[k], sizeof buf[k], (unsigned)t);
        snprintf(names[k], sizeof names[k], "t.%s", an_dtype_name((an_dtype)t));
        int64_t shape[2] = {3, 5};
        CHECK(an_st_writer_add(&w, names[k], (an_dtype)t, 2, shape, buf[k], &e) == 0);
    }
    float scalar = 7.5f;
    CHECK(an_st_writer_add(&w, "scalar", AN_F32, 0, NULL, &scalar, &e) == 0);
    CHECK(an_st_writer_add(&w, "empty", AN_F16, 1, (int64_t[]){0}, NULL, &e) == 0);
    CHECK(an_st_writer_add(&w, "scalar", AN_F32, 0, NULL, &scalar, &e) == -1);
    CHECK_CONTAINS(e.msg, "added twice");
    CHECK(an_st_writer_meta(&w, "step", "12", &e) == 0);
    CHECK(an_st_writer_meta(&w, "quote\"d", "a\\b\n", &e) == 0);
    CHECK(an_st_writer_add(&w, "neg", AN_F32, 1, (int64_t[]){-2}, &scalar, &e) == -1);
    CHECK_CONTAINS(e.msg, "tensor \"neg\": negative shape[0]");
    CHECK(an_st_writer_add(&w, "deep", AN_F32, 9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}, &scalar, &e) == -1);
    CHECK_CONTAINS(e.msg, "tensor \"deep\": 9 dimensions");
    CHECK(an_st_writer_add(&w, "__metadata__", AN_F32, 0, NULL, &scalar, &e) == -1);
    CHECK(an_st_writer_add(&w, "nodata", AN_F32, 1, (int64_t[]){3}, NULL, &e) == -1);
    CHECK_CONTAINS(e.msg, "tensor \"nodata\": no data");
    CHECK(an_st_write(&w, "/nonexistent-dir/x.safetensors", &e) == -1);
    CHECK_CONTAINS(e.msg, "/nonexistent-dir/x.safetensors.tmp: cannot create");
    CHECK_MSG(an_st_write(&w, path, &e) == 0, "%s", e.msg);
    an_st_writer_free(&w);
    CHECK(!an_file_exists(test_tmp_path("roundtrip.safetensors.tmp")));

    an_safetensors st;
    CHECK_MSG(an_st_open(&st, path, &e) == 0, "%s", e.msg);
    CHECK(st.n_tensors == 12);
    for (int t = AN_F32; t <= AN_BOOL; t++) {
        int k = t - AN_F32;
        const an_st_tensor *x = an_st_find(&st, names[k]);
        CHECK(x && (int)x->dtype == t && x->ndim == 2 && x->shape[0] == 3 && x->shape[1] == 5);
        if (!x) continue;
        CHECK(x->nbytes == 15 * an_dtype_size((an_dtype)t) && memcmp(x->data, buf[k], x->nbytes) == 0);
        CHECK((uintptr_t)x->data % an_dtype_size((an_dtype)t) == 0);
    }
    const an_st_tensor *s = an_st_find(&st, "scalar"), *z = an_st_find(&st, "empty");
    CHECK(s && s->ndim == 0 && an_st_numel(s) == 1 && memcmp(s->data, &scalar, 4) == 0);
    CHECK(z && z->ndim == 1 && z->shape[0] == 0 && z->nbytes == 0);
    CHECK_STR(an_st_meta(&st, "format"), "pt");
    CHECK_STR(an_st_meta(&st, "step"), "12");
    CHECK_STR(an_st_meta(&st, "quote\"d"), "a\\b\n");
    uint64_t hlen;
    memcpy(&hlen, st.files[0].data, 8);
    CHECK(hlen % 8 == 0);
    an_st_close(&st);
}

/* The C writer reproduces a shard the Python library wrote, byte for byte (same order, padding, JSON). */
static void test_writer_output_is_byte_identical_to_python(void) {
    const char *ref = REF "st_sharded/model-00001-of-00002.safetensors";
    an_safetensors st;
    an_error e;
    CHECK_MSG(an_st_open(&st, ref, &e) == 0, "%s", e.msg);
    an_st_writer w;
    an_st_writer_init(&w);
    for (int i = st.n_tensors - 1; i >= 0; i--) { /* reverse order: the writer must sort */
        const an_st_tensor *t = &st.tensors[i];
        CHECK(an_st_writer_add(&w, t->name, t->dtype, t->ndim, t->shape, t->data, &e) == 0);
    }
    const char *path = test_tmp_path("shard1.safetensors");
    CHECK(an_st_write(&w, path, &e) == 0);
    an_st_writer_free(&w);
    an_mapped_file a, b;
    CHECK(an_map_file(&a, ref, &e) == 0 && an_map_file(&b, path, &e) == 0);
    CHECK_MSG(a.size == b.size && memcmp(a.data, b.data, a.size) == 0, "sizes %zu vs %zu or bytes differ", a.size, b.size);
    an_unmap_file(&a);
    an_unmap_file(&b);
    an_st_close(&st);
}

/* A 2-shard model written the way transformers does; opened by folder and by index path. */
static void test_sharded_index(void) {
    const char *paths[2] = {REF "st_sharded", REF "st_sharded/model.safetensors.index.json"};
    for (int p = 0; p < 2; p++) {
        an_safetensors st;
        an_error e;
        CHECK_MSG(an_st_open(&st, paths[p], &e) == 0, "%s", e.msg);
        CHECK(st.n_files == 2 && st.n_tensors == 4);
        const an_st_tensor *emb = an_st_find(&st, "model.embed_tokens.weight");
        const an_st_tensor *head = an_st_find(&st, "lm_head.weight");
        const an_st_tensor *norm = an_st_find(&st, "model.norm.weight");
        const an_st_tensor *up = an_st_find(&st, "model.layers.0.mlp.up_proj.weight");
        CHECK(emb && head && norm && up);
        if (!emb || !head || !norm || !up) continue;
        CHECK(emb->shard != head->shard && emb->shard == norm->shard && head->shard == up->shard);
        float v[12];
        /* values from the fixture script: arange(12), -arange(12), [1,2,3] bf16, 0.5 f16 */
        CHECK(an_st_to_f32(emb, v, &e) == 0 && v[0] == 0 && v[11] == 11);
        CHECK(an_st_to_f32(head, v, &e) == 0 && v[5] == -5);
        CHECK(an_st_to_f32(norm, v, &e) == 0 && v[0] == 1 && v[2] == 3);
        CHECK(an_st_to_f32(up, v, &e) == 0 && v[0] == 0.5f && v[5] == 0.5f);
        CHECK(an_st_expect(&st, "lm_head.weight", 2, (int64_t[]){3, 4}, &e) == NULL);
        CHECK_CONTAINS(e.msg, "st_sharded/model-00002-of-00002.safetensors: tensor \"lm_head.weight\" has shape [4, 3]");
        an_st_close(&st);
    }
}

/* The real TinyStories-656K checkpoint: shapes from its config.json (hidden 128, ffn 384, 2 layers,
 * 8 heads of 16, 4 kv heads, vocab 2048) and SOURCES.md (20 tensors, only lm_head stored). */
static void test_tinystories_checkpoint(void) {
    an_safetensors st;
    an_error e;
    CHECK_MSG(an_st_open(&st, test_shared("models/TinyStories-656K"), &e) == 0, "%s", e.msg);
    CHECK(st.n_tensors == 20);
    struct { const char *name; int64_t a, b; } want[] = {
        {"lm_head.weight", 2048, 128},
        {"model.layers.0.self_attn.q_proj.weight", 128, 128},
        {"model.layers.1.self_attn.k_proj.weight", 64, 128},
        {"model.layers.1.self_attn.v_proj.weight", 64, 128},
        {"model.layers.0.mlp.gate_proj.weight", 384, 128},
        {"model.layers.0.mlp.down_proj.weight", 128, 384},
        {"model.norm.weight", 128, -1},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const an_st_tensor *t = an_st_find(&st, want[i].name);
        CHECK_MSG(t != NULL, "%s missing", want[i].name);
        if (!t) continue;
        CHECK(t->dtype == AN_F32 && t->shape[0] == want[i].a);
        CHECK(want[i].b < 0 ? t->ndim == 1 : t->ndim == 2 && t->shape[1] == want[i].b);
    }
    CHECK(an_st_find(&st, "model.embed_tokens.weight") == NULL);
    CHECK_STR(an_st_meta(&st, "model.embed_tokens.weight"), "lm_head.weight");
    /* an_st_expect: the loader's shape check, naming the file that holds the tensor */
    CHECK(an_st_expect(&st, "model.layers.1.self_attn.k_proj.weight", 2, (int64_t[]){64, 128}, &e) ==
          an_st_find(&st, "model.layers.1.self_attn.k_proj.weight"));
    CHECK(an_st_expect(&st, "model.layers.1.self_attn.k_proj.weight", 2, (int64_t[]){128, 128}, &e) == NULL);
    CHECK_CONTAINS(e.msg, "TinyStories-656K/model.safetensors: tensor \"model.layers.1.self_attn.k_proj.weight\" "
                          "has shape [64, 128] but [128, 128] was expected");
    CHECK(an_st_expect(&st, "model.norm.weight", 2, (int64_t[]){128, 1}, &e) == NULL);
    CHECK_CONTAINS(e.msg, "has shape [128] but [128, 1] was expected");
    CHECK(an_st_expect(&st, "model.embed_tokens.weight", 2, (int64_t[]){2048, 128}, &e) == NULL);
    CHECK_CONTAINS(e.msg, "model.safetensors: tensor \"model.embed_tokens.weight\" is missing");
    an_st_close(&st);
}

/* ---- bad input ---- */

/* Writes an 8-byte length + header + n_data bytes (zeros). hlen_override != 0 replaces the length. */
static const char *write_raw(const char *name, const char *header, size_t n_data, uint64_t hlen_override) {
    const char *path = test_tmp_path(name);
    size_t hl = strlen(header);
    unsigned char *buf = calloc(8 + hl + n_data, 1);
    uint64_t len = hlen_override ? hlen_override : hl;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(len >> (8 * i));
    memcpy(buf + 8, header, hl);
    an_error e;
    if (an_write_file_atomic(path, buf, 8 + hl + n_data, &e) != 0) CHECK_MSG(0, "%s", e.msg);
    free(buf);
    return path;
}

static void expect_open_error(const char *path, const char *problem, const char *tensor) {
    an_safetensors st;
    an_error e;
    e.msg[0] = 0;
    int rc = an_st_open(&st, path, &e);
    CHECK_MSG(rc == -1, "%s: opened but should fail with \"%s\"", path, problem);
    if (rc == 0) an_st_close(&st);
    CHECK_CONTAINS(e.msg, path);
    CHECK_CONTAINS(e.msg, problem);
    if (tensor) CHECK_CONTAINS(e.msg, tensor);
    CHECK(st.n_tensors == 0 && st.tensors == NULL && st.files == NULL); /* closed on failure */
}

static void test_bad_files_cut_from_a_good_one(void) {
    an_error e;
    size_t n;
    char *good = an_read_file(REF "st_python.safetensors", &n, &e);
    CHECK(good != NULL);
    if (!good) return;
    const char *p = test_tmp_path("truncated.safetensors");
    CHECK(an_write_file_atomic(p, good, n - 3, &e) == 0); /* lose the end of the last tensor */
    expect_open_error(p, "past the end of the data", "bool.values");
    p = test_tmp_path("cut_header.safetensors");
    CHECK(an_write_file_atomic(p, good, 100, &e) == 0); /* cut inside the JSON header */
    expect_open_error(p, "header length 896 runs past the end of the file", NULL);
    p = test_tmp_path("tiny.safetensors");
    CHECK(an_write_file_atomic(p, good, 5, &e) == 0);
    expect_open_error(p, "too short", NULL);
    p = test_tmp_path("absurd.safetensors");
    memcpy(good, "\xff\xff\xff\xff\xff\x7f\x00\x00", 8);
    CHECK(an_write_file_atomic(p, good, n, &e) == 0);
    expect_open_error(p, "is absurd", NULL);
    p = test_tmp_path("extra.safetensors");
    free(good);
    good = an_read_file(REF "st_python.safetensors", &n, &e);
    char *longer = calloc(n + 8, 1);
    memcpy(longer, good, n);
    CHECK(an_write_file_atomic(p, longer, n + 8, &e) == 0); /* trailing bytes nobody owns */
    expect_open_error(p, "tensors cover", NULL);
    free(longer);
    free(good);
}

/* A 100 KB tensor name in a header: messages quote 80 bytes of it and its length. */
static void test_long_name_is_cut(void) {
    enum { N = 100000 };
    char *h = malloc(N + 128);
    h[0] = '{', h[1] = '"';
    memset(h + 2, 'w', N);
    strcpy(h + 2 + N, "\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}");
    char want[200];
    snprintf(want, sizeof want, "tensor \"%.80s...\" (100000 bytes): unknown dtype", h + 2);
    const char *p = write_raw("longname.st", h, 2, 0);
    expect_open_error(p, want, NULL);
    an_safetensors st;
    an_error e;
    if (an_st_open(&st, p, &e) == 0) an_st_close(&st);
    else CHECK_MSG(strlen(e.msg) < 400, "%zu-byte message", strlen(e.msg));
    free(h);
}

static void test_bad_headers(void) {
    expect_open_error(write_raw("past.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, 0),
                      "run past the end of the data", "\"a\"");
    expect_open_error(write_raw("shape.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, 0),
                      "need 12 bytes but data_offsets hold 8", "\"w\"");
    expect_open_error(write_raw("dtype.st", "{\"q\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, 0),
                      "unknown dtype \"F8_E4M3\"", "\"q\"");
    expect_open_error(write_raw("neg.st", "{\"n\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0, 0),
                      "shape[0] is not a non-negative integer", "\"n\"");
    expect_open_error(write_raw("frac.st", "{\"n\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, 0),
                      "shape[0] is not a non-negative integer", "\"n\"");
    expect_open_error(write_raw("nodtype.st", "{\"m\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0),
                      "missing \"dtype\"", "\"m\"");
    expect_open_error(write_raw("noshape.st", "{\"m\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, 0),
                      "missing \"shape\"", "\"m\"");
    expect_open_error(write_raw("nooff.st", "{\"m\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, 0), "missing \"data_offsets\"",
                      "\"m\"");
    expect_open_error(write_raw("rev.st", "{\"r\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4, 0),
                      "end before they begin", "\"r\"");
    expect_open_error(write_raw("overlap.st",
                                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                                12, 0),
                      "overlapping or out-of-order", "\"b\"");
    expect_open_error(write_raw("gap.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, 0),
                      "begin at 4 but the previous tensor ends at 0", "\"a\"");
    expect_open_error(write_raw("dup.st",
                                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                                "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                                8, 0),
                      "appears twice", "\"a\"");
    expect_open_error(write_raw("notjson.st", "{\"a\": nope}", 0, 0), "header is not valid JSON", NULL);
    expect_open_error(write_raw("array.st", "[1, 2]", 0, 0), "header is not a JSON object", NULL);
    expect_open_error(write_raw("meta2.st", "{\"__metadata__\":{\"k\":\"a\"},\"__metadata__\":{\"k\":\"b\",\"l\":\"c\"}}", 0, 0),
                      "\"__metadata__\" appears twice", NULL);
    expect_open_error(write_raw("entry.st", "{\"e\":3}", 0, 0), "entry is not an object", "\"e\"");
    expect_open_error(write_raw("dims.st", "{\"d\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1, 0),
                      "9 dimensions, at most 8", "\"d\"");
    expect_open_error(write_raw("offs.st", "{\"o\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1, 0),
                      "\"data_offsets\" is not two non-negative integers", "\"o\"");
    expect_open_error(write_raw("meta.st", "{\"__metadata__\":{\"k\":3}}", 0, 0), "is not a string", "\"k\"");
    expect_open_error(write_raw("bigshape.st",
                                "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8, 0),
                      "shape is too large", "\"a\"");
    expect_open_error(test_tmp_path("does-not-exist.safetensors"), "cannot open", NULL);
    expect_open_error(test_tmpdir(), "no model.safetensors", NULL);
}

static void test_bad_index(void) {
    /* a weight_map that puts a tensor in the wrong shard, and one naming a missing shard */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/badidx", test_tmpdir());
    an_error e;
    size_t n;
    char *shard = an_read_file(REF "st_sharded/model-00001-of-00002.safetensors", &n, &e);
    char p[600];
    CHECK(shard != NULL);
    if (!shard) return;
    snprintf(p, sizeof p, "mkdir -p %s", dir);
    CHECK(system(p) == 0);
    snprintf(p, sizeof p, "%s/a.safetensors", dir);
    CHECK(an_write_file_atomic(p, shard, n, &e) == 0);
    free(shard);
    const char *wrong = "{\"weight_map\":{\"model.embed_tokens.weight\":\"a.safetensors\",\"lm_head.weight\":\"a.safetensors\"}}";
    snprintf(p, sizeof p, "%s/wrong.index.json", dir);
    CHECK(an_write_file_atomic(p, wrong, strlen(wrong), &e) == 0);
    expect_open_error(p, "\"lm_head.weight\" is listed in shard \"a.safetensors\" but that shard does not hold it", NULL);
    const char *missing = "{\"weight_map\":{\"x\":\"b.safetensors\"}}";
    snprintf(p, sizeof p, "%s/missing.index.json", dir);
    CHECK(an_write_file_atomic(p, missing, strlen(missing), &e) == 0);
    an_safetensors st;
    CHECK(an_st_open(&st, p, &e) == -1);
    CHECK_CONTAINS(e.msg, "b.safetensors: cannot open");
    const char *nomap = "{\"metadata\":{}}";
    snprintf(p, sizeof p, "%s/nomap.index.json", dir);
    CHECK(an_write_file_atomic(p, nomap, strlen(nomap), &e) == 0);
    expect_open_error(p, "missing or empty \"weight_map\"", NULL);
}

/* Deterministic mutations of a good file (one to three bytes of the length or the JSON header changed):
 * every outcome must be either a clean error naming the file or a table whose tensors all lie inside
 * the mapping with nbytes == numel * element size. Catches what the hand-written cases miss (ASan run). */
static void test_mutated_headers(void) {
    an_error e;
    size_t n;
    unsigned char *good = (unsigned char *)an_read_file(REF "st_python.safetensors", &n, &e);
    CHECK(good != NULL);
    if (!good) return;
    unsigned char *buf = malloc(n);
    const char *p = test_tmp_path("mutated.safetensors");
    uint64_t x = 88172645463325252ull; /* xorshift64 state: a fixed sequence */
    FILE *f = fopen(p, "wb");
    CHECK(f != NULL);
    if (!f) return;
    int opened = 0, failed = 0;
    for (int round = 0; round < 1500; round++) {
        memcpy(buf, good, n);
        int k = 1 + round % 3;
        for (int j = 0; j < k; j++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            size_t at = (size_t)(x % 904); /* the 8 length bytes and the 896-byte header */
            static const char repl[] = "0123456789[]{},:\"-. eE\x00\xff";
            buf[at] = (unsigned char)repl[(x >> 32) % (sizeof repl - 1)];
        }
        /* rewritten in place, same size: no fsync and no truncation (both slow on a shared disk) */
        CHECK(fseek(f, 0, SEEK_SET) == 0 && fwrite(buf, 1, n, f) == n && fflush(f) == 0);
        an_safetensors st;
        e.msg[0] = 0;
        if (an_st_open(&st, p, &e) == 0) {
            opened++;
            for (int i = 0; i < st.n_tensors; i++) {
                const an_st_tensor *t = &st.tensors[i];
                const unsigned char *d = t->data, *lo = st.files[0].data, *hi = lo + st.files[0].size;
                CHECK(d >= lo && d + t->nbytes <= hi);
                CHECK(t->nbytes == (size_t)an_st_numel(t) * an_dtype_size(t->dtype));
            }
            an_st_close(&st);
        } else {
            failed++;
            if (!strstr(e.msg, p)) CHECK_MSG(0, "round %d: message without the path: %s", round, e.msg);
        }
    }
    fclose(f);
    CHECK(opened > 0 && failed > 0); /* both paths exercised */
    free(buf);
    free(good);
}

int main(void) {
    RUN(test_reads_python_file_exactly);
    RUN(test_half_rounding_matches_torch);
    RUN(test_write_read_round_trip_all_dtypes);
    RUN(test_writer_output_is_byte_identical_to_python);
    RUN(test_sharded_index);
    RUN(test_tinystories_checkpoint);
    RUN(test_bad_files_cut_from_a_good_one);
    RUN(test_bad_headers);
    RUN(test_long_name_is_cut);
    RUN(test_bad_index);
    RUN(test_mutated_headers);
    return test_finish();
}
