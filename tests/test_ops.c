/* Every op of every backend present: forward against a naive double-precision reference written here,
 * backward against central finite differences of that reference (loss = sum(out * cotangent)).
 * Gradient buffers start non-zero, so the += (accumulate) contract is checked too.
 *
 * Tolerances, as max |error| / max |reference| unless said otherwise:
 *  - forward 2e-6 .. 1e-5: float32 rounding (eps 6e-8) of sums of tens to hundreds of terms, and
 *    an_expf (2e-7 relative);
 *  - backward 1e-4: the finite difference itself is accurate to ~1e-8 (double, h = 1e-4), so this
 *    is float32 rounding of the backward's sums (length <= a few hundred: ~1e-5) with margin.
 * A wrong formula (a missing term, a sign, a transposed index) gives errors of order 1.
 * PyTorch fixtures: tests/test_ops_torch.c; CPU internals (plain-C GEMM, an_expf): tests/test_ops_cpu.c. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "kernels/ops.h"
#include "tests/op_harness.h"
#include "tests/op_refs.h"
#include "tests/test.h"

static const an_ops *g_ops; /* the backend under test */

/* ---------- small helpers ---------- */

static float *dev_f(const float *host, size_t n) { return oh_upload(g_ops, host, n * sizeof(float)); }
static int32_t *dev_i(const int32_t *host, size_t n) { return oh_upload(g_ops, host, n * sizeof(int32_t)); }
static float *host_f(const float *dev, size_t n) { return oh_download(g_ops, dev, n * sizeof(float)); }
static float *rand_f(an_rng *r, size_t n, float lo, float hi) { return oh_rand_f(r, n, lo, hi); }
static double *grad_delta(const float *dev, const float *start, size_t n) { return oh_grad_delta(g_ops, dev, start, n); }

static void dfree(void *p) { g_ops->free(g_ops, p); }


/* ---------- matmul ---------- */

static void check_matmul_shape(int N, int C, int OC, int use_bias, size_t fd_samples) {
    an_rng r;
    an_rng_seed(&r, 1000 + (uint64_t)N * 7 + (uint64_t)OC);
    float *inp = rand_f(&r, (size_t)N * C, -1, 1), *w = rand_f(&r, (size_t)OC * C, -1, 1);
    float *bias = rand_f(&r, OC, -1, 1), *cot = rand_f(&r, (size_t)N * OC, -1, 1);
    float *g_inp = rand_f(&r, (size_t)N * C, -1, 1), *g_w = rand_f(&r, (size_t)OC * C, -1, 1);
    float *g_b = rand_f(&r, OC, -1, 1);
    double *inp_d = oh_to_double(inp, (size_t)N * C), *w_d = oh_to_double(w, (size_t)OC * C);
    double *bias_d = oh_to_double(bias, OC), *cot_d = oh_to_double(cot, (size_t)N * OC);
    oh_mm_ctx ctx = {inp_d, w_d, use_bias ? bias_d : NULL, N, C, OC};

    float *d_inp = dev_f(inp, (size_t)N * C), *d_w = dev_f(w, (size_t)OC * C), *d_b = dev_f(bias, OC);
    float *d_out = dev_f(NULL, (size_t)N * OC), *d_cot = dev_f(cot, (size_t)N * OC);
    g_ops->matmul_forward(g_ops, d_out, d_inp, d_w, use_bias ? d_b : NULL, N, C, OC);
    float *out = host_f(d_out, (size_t)N * OC);
    double *ref = malloc(sizeof(double) * N * OC), *absdot = malloc(sizeof(double) * N * OC);
    oh_ref_matmul(&ctx, ref);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = use_bias ? fabs(bias_d[o]) : 0.0;
            for (int k = 0; k < C; k++) s += fabs(inp_d[(size_t)n * C + k] * w_d[(size_t)o * C + k]);
            absdot[(size_t)n * OC + o] = s;
        }
    CHECK_MSG(oh_within_dot_bound(out, ref, absdot, (size_t)N * OC, C + 1), "matmul forward %dx%dx%d off", N, C, OC);

    float *d_gi = dev_f(g_inp, (size_t)N * C), *d_gw = dev_f(g_w, (size_t)OC * C), *d_gb = dev_f(g_b, OC);
    g_ops->matmul_backward(g_ops, d_gi, d_gw, use_bias ? d_gb : NULL, d_cot, d_inp, d_w, N, C, OC);
    double *gi = grad_delta(d_gi, g_inp, (size_t)N * C), *gw = grad_delta(d_gw, g_w, (size_t)OC * C);
    double *gb = grad_delta(d_gb, g_b, OC);
    if (fd_samples) {
        /* matmul is linear, so the finite differences are exact up to double rounding */
        double e1 = oh_fd_check(oh_ref_matmul, &ctx, inp_d, (size_t)N * C, gi, cot_d, (size_t)N * OC, fd_samples, 1e-3);
        double e2 = oh_fd_check(oh_ref_matmul, &ctx, w_d, (size_t)OC * C, gw, cot_d, (size_t)N * OC, fd_samples, 1e-3);
        CHECK_MSG(e1 < 1e-5 && e2 < 1e-5, "matmul backward dinp %.3g dw %.3g", e1, e2);
        if (use_bias) {
            double e3 = oh_fd_check(oh_ref_matmul, &ctx, bias_d, OC, gb, cot_d, (size_t)N * OC, fd_samples, 1e-3);
            CHECK_MSG(e3 < 1e-5, "matmul backward dbias %.3g", e3);
        }
    } else {
        /* too large for finite differences of the naive reference: compare with the exact products in
         * double (dinp = dout w, dw = dout^T inp) under the same per-element bound as the forward */
        double *rgi = calloc((size_t)N * C, sizeof(double)), *agi = calloc((size_t)N * C, sizeof(double));
        double *rgw = calloc((size_t)OC * C, sizeof(double)), *agw = calloc((size_t)OC * C, sizeof(double));
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) {
                double g = cot_d[(size_t)n * OC + o];
                for (int k = 0; k < C; k++) {
                    rgi[(size_t)n * C + k] += g * w_d[(size_t)o * C + k];
                    agi[(size_t)n * C + k] += fabs(g * w_d[(size_t)o * C + k]);
                    rgw[(size_t)o * C + k] += g * inp_d[(size_t)n * C + k];
                    agw[(size_t)o * C + k] += fabs(g * inp_d[(size_t)n * C + k]);
                }
            }
        /* + the rounding of the accumulation into a start value of magnitude <= 1, twice (here and in
         * grad_delta): 2 u (|start| + |result|) <= 2u * (1 + agi) */
        for (size_t i = 0; i < (size_t)N * C; i++) agi[i] += 1.0;
        for (size_t i = 0; i < (size_t)OC * C; i++) agw[i] += 1.0;
        float *gif = malloc(sizeof(float) * N * C), *gwf = malloc(sizeof(float) * OC * C);
        for (size_t i = 0; i < (size_t)N * C; i++) gif[i] = (float)gi[i];
        for (size_t i = 0; i < (size_t)OC * C; i++) gwf[i] = (float)gw[i];
        CHECK_MSG(oh_within_dot_bound(gif, rgi, agi, (size_t)N * C, OC + 3), "matmul dinp %dx%dx%d off", N, C, OC);
        CHECK_MSG(oh_within_dot_bound(gwf, rgw, agw, (size_t)OC * C, N + 3), "matmul dw %dx%dx%d off", N, C, OC);
        free(rgi), free(agi), free(rgw), free(agw), free(gif), free(gwf);
    }
    /* NULL gradient outputs are skipped (and the others still right) */
    g_ops->matmul_backward(g_ops, NULL, NULL, NULL, d_cot, d_inp, d_w, N, C, OC);
    float *gi2 = host_f(d_gi, (size_t)N * C);
    double *gi2d = grad_delta(d_gi, g_inp, (size_t)N * C);
    CHECK(oh_rel_err_d(gi2d, gi, (size_t)N * C, 1e-3) == 0.0);

    free(gi2), free(gi2d);
    free(inp), free(w), free(bias), free(cot), free(g_inp), free(g_w), free(g_b), free(out), free(ref), free(absdot);
    free(inp_d), free(w_d), free(bias_d), free(cot_d), free(gi), free(gw), free(gb);
    dfree(d_inp), dfree(d_w), dfree(d_b), dfree(d_out), dfree(d_cot), dfree(d_gi), dfree(d_gw), dfree(d_gb);
}

static void test_matmul_small_odd_shapes(void) {
    check_matmul_shape(7, 13, 19, 1, 400);
    check_matmul_shape(1, 5, 3, 0, 400);
    check_matmul_shape(17, 33, 40, 1, 200);
}

static void test_matmul_large_exercises_blocking(void) { check_matmul_shape(257, 300, 513, 1, 0); }

/* C = 0 inputs: out is the bias (BLAS would reject the zero leading dimension) */
static void test_matmul_empty_inner_dimension(void) {
    float bias[3] = {1.5f, -2.0f, 0.25f}, garbage[6] = {9, 9, 9, 9, 9, 9};
    float *d_b = dev_f(bias, 3), *d_out = dev_f(garbage, 6), *d_in = dev_f(NULL, 1), *d_w = dev_f(NULL, 1);
    g_ops->matmul_forward(g_ops, d_out, d_in, d_w, d_b, 2, 0, 3);
    float *out = host_f(d_out, 6);
    CHECK(out[0] == 1.5f && out[1] == -2.0f && out[2] == 0.25f && out[3] == 1.5f && out[5] == 0.25f);
    free(out);
    dfree(d_b), dfree(d_out), dfree(d_in), dfree(d_w);
}


/* ---------- embedding ---------- */

static void test_embedding(void) {
    enum { N = 11, V = 9, C = 70 };
    const int32_t ids[N] = {3, 0, 8, 3, 3, 5, 8, 1, 0, 7, 3}; /* repeats: the backward must add, not store */
    an_rng r;
    an_rng_seed(&r, 5);
    float *table = rand_f(&r, V * C, -1, 1), *cot = rand_f(&r, N * C, -1, 1), *g0 = rand_f(&r, V * C, -1, 1);
    double *table_d = oh_to_double(table, V * C), *cot_d = oh_to_double(cot, N * C);
    oh_emb_ctx ctx = {ids, table_d, N, C};
    float *d_table = dev_f(table, V * C), *d_out = dev_f(NULL, N * C), *d_cot = dev_f(cot, N * C);
    int32_t *d_ids = dev_i(ids, N);
    g_ops->embedding_forward(g_ops, d_out, d_ids, d_table, N, C);
    float *out = host_f(d_out, N * C);
    double ref[N * C];
    oh_ref_embedding(&ctx, ref);
    CHECK(oh_rel_err_fd(out, ref, N * C, 1.0) == 0.0); /* a copy is exact */
    float *d_g = dev_f(g0, V * C);
    g_ops->embedding_backward(g_ops, d_g, d_cot, d_ids, N, C);
    double *g = grad_delta(d_g, g0, V * C);
    /* sums of at most 4 terms plus a start value: a few ulp */
    double e = oh_fd_check(oh_ref_embedding, &ctx, table_d, V * C, g, cot_d, N * C, V * C, 1.0);
    CHECK_MSG(e < 1e-6, "embedding backward %.3g", e);
    free(table), free(cot), free(g0), free(table_d), free(cot_d), free(out), free(g);
    dfree(d_table), dfree(d_out), dfree(d_cot), dfree(d_ids), dfree(d_g);
}

/* ---------- layernorm / rmsnorm ---------- */

static void check_norm(int rms, int N, int C) {
    an_rng r;
    an_rng_seed(&r, 11 + (uint64_t)rms);
    size_t nc = (size_t)N * C;
    float eps = 1e-5f;
    /* an offset mean and uneven scale, so centring and the eps matter */
    float *inp = rand_f(&r, nc, -1.5f, 2.5f), *w = rand_f(&r, C, 0.5f, 1.5f), *b = rand_f(&r, C, -0.5f, 0.5f);
    float *cot = rand_f(&r, nc, -1, 1), *g0i = rand_f(&r, nc, -1, 1), *g0w = rand_f(&r, C, -1, 1);
    float *g0b = rand_f(&r, C, -1, 1);
    double *inp_d = oh_to_double(inp, nc), *w_d = oh_to_double(w, C), *b_d = oh_to_double(b, C);
    double *cot_d = oh_to_double(cot, nc);
    oh_norm_ctx ctx = {inp_d, w_d, rms ? NULL : b_d, N, C, rms, eps};
    oh_forward_fn f = oh_ref_norm;
    float *d_inp = dev_f(inp, nc), *d_w = dev_f(w, C), *d_b = dev_f(b, C), *d_out = dev_f(NULL, nc);
    float *d_mean = dev_f(NULL, N), *d_rstd = dev_f(NULL, N), *d_cot = dev_f(cot, nc);
    if (rms)
        g_ops->rmsnorm_forward(g_ops, d_out, d_rstd, d_inp, d_w, N, C, eps);
    else
        g_ops->layernorm_forward(g_ops, d_out, d_mean, d_rstd, d_inp, d_w, d_b, N, C, eps);
    float *out = host_f(d_out, nc);
    double *ref = malloc(nc * sizeof(double));
    f(&ctx, ref);
    double ef = oh_rel_err_fd(out, ref, nc, 1.0);
    CHECK_MSG(ef < 2e-6, "%s forward %.3g", rms ? "rmsnorm" : "layernorm", ef);
    float *d_gi = dev_f(g0i, nc), *d_gw = dev_f(g0w, C), *d_gb = dev_f(g0b, C);
    if (rms)
        g_ops->rmsnorm_backward(g_ops, d_gi, d_gw, d_cot, d_inp, d_w, d_rstd, N, C);
    else
        g_ops->layernorm_backward(g_ops, d_gi, d_gw, d_gb, d_cot, d_inp, d_w, d_mean, d_rstd, N, C);
    double *gi = grad_delta(d_gi, g0i, nc), *gw = grad_delta(d_gw, g0w, C), *gb = grad_delta(d_gb, g0b, C);
    double e1 = oh_fd_check(f, &ctx, inp_d, nc, gi, cot_d, nc, 300, 1e-3);
    double e2 = oh_fd_check(f, &ctx, w_d, C, gw, cot_d, nc, 300, 1e-3);
    CHECK_MSG(e1 < 1e-4 && e2 < 1e-4, "%s backward dinp %.3g dw %.3g", rms ? "rmsnorm" : "layernorm", e1, e2);
    if (!rms) {
        double e3 = oh_fd_check(f, &ctx, b_d, C, gb, cot_d, nc, 300, 1e-3);
        CHECK_MSG(e3 < 1e-4, "layernorm backward db %.3g", e3);
    }
    if (rms) { /* inference: no rstd wanted, same output */
        float *d_o2 = dev_f(NULL, nc);
        g_ops->rmsnorm_forward(g_ops, d_o2, NULL, d_inp, d_w, N, C, eps);
        float *o2 = host_f(d_o2, nc);
        CHECK(memcmp(o2, out, nc * sizeof(float)) == 0);
        free(o2);
        dfree(d_o2);
    } else { /* no bias (LayerNorm(bias=False)), no statistics wanted: the same output less b */
        float *d_o2 = dev_f(NULL, nc);
        g_ops->layernorm_forward(g_ops, d_o2, NULL, NULL, d_inp, d_w, NULL, N, C, eps);
        float *o2 = host_f(d_o2, nc);
        double e = 0;
        for (size_t i = 0; i < nc; i++) e = test_nan_max(e, fabs((double)o2[i] + b[i % C] - out[i]));
        CHECK_MSG(e < 1e-6, "layernorm without bias %.3g", e); /* one float rounding of values ~3 */
        free(o2);
        dfree(d_o2);
    }
    /* NULL weight gradients: dinp alone accumulates again by the same amount */
    if (rms)
        g_ops->rmsnorm_backward(g_ops, d_gi, NULL, d_cot, d_inp, d_w, d_rstd, N, C);
    else
        g_ops->layernorm_backward(g_ops, d_gi, NULL, NULL, d_cot, d_inp, d_w, d_mean, d_rstd, N, C);
    double *gi2 = grad_delta(d_gi, g0i, nc);
    for (size_t i = 0; i < nc; i++) gi2[i] *= 0.5;
    CHECK(oh_rel_err_d(gi2, gi, nc, 1.0) < 1e-6);
    free(inp), free(w), free(b), free(cot), free(g0i), free(g0w), free(g0b), free(inp_d), free(w_d), free(b_d);
    free(cot_d), free(out), free(ref), free(gi), free(gw), free(gb), free(gi2);
    dfree(d_inp), dfree(d_w), dfree(d_b), dfree(d_out), dfree(d_mean), dfree(d_rstd), dfree(d_cot);
    dfree(d_gi), dfree(d_gw), dfree(d_gb);
}

static void test_layernorm(void) {
    check_norm(0, 9, 77);
    check_norm(0, 4, 300); /* more than one column block of the weight-gradient pass */
}

static void test_rmsnorm(void) {
    check_norm(1, 9, 77);
    check_norm(1, 4, 300);
}


/* Each convention with and without the cos/sin table (rope_table); the table covers positions 0..40,
 * so position 63 is computed on the spot even then. Both paths do the same float arithmetic, so their
 * outputs must agree bit for bit, and each is checked against the exact rotation and its gradient. */
/* ---------- rope ---------- */

/* Against the rotation in exact arithmetic (oh_ref_rope): the op rounds the angle to float32 as
 * PyTorch does, which moves it by at most pos * 2^-23 relative: below 1e-5 for positions < 80. */
static void check_rope(int NH, int HD) {
    enum { N = 6, TABLE_POS = 41 };
    const int32_t pos[N] = {0, 1, 2, 17, 40, 63};
    float *first[2] = {NULL, NULL};
    for (int il = 0; il < 2; il++)
        for (int tabled = 0; tabled < 2; tabled++) {
            an_rng r;
            an_rng_seed(&r, 21 + (uint64_t)il);
            size_t n = (size_t)N * NH * HD;
            float *x = rand_f(&r, n, -1, 1), *cot = rand_f(&r, n, -1, 1);
            double *x_d = oh_to_double(x, n), *cot_d = oh_to_double(cot, n);
            oh_rope_ctx ctx = {x_d, pos, N, NH, HD, il, 10000.0};
            float *d_x = dev_f(x, n), *d_cs = tabled ? dev_f(NULL, (size_t)TABLE_POS * HD) : NULL;
            int32_t *d_pos = dev_i(pos, N);
            if (tabled) g_ops->rope_table(g_ops, d_cs, TABLE_POS, HD, 10000.0f);
            an_rope rope = {.theta = 10000.0f, .interleaved = il, .cos_sin = d_cs, .n_pos = tabled ? TABLE_POS : 0};
            g_ops->rope_forward(g_ops, d_x, d_pos, N, NH, HD, rope);
            float *out = host_f(d_x, n);
            double *ref = malloc(n * sizeof(double));
            oh_ref_rope(&ctx, ref);
            double ef = oh_rel_err_fd(out, ref, n, 1.0);
            CHECK_MSG(ef < 1e-5, "rope hd=%d interleaved=%d table=%d forward %.3g", HD, il, tabled, ef);
            if (!tabled) first[il] = out;
            else CHECK_MSG(memcmp(out, first[il], n * sizeof(float)) == 0, "rope hd=%d interleaved=%d: the table "
                           "path differs from the computed one", HD, il);
            /* backward overwrites: dx := R^T dout, the gradient of sum(R x * cot) */
            float *d_g = dev_f(cot, n);
            g_ops->rope_backward(g_ops, d_g, d_pos, N, NH, HD, rope);
            float *gf = host_f(d_g, n);
            double *g = oh_to_double(gf, n);
            double eb = oh_fd_check(oh_ref_rope, &ctx, x_d, n, g, cot_d, n, n, 1e-3);
            CHECK_MSG(eb < 1e-5, "rope hd=%d interleaved=%d table=%d backward %.3g", HD, il, tabled, eb);
            if (tabled) free(out), free(first[il]);
            free(x), free(cot), free(x_d), free(cot_d), free(ref), free(gf), free(g);
            dfree(d_x), dfree(d_pos), dfree(d_g);
            if (d_cs) dfree(d_cs);
        }
}

static void test_rope_both_conventions(void) {
    check_rope(3, 20);
    check_rope(2, 136); /* 68 frequencies: more than one 64-frequency pass of the kernel */
}

/* ---------- attention ---------- */

typedef struct attn_run {
    float *out, *lse, *dq, *dk, *dv; /* host copies of the results */
} attn_run;

/* runs forward and backward on the backend; gradient outputs start at g0 (returned as deltas in run) */
static attn_run run_attention(const float *q, const float *k, const float *v, const float *dout, const int32_t *seg,
                              int B, int T, int nh, int nkv, int hd, const float *g0q, const float *g0kv) {
    size_t nq = (size_t)B * T * nh * hd, nk = (size_t)B * T * nkv * hd;
    float *d_q = dev_f(q, nq), *d_k = dev_f(k, nk), *d_v = dev_f(v, nk), *d_do = dev_f(dout, nq);
    float *d_out = dev_f(NULL, nq), *d_lse = dev_f(NULL, (size_t)B * nh * T);
    int32_t *d_seg = dev_i(seg, (size_t)B * T);
    float *d_dq = dev_f(g0q, nq), *d_dk = dev_f(g0kv, nk), *d_dv = dev_f(g0kv, nk);
    size_t wb = g_ops->attention_work_bytes(g_ops, T, nh, hd);
    void *work = g_ops->alloc(g_ops, wb);
    g_ops->attention_forward(g_ops, d_out, d_lse, d_q, d_k, d_v, d_seg, B, T, nh, nkv, hd, work, wb);
    g_ops->attention_backward(g_ops, d_dq, d_dk, d_dv, d_do, d_q, d_k, d_v, d_out, d_lse, d_seg, B, T, nh, nkv, hd, work,
                              wb);
    g_ops->free(g_ops, work);
    attn_run run = {host_f(d_out, nq), host_f(d_lse, (size_t)B * nh * T), host_f(d_dq, nq), host_f(d_dk, nk),
                    host_f(d_dv, nk)};
    dfree(d_q), dfree(d_k), dfree(d_v), dfree(d_do), dfree(d_out), dfree(d_lse), dfree(d_seg), dfree(d_dq);
    dfree(d_dk), dfree(d_dv);
    return run;
}

static void free_run(attn_run *r) { free(r->out), free(r->lse), free(r->dq), free(r->dk), free(r->dv); }

static void check_attention(int B, int T, int nh, int nkv, int hd, const int32_t *seg, size_t fd_samples) {
    an_rng r;
    an_rng_seed(&r, 31 + (uint64_t)nh * 3 + (uint64_t)nkv);
    size_t nq = (size_t)B * T * nh * hd, nk = (size_t)B * T * nkv * hd;
    /* q, k in [-2, 2): scores spread over several units, so the softmax is far from uniform */
    float *q = rand_f(&r, nq, -2, 2), *k = rand_f(&r, nk, -2, 2), *v = rand_f(&r, nk, -1, 1);
    float *dout = rand_f(&r, nq, -1, 1), *g0q = rand_f(&r, nq, -1, 1), *g0kv = rand_f(&r, nk, -1, 1);
    attn_run run = run_attention(q, k, v, dout, seg, B, T, nh, nkv, hd, g0q, g0kv);
    double *q_d = oh_to_double(q, nq), *k_d = oh_to_double(k, nk), *v_d = oh_to_double(v, nk);
    double *cot_d = oh_to_double(dout, nq);
    oh_attn_ctx ctx = {q_d, k_d, v_d, seg, B, T, nh, nkv, hd};
    double *ref = malloc(nq * sizeof(double));
    oh_ref_attention(&ctx, ref);
    double ef = oh_rel_err_fd(run.out, ref, nq, 1e-3);
    CHECK_MSG(ef < 1e-5, "attention forward B=%d T=%d nh=%d nkv=%d: %.3g", B, T, nh, nkv, ef);
    /* lse against the double log-sum-exp of one query per (b, h) */
    double maxe = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < nh; h++) {
            int t = T - 1 - (b + h) % T, s0 = seg[b * T + t];
            double mx = -INFINITY, sum = 0, sc[4096];
            for (int u = s0; u <= t; u++) {
                double s = 0;
                for (int d = 0; d < hd; d++)
                    s += q_d[(((size_t)b * T + t) * nh + h) * hd + d] *
                         k_d[(((size_t)b * T + u) * nkv + h / (nh / nkv)) * hd + d];
                sc[u] = s / sqrt((double)hd);
                mx = sc[u] > mx ? sc[u] : mx;
            }
            for (int u = s0; u <= t; u++) sum += exp(sc[u] - mx);
            double e = fabs(run.lse[((size_t)b * nh + h) * T + t] - (mx + log(sum)));
            maxe = test_nan_max(maxe, e);
        }
    CHECK_MSG(maxe < 1e-5, "attention lse %.3g", maxe); /* |lse| ~ 10: float rounding ~1e-6 */
    double *gq = malloc(nq * sizeof(double)), *gk = malloc(nk * sizeof(double)), *gv = malloc(nk * sizeof(double));
    for (size_t i = 0; i < nq; i++) gq[i] = (double)run.dq[i] - g0q[i];
    for (size_t i = 0; i < nk; i++) gk[i] = (double)run.dk[i] - g0kv[i], gv[i] = (double)run.dv[i] - g0kv[i];
    double e1 = oh_fd_check(oh_ref_attention, &ctx, q_d, nq, gq, cot_d, nq, fd_samples, 1e-3);
    double e2 = oh_fd_check(oh_ref_attention, &ctx, k_d, nk, gk, cot_d, nq, fd_samples, 1e-3);
    double e3 = oh_fd_check(oh_ref_attention, &ctx, v_d, nk, gv, cot_d, nq, fd_samples, 1e-3);
    CHECK_MSG(e1 < 1e-4 && e2 < 1e-4 && e3 < 1e-4, "attention backward nh=%d nkv=%d dq %.3g dk %.3g dv %.3g", nh, nkv,
              e1, e2, e3);
    free_run(&run);
    free(q), free(k), free(v), free(dout), free(g0q), free(g0kv), free(q_d), free(k_d), free(v_d), free(cot_d);
    free(ref), free(gq), free(gk), free(gv);
}

/* row 0 plain causal, row 1 three packed samples [0, 40), [40, 97), [97, T) */
static int32_t *make_segments(int B, int T) {
    int32_t *seg = malloc(sizeof(int32_t) * B * T);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) seg[b * T + t] = b % 2 == 0 ? 0 : (t < 40 ? 0 : t < 97 ? 40 : 97);
    return seg;
}

static void test_attention_gqa_and_packed(void) {
    int32_t *seg = make_segments(2, 150); /* T = 150 spans three 64-query tiles, the last one partial */
    check_attention(2, 150, 4, 2, 16, seg, 24);
    check_attention(2, 150, 3, 3, 8, seg, 24);
    check_attention(1, 150, 4, 1, 24, seg, 24); /* hd = 24: one 16-wide vector block and a scalar tail */
    free(seg);
    /* a model-sized head (hd = 64, four 16-wide blocks), four query tiles, packed samples */
    int32_t *seg2 = make_segments(2, 200);
    check_attention(1, 200, 2, 1, 64, seg2 + 200, 8);
    free(seg2);
}

/* a packed row gives the same result as each sample alone in its own row */
static void test_attention_packed_equals_separate(void) {
    enum { T = 150, NH = 4, NKV = 2, HD = 16 };
    const int bounds[4] = {0, 40, 97, T};
    int32_t *seg = make_segments(2, T) + T; /* the packed row */
    an_rng r;
    an_rng_seed(&r, 99);
    size_t nq = (size_t)T * NH * HD, nk = (size_t)T * NKV * HD;
    float *q = rand_f(&r, nq, -2, 2), *k = rand_f(&r, nk, -2, 2), *v = rand_f(&r, nk, -1, 1);
    float *dout = rand_f(&r, nq, -1, 1), *zq = calloc(nq, sizeof(float)), *zk = calloc(nk, sizeof(float));
    attn_run packed = run_attention(q, k, v, dout, seg, 1, T, NH, NKV, HD, zq, zk);
    double worst = 0;
    for (int s = 0; s < 3; s++) {
        int t0 = bounds[s], len = bounds[s + 1] - t0;
        int32_t *zseg = calloc(len, sizeof(int32_t));
        attn_run one = run_attention(q + (size_t)t0 * NH * HD, k + (size_t)t0 * NKV * HD, v + (size_t)t0 * NKV * HD,
                                     dout + (size_t)t0 * NH * HD, zseg, 1, len, NH, NKV, HD, zq, zk);
        /* same sums over different tile boundaries: float rounding only */
        double e[5] = {test_max_rel_err(packed.out + (size_t)t0 * NH * HD, one.out, (size_t)len * NH * HD, 1e-3),
                       test_max_rel_err(packed.dq + (size_t)t0 * NH * HD, one.dq, (size_t)len * NH * HD, 1e-3),
                       test_max_rel_err(packed.dk + (size_t)t0 * NKV * HD, one.dk, (size_t)len * NKV * HD, 1e-3),
                       test_max_rel_err(packed.dv + (size_t)t0 * NKV * HD, one.dv, (size_t)len * NKV * HD, 1e-3), 0};
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < len; t++) {
                double d = fabs(packed.lse[(size_t)h * T + t0 + t] - one.lse[(size_t)h * len + t]);
                e[4] = test_nan_max(e[4], d);
            }
        for (int i = 0; i < 5; i++) worst = test_nan_max(worst, e[i]);
        free_run(&one);
        free(zseg);
    }
    CHECK_MSG(worst < 1e-5, "packed vs separate %.3g", worst);
    free_run(&packed);
    free(seg - T), free(q), free(k), free(v), free(dout), free(zq), free(zk);
}

/* same inputs, 1 and 2 threads: the kernels fix their summation order, so the bits are the same */
static void test_attention_same_bits_any_thread_count(void) {
    enum { B = 2, T = 150, NH = 4, NKV = 2, HD = 16 };
    int32_t *seg = make_segments(B, T);
    an_rng r;
    an_rng_seed(&r, 123);
    size_t nq = (size_t)B * T * NH * HD, nk = (size_t)B * T * NKV * HD;
    float *q = rand_f(&r, nq, -2, 2), *k = rand_f(&r, nk, -2, 2), *v = rand_f(&r, nk, -1, 1);
    float *dout = rand_f(&r, nq, -1, 1), *zq = calloc(nq, sizeof(float)), *zk = calloc(nk, sizeof(float));
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    attn_run a = run_attention(q, k, v, dout, seg, B, T, NH, NKV, HD, zq, zk);
    omp_set_num_threads(2);
    attn_run b = run_attention(q, k, v, dout, seg, B, T, NH, NKV, HD, zq, zk);
    omp_set_num_threads(saved);
    CHECK(memcmp(a.out, b.out, nq * sizeof(float)) == 0 && memcmp(a.dq, b.dq, nq * sizeof(float)) == 0);
    CHECK(memcmp(a.dk, b.dk, nk * sizeof(float)) == 0 && memcmp(a.dv, b.dv, nk * sizeof(float)) == 0);
    free_run(&a), free_run(&b);
    free(seg), free(q), free(k), free(v), free(dout), free(zq), free(zk);
}

/* ---------- pointwise ---------- */

static void test_gelu_and_swiglu(void) {
    enum { N = 1001 };
    an_rng r;
    an_rng_seed(&r, 41);
    for (int kind = 0; kind < 2; kind++) {
        /* [-9, 9): the tails (where tanh and the sigmoid saturate) and the curved middle */
        float *a = rand_f(&r, N, -9, 9), *b = rand_f(&r, N, -2, 2), *cot = rand_f(&r, N, -1, 1);
        float *g0a = rand_f(&r, N, -1, 1), *g0b = rand_f(&r, N, -1, 1);
        double *a_d = oh_to_double(a, N), *b_d = oh_to_double(b, N), *cot_d = oh_to_double(cot, N);
        oh_pw_ctx ctx = {a_d, b_d, N, kind};
        float *d_a = dev_f(a, N), *d_b = dev_f(b, N), *d_out = dev_f(NULL, N), *d_cot = dev_f(cot, N);
        float *d_ga = dev_f(g0a, N), *d_gb = dev_f(g0b, N);
        if (kind == 0) {
            g_ops->gelu_forward(g_ops, d_out, d_a, N);
            g_ops->gelu_backward(g_ops, d_ga, d_a, d_cot, N);
        } else {
            g_ops->swiglu_forward(g_ops, d_out, d_a, d_b, N);
            g_ops->swiglu_backward(g_ops, d_ga, d_gb, d_cot, d_a, d_b, N);
        }
        float *out = host_f(d_out, N);
        double ref[N];
        oh_ref_pointwise(&ctx, ref);
        /* elementwise: compare each value to its own magnitude (floor 1e-3 for values near 0) */
        double worst = 0;
        for (int i = 0; i < N; i++) {
            double e = fabs(out[i] - ref[i]) / test_nan_max(fabs(ref[i]), 1e-3);
            worst = test_nan_max(worst, e);
        }
        CHECK_MSG(worst < 2e-6, "%s forward %.3g", kind ? "swiglu" : "gelu", worst);
        double *ga = grad_delta(d_ga, g0a, N), *gb = grad_delta(d_gb, g0b, N);
        double e1 = oh_fd_check(oh_ref_pointwise, &ctx, a_d, N, ga, cot_d, N, N, 1e-3);
        CHECK_MSG(e1 < 1e-5, "%s backward %.3g", kind ? "swiglu" : "gelu", e1);
        if (kind == 1) {
            double e2 = oh_fd_check(oh_ref_pointwise, &ctx, b_d, N, gb, cot_d, N, N, 1e-3);
            CHECK_MSG(e2 < 1e-5, "swiglu backward dup %.3g", e2);
        }
        free(a), free(b), free(cot), free(g0a), free(g0b), free(a_d), free(b_d), free(cot_d), free(out), free(ga),
            free(gb);
        dfree(d_a), dfree(d_b), dfree(d_out), dfree(d_cot), dfree(d_ga), dfree(d_gb);
    }
}

static void test_add_axpy_scale(void) {
    enum { N = 100003 }; /* above the threshold where the loops go parallel, and odd */
    an_rng r;
    an_rng_seed(&r, 51);
    float *a = rand_f(&r, N, -1, 1), *b = rand_f(&r, N, -1, 1);
    float *d_a = dev_f(a, N), *d_b = dev_f(b, N), *d_o = dev_f(NULL, N);
    g_ops->add(g_ops, d_o, d_a, d_b, N);
    float *o = host_f(d_o, N);
    int ok = 1;
    /* one float operation each: the result is the double result rounded, exactly */
    for (int i = 0; i < N; i++) ok &= o[i] == (float)((double)a[i] + (double)b[i]);
    CHECK_MSG(ok, "add");
    g_ops->add(g_ops, d_a, d_a, d_b, N); /* out aliasing an input */
    free(o);
    o = host_f(d_a, N);
    ok = 1;
    for (int i = 0; i < N; i++) ok &= o[i] == (float)((double)a[i] + (double)b[i]);
    CHECK_MSG(ok, "add in place");
    free(o);
    g_ops->upload(g_ops, d_a, a, N * sizeof(float));
    g_ops->axpy(g_ops, d_a, d_b, -0.25f, N);
    o = host_f(d_a, N);
    ok = 1;
    /* -0.25 * b is exact in float, so the result is one rounding of the exact value */
    for (int i = 0; i < N; i++) ok &= o[i] == (float)((double)a[i] - 0.25 * (double)b[i]);
    CHECK_MSG(ok, "axpy");
    free(o);
    g_ops->scale(g_ops, d_b, 0.1f, N);
    o = host_f(d_b, N);
    ok = 1;
    for (int i = 0; i < N; i++) ok &= o[i] == (float)((double)b[i] * (double)0.1f);
    CHECK_MSG(ok, "scale");
    free(o), free(a), free(b);
    dfree(d_a), dfree(d_b), dfree(d_o);
}

/* ---------- cross-entropy ---------- */

typedef struct ce_ctx {
    const double *logits;
    const int32_t *targets;
    int N, V;
} ce_ctx;

static void ref_cross_entropy(void *vc, double *out) {
    ce_ctx *c = vc;
    for (int n = 0; n < c->N; n++) {
        if (c->targets[n] == AN_IGNORE_INDEX) {
            out[n] = 0;
            continue;
        }
        const double *x = c->logits + (size_t)n * c->V;
        double mx = -INFINITY, s = 0;
        for (int j = 0; j < c->V; j++) mx = x[j] > mx ? x[j] : mx;
        for (int j = 0; j < c->V; j++) s += exp(x[j] - mx);
        out[n] = mx + log(s) - x[c->targets[n]];
    }
}

static void test_cross_entropy(void) {
    enum { N = 7, V = 5001 }; /* V is not a multiple of the 2048-wide chunks */
    const int32_t targets[N] = {3, AN_IGNORE_INDEX, V - 1, 0, 2500, AN_IGNORE_INDEX, 4097};
    an_rng r;
    an_rng_seed(&r, 61);
    size_t nv = (size_t)N * V;
    float *logits = rand_f(&r, nv, -4, 4);
    logits[3 * V + 4000] = 40.0f;  /* a dominant logit in a later chunk: the running max must move */
    logits[2 * V + 10] = -60.0f;   /* and a very negative one */
    double *lg_d = oh_to_double(logits, nv);
    ce_ctx ctx = {lg_d, targets, N, V};
    float *d_lg = dev_f(logits, nv), *d_loss = dev_f(NULL, N), *d_lse = dev_f(NULL, N);
    int32_t *d_t = dev_i(targets, N);
    g_ops->cross_entropy_forward(g_ops, d_loss, d_lse, d_lg, d_t, N, V);
    float *loss = host_f(d_loss, N);
    double ref[N];
    ref_cross_entropy(&ctx, ref);
    /* losses ~ 10 from a sum of 5001 exps: float rounding of lse ~1e-6 absolute */
    double el = oh_rel_err_fd(loss, ref, N, 1.0);
    CHECK_MSG(el < 2e-6, "cross-entropy forward %.3g", el);
    CHECK(loss[1] == 0.0f && loss[5] == 0.0f);
    /* backward: loss = dloss * sum of row losses, so the cotangent is dloss on every row */
    float dloss = 0.2f;
    double cot_d[N];
    for (int n = 0; n < N; n++) cot_d[n] = dloss;
    float *d_g = dev_f(NULL, nv);
    g_ops->cross_entropy_backward(g_ops, d_g, d_lg, d_lse, d_t, N, V, dloss);
    float *gf = host_f(d_g, nv);
    double *g = oh_to_double(gf, nv);
    double eb = oh_fd_check(ref_cross_entropy, &ctx, lg_d, nv, g, cot_d, N, 700, 1e-3);
    CHECK_MSG(eb < 1e-4, "cross-entropy backward %.3g", eb);
    int zero = 1;
    for (int j = 0; j < V; j++) zero &= gf[(size_t)1 * V + j] == 0.0f && gf[(size_t)5 * V + j] == 0.0f;
    CHECK_MSG(zero, "ignored rows must get zero gradient");
    /* each gradient row sums to dloss * (1 - 1) = 0 */
    double rs = 0;
    for (int j = 0; j < V; j++) rs += g[j];
    CHECK_NEAR(rs, 0.0, 1e-6);
    /* in place (dlogits aliasing logits) gives the same bits */
    g_ops->cross_entropy_backward(g_ops, d_lg, d_lg, d_lse, d_t, N, V, dloss);
    float *g2 = host_f(d_lg, nv);
    CHECK(memcmp(g2, gf, nv * sizeof(float)) == 0);
    free(logits), free(lg_d), free(loss), free(gf), free(g), free(g2);
    dfree(d_lg), dfree(d_loss), dfree(d_lse), dfree(d_t), dfree(d_g);
}

/* ---------- optimizer ---------- */

static void test_adamw_five_steps(void) {
    enum { N = 1000 };
    an_rng r;
    an_rng_seed(&r, 71);
    float *p = rand_f(&r, N, -1, 1);
    double *pd = oh_to_double(p, N), md[N] = {0}, vd[N] = {0};
    float *d_p = dev_f(p, N), *d_m = dev_f(NULL, N), *d_v = dev_f(NULL, N), *d_g = dev_f(NULL, N);
    float lr = 1e-2f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.1f;
    for (int step = 1; step <= 5; step++) {
        /* gradients of mixed sizes, including tiny ones where eps matters */
        float *g = rand_f(&r, N, -1, 1);
        for (int i = 0; i < N; i += 7) g[i] *= 1e-6f;
        double *gd = oh_to_double(g, N);
        g_ops->upload(g_ops, d_g, g, N * sizeof(float));
        /* steps 2 and 4 clipped: the gradient is read as g * 0.3 (one float rounding, 6e-8 relative) */
        float clip = step % 2 ? 1.0f : 0.3f;
        for (int i = 0; i < N; i++) gd[i] *= (double)clip;
        oh_adamw_one(g_ops, d_p, d_g, clip, d_m, d_v, N, lr, b1, b2, eps, wd, step);
        oh_ref_adamw(pd, gd, md, vd, N, 1e-2, 0.9, 0.999, 1e-8, 0.1, step);
        free(g), free(gd);
    }
    float *pf = host_f(d_p, N);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        double e = fabs(pf[i] - pd[i]) / test_nan_max(fabs(pd[i]), 1e-2);
        worst = test_nan_max(worst, e);
    }
    /* a handful of float roundings per step on values ~1: ~1e-7 each over 5 steps */
    CHECK_MSG(worst < 1e-6, "adamw vs double reference %.3g", worst);
    /* step 1 without decay moves each weight by lr * g / (|g| + eps): about lr for |g| >> eps */
    free(pf), free(p), free(pd);
    dfree(d_p), dfree(d_m), dfree(d_v), dfree(d_g);
}

static void test_sum_squares_and_clip(void) {
    /* three buffers whose squares add up to 13^2: 3^2 + 4^2 + 12^2 spread over many elements */
    enum { A = 9, Bn = 16, C = 144 };
    float ha[A], hb[Bn], hc[C];
    for (int i = 0; i < A; i++) ha[i] = 1.0f;          /* 9 */
    for (int i = 0; i < Bn; i++) hb[i] = i % 2 ? 1.0f : -1.0f; /* 16 */
    for (int i = 0; i < C; i++) hc[i] = -1.0f;         /* 144 */
    float *d[3] = {dev_f(ha, A), dev_f(hb, Bn), dev_f(hc, C)};
    size_t sizes[3] = {A, Bn, C};
    CHECK_NEAR(g_ops->sum_squares(g_ops, d[2], C), 144.0, 0);
    double norm = an_grad_norm(g_ops, d, sizes, 3);
    CHECK_NEAR(norm, 13.0, 1e-12);
    CHECK(an_clip_coef(norm, 20.0) == 1.0f); /* below max: no clipping */
    CHECK(an_clip_coef(norm, 0.0) == 1.0f);  /* max_norm 0: clipping off */
    /* torch: max_norm / (norm + 1e-6), rounded to float once */
    CHECK(an_clip_coef(norm, 6.5) == (float)(6.5 / (13.0 + 1e-6)));
    float *back = host_f(d[2], C); /* the norm leaves the gradients as they are */
    CHECK(back[5] == -1.0f);
    free(back);
    /* a large buffer: double accumulation of n = 1e6 squares matches the double sum closely */
    enum { BIG = 1000003 };
    an_rng r;
    an_rng_seed(&r, 81);
    float *x = rand_f(&r, BIG, -1, 1);
    double s = 0;
    for (int i = 0; i < BIG; i++) s += (double)x[i] * x[i];
    float *dx = dev_f(x, BIG);
    CHECK_NEAR(g_ops->sum_squares(g_ops, dx, BIG), s, 1e-9 * s);
    free(x);
    dfree(dx), dfree(d[0]), dfree(d[1]), dfree(d[2]);
}

int main(void) {
    /* every backend present; a CUDA build adds its table here */
    const an_ops *backends[] = {an_ops_cpu()};
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++) {
        g_ops = backends[i];
        fprintf(stderr, "backend: %s\n", g_ops->name);
        RUN(test_matmul_small_odd_shapes);
        RUN(test_matmul_large_exercises_blocking);
        RUN(test_matmul_empty_inner_dimension);
        RUN(test_embedding);
        RUN(test_layernorm);
        RUN(test_rmsnorm);
        RUN(test_rope_both_conventions);
        RUN(test_attention_gqa_and_packed);
        RUN(test_attention_packed_equals_separate);
        RUN(test_gelu_and_swiglu);
        RUN(test_add_axpy_scale);
        RUN(test_cross_entropy);
        RUN(test_adamw_five_steps);
        RUN(test_sum_squares_and_clip);
    }
    /* CPU only: the same bits for 1 and 2 threads (more CPU internals in tests/test_ops_cpu.c) */
    g_ops = an_ops_cpu();
    RUN(test_attention_same_bits_any_thread_count);
    return test_finish();
}
