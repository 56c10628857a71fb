/* NF4 quantization against bitsandbytes itself: the code table, the dynamic map, codes, absmax,
 * double-quantization statistics and dequantized values must be bit-identical to what
 * bitsandbytes 0.50 produced on CPU (fixtures from tests/ref/make_nf4_fixtures.py), and
 * bitsandbytes-serialized arrays that disagree with each other must be refused with a clear error. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/rng.h"
#include "kernels/dynamic_map.h"
#include "kernels/nf4.h"
#include "model/io/nf4_bnb.h"
#include "tests/test.h"

/* Reads tests/ref/nf4/NAME (raw little-endian) and checks it holds a whole number of elem-byte
 * elements; *count gets how many. */
static void *load(const char *name, size_t elem, size_t *count) {
    char path[256];
    snprintf(path, sizeof path, "tests/ref/nf4/%s", name);
    an_error e;
    size_t n = 0;
    void *p = an_read_file(path, &n, &e);
    CHECK_MSG(p != NULL, "%s", e.msg);
    if (p && n % elem) {
        test_fail_at(__FILE__, __LINE__, "%s: %zu bytes is not a whole number of %zu-byte values", path, n, elem);
        free(p);
        return NULL;
    }
    if (count) *count = p ? n / elem : 0;
    return p;
}

static int bits_equal(const float *a, const float *b, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) {
            test_fail_at(__FILE__, __LINE__, "%s[%zu]: %.9g differs from bitsandbytes' %.9g", what, i, a[i], b[i]);
            return 0;
        }
    return 1;
}

static const char *CASES[] = {"short", "wide", "big", "midpoints", "zeros", "outliers", "single", "allzero"};
#define N_CASES ((int)(sizeof CASES / sizeof CASES[0]))

static void test_code_table_and_dynamic_map_match_bitsandbytes(void) {
    size_t n = 0;
    float *code = load("nf4_code.f32", 4, &n);
    CHECK(code && n == 16);
    if (code && n == 16) bits_equal(an_nf4_code, code, 16, "nf4 code");
    free(code);
    float *dyn = load("dynamic_map.f32", 4, &n);
    CHECK(dyn && n == 256);
    float mine[256];
    an_dynamic_map_signed8(mine);
    if (dyn && n == 256) bits_equal(mine, dyn, 256, "dynamic map");
    /* published shape of the map: one exact zero, 1.0 at the top, symmetric magnitudes below it */
    CHECK(mine[255] == 1.0f && mine[127] == 0.0f && mine[0] == -mine[254]);
    free(dyn);
}

static void test_torch_mean_is_bit_exact(void) {
    const int sizes[] = {7, 100, 1000, 20000};
    for (int s = 0; s < 4; s++) {
        char a[64], b[64];
        snprintf(a, sizeof a, "mean_%d.input.f32", sizes[s]);
        snprintf(b, sizeof b, "mean_%d.mean.f32", sizes[s]);
        size_t n = 0, m = 0;
        float *x = load(a, 4, &n), *want = load(b, 4, &m);
        CHECK(x && want && n == (size_t)sizes[s] && m == 1);
        if (x && want && n == (size_t)sizes[s] && m == 1) {
            float got = an_torch_mean_f32(x, (int64_t)n);
            CHECK_MSG(memcmp(&got, want, 4) == 0, "mean of %zu: %.9g, torch %.9g", n, got, want[0]);
        }
        free(x);
        free(want);
    }
}

/* bitsandbytes' 8-bit blockwise quantization with the dynamic map, including values on and
 * within 3e-5 of every midpoint, where its 65536-step table (not the nearest code) decides. */
static void test_blockwise8_matches_bitsandbytes(void) {
    size_t n = 0, nq = 0, na = 0;
    float *x = load("blockwise8.input.f32", 4, &n);
    uint8_t *want_q = load("blockwise8.q.u8", 1, &nq);
    float *want_a = load("blockwise8.absmax.f32", 4, &na);
    CHECK(x && want_q && want_a && nq == n && na == (n + 255) / 256);
    if (x && want_q && want_a && nq == n && na == (n + 255) / 256) {
        float code[256], *a = malloc(na * 4);
        uint8_t *q = malloc(n);
        an_dynamic_map_signed8(code);
        CHECK(an_quantize_blockwise8(x, (int64_t)n, 256, code, q, a) == 0);
        int bad = 0;
        for (size_t i = 0; i < n; i++)
            if (q[i] != want_q[i] && bad++ < 5)
                test_fail_at(__FILE__, __LINE__, "value %zu (%.9g): code %d, bitsandbytes %d", i, x[i], q[i], want_q[i]);
        bits_equal(a, want_a, na, "blockwise8 absmax");
        free(a);
        free(q);
    }
    free(x);
    free(want_q);
    free(want_a);
}

/* From 32768 elements on torch sums on several threads; the fixture holds torch.mean of a
 * 100000-element vector (regenerated here from its index) under 1, 2, 3, 4, 8 and 9 threads. */
static void test_torch_mean_with_threads_is_bit_exact(void) {
    const int64_t n = 100000;
    const int threads[] = {1, 2, 3, 4, 8, 9};
    float *x = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = (float)(uint32_t)((uint64_t)i * 2654435761u) * 0x1p-32f;
    size_t m = 0;
    float *want = load("mean_threads.f32", 4, &m);
    CHECK(want && m == 6);
    for (int k = 0; want && m == 6 && k < 6; k++) {
        float got = an_torch_mean_f32_threads(x, n, threads[k]);
        CHECK_MSG(memcmp(&got, &want[k], 4) == 0, "%d threads: %.9g, torch %.9g", threads[k], got, want[k]);
    }
    free(want);
    free(x);
}

/* Plain quantization (compress_statistics=False) of every case. */
static void test_quantize_matches_bitsandbytes(void) {
    for (int c = 0; c < N_CASES; c++) {
        char f[128];
        size_t n = 0, nb = 0, nq = 0, nd = 0;
        snprintf(f, sizeof f, "%s.input.f32", CASES[c]);
        float *x = load(f, 4, &n);
        snprintf(f, sizeof f, "%s.weight.u8", CASES[c]);
        uint8_t *want_q = load(f, 1, &nq);
        snprintf(f, sizeof f, "%s.absmax.f32", CASES[c]);
        float *want_a = load(f, 4, &nb);
        snprintf(f, sizeof f, "%s.dequant.f32", CASES[c]);
        float *want_d = load(f, 4, &nd);
        CHECK(x && want_q && want_a && want_d);
        if (!x || !want_q || !want_a || !want_d) goto next;
        CHECK(nq == (n + 1) / 2 && nb == (n + 63) / 64 && nd == n);
        uint8_t *q = malloc(nq);
        float *a = malloc(nb * 4), *d = malloc(n * 4);
        an_error e;
        CHECK_MSG(an_nf4_quantize(x, (int64_t)n, 64, q, a, &e) == 0, "%s", e.msg);
        for (size_t i = 0; i < nq; i++)
            if (q[i] != want_q[i]) {
                test_fail_at(__FILE__, __LINE__, "%s: byte %zu is %02x, bitsandbytes %02x", CASES[c], i, q[i], want_q[i]);
                break;
            }
        bits_equal(a, want_a, nb, CASES[c]);
        an_nf4_dequantize(q, a, (int64_t)n, 64, d);
        bits_equal(d, want_d, n, CASES[c]);
        free(q);
        free(a);
        free(d);
    next:
        free(x);
        free(want_q);
        free(want_a);
        free(want_d);
    }
}

/* Double quantization (compress_statistics=True): offset, 8-bit absmax codes, nested absmax and
 * the final dequantized weights, through the tensor API with the shape of each case. */
static void test_double_quant_matches_bitsandbytes(void) {
    for (int c = 0; c < N_CASES; c++) {
        char f[128];
        size_t n = 0, nq = 0, nqa = 0, na2 = 0, nd = 0, nmap = 0, njs = 0;
        snprintf(f, sizeof f, "%s.input.f32", CASES[c]);
        float *x = load(f, 4, &n);
        snprintf(f, sizeof f, "%s_dq.weight.u8", CASES[c]);
        uint8_t *want_q = load(f, 1, &nq);
        snprintf(f, sizeof f, "%s_dq.absmax.u8", CASES[c]);
        uint8_t *want_qa = load(f, 1, &nqa);
        snprintf(f, sizeof f, "%s_dq.nested_absmax.f32", CASES[c]);
        float *want_a2 = load(f, 4, &na2);
        snprintf(f, sizeof f, "%s_dq.nested_quant_map.f32", CASES[c]);
        float *want_map = load(f, 4, &nmap);
        snprintf(f, sizeof f, "%s_dq.dequant.f32", CASES[c]);
        float *want_d = load(f, 4, &nd);
        snprintf(f, sizeof f, "%s_dq.quant_state.json", CASES[c]);
        char *js = load(f, 1, &njs);
        an_nf4_tensor t;
        memset(&t, 0, sizeof t);
        CHECK(x && want_q && want_qa && want_a2 && want_map && want_d && js);
        if (!x || !want_q || !want_qa || !want_a2 || !want_map || !want_d || !js) goto next;
        /* the shape and offset come from bitsandbytes' own quant_state JSON */
        const char *sh = strstr(js, "\"shape\": [");
        const char *off = strstr(js, "\"nested_offset\": ");
        CHECK(sh && off);
        if (!sh || !off) goto next;
        long rows = 0, cols = 0;
        CHECK(sscanf(sh, "\"shape\": [%ld, %ld]", &rows, &cols) == 2 && (size_t)(rows * cols) == n);
        float want_off = (float)strtod(off + strlen("\"nested_offset\": "), NULL);
        an_error e;
        CHECK_MSG(an_nf4_tensor_quantize(&t, x, rows, cols, 64, 1, &e) == 0, "%s", e.msg);
        if (!t.packed) goto next;
        CHECK(t.double_quant && t.n_blocks == (int64_t)nqa && t.n_blocks2 == (int64_t)na2 && nmap == 256);
        CHECK_MSG(memcmp(&t.offset, &want_off, 4) == 0, "%s: offset %.9g, bitsandbytes %.9g", CASES[c], t.offset,
                  want_off);
        CHECK_MSG(memcmp(t.packed, want_q, nq) == 0, "%s: 4-bit codes differ", CASES[c]);
        for (size_t i = 0; i < nqa; i++)
            if (t.qabsmax[i] != want_qa[i]) {
                test_fail_at(__FILE__, __LINE__, "%s: absmax code %zu is %d, bitsandbytes %d", CASES[c], i, t.qabsmax[i],
                             want_qa[i]);
                break;
            }
        bits_equal(t.absmax2, want_a2, na2, CASES[c]);
        bits_equal(t.code8, want_map, 256, "nested quant map");
        float *d = malloc(n * 4);
        an_nf4_tensor_dequantize(&t, d);
        bits_equal(d, want_d, n, CASES[c]);
        free(d);
    next:
        an_nf4_tensor_free(&t);
        free(x);
        free(want_q);
        free(want_qa);
        free(want_a2);
        free(want_map);
        free(want_d);
        free(js);
    }
}

/* A 256 x 512 weight regenerated from its index with the fixture script's float32 steps (2048
 * blocks, 8 nested blocks: torch's cascade mean and several 256-blocks of 8-bit codes take part),
 * compared with what bitsandbytes made of it. */
static void test_larger_weight_matches_bitsandbytes(void) {
    const int64_t rows = 256, cols = 512, n = rows * cols;
    float *x = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)((uint64_t)i * 2654435761u);
        float s = 1.0f + (float)((i / 64) % 13) * 0.25f;
        x[i] = ((float)u * 0x1p-32f - 0.5f) * s;
    }
    size_t nq = 0, na = 0, nqd = 0, nqa = 0, na2 = 0, njs = 0;
    uint8_t *want_q = load("hashgen.weight.u8", 1, &nq), *want_qd = load("hashgen_dq.weight.u8", 1, &nqd);
    float *want_a = load("hashgen.absmax.f32", 4, &na), *want_a2 = load("hashgen_dq.nested_absmax.f32", 4, &na2);
    uint8_t *want_qa = load("hashgen_dq.absmax.u8", 1, &nqa);
    char *js = load("hashgen_dq.quant_state.json", 1, &njs);
    an_nf4_tensor p, d;
    an_error e;
    memset(&p, 0, sizeof p);
    memset(&d, 0, sizeof d);
    int ok = want_q && want_qd && want_a && want_a2 && want_qa && js;
    CHECK(ok);
    if (ok && an_nf4_tensor_quantize(&p, x, rows, cols, 64, 0, &e) == 0 &&
        an_nf4_tensor_quantize(&d, x, rows, cols, 64, 1, &e) == 0) {
        CHECK(nq == (size_t)n / 2 && nqd == nq && na == 2048 && nqa == 2048 && na2 == 8);
        CHECK_MSG(memcmp(p.packed, want_q, nq) == 0, "plain: 4-bit codes differ");
        bits_equal(p.absmax, want_a, na, "hashgen absmax");
        CHECK_MSG(memcmp(d.packed, want_qd, nqd) == 0, "double quant: 4-bit codes differ");
        CHECK_MSG(memcmp(d.qabsmax, want_qa, nqa) == 0, "double quant: 8-bit absmax codes differ");
        bits_equal(d.absmax2, want_a2, na2, "hashgen nested absmax");
        const char *off = strstr(js, "\"nested_offset\": ");
        float want_off = off ? (float)strtod(off + strlen("\"nested_offset\": "), NULL) : NAN;
        CHECK_MSG(memcmp(&d.offset, &want_off, 4) == 0, "offset %.9g, bitsandbytes %.9g", d.offset, want_off);
    } else if (ok) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
    }
    an_nf4_tensor_free(&p);
    an_nf4_tensor_free(&d);
    free(x), free(want_q), free(want_qd), free(want_a), free(want_a2), free(want_qa), free(js);
}

/* The serialized arrays of one fixture case, as a safetensors reader would hand them over. */
typedef struct bnb_case {
    uint8_t *weight, *absmax_u8;
    float *absmax_f32, *quant_map, *nested_absmax, *nested_quant_map, *dequant;
    char *json;
    size_t n_weight, n_absmax, n_map, n_nested, n_nested_map, n_json, n;
    an_nf4_bnb_arrays a;
} bnb_case;

static void bnb_case_load(bnb_case *c, const char *tag, int nested) {
    memset(c, 0, sizeof *c);
    char f[128];
    snprintf(f, sizeof f, "%s.weight.u8", tag);
    c->weight = load(f, 1, &c->n_weight);
    snprintf(f, sizeof f, nested ? "%s.absmax.u8" : "%s.absmax.f32", tag);
    if (nested) c->absmax_u8 = load(f, 1, &c->n_absmax);
    else c->absmax_f32 = load(f, 4, &c->n_absmax);
    snprintf(f, sizeof f, "%s.quant_map.f32", tag);
    c->quant_map = load(f, 4, &c->n_map);
    if (nested) {
        snprintf(f, sizeof f, "%s.nested_absmax.f32", tag);
        c->nested_absmax = load(f, 4, &c->n_nested);
        snprintf(f, sizeof f, "%s.nested_quant_map.f32", tag);
        c->nested_quant_map = load(f, 4, &c->n_nested_map);
    }
    snprintf(f, sizeof f, "%s.quant_state.json", tag);
    c->json = load(f, 1, &c->n_json);
    snprintf(f, sizeof f, "%s.dequant.f32", tag);
    c->dequant = load(f, 4, &c->n);
    an_nf4_bnb_arrays a = {
        .name = "layers.0.wqkv.weight",
        .weight = c->weight, .weight_bytes = (int64_t)c->n_weight,
        .absmax_f32 = c->absmax_f32, .absmax_u8 = c->absmax_u8, .absmax_count = (int64_t)c->n_absmax,
        .quant_map = c->quant_map, .quant_map_count = (int64_t)c->n_map,
        .nested_absmax = c->nested_absmax, .nested_absmax_count = (int64_t)c->n_nested,
        .nested_quant_map = c->nested_quant_map, .nested_quant_map_count = (int64_t)c->n_nested_map,
        .quant_state_json = c->json, .quant_state_len = c->n_json,
    };
    c->a = a;
}

static void bnb_case_free(bnb_case *c) {
    free(c->weight);
    free(c->absmax_u8);
    free(c->absmax_f32);
    free(c->quant_map);
    free(c->nested_absmax);
    free(c->nested_quant_map);
    free(c->dequant);
    free(c->json);
}

static void test_from_bnb_reads_what_bitsandbytes_wrote(void) {
    const char *tags[] = {"wide", "wide_dq", "short_dq", "big_dq", "allzero", "allzero_dq"};
    for (int i = 0; i < 6; i++) {
        bnb_case c;
        bnb_case_load(&c, tags[i], strstr(tags[i], "_dq") != NULL);
        an_nf4_tensor t;
        an_error e;
        CHECK_MSG(an_nf4_from_bnb(&t, &c.a, &e) == 0, "%s: %s", tags[i], e.msg);
        if (t.packed) {
            CHECK(t.n == (int64_t)c.n);
            float *d = malloc(c.n * 4);
            an_nf4_tensor_dequantize(&t, d);
            bits_equal(d, c.dequant, c.n, tags[i]);
            free(d);
        }
        an_nf4_tensor_free(&t);
        bnb_case_free(&c);
    }
}

/* Runs an_nf4_from_bnb on a damaged copy and checks the message names the tensor and the problem. */
static void expect_refused(const an_nf4_bnb_arrays *a, const char *problem) {
    an_nf4_tensor t;
    an_error e;
    e.msg[0] = 0;
    CHECK_MSG(an_nf4_from_bnb(&t, a, &e) == -1, "accepted input that should fail with \"%s\"", problem);
    CHECK_CONTAINS(e.msg, "layers.0.wqkv.weight");
    CHECK_CONTAINS(e.msg, problem);
    CHECK(t.packed == NULL && t.absmax == NULL && t.qabsmax == NULL);
}

static void test_from_bnb_refuses_inconsistent_input(void) {
    bnb_case c, p;
    bnb_case_load(&c, "wide_dq", 1);
    bnb_case_load(&p, "wide", 0);
    if (!c.weight || !p.weight || !c.json) goto done;
    an_nf4_bnb_arrays a;

    a = c.a; /* one byte short: element count not what the shape implies */
    a.weight_bytes--;
    expect_refused(&a, "weight holds 4159 bytes but shape [64 x 130] needs 4160");
    a = p.a; /* absmax count not what the blocks imply */
    a.absmax_count = 129;
    expect_refused(&a, "absmax has 129 values but 8320 elements in blocks of 64 need 130");

    /* quant_state disagreeing with the tensor */
    char js[512];
    a = c.a;
    snprintf(js, sizeof js, "%.*s", (int)c.n_json, c.json);
    char *s = strstr(js, "[64, 130]");
    if (s) memcpy(s, "[65, 130]", 9);
    a.quant_state_json = js;
    a.quant_state_len = strlen(js);
    expect_refused(&a, "weight holds 4160 bytes but shape [65 x 130] needs 4225");
    snprintf(js, sizeof js, "%.*s", (int)c.n_json, c.json);
    s = strstr(js, "\"blocksize\": 64");
    if (s) memcpy(s, "\"blocksize\": 32", 15);
    a.quant_state_len = strlen(js);
    expect_refused(&a, "absmax has 130 values but 8320 elements in blocks of 32 need 260");
    snprintf(js, sizeof js, "%.*s", (int)c.n_json, c.json);
    s = strstr(js, "\"nf4\"");
    if (s) memcpy(s, "\"fp4\"", 5);
    a.quant_state_len = strlen(js);
    expect_refused(&a, "quant_type is \"fp4\", only \"nf4\" is supported");
    snprintf(js, sizeof js, "%.*s", (int)c.n_json, c.json);
    s = strstr(js, "\"blocksize\": 64");
    if (s) memcpy(s, "\"blocksize\": 65", 15);
    a.quant_state_len = strlen(js);
    expect_refused(&a, "blocksize is missing or not a power of two");
    a.quant_state_json = "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"shape\": [64, 130";
    a.quant_state_len = strlen(a.quant_state_json);
    expect_refused(&a, "not a JSON object");

    /* NaN and infinite scales */
    a = p.a;
    float *am = malloc(p.n_absmax * 4);
    memcpy(am, p.absmax_f32, p.n_absmax * 4);
    am[17] = NAN;
    a.absmax_f32 = am;
    expect_refused(&a, "absmax[17] is nan");
    am[17] = 0.0f; /* an all-zero block is legal */
    an_nf4_tensor t;
    an_error e;
    CHECK_MSG(an_nf4_from_bnb(&t, &a, &e) == 0, "%s", e.msg);
    an_nf4_tensor_free(&t);
    free(am);
    a = c.a;
    float a2 = INFINITY;
    a.nested_absmax = &a2;
    expect_refused(&a, "nested_absmax[0] is inf");

    /* nested statistics inconsistent with each other or with the JSON */
    a = c.a;
    a.nested_absmax_count = 2;
    expect_refused(&a, "nested_absmax has 2 values but 130 absmax codes in blocks of 256 need 1");
    a = c.a;
    a.nested_quant_map_count = 255;
    expect_refused(&a, "nested_quant_map has 255 values");
    a = c.a;
    a.nested_absmax = NULL;
    a.nested_quant_map = NULL;
    expect_refused(&a, "nested_absmax / nested_quant_map are missing");
    a = p.a;
    a.nested_absmax = c.nested_absmax;
    a.nested_absmax_count = (int64_t)c.n_nested;
    a.nested_quant_map = c.nested_quant_map;
    a.nested_quant_map_count = 256;
    expect_refused(&a, "present but quant_state has no nested_offset");
    a = p.a; /* the FP4 table is not the NF4 one */
    float fp4ish[16];
    memcpy(fp4ish, p.quant_map, sizeof fp4ish);
    fp4ish[3] = 0.25f;
    a.quant_map = fp4ish;
    expect_refused(&a, "quant_map[3] is 0.25, not the NF4 value");
done:
    bnb_case_free(&c);
    bnb_case_free(&p);
}

static void test_quantize_refuses_nan_and_bad_blocksize(void) {
    float w[100];
    for (int i = 0; i < 100; i++) w[i] = (float)i / 100.0f;
    w[42] = NAN;
    uint8_t q[50];
    float a[2];
    an_error e;
    CHECK(an_nf4_quantize(w, 100, 64, q, a, &e) == -1);
    CHECK_CONTAINS(e.msg, "element 42 is nan");
    w[42] = 0;
    CHECK(an_nf4_quantize(w, 100, 48, q, a, &e) == -1);
    CHECK_CONTAINS(e.msg, "blocksize 48");
}

/* Memory per parameter of a large double-quantized matrix: 4 bits per weight, plus 8 bits per
 * 64-block, plus a float per 256 blocks, plus the offset and the 1 KB map (hand count). */
static void test_bytes_per_parameter(void) {
    const int64_t rows = 512, cols = 4096, n = rows * cols;
    float *w = malloc((size_t)n * 4);
    an_rng r;
    an_rng_seed(&r, 5);
    for (int64_t i = 0; i < n; i++) w[i] = an_rng_normal(&r) * 0.02f;
    an_nf4_tensor t;
    an_error e;
    CHECK_MSG(an_nf4_tensor_quantize(&t, w, rows, cols, 64, 1, &e) == 0, "%s", e.msg);
    size_t want = (size_t)(n / 2 + n / 64 + (n / 64 / 256) * 4 + 4 + 1024);
    CHECK(an_nf4_tensor_bytes(&t) == want);
    CHECK(an_nf4_bytes_per_param(&t) <= 0.52);
    an_nf4_tensor_free(&t);
    CHECK(an_nf4_tensor_quantize(&t, w, rows, cols, 64, 0, &e) == 0);
    CHECK(an_nf4_tensor_bytes(&t) == (size_t)(n / 2 + n / 64 * 4)); /* 0.5625 bytes per parameter */
    an_nf4_tensor_free(&t);
    free(w);
}

/* The one buffer a device backend holds (an_nf4_device_image): decoded here from the offsets alone, by
 * the documented layout, every element must be an_nf4_tensor_dequantize's value bit for bit, with and
 * without double quantization; an odd element count and blocks across row ends (cols 67) included.
 * The parts start on 256-byte boundaries, in order, without overlap, inside the buffer. */
static void test_device_image_decodes_to_the_dequantized_weight(void) {
    const int64_t rows = 37, cols = 67, n = rows * cols; /* n odd: the last byte holds one code */
    float *w = malloc((size_t)n * 4), *want = malloc((size_t)n * 4), *got = malloc((size_t)n * 4);
    an_rng r;
    an_rng_seed(&r, 11);
    for (int64_t i = 0; i < n; i++) w[i] = an_rng_normal(&r) * 0.05f;
    for (int dq = 0; dq <= 1; dq++) {
        an_nf4_tensor t;
        an_error e;
        CHECK_MSG(an_nf4_tensor_quantize(&t, w, rows, cols, 64, dq, &e) == 0, "%s", e.msg);
        an_nf4_device_layout l = an_nf4_device_layout_of(&t);
        size_t parts[][2] = {{l.code4, 16 * sizeof(float)},
                             {l.packed, (size_t)(n + 1) / 2},
                             {dq ? l.qabsmax : l.absmax, dq ? (size_t)t.n_blocks : (size_t)t.n_blocks * 4},
                             {dq ? l.absmax2 : l.bytes, dq ? (size_t)t.n_blocks2 * 4 : 0},
                             {dq ? l.code8 : l.bytes, dq ? 256 * sizeof(float) : 0}};
        for (int k = 0; k < 5; k++) {
            CHECK_MSG(parts[k][0] % 256 == 0, "dq %d: part %d at %zu", dq, k, parts[k][0]);
            CHECK_MSG(parts[k][0] + parts[k][1] <= l.bytes, "dq %d: part %d ends past the buffer", dq, k);
            if (k) CHECK_MSG(parts[k][0] >= parts[k - 1][0] + parts[k - 1][1], "dq %d: part %d overlaps", dq, k);
        }
        uint8_t *img = malloc(l.bytes);
        an_nf4_device_image(&t, img);
        const float *code4 = (const float *)(const void *)(img + l.code4);
        for (int64_t i = 0; i < n; i++) {
            uint8_t byte = img[l.packed + (size_t)(i >> 1)];
            int nib = (i & 1) ? byte & 15 : byte >> 4;
            int64_t b = i / t.blocksize;
            float s;
            if (dq) {
                float p = ((const float *)(const void *)(img + l.code8))[img[l.qabsmax + (size_t)b]] *
                          ((const float *)(const void *)(img + l.absmax2))[b / t.blocksize2];
                s = p + t.offset;
            } else {
                s = ((const float *)(const void *)(img + l.absmax))[b];
            }
            got[i] = code4[nib] * s;
        }
        an_nf4_tensor_dequantize(&t, want);
        bits_equal(got, want, (size_t)n, dq ? "double-quantized image" : "plain image");
        free(img);
        an_nf4_tensor_free(&t);
    }
    free(w);
    free(want);
    free(got);
}

int main(void) {
    RUN(test_code_table_and_dynamic_map_match_bitsandbytes);
    RUN(test_torch_mean_is_bit_exact);
    RUN(test_torch_mean_with_threads_is_bit_exact);
    RUN(test_blockwise8_matches_bitsandbytes);
    RUN(test_quantize_matches_bitsandbytes);
    RUN(test_double_quant_matches_bitsandbytes);
    RUN(test_larger_weight_matches_bitsandbytes);
    RUN(test_from_bnb_reads_what_bitsandbytes_wrote);
    RUN(test_from_bnb_refuses_inconsistent_input);
    RUN(test_quantize_refuses_nan_and_bad_blocksize);
    RUN(test_bytes_per_parameter);
    RUN(test_device_image_decodes_to_the_dequantized_weight);
    return test_finish();
}
