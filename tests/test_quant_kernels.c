/* The CPU kernels on GGUF-quantized weights (kernels/cpu_quant*.c) for Q8_0, Q4_0, Q4_1, Q4_K and Q6_K,
 * and Q8_0, Q4_0 and Q4_1 with eight rows interleaved (the _X8 types, the layout decoding runs on):
 *  - dequantization bit-identical to the reference (model/io/gguf_quants.c, itself bit-exact with the
 *    gguf package: tests/test_gguf.c);
 *  - the matrix-vector product (8-bit activations, integer dot products) in plain C, AVX2 and AVX-512
 *    VNNI: the same bits;
 *  - every linear path against the double-precision product with the dequantized weights, within a
 *    bound derived per output (below);
 *  - the embedding lookup bit-identical to the dequantized rows; NaN in, NaN out; too little
 *    workspace gives NaN, never a wrong number.
 * Weights are random blocks (tests/quant_fixture.h): every byte pattern a file may hold. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "kernels/cpu.h"
#include "kernels/cpu_quant.h"
#include "model/io/gguf_quants.h"
#include "tests/quant_fixture.h"
#include "tests/test.h"

#define U32 0x1p-24 /* float32 unit roundoff */

static const an_dtype TYPES[] = {AN_Q8_0, AN_Q4_0, AN_Q4_1, AN_Q4_K, AN_Q6_K, AN_Q8_0_X8, AN_Q4_0_X8, AN_Q4_1_X8};
enum { NT = sizeof TYPES / sizeof TYPES[0] };

/* a weight, its values and the magnitudes of the parts the kernels sum (below) */
typedef struct qw {
    an_weight w;
    uint8_t *bytes;
    float *wide, *mag;
} qw;

/* an interleaved type: random blocks of its ggml type, repacked eight rows at a time (rows % 8 == 0) */
static qw make(an_dtype t, int rows, int cols, uint64_t seed) {
    an_rng r;
    an_rng_seed(&r, seed);
    an_dtype base = an_dtype_x8_base(t);
    size_t n = (size_t)rows * cols, bytes = tq_bytes(base, rows, cols);
    qw q = {{t, rows, cols, NULL}, malloc(bytes), malloc(n * sizeof(float)), malloc(n * sizeof(float))};
    tq_random(base, rows, cols, &r, q.bytes, q.wide, q.mag);
    if (base != t) {
        uint8_t *rows_major = q.bytes;
        q.bytes = malloc(bytes);
        size_t group = 8 * tq_bytes(base, 1, cols);
        for (int g = 0; g < rows / 8; g++)
            an_q_x8_repack(base, rows_major + g * group, cols / 32, q.bytes + g * group);
        free(rows_major);
    }
    q.w.data = q.bytes;
    return q;
}

/* rows of a test weight: the interleaved types need a multiple of 8 */
static int rows_for(an_dtype t, int rows) { return an_dtype_x8_base(t) != t ? (rows + 7) / 8 * 8 : rows; }

static void drop(qw *q) {
    free(q->bytes);
    free(q->wide);
    free(q->mag);
}

/* activations with very different block scales (and an all-zero block) */
static float *acts(int N, int C, uint64_t seed) {
    an_rng r;
    an_rng_seed(&r, seed);
    float *x = malloc((size_t)N * C * sizeof(float));
    for (int i = 0; i < N * C; i++) {
        int blk = (i % C) / 32;
        float s = blk % 5 == 0 ? 10.0f : blk % 5 == 1 ? 0.01f : 1.0f;
        x[i] = blk == 3 ? 0.0f : s * (2.0f * an_rng_uniform(&r) - 1.0f);
    }
    return x;
}

static void test_dequantize_is_the_reference(void) {
    for (int k = 0; k < NT; k++) {
        an_dtype t = TYPES[k];
        qw q = make(t, 16, 512, 10 + (uint64_t)k);
        float *got = malloc(16 * 512 * sizeof(float));
        an_weight *w = &q.w;
        int32_t ids[16];
        for (int i = 0; i < 16; i++) ids[i] = (i * 7) % 16; /* every row, out of order */
        an_cpu_quant_embedding(got, ids, w, 16);
        for (int i = 0; i < 16; i++)
            CHECK_MSG(memcmp(got + (size_t)i * 512, q.wide + (size_t)ids[i] * 512, 512 * sizeof(float)) == 0,
                      "%s: dequantized row %d differs from the reference", an_dtype_name(t), ids[i]);
        free(got);
        drop(&q);
    }
}

/* The bound for out[n][o] of the quantized-activation product against sum_i w_i x_i in double
 * (tq_act_bound in tests/quant_fixture.c computes it):
 *  - activation quantization: x_i becomes d q_i with d = amax_b / 127 of its block b and q_i the
 *    nearest integer to x_i / d (through one float32 product x * (1/d), relative error 2u, so
 *    |x_i / d - q_i| <= 1/2 + 127 * 2u): |x_i - d q_i| <= d (1/2 + 300u), times |w_i|, summed;
 *  - float32 sums: the integer block sums are exact; each block adds (float)isum * (d_w d_a) (two
 *    roundings) into one of 16 accumulators reduced in 4 levels, Q4_1's minimum terms in their own
 *    sum: at most nb/2 + 8 roundings on the way, each at most u of the sum of magnitudes of the parts
 *    (mag_i |d q_i|, the quantized activations): (nb + 16) u sum mag_i (|x_i| + d);
 *  - the reference's dequantized values are rounded (Q4_1 d q + m, Q4_K two products and a
 *    difference: 3u of the parts), while the kernels use the exact parts: 3u sum mag_i (|x_i| + d).
 * With |x| up to 10 and blocks of 0.01 the first term dominates, ~1/254 of sum |w_i| |x_i|. */
static double matvec_bound(const qw *q, int o, const float *x, int C) {
    return tq_act_bound(q->w.dtype, q->wide + (size_t)o * C, q->mag + (size_t)o * C, x, C);
}

static double dot_ref(const qw *q, int o, const float *x, int C) {
    double s = 0;
    for (int i = 0; i < C; i++) s += (double)q->wide[(size_t)o * C + i] * x[i];
    return s;
}

static void test_matvec_levels_identical_and_bounded(void) {
    enum { MAX_OC = 40, C = 512 };
    for (int k = 0; k < NT; k++) {
        an_dtype t = TYPES[k];
        int OC = rows_for(t, 37), x8 = an_dtype_x8_base(t) != t;
        qw q = make(t, OC, C, 20 + (uint64_t)k);
        for (int N = 1; N <= AN_QUANT_MATVEC_MAX_ROWS; N++) {
            float *x = acts(N, C, 30 + (uint64_t)N), bias[MAX_OC];
            for (int o = 0; o < OC; o++) bias[o] = 0.25f * (float)(o % 7) - 0.5f;
            size_t wb = an_quant_act_bytes(t, N, C);
            void *work = malloc(wb);
            float out[3][AN_QUANT_MATVEC_MAX_ROWS * MAX_OC];
            for (int lv = 0; lv < 3; lv++)
                CHECK(an_cpu_quant_matvec(out[lv], x, &q.w, lv == 2 ? bias : NULL, N, work, wb, lv) == 0);
            /* levels 0 and 1 bit for bit; level 2 ran with a bias (checked against the reference below),
             * so it runs again without */
            float nob[AN_QUANT_MATVEC_MAX_ROWS * MAX_OC], alone[MAX_OC];
            CHECK(an_cpu_quant_matvec(nob, x, &q.w, NULL, N, work, wb, AN_Q_VNNI) == 0);
            CHECK_MSG(memcmp(out[0], out[1], sizeof(float) * N * OC) == 0, "%s N=%d: plain C and AVX2 differ",
                      an_dtype_name(t), N);
            CHECK_MSG(memcmp(out[0], nob, sizeof(float) * N * OC) == 0, "%s N=%d: plain C and VNNI differ",
                      an_dtype_name(t), N);
            double worst = 0;
            for (int n = 0; n < N; n++) {
                /* each activation row's results do not depend on the rows beside it */
                CHECK(an_cpu_quant_matvec(alone, x + (size_t)n * C, &q.w, NULL, 1, work, wb, AN_Q_VNNI) == 0);
                CHECK_MSG(memcmp(alone, nob + (size_t)n * OC, sizeof(float) * OC) == 0, "%s N=%d: row %d alone differs",
                          an_dtype_name(t), N, n);
                for (int o = 0; o < OC; o++) {
                    double ref = dot_ref(&q, o, x + (size_t)n * C, C);
                    double bound = matvec_bound(&q, o, x + (size_t)n * C, C);
                    double e = fabs(out[0][n * OC + o] - ref) / bound;
                    double eb = fabs(out[2][n * OC + o] - (ref + bias[o])) / (bound + 2 * U32 * fabs(ref + bias[o]));
                    worst = test_nan_max(worst, test_nan_max(e, eb));
                    /* nor on the other weight rows (ggml's layout: a row is a weight of its own) */
                    float one;
                    if (!x8)
                        CHECK(an_cpu_quant_matvec(&one, x + (size_t)n * C,
                                                  &(an_weight){t, 1, C, q.bytes + (size_t)o * tq_bytes(t, 1, C)}, NULL, 1,
                                                  work, wb, AN_Q_AVX2) == 0 &&
                              memcmp(&one, &out[0][n * OC + o], sizeof one) == 0);
                }
            }
            CHECK_MSG(worst <= 1.0, "%s N=%d: error %.3g of the bound", an_dtype_name(t), N, worst);
            free(work);
            free(x);
        }
        drop(&q);
    }
}

/* many rows: tiles of dequantized rows (bit-identical to wide) under the float32 GEMM: Higham's bound
 * (C + 2) u sum |w| |x| (+ the bias, one more term) against the double product */
static void test_gemm_paths(void) {
    enum { MAX_OC = 48, C = 512, N = AN_QUANT_MATVEC_MAX_ROWS + 5 }; /* past the matrix-vector kernel */
    for (int k = 0; k < NT; k++) {
        an_dtype t = TYPES[k];
        int OC = rows_for(t, 45);
        qw q = make(t, OC, C, 40 + (uint64_t)k);
        float *x = acts(N, C, 50), *out = malloc(sizeof(float) * N * OC), bias[MAX_OC];
        for (int o = 0; o < OC; o++) bias[o] = (float)o / OC;
        /* a workspace of a few rows only: several tiles */
        size_t wb = 64 + sizeof(float) * 7 * C;
        void *work = malloc(wb);
        const an_ops *ops = an_ops_cpu();
        ops->linear_forward(ops, out, x, &q.w, bias, N, work, wb, AN_LINEAR_EXACT);
        double worst = 0;
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) {
                double ref = dot_ref(&q, o, x + (size_t)n * C, C) + bias[o], mag = fabs(bias[o]);
                for (int i = 0; i < C; i++) mag += fabs((double)q.wide[(size_t)o * C + i] * x[(size_t)n * C + i]);
                worst = test_nan_max(worst, fabs(out[n * OC + o] - ref) / ((C + 3) * U32 * mag * 1.01));
            }
        CHECK_MSG(worst <= 1.0, "%s forward: error %.3g of the bound", an_dtype_name(t), worst);
        /* dinp += dout W, from a non-zero start */
        float *dout = acts(N, OC, 60), *dinp = malloc(sizeof(float) * N * C);
        for (int i = 0; i < N * C; i++) dinp[i] = 0.5f;
        ops->linear_backward_input(ops, dinp, dout, &q.w, N, work, wb);
        worst = 0;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < C; i++) {
                double ref = 0.5, mag = 0.5;
                for (int o = 0; o < OC; o++) {
                    double p = (double)dout[(size_t)n * OC + o] * q.wide[(size_t)o * C + i];
                    ref += p, mag += fabs(p);
                }
                worst = test_nan_max(worst, fabs(dinp[(size_t)n * C + i] - ref) / ((OC + 3) * U32 * mag * 1.01));
            }
        CHECK_MSG(worst <= 1.0, "%s backward input: error %.3g of the bound", an_dtype_name(t), worst);
        free(dout);
        free(dinp);
        free(work);
        free(out);
        free(x);
        drop(&q);
    }
}

/* The SIMD quantization of activation rows has the plain loop's bits: blocks of every scale, an
 * all-zero block, exact ties (x / d = k + 1/2 rounds to even), a NaN and an infinity. */
static void test_act_quantize_simd_is_plain(void) {
    enum { C = 512 };
    float *x = acts(1, C, 70);
    for (int i = 0; i < 32; i++) x[128 + i] = (float)(i - 16) * 0.5f; /* d = 8 / 127 ... ties after scaling */
    for (int i = 0; i < 32; i++) x[160 + i] = i == 5 ? 127.0f : (float)i + 0.5f; /* d = 1: x / d ties exactly */
    x[200] = NAN;
    x[260] = INFINITY;
    an_q8_act a[C / 32], b[C / 32];
    memset(a, 0x55, sizeof a);
    memset(b, 0x55, sizeof b);
    an_q8_act_quantize(a, x, C);
    an_q8_act_quantize_plain(b, x, C);
    for (int k = 0; k < C / 32; k++) {
        int same = memcmp(a[k].q, b[k].q, 32) == 0 && a[k].sum == b[k].sum &&
                   memcmp(&a[k].d, &b[k].d, sizeof(float)) == 0 && memcmp(&a[k].s, &b[k].s, sizeof(float)) == 0;
        CHECK_MSG(same, "block %d: the SIMD quantization differs from the plain loop", k);
    }
    CHECK(isnan(a[200 / 32].d) && isnan(a[260 / 32].d) && a[160 / 32].d == 1.0f);
    free(x);
}

/* Interleaved weights in inference mode take the integer product at any row count (a prompt's
 * GEMM), AN_QUANT_MATVEC_MAX_ROWS rows at a time: every row of a 37-row product (a full chunk and a
 * part) has the bits of that row alone, bias included. */
static void test_x8_prompt_rows(void) {
    enum { OC = 40, C = 512, N = AN_QUANT_MATVEC_MAX_ROWS + 5 };
    static const an_dtype x8[] = {AN_Q8_0_X8, AN_Q4_0_X8, AN_Q4_1_X8};
    for (int k = 0; k < 3; k++) {
        qw q = make(x8[k], OC, C, 80 + (uint64_t)k);
        float *x = acts(N, C, 90), *out = malloc(sizeof(float) * N * OC), bias[OC], one[OC];
        for (int o = 0; o < OC; o++) bias[o] = (float)o / 8;
        const an_ops *ops = an_ops_cpu();
        size_t wb = an_cpu_quant_work_bytes(&q.w, N);
        void *work = malloc(wb);
        ops->linear_forward(ops, out, x, &q.w, bias, N, work, wb, AN_LINEAR_INFER);
        int bad = -1;
        for (int n = 0; n < N && bad < 0; n++) {
            CHECK(an_cpu_quant_matvec(one, x + (size_t)n * C, &q.w, bias, 1, work, wb, an_q_best_simd()) == 0);
            if (memcmp(one, out + (size_t)n * OC, sizeof one) != 0) bad = n;
        }
        CHECK_MSG(bad < 0, "%s: row %d of %d differs from the row alone", an_dtype_name(x8[k]), bad, N);
        free(work);
        free(out);
        free(x);
        drop(&q);
    }
}

int main(void) {
    RUN(test_act_quantize_simd_is_plain);
    RUN(test_x8_prompt_rows);
    RUN(test_dequantize_is_the_reference);
    RUN(test_matvec_levels_identical_and_bounded);
    RUN(test_gemm_paths);
    return test_finish();
}
