/* The decoding ops of the CPU backend: the matrix-vector kernel (an_cpu_matvec_forward, what
 * linear_forward runs on float32 weights for up to AN_CPU_MATVEC_MAX_ROWS rows) against a
 * double-precision product, and
 * attention_decode_forward against the tiled causal attention op (attention_forward, itself checked
 * against a double reference in test_ops): a query at position t over a cache holding keys 0..t must
 * give the causal attention output at t.
 * Tolerances: 2e-6 of the largest |reference| for matvec: float32 sums of up to 600 products of
 * uniform(-1, 1) values in 8 lanes of at most 75 terms each, then 3 additions; rounding errors of
 * 2^-24 relative add up like a random walk to ~1e-7 of the largest |reference| (measured: at most
 * 2.1e-7 over these shapes), so 2e-6 leaves 10x room and still catches a lost or doubled term. 1e-5 for
 * attention (two float32 softmax evaluations in different orders, an_expf 2e-7).
 * The batched matvec must also give each row exactly the bits it gives that row alone: generation
 * relies on a sequence decoding to the same tokens whatever else shares its batch. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "kernels/cpu.h"
#include "tests/op_harness.h"
#include "tests/test.h"

/* A product of N inputs of C values with OC weight rows and a bias, all uniform in [-1, 1]. */
typedef struct matvec_case {
    float *x, *w, *b;
} matvec_case;

static matvec_case matvec_case_make(uint64_t seed, int N, int C, int OC) {
    an_rng r;
    an_rng_seed(&r, seed);
    matvec_case m = {malloc(sizeof(float) * N * C), malloc(sizeof(float) * OC * C), malloc(sizeof(float) * OC)};
    oh_fill(&r, m.x, (size_t)N * C, -1, 1);
    oh_fill(&r, m.w, (size_t)OC * C, -1, 1);
    oh_fill(&r, m.b, (size_t)OC, -1, 1);
    return m;
}

static void check_matvec(const an_ops *ops, int N, int C, int OC, int with_bias) {
    matvec_case mc = matvec_case_make((uint64_t)(N * 1000 + C * 10 + OC), N, C, OC);
    float *x = mc.x, *w = mc.w, *b = mc.b;
    double *ref = malloc(sizeof(double) * N * OC);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = with_bias ? b[o] : 0;
            for (int k = 0; k < C; k++) s += (double)x[(size_t)n * C + k] * w[(size_t)o * C + k];
            ref[(size_t)n * OC + o] = s;
        }
    float *dx = oh_upload(ops, x, sizeof(float) * N * C), *dw = oh_upload(ops, w, sizeof(float) * OC * C);
    float *db = oh_upload(ops, b, sizeof(float) * OC), *dout = ops->alloc(ops, sizeof(float) * N * OC);
    size_t wb = an_cpu_matvec_work_bytes(N, C);
    void *work = malloc(wb ? wb : 1);
    an_cpu_matvec_forward(dout, dx, dw, with_bias ? db : NULL, N, C, OC, work, wb);
    float *out = oh_download(ops, dout, sizeof(float) * N * OC);
    /* the table's linear op on a float32 weight runs this kernel for a few rows: the same bits, and
     * the same again without room to pack the inputs */
    if (N <= AN_CPU_MATVEC_MAX_ROWS) {
        an_weight wt = {AN_F32, OC, C, dw};
        float *via = malloc(sizeof(float) * N * OC), *unpacked = malloc(sizeof(float) * N * OC);
        ops->linear_forward(ops, via, dx, &wt, with_bias ? db : NULL, N, work, wb, AN_LINEAR_INFER);
        ops->linear_forward(ops, unpacked, dx, &wt, with_bias ? db : NULL, N, NULL, 0, AN_LINEAR_INFER);
        CHECK_MSG(memcmp(via, out, sizeof(float) * N * OC) == 0, "linear_forward N=%d differs from the kernel", N);
        CHECK_MSG(memcmp(unpacked, out, sizeof(float) * N * OC) == 0, "matvec N=%d differs without its workspace", N);
        free(via), free(unpacked);
    }
    free(work);
    double err = oh_rel_err_fd(out, ref, (size_t)N * OC, 1e-12);
    CHECK_MSG(err < 2e-6, "matvec N=%d C=%d OC=%d bias=%d: rel err %.3g", N, C, OC, with_bias, err);
    ops->free(ops, dx), ops->free(ops, dw), ops->free(ops, db), ops->free(ops, dout);
    free(x), free(w), free(b), free(ref), free(out);
}

static void test_matvec(void) {
    const an_ops *ops = an_ops_cpu();
    /* odd sizes: tails of the 8-lane sums (C % 8), weight rows past the 4-row blocks (OC % 4), inputs
     * past the 3-input tiles and the 16-input chunks (N = 14, 17, 32), several 256-column k-blocks with
     * a short last one (C = 600), no full 8 columns at all (C = 7); and some large enough to thread */
    int shapes[][3] = {{1, 37, 11}, {3, 8, 4},     {4, 64, 13},  {5, 19, 7},   {1, 256, 300}, {2, 300, 257},
                       {16, 512, 36}, {16, 600, 131}, {17, 77, 9}, {14, 264, 12}, {15, 7, 8},   {32, 40, 6}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        for (int bias = 0; bias < 2; bias++) check_matvec(ops, shapes[i][0], shapes[i][1], shapes[i][2], bias);
}

/* Row n of a batched product equals, bit for bit, the product of row n alone. */
static void check_matvec_rows_alone(int N, int C, int OC) {
    matvec_case mc = matvec_case_make((uint64_t)(N * 7 + C * 3 + OC), N, C, OC);
    float *x = mc.x, *w = mc.w, *b = mc.b;
    float *all = malloc(sizeof(float) * N * OC), *one = malloc(sizeof(float) * OC);
    size_t wb = an_cpu_matvec_work_bytes(N, C);
    void *work = malloc(wb);
    an_cpu_matvec_forward(all, x, w, b, N, C, OC, work, wb);
    int differ = 0;
    for (int n = 0; n < N; n++) {
        an_cpu_matvec_forward(one, x + (size_t)n * C, w, b, 1, C, OC, NULL, 0);
        differ += memcmp(one, all + (size_t)n * OC, sizeof(float) * OC) != 0;
    }
    CHECK_MSG(differ == 0, "matvec N=%d C=%d OC=%d: %d rows differ from the same row alone", N, C, OC, differ);
    free(x), free(w), free(b), free(all), free(one), free(work);
}

static void test_matvec_batch_rows_match_single(void) {
    check_matvec_rows_alone(16, 512, 132);
    check_matvec_rows_alone(16, 600, 131);
    check_matvec_rows_alone(17, 77, 9);
    check_matvec_rows_alone(5, 1536, 64);
}

static void check_decode(int B, int T, int nh, int nkv, int hd) {
    const an_ops *ops = an_ops_cpu();
    an_rng r;
    an_rng_seed(&r, (uint64_t)(B * 100 + T + nh));
    size_t nq = (size_t)B * T * nh * hd, nk = (size_t)B * T * nkv * hd;
    float *q = malloc(nq * sizeof(float)), *k = malloc(nk * sizeof(float)), *v = malloc(nk * sizeof(float));
    oh_fill(&r, q, nq, -2, 2);
    oh_fill(&r, k, nk, -2, 2);
    oh_fill(&r, v, nk, -1, 1);
    float *out = malloc(nq * sizeof(float)), *lse = malloc((size_t)B * nh * T * sizeof(float));
    int32_t *seg = calloc((size_t)B * T, sizeof(int32_t));
    size_t wb = ops->attention_work_bytes(ops, T + 3, nh, hd); /* the decode cache below has T + 3 positions */
    void *work = ops->alloc(ops, wb);
    ops->attention_forward(ops, out, lse, q, k, v, seg, B, T, nh, nkv, hd, work, wb);

    /* cache with one spare row and spare positions; sequence b lives in row B - b (reversed). What a
     * step must not read is NaN: the spare row 0 throughout, and in row B - b every position from
     * sequence b's length at that step on (refilled each step, as the lengths move). A read of any of
     * it, even one that only feeds the softmax maximum, makes that output NaN, and the NaN-keeping
     * maximum below turns that into a failure; real future keys there could shift the result by less
     * than the tolerance and go unnoticed. */
    int rows = B + 1, max_T = T + 3;
    size_t kvd = (size_t)nkv * hd, row_n = (size_t)max_T * kvd;
    float *kc = malloc((size_t)rows * row_n * sizeof(float)), *vc = malloc((size_t)rows * row_n * sizeof(float));
    for (size_t i = 0; i < (size_t)rows * row_n; i++) kc[i] = vc[i] = NAN;
    float *qd = malloc((size_t)B * nh * hd * sizeof(float)), *od = malloc((size_t)B * nh * hd * sizeof(float));
    float *want = malloc((size_t)B * nh * hd * sizeof(float));
    int32_t slot[8], len[8];
    double worst = 0;
    for (int t = 0; t < T; t++) {
        for (int b = 0; b < B; b++) {
            int tb = (t + b) % T; /* each row at a different position: per-row lengths */
            slot[b] = B - b;
            len[b] = tb + 1;
            float *kr = kc + (size_t)(B - b) * row_n, *vr = vc + (size_t)(B - b) * row_n;
            memcpy(kr, k + (size_t)b * T * kvd, (size_t)len[b] * kvd * sizeof(float));
            memcpy(vr, v + (size_t)b * T * kvd, (size_t)len[b] * kvd * sizeof(float));
            for (size_t i = (size_t)len[b] * kvd; i < row_n; i++) kr[i] = vr[i] = NAN;
            memcpy(qd + (size_t)b * nh * hd, q + ((size_t)b * T + tb) * nh * hd, (size_t)nh * hd * sizeof(float));
            memcpy(want + (size_t)b * nh * hd, out + ((size_t)b * T + tb) * nh * hd, (size_t)nh * hd * sizeof(float));
        }
        ops->attention_decode_forward(ops, od, qd, kc, vc, slot, len, B, max_T, nh, nkv, hd, work, wb);
        double mx = 0, e = 0;
        for (size_t i = 0; i < (size_t)B * nh * hd; i++) {
            mx = test_nan_max(mx, fabs(want[i]));
            e = test_nan_max(e, fabs(od[i] - want[i]));
        }
        worst = test_nan_max(worst, e / mx);
    }
    CHECK_MSG(worst < 1e-5, "attention decode B=%d T=%d nh=%d nkv=%d hd=%d: rel err %.3g", B, T, nh, nkv, hd, worst);
    free(q), free(k), free(v), free(out), free(lse), free(seg), free(kc), free(vc), free(qd), free(od), free(want);
    ops->free(ops, work);
}

static void test_attention_decode_matches_causal_attention(void) {
    check_decode(1, 5, 2, 2, 4);
    check_decode(3, 17, 4, 2, 8);   /* grouped-query */
    check_decode(2, 70, 8, 1, 16);  /* multi-query, past one 64-key tile of the reference */
    check_decode(4, 40, 6, 3, 12);
    check_decode(1, 33, 6, 2, 8);   /* one sequence: heads split into runs, the last one empty with 2+ threads */
    check_decode(2, 150, 8, 2, 32); /* enough work to run threaded */
    check_decode(2, 70, 9, 3, 64);  /* SmolLM2's heads: whole-vector runs of 3 heads (1 without AVX-512) */
}

int main(void) {
    RUN(test_matvec);
    RUN(test_matvec_batch_rows_match_single);
    RUN(test_attention_decode_matches_causal_attention);
    return test_finish();
}
