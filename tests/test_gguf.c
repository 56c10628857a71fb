/* model/io/gguf: files written by the gguf Python package (llama.cpp's gguf-py), dequantization bit for
 * bit against its numpy dequantizers, every metadata type, a bad-input case for every check, and the
 * real SmolLM2-135M-Instruct file when `make model` has fetched it. Fixtures: tests/ref/gguf/, made by
 * tests/ref/make_gguf_fixtures.py. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "model/io/gguf.h"
#include "model/io/safetensors.h"
#include "tests/test.h"

#define REF "tests/ref/gguf/"

/* Bit-for-bit equality, where any NaN equals any NaN (their payloads are not a format promise). */
static int same_bits(float a, float b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    uint32_t x, y;
    memcpy(&x, &a, 4);
    memcpy(&y, &b, 4);
    return x == y;
}

static void check_type_file(const char *type, uint32_t ggml_type, int has_quantized) {
    char gpath[256], epath[256];
    snprintf(gpath, sizeof gpath, REF "%s.gguf", type);
    snprintf(epath, sizeof epath, REF "%s.expected.safetensors", type);
    an_gguf g;
    an_safetensors st;
    an_error e;
    CHECK_MSG(an_gguf_open(&g, gpath, &e) == 0, "%s", e.msg);
    CHECK_MSG(an_st_open(&st, epath, &e) == 0, "%s", e.msg);
    if (!g.path || !st.n_files) return;
    CHECK(g.version == 3 && g.alignment == 32);
    CHECK(g.n_tensors == 1 + has_quantized);
    CHECK(st.n_tensors == g.n_tensors);
    for (int i = 0; i < st.n_tensors; i++) {
        const an_st_tensor *x = &st.tensors[i];
        const an_gguf_tensor *t = an_gguf_find_tensor(&g, x->name);
        CHECK_MSG(t != NULL, "%s: tensor %s missing", gpath, x->name);
        if (!t) continue;
        CHECK_MSG(t->type == ggml_type, "%s: %s has type %u", gpath, t->name, t->type);
        /* numpy (2, 256) is ggml [256, 2]; (2, 1, 256) is [256, 1, 2] */
        int raw = strcmp(t->name, "raw") == 0;
        CHECK(t->n_dims == (raw ? 3 : 2));
        CHECK(t->ne[0] == 256 && t->ne[1] == (raw ? 1 : 2) && t->ne[2] == (raw ? 2 : 1) && t->ne[3] == 1);
        CHECK(t->numel == 512 && an_st_numel(x) == 512 && x->dtype == AN_F32);
        CHECK((uintptr_t)t->data % 32 == 0);
        float got[512], want[512];
        memcpy(want, x->data, sizeof want);
        CHECK_MSG(an_gguf_tensor_to_f32(&g, t, got, &e) == 0, "%s", e.msg);
        int bad = 0, first = -1;
        for (int k = 0; k < 512; k++)
            if (!same_bits(got[k], want[k])) {
                if (first < 0) first = k;
                bad++;
            }
        CHECK_MSG(bad == 0, "%s %s: %d of 512 values differ from gguf's dequantize, first [%d]: %.9g vs %.9g", type,
                  t->name, bad, first, first >= 0 ? got[first] : 0.0, first >= 0 ? want[first] : 0.0);
        /* the reference is not degenerate: the values vary */
        int distinct = 0;
        for (int k = 1; k < 512; k++) distinct += want[k] != want[k - 1];
        CHECK_MSG(distinct > 100, "%s %s: only %d changes in the reference", type, t->name, distinct);
    }
    an_st_close(&st);
    an_gguf_close(&g);
}

static void test_dequantize_matches_gguf_bit_for_bit(void) {
    check_type_file("f32", AN_GGML_F32, 1);
    check_type_file("f16", AN_GGML_F16, 1);
    check_type_file("bf16", AN_GGML_BF16, 1);
    check_type_file("q8_0", AN_GGML_Q8_0, 1);
    check_type_file("q4_0", AN_GGML_Q4_0, 1);
    check_type_file("q4_1", AN_GGML_Q4_1, 1);
    check_type_file("q5_0", AN_GGML_Q5_0, 1);
    check_type_file("q5_1", AN_GGML_Q5_1, 1);
    check_type_file("q4_k", AN_GGML_Q4_K, 0);
    check_type_file("q5_k", AN_GGML_Q5_K, 0);
    check_type_file("q6_k", AN_GGML_Q6_K, 0);
}

static void test_type_table(void) {
    const an_ggml_type_info *q4k = an_ggml_type_get(AN_GGML_Q4_K), *q6k = an_ggml_type_get(AN_GGML_Q6_K);
    CHECK(q4k && q4k->block == 256 && q4k->block_bytes == 144 && q4k->dequantizes);
    CHECK(q6k && q6k->block == 256 && q6k->block_bytes == 210);
    CHECK(an_ggml_type_get(4) == NULL && an_ggml_type_get(31) == NULL && an_ggml_type_get(1000) == NULL);
    const an_ggml_type_info *iq = an_ggml_type_get(16);
    CHECK(iq && strcmp(iq->name, "IQ2_XXS") == 0 && !iq->dequantizes);
    float out[256];
    unsigned char blk[66] = {0};
    an_error e;
    CHECK(an_ggml_dequantize(16, blk, out, 256, &e) != 0);
    CHECK_CONTAINS(e.msg, "IQ2_XXS: dequantization is not supported yet");
    CHECK(an_ggml_dequantize(AN_GGML_Q4_0, blk, out, 31, &e) != 0);
    CHECK_CONTAINS(e.msg, "whole number");
}

static int64_t geti(const an_gguf *g, const char *key) {
    int64_t v = -12345;
    an_error e;
    CHECK_MSG(an_gguf_get_int(g, key, &v, &e) == 0, "%s", e.msg);
    return v;
}

static double getf(const an_gguf *g, const char *key) {
    double v = NAN;
    an_error e;
    CHECK_MSG(an_gguf_get_float(g, key, &v, &e) == 0, "%s", e.msg);
    return v;
}

static const an_gguf_value *geta(const an_gguf *g, const char *key, int elem, uint64_t n) {
    const an_gguf_value *a = NULL;
    an_error e;
    CHECK_MSG(an_gguf_get_array(g, key, elem, &a, &e) == 0, "%s", e.msg);
    CHECK_MSG(a && a->v.arr.n == n, "%s: %llu elements", key, a ? (unsigned long long)a->v.arr.n : 0ull);
    return a;
}

static int str_is(const an_gguf_value *v, const char *s) {
    return v->type == AN_GGUF_STRING && v->v.str.len == strlen(s) && memcmp(v->v.str.ptr, s, strlen(s)) == 0;
}

/* The values tests/ref/make_gguf_fixtures.py writes into meta.gguf. */
static void check_meta(const char *path, uint32_t version) {
    an_gguf g;
    an_error e;
    CHECK_MSG(an_gguf_open(&g, path, &e) == 0, "%s", e.msg);
    if (!g.path) return;
    CHECK(g.version == version);
    CHECK(g.alignment == 64);
    CHECK(geti(&g, "t.u8") == 200 && geti(&g, "t.i8") == -100 && geti(&g, "t.u16") == 60000);
    CHECK(geti(&g, "t.i16") == -30000 && geti(&g, "t.u32") == 4000000000ll && geti(&g, "t.i32") == -2000000000);
    CHECK(geti(&g, "t.i64") == -9000000000000000000ll);
    CHECK(getf(&g, "t.f32") == (double)0.1f && getf(&g, "t.f64") == 2.718281828459045);
    const an_gguf_kv *u64 = an_gguf_find_key(&g, "t.u64");
    CHECK(u64 && u64->value.type == AN_GGUF_U64 && u64->value.v.u == 18000000000000000000ull);
    int64_t big;
    CHECK(an_gguf_get_int(&g, "t.u64", &big, &e) != 0);
    CHECK_CONTAINS(e.msg, "too large");
    int b = 0;
    CHECK(an_gguf_get_bool(&g, "t.bool", &b, &e) == 0 && b == 1);
    const char *s;
    uint64_t len;
    CHECK(an_gguf_get_str(&g, "t.str", &s, &len, &e) == 0 && len == strlen("naïve ✓") && memcmp(s, "naïve ✓", len) == 0);
    CHECK(an_gguf_get_str(&g, "t.empty", &s, &len, &e) == 0 && len == 0);
    CHECK(an_gguf_get_str(&g, "general.architecture", &s, &len, &e) == 0 && len == 5 && memcmp(s, "llama", 5) == 0);

    an_gguf_value v;
    const an_gguf_value *a = geta(&g, "a.uint8", AN_GGUF_U8, 2);
    CHECK(a && an_gguf_array_get(a, 1, &v) == 0 && v.v.u == 255 && an_gguf_array_get(a, 2, &v) != 0);
    a = geta(&g, "a.int8", AN_GGUF_I8, 2);
    CHECK(a && an_gguf_array_get(a, 0, &v) == 0 && v.v.i == -128);
    a = geta(&g, "a.uint16", AN_GGUF_U16, 1);
    CHECK(a && an_gguf_array_get(a, 0, &v) == 0 && v.v.u == 65535);
    a = geta(&g, "a.int16", AN_GGUF_I16, 2);
    CHECK(a && an_gguf_array_get(a, 0, &v) == 0 && v.v.i == -32768);
    a = geta(&g, "a.uint32", AN_GGUF_U32, 3);
    CHECK(a && an_gguf_array_get(a, 2, &v) == 0 && v.v.u == 4294967295ull);
    a = geta(&g, "a.int32", AN_GGUF_I32, 3);
    CHECK(a && an_gguf_array_get(a, 0, &v) == 0 && v.v.i == -1);
    a = geta(&g, "a.float32", AN_GGUF_F32, 2);
    CHECK(a && an_gguf_array_get(a, 1, &v) == 0 && v.v.f == -0.25);
    a = geta(&g, "a.bool", AN_GGUF_BOOL, 3);
    CHECK(a && an_gguf_array_get(a, 1, &v) == 0 && v.v.u == 0 && an_gguf_array_get(a, 2, &v) == 0 && v.v.u == 1);
    a = geta(&g, "a.uint64", AN_GGUF_U64, 1);
    CHECK(a && an_gguf_array_get(a, 0, &v) == 0 && v.v.u == UINT64_MAX);
    a = geta(&g, "a.int64", AN_GGUF_I64, 1);
    CHECK(a && an_gguf_array_get(a, 0, &v) == 0 && v.v.i == INT64_MIN);
    a = geta(&g, "a.float64", AN_GGUF_F64, 2);
    CHECK(a && an_gguf_array_get(a, 0, &v) == 0 && v.v.f == 0.1 && an_gguf_array_get(a, 1, &v) == 0 && v.v.f == 1e300);
    a = geta(&g, "a.string", AN_GGUF_STRING, 4);
    CHECK(a && an_gguf_array_get(a, 0, &v) == 0 && str_is(&v, "a"));
    CHECK(a && an_gguf_array_get(a, 1, &v) == 0 && str_is(&v, ""));
    CHECK(a && an_gguf_array_get(a, 2, &v) == 0 && str_is(&v, "三"));
    CHECK(a && an_gguf_array_get(a, 3, &v) == 0 && str_is(&v, "longer string"));
    /* nested: [[1, 2], [3], [4, 5, 6]] of i32, [["x", "yy"], ["zzz"]], [[[1], [2, 3]], [[4]]] */
    a = geta(&g, "a.nested", AN_GGUF_ARRAY, 3);
    an_gguf_value inner, x;
    CHECK(a && an_gguf_array_get(a, 2, &inner) == 0 && inner.type == AN_GGUF_ARRAY && inner.v.arr.elem == AN_GGUF_I32 &&
          inner.v.arr.n == 3 && an_gguf_array_get(&inner, 2, &x) == 0 && x.v.i == 6);
    CHECK(a && an_gguf_array_get(a, 1, &inner) == 0 && inner.v.arr.n == 1 && an_gguf_array_get(&inner, 0, &x) == 0 &&
          x.v.i == 3);
    a = geta(&g, "a.nested_str", AN_GGUF_ARRAY, 2);
    CHECK(a && an_gguf_array_get(a, 0, &inner) == 0 && inner.v.arr.elem == AN_GGUF_STRING &&
          an_gguf_array_get(&inner, 1, &x) == 0 && str_is(&x, "yy"));
    CHECK(a && an_gguf_array_get(a, 1, &inner) == 0 && an_gguf_array_get(&inner, 0, &x) == 0 && str_is(&x, "zzz"));
    a = geta(&g, "a.deep", AN_GGUF_ARRAY, 2);
    an_gguf_value mid;
    CHECK(a && an_gguf_array_get(a, 0, &mid) == 0 && mid.v.arr.n == 2 && an_gguf_array_get(&mid, 1, &inner) == 0 &&
          inner.v.arr.n == 2 && an_gguf_array_get(&inner, 1, &x) == 0 && x.v.i == 3);
    CHECK(a && an_gguf_array_get(a, 1, &mid) == 0 && an_gguf_array_get(&mid, 0, &inner) == 0 &&
          an_gguf_array_get(&inner, 0, &x) == 0 && x.v.i == 4);

    /* tensors at 64-byte offsets: numpy (3, 2) is ggml [2, 3] */
    static const struct { const char *name; int nd; int64_t ne[4]; } want[] = {
        {"vec", 1, {5, 1, 1, 1}}, {"mat", 2, {2, 3, 1, 1}}, {"four_d", 4, {2, 2, 3, 2}}};
    CHECK(g.n_tensors == 3);
    for (int i = 0; i < 3; i++) {
        const an_gguf_tensor *t = an_gguf_find_tensor(&g, want[i].name);
        CHECK_MSG(t != NULL, "%s missing", want[i].name);
        if (!t) continue;
        CHECK(t->n_dims == want[i].nd && t == &g.tensors[i]);
        for (int d = 0; d < 4; d++) CHECK(t->ne[d] == want[i].ne[d]);
        CHECK(t->offset % 64 == 0 && g.data_offset % 64 == 0);
        float vals[24];
        CHECK(an_gguf_tensor_to_f32(&g, t, vals, &e) == 0);
        for (int k = 0; k < t->numel; k++) CHECK(vals[k] == (float)k);
    }
    CHECK(an_gguf_find_tensor(&g, "nope") == NULL);
    an_gguf_close(&g);
}

static void test_metadata_every_type(void) {
    check_meta(REF "meta.gguf", 3);
    check_meta(REF "meta_v2.gguf", 2);
}

static void test_getter_errors(void) {
    an_gguf g;
    an_error e;
    CHECK_MSG(an_gguf_open(&g, REF "meta.gguf", &e) == 0, "%s", e.msg);
    int64_t i;
    double f;
    const char *s;
    uint64_t len;
    const an_gguf_value *a;
    CHECK(an_gguf_get_int(&g, "no.such", &i, &e) != 0);
    CHECK_STR(e.msg, REF "meta.gguf: key \"no.such\" is missing");
    CHECK(an_gguf_get_int(&g, "t.str", &i, &e) != 0);
    CHECK_STR(e.msg, REF "meta.gguf: key \"t.str\" has type string, not an integer");
    CHECK(an_gguf_get_float(&g, "t.i32", &f, &e) != 0);
    CHECK_CONTAINS(e.msg, "has type i32, not a float");
    CHECK(an_gguf_get_str(&g, "a.string", &s, &len, &e) != 0);
    CHECK_CONTAINS(e.msg, "has type array, not a string");
    CHECK(an_gguf_get_array(&g, "a.string", AN_GGUF_I32, &a, &e) != 0);
    CHECK_CONTAINS(e.msg, "\"a.string\" is an array of string, not of i32");
    an_gguf_close(&g);
}

/* ---- bad input: copies of q8_0.gguf with one thing broken ---- */

static unsigned char *good_bytes(size_t *n) {
    an_error e;
    char *d = an_read_file(REF "q8_0.gguf", n, &e);
    CHECK_MSG(d != NULL, "%s", e.msg);
    return (unsigned char *)d;
}

/* Where a length-prefixed string s starts in the file (its u64 length), or (size_t)-1. */
static size_t find_string(const unsigned char *d, size_t n, const char *s) {
    size_t l = strlen(s);
    for (size_t i = 0; i + 8 + l <= n; i++)
        if (d[i] == l && !memcmp(d + i + 1, "\0\0\0\0\0\0\0", 7) && !memcmp(d + i + 8, s, l)) return i;
    return (size_t)-1;
}

static void put_le(unsigned char *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Writes bytes to a temp file, opens it, and expects a failure naming the file and containing `what`. */
static void expect_error(const unsigned char *d, size_t n, const char *what) {
    const char *path = test_tmp_path("bad.gguf");
    an_error e;
    CHECK(an_write_file_atomic(path, d, n, &e) == 0);
    an_gguf g;
    int rc = an_gguf_open(&g, path, &e);
    CHECK_MSG(rc != 0, "a file with \"%s\" opened", what);
    if (rc == 0) {
        an_gguf_close(&g);
        return;
    }
    CHECK_MSG(strncmp(e.msg, path, strlen(path)) == 0, "error does not start with the path: %s", e.msg);
    CHECK_CONTAINS(e.msg, what);
}

static void test_bad_header(void) {
    size_t n;
    unsigned char *good = good_bytes(&n), *d = malloc(n);
    if (!good || !d) return;
    memcpy(d, good, n);
    memcpy(d, "GGML", 4);
    expect_error(d, n, "not a GGUF file (it starts with \"GGML\"");
    memcpy(d, good, n);
    put_le(d + 4, 1, 4);
    expect_error(d, n, "GGUF version 1 is not supported");
    put_le(d + 4, 4, 4);
    expect_error(d, n, "GGUF version 4 is not supported (versions 2 and 3 are)");
    put_le(d + 4, 3u << 24, 4);
    expect_error(d, n, "big-endian");
    memcpy(d, good, n);
    put_le(d + 8, 1ull << 40, 8);
    expect_error(d, n, "tensor infos cannot fit in the file");
    memcpy(d, good, n);
    put_le(d + 16, UINT64_MAX, 8);
    expect_error(d, n, "metadata count -1 is negative");
    expect_error(d, 0, "0 bytes, too short for a GGUF file");
    /* one key whose value nests arrays 10 deep: refused at the 9th level, before any recursion runs away */
    unsigned char deep[256] = "GGUF\3\0\0\0";
    size_t at = 8;
    put_le(deep + at, 0, 8), at += 8;
    put_le(deep + at, 1, 8), at += 8;
    put_le(deep + at, 1, 8), at += 8;
    deep[at++] = 'k';
    put_le(deep + at, AN_GGUF_ARRAY, 4), at += 4;
    for (int level = 0; level < 10; level++) {
        put_le(deep + at, AN_GGUF_ARRAY, 4), at += 4;
        put_le(deep + at, 1, 8), at += 8;
    }
    expect_error(deep, sizeof deep, "key \"k\"[0][0][0][0][0][0][0][0]: arrays nested more than 8 deep");
    free(d);
    free(good);
}

static void test_truncated_everywhere(void) {
    size_t n;
    unsigned char *good = good_bytes(&n);
    if (!good) return;
    /* every prefix fails cleanly: inside the header it is a read past the end, inside the data a
     * tensor past the end; both say "truncated" (except a cut inside the magic) */
    for (size_t cut = 0; cut < n; cut++) {
        const char *path = test_tmp_path("cut.gguf");
        an_error e;
        an_gguf g;
        CHECK(an_write_file_atomic(path, good, cut, &e) == 0);
        int rc = an_gguf_open(&g, path, &e);
        CHECK_MSG(rc != 0, "a file cut at %zu of %zu bytes opened", cut, n);
        if (rc == 0) {
            an_gguf_close(&g);
            continue;
        }
        CHECK_MSG(strncmp(e.msg, path, strlen(path)) == 0, "%s", e.msg);
        if (cut >= 4) CHECK_MSG(strstr(e.msg, "truncated") || strstr(e.msg, "past the end"), "cut %zu: %s", cut, e.msg);
    }
    free(good);
}

static void test_bad_metadata(void) {
    size_t n;
    unsigned char *good = good_bytes(&n), *d = malloc(n);
    if (!good || !d) return;
    size_t name = find_string(good, n, "general.name"), ints = find_string(good, n, "test.ints");
    CHECK(name != (size_t)-1 && ints != (size_t)-1);
    if (name == (size_t)-1 || ints == (size_t)-1) goto out;
    size_t name_val = name + 8 + 12; /* key, then u32 type */
    CHECK(d && good[name_val] == AN_GGUF_STRING);
    memcpy(d, good, n);
    put_le(d + name_val + 4, 1ull << 40, 8);
    expect_error(d, n, "key \"general.name\": string length 1099511627776");
    memcpy(d, good, n);
    put_le(d + name_val, 13, 4);
    expect_error(d, n, "key \"general.name\": unknown value type 13");
    memcpy(d, good, n);
    put_le(d + name_val, AN_GGUF_BOOL, 4); /* the length's low byte 14 is not a bool */
    expect_error(d, n, "neither 0 nor 1");
    size_t arr = ints + 8 + 9 + 4; /* key, type: then element type, count */
    CHECK(good[arr] == AN_GGUF_I32 && good[arr + 4] == 4);
    memcpy(d, good, n);
    put_le(d + arr + 4, 1ull << 60, 8);
    expect_error(d, n, "key \"test.ints\": array length 1152921504606846976");
    memcpy(d, good, n);
    put_le(d + arr, 42, 4);
    expect_error(d, n, "unknown array element type 42");
    memcpy(d, good, n);
    put_le(d + arr, AN_GGUF_STRING, 4); /* 4 "strings" whose lengths are the ints that follow */
    expect_error(d, n, "key \"test.ints\"[");
    memcpy(d, good, n);
    put_le(d + ints, 1ull << 50, 8);
    expect_error(d, n, "metadata entry 2: key length");
out:
    free(d);
    free(good);
}

static void test_bad_tensor_info(void) {
    size_t n;
    unsigned char *good = good_bytes(&n), *d = malloc(n);
    if (!good || !d) return;
    size_t raw = find_string(good, n, "raw");
    CHECK(raw != (size_t)-1);
    if (raw == (size_t)-1) goto out;
    size_t nd = raw + 8 + 3, ne = nd + 4, type = ne + 3 * 8, off = type + 4;
    CHECK(good[nd] == 3 && good[ne] == 0 && good[ne + 1] == 1 && good[type] == AN_GGML_Q8_0);
    memcpy(d, good, n);
    put_le(d + type, 99, 4);
    expect_error(d, n, "tensor \"raw\": unknown tensor type 99");
    memcpy(d, good, n);
    put_le(d + off, 1ull << 20, 8);
    expect_error(d, n, "tensor \"raw\": data at offset 1048576 + 544 bytes runs past the end of the file");
    memcpy(d, good, n);
    put_le(d + off, UINT64_MAX - 31, 8);
    expect_error(d, n, "runs past the end of the file");
    memcpy(d, good, n);
    put_le(d + off, good[off] + 1, 1);
    expect_error(d, n, "is not a multiple of the alignment 32");
    memcpy(d, good, n);
    put_le(d + ne + 16, 1000, 8); /* ne[2] 2 -> 1000: the size runs past the file */
    expect_error(d, n, "tensor \"raw\": data at offset");
    memcpy(d, good, n);
    put_le(d + ne + 8, 1ull << 40, 8);
    put_le(d + ne + 16, 1ull << 40, 8);
    expect_error(d, n, "overflow");
    memcpy(d, good, n);
    put_le(d + ne + 8, UINT64_MAX, 8);
    expect_error(d, n, "dimension 1 is negative (-1)");
    memcpy(d, good, n);
    put_le(d + ne, 250, 8);
    expect_error(d, n, "type Q8_0 needs rows of whole 32-element blocks but ne[0] is 250");
    memcpy(d, good, n);
    put_le(d + nd, 5, 4);
    expect_error(d, n, "5 dimensions, at most 4");
out:
    free(d);
    free(good);
}

/* meta.gguf has keys "t.u8" and "t.i8" and tensors "vec" and "mat": renaming one of each pair makes
 * a duplicate of the same length. Its general.alignment (64) is made 48, then an i32. */
static void test_duplicates(void) {
    an_error e;
    size_t n;
    unsigned char *d = (unsigned char *)an_read_file(REF "meta.gguf", &n, &e);
    CHECK_MSG(d != NULL, "%s", e.msg);
    if (!d) return;
    size_t k = find_string(d, n, "t.i8"), t = find_string(d, n, "mat");
    CHECK(k != (size_t)-1 && t != (size_t)-1);
    if (k != (size_t)-1 && t != (size_t)-1) {
        memcpy(d + k + 8, "t.u8", 4);
        expect_error(d, n, "key \"t.u8\" appears twice");
        memcpy(d + k + 8, "t.i8", 4);
        memcpy(d + t + 8, "vec", 3);
        expect_error(d, n, "tensor \"vec\" appears twice");
        memcpy(d + t + 8, "mat", 3);
    }
    size_t al = find_string(d, n, "general.alignment");
    CHECK(al != (size_t)-1 && d[al + 8 + 17] == AN_GGUF_U32 && d[al + 8 + 17 + 4] == 64);
    if (al != (size_t)-1) {
        d[al + 8 + 17 + 4] = 48;
        expect_error(d, n, "general.alignment 48 is not a power of two");
        d[al + 8 + 17 + 4] = 64;
        d[al + 8 + 17] = AN_GGUF_I32;
        expect_error(d, n, "key \"general.alignment\" has type i32, not u32");
    }
    free(d);
}

/* ---- the real model, when `make model` has fetched it ---- */

static int str_eq(const char *p, uint64_t len, const char *s) { return len == strlen(s) && memcmp(p, s, len) == 0; }

static void check_smollm2_metadata(const an_gguf *g) {
    CHECK(g->version == 3 && g->alignment == 32 && g->n_kv == 33);
    const char *s;
    uint64_t len;
    an_error e;
    CHECK(an_gguf_get_str(g, "general.architecture", &s, &len, &e) == 0 && str_eq(s, len, "llama"));
    CHECK(an_gguf_get_str(g, "tokenizer.ggml.model", &s, &len, &e) == 0 && str_eq(s, len, "gpt2"));
    CHECK(geti(g, "llama.block_count") == 30);
    CHECK(geti(g, "llama.embedding_length") == 576);
    CHECK(geti(g, "llama.feed_forward_length") == 1536);
    CHECK(geti(g, "llama.attention.head_count") == 9);
    CHECK(geti(g, "llama.attention.head_count_kv") == 3);
    CHECK(geti(g, "llama.context_length") == 8192);
    CHECK(geti(g, "llama.vocab_size") == 49152);
    CHECK(geti(g, "llama.rope.dimension_count") == 64);
    CHECK(geti(g, "tokenizer.ggml.bos_token_id") == 1);
    CHECK(geti(g, "tokenizer.ggml.eos_token_id") == 2);
    CHECK(geti(g, "general.file_type") == 3); /* LLAMA_FTYPE_MOSTLY_Q4_1 */
    CHECK(getf(g, "llama.rope.freq_base") == 100000.0);
    CHECK(getf(g, "llama.attention.layer_norm_rms_epsilon") == (double)1e-5f); /* stored as f32 */
    int add_bos = -1;
    CHECK(an_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos, &e) == 0 && add_bos == 0);
    an_gguf_value v;
    const an_gguf_value *tok = geta(g, "tokenizer.ggml.tokens", AN_GGUF_STRING, 49152);
    CHECK(tok && an_gguf_array_get(tok, 0, &v) == 0 && str_is(&v, "<|endoftext|>"));
    CHECK(tok && an_gguf_array_get(tok, 1, &v) == 0 && str_is(&v, "<|im_start|>"));
    CHECK(tok && an_gguf_array_get(tok, 2, &v) == 0 && str_is(&v, "<|im_end|>"));
    CHECK(tok && an_gguf_array_get(tok, 49151, &v) == 0 && str_is(&v, "ectable"));
    const an_gguf_value *mer = geta(g, "tokenizer.ggml.merges", AN_GGUF_STRING, 48900);
    CHECK(mer && an_gguf_array_get(mer, 0, &v) == 0 && str_is(&v, "\xc4\xa0 t")); /* "Ġ t" */
    CHECK(mer && an_gguf_array_get(mer, 48899, &v) == 0 && str_is(&v, "ect able"));
    const an_gguf_value *tt = geta(g, "tokenizer.ggml.token_type", AN_GGUF_I32, 49152);
    CHECK(tt && an_gguf_array_get(tt, 1, &v) == 0 && v.v.i == 3 && an_gguf_array_get(tt, 100, &v) == 0 && v.v.i == 1);
}

static void test_smollm2_real_file(void) {
    char path[4096];
    const char *cache = getenv("AN_CACHE"), *home = getenv("HOME");
    snprintf(path, sizeof path, "%s%s/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
             cache && *cache ? cache : home ? home : "", cache && *cache ? "" : "/.cache/autoneg");
    if (!an_file_exists(path)) {
        printf("  note: %s is absent (run `make model` to fetch it); the real-file checks are skipped\n", path);
        return;
    }
    an_gguf g;
    an_error e;
    CHECK_MSG(an_gguf_open(&g, path, &e) == 0, "%s", e.msg);
    if (!g.path) return;
    check_smollm2_metadata(&g);
    CHECK(g.n_tensors == 272);
    int n_q41 = 0, n_f32 = 0, n_q80 = 0;
    int64_t params = 0, most = 0;
    for (int64_t i = 0; i < g.n_tensors; i++) {
        const an_gguf_tensor *t = &g.tensors[i];
        n_q41 += t->type == AN_GGML_Q4_1;
        n_f32 += t->type == AN_GGML_F32;
        n_q80 += t->type == AN_GGML_Q8_0;
        params += t->numel;
        if (t->numel > most) most = t->numel;
    }
    CHECK(n_q41 == 210 && n_f32 == 61 && n_q80 == 1);
    CHECK(params == 134515008); /* 30 x 3,540,096 + 576 x 49,152 + 576: the output head is tied */
    const an_gguf_tensor *emb = an_gguf_find_tensor(&g, "token_embd.weight");
    CHECK(emb && emb->type == AN_GGML_Q8_0 && emb->n_dims == 2 && emb->ne[0] == 576 && emb->ne[1] == 49152);
    const an_gguf_tensor *k = an_gguf_find_tensor(&g, "blk.29.attn_k.weight");
    CHECK(k && k->type == AN_GGML_Q4_1 && k->ne[0] == 576 && k->ne[1] == 192);
    CHECK(an_gguf_find_tensor(&g, "output.weight") == NULL);

    /* every tensor dequantizes to finite values; the fixture's samples match gguf's bit for bit */
    an_safetensors ref;
    CHECK_MSG(an_st_open(&ref, REF "smollm2_expected.safetensors", &e) == 0, "%s", e.msg);
    float *buf = malloc((size_t)most * sizeof *buf);
    CHECK(buf != NULL);
    int compared = 0;
    for (int64_t i = 0; buf && i < g.n_tensors; i++) {
        const an_gguf_tensor *t = &g.tensors[i];
        CHECK_MSG(an_gguf_tensor_to_f32(&g, t, buf, &e) == 0, "%s", e.msg);
        int64_t bad = 0;
        for (int64_t j = 0; j < t->numel; j++) bad += !isfinite(buf[j]);
        CHECK_MSG(bad == 0, "%s: %lld values are not finite", t->name, (long long)bad);
        char name[300];
        snprintf(name, sizeof name, "%s.idx", t->name);
        const an_st_tensor *idx = an_st_find(&ref, name);
        snprintf(name, sizeof name, "%s.val", t->name);
        const an_st_tensor *val = an_st_find(&ref, name);
        if (!idx || !val) continue;
        compared++;
        int64_t n = an_st_numel(idx), mismatches = 0;
        CHECK(n == an_st_numel(val) && n > 100);
        for (int64_t j = 0; j < n; j++) {
            int64_t at;
            float want;
            memcpy(&at, (const char *)idx->data + 8 * j, 8);
            memcpy(&want, (const char *)val->data + 4 * j, 4);
            CHECK(at >= 0 && at < t->numel);
            if (at >= 0 && at < t->numel && !same_bits(buf[at], want)) mismatches++;
        }
        CHECK_MSG(mismatches == 0, "%s: %lld of %lld sampled values differ from gguf's", t->name, (long long)mismatches,
                  (long long)n);
    }
    CHECK(compared == 6);
    printf("  SmolLM2-135M-Instruct: 272 tensors dequantized, %d compared with gguf's values\n", compared);
    free(buf);
    an_st_close(&ref);
    an_gguf_close(&g);
}

int main(void) {
    RUN(test_type_table);
    RUN(test_dequantize_matches_gguf_bit_for_bit);
    RUN(test_metadata_every_type);
    RUN(test_getter_errors);
    RUN(test_bad_header);
    RUN(test_truncated_everywhere);
    RUN(test_bad_metadata);
    RUN(test_bad_tensor_info);
    RUN(test_duplicates);
    RUN(test_smollm2_real_file);
    return test_finish();
}
