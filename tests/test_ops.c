/* Every op of every backend present: forward against a naive double-precision reference written here,
 * backward against central finite differences of that reference (loss = sum(out * cotangent)).
 * Gradient buffers start non-zero, so the += (accumulate) contract is checked too.
 *
 * Tolerances, as max |error| / max |reference| unless said otherwise:
 *  - forward 2e-6 .. 1e-5: float32 rounding (eps 6e-8) of sums of tens to hundreds of terms, and
 *    an_expf (2e-7 relative);
 *  - backward 1e-4: the finite difference itself is accurate to ~1e-8 (double, h = 1e-4), so this
 *    is float32 rounding of the backward's sums (length <= a few hundred: ~1e-5) with margin.
 * A wrong formula (a missing term, a sign, a transposed index) gives errors of order 1. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "kernels/cpu.h"
#include "kernels/ops.h"
#include "tests/op_harness.h"
#include "tests/test.h"

static const an_ops *g_ops; /* the backend under test */

/* ---------- small helpers ---------- */

static float *dev_f(const float *host, size_t n) { return oh_upload(g_ops, host, n * sizeof(float)); }
static int32_t *dev_i(const int32_t *host, size_t n) { return oh_upload(g_ops, host, n * sizeof(int32_t)); }
static float *host_f(const float *dev, size_t n) { return oh_download(g_ops, dev, n * sizeof(float)); }

/* a random float buffer on host (rng r) */
static float *rand_f(an_rng *r, size_t n, float lo, float hi) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    oh_fill(r, x, n, lo, hi);
    return x;
}

/* download an accumulated gradient and take away what it started at */
static double *grad_delta(const float *dev, const float *start, size_t n) {
    float *h = host_f(dev, n);
    double *d = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) d[i] = (double)h[i] - (double)start[i];
    free(h);
    return d;
}

static void dfree(void *p) { g_ops->free(p); }

/* ---------- matmul ---------- */

typedef struct mm_ctx {
    const double *inp, *w, *bias;
    int N, C, OC;
} mm_ctx;

static void ref_matmul(void *vc, double *out) {
    mm_ctx *c = vc;
    for (int n = 0; n < c->N; n++)
        for (int o = 0; o < c->OC; o++) {
            double s = c->bias ? c->bias[o] : 0.0;
            for (int k = 0; k < c->C; k++) s += c->inp[(size_t)n * c->C + k] * c->w[(size_t)o * c->C + k];
            out[(size_t)n * c->OC + o] = s;
        }
}

/* Worst-case float32 error of a dot product of length K in any order, with or without FMA:
 * |err| <= (K + 2) u sum |a_k b_k| (Higham, gamma_K), u = 2^-24; checked element by element. */
static int gemm_within_bound(const float *got, const double *ref, const double *absdot, size_t n, int K) {
    double u = ldexp(1.0, -24);
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)got[i] - ref[i]) <= (K + 2) * u * absdot[i] + 1e-30)) return 0;
    return 1;
}

static void check_matmul_shape(int N, int C, int OC, int use_bias, size_t fd_samples) {
    an_rng r;
    an_rng_seed(&r, 1000 + (uint64_t)N * 7 + (uint64_t)OC);
    float *inp = rand_f(&r, (size_t)N * C, -1, 1), *w = rand_f(&r, (size_t)OC * C, -1, 1);
    float *bias = rand_f(&r, OC, -1, 1), *cot = rand_f(&r, (size_t)N * OC, -1, 1);
    float *g_inp = rand_f(&r, (size_t)N * C, -1, 1), *g_w = rand_f(&r, (size_t)OC * C, -1, 1);
    float *g_b = rand_f(&r, OC, -1, 1);
    double *inp_d = oh_to_double(inp, (size_t)N * C), *w_d = oh_to_double(w, (size_t)OC * C);
    double *bias_d = oh_to_double(bias, OC), *cot_d = oh_to_double(cot, (size_t)N * OC);
    mm_ctx ctx = {inp_d, w_d, use_bias ? bias_d : NULL, N, C, OC};

    float *d_inp = dev_f(inp, (size_t)N * C), *d_w = dev_f(w, (size_t)OC * C), *d_b = dev_f(bias, OC);
    float *d_out = dev_f(NULL, (size_t)N * OC), *d_cot = dev_f(cot, (size_t)N * OC);
    g_ops->matmul_forward(d_out, d_inp, d_w, use_bias ? d_b : NULL, N, C, OC);
    float *out = host_f(d_out, (size_t)N * OC);
    double *ref = malloc(sizeof(double) * N * OC), *absdot = malloc(sizeof(double) * N * OC);
    ref_matmul(&ctx, ref);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = use_bias ? fabs(bias_d[o]) : 0.0;
            for (int k = 0; k < C; k++) s += fabs(inp_d[(size_t)n * C + k] * w_d[(size_t)o * C + k]);
            absdot[(size_t)n * OC + o] = s;
        }
    CHECK_MSG(gemm_within_bound(out, ref, absdot, (size_t)N * OC, C + 1), "matmul forward %dx%dx%d off", N, C, OC);

    float *d_gi = dev_f(g_inp, (size_t)N * C), *d_gw = dev_f(g_w, (size_t)OC * C), *d_gb = dev_f(g_b, OC);
    g_ops->matmul_backward(d_gi, d_gw, use_bias ? d_gb : NULL, d_cot, d_inp, d_w, N, C, OC);
    double *gi = grad_delta(d_gi, g_inp, (size_t)N * C), *gw = grad_delta(d_gw, g_w, (size_t)OC * C);
    double *gb = grad_delta(d_gb, g_b, OC);
    if (fd_samples) {
        /* matmul is linear, so the finite differences are exact up to double rounding */
        double e1 = oh_fd_check(ref_matmul, &ctx, inp_d, (size_t)N * C, gi, cot_d, (size_t)N * OC, fd_samples, 1e-3);
        double e2 = oh_fd_check(ref_matmul, &ctx, w_d, (size_t)OC * C, gw, cot_d, (size_t)N * OC, fd_samples, 1e-3);
        CHECK_MSG(e1 < 1e-5 && e2 < 1e-5, "matmul backward dinp %.3g dw %.3g", e1, e2);
        if (use_bias) {
            double e3 = oh_fd_check(ref_matmul, &ctx, bias_d, OC, gb, cot_d, (size_t)N * OC, fd_samples, 1e-3);
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
        CHECK_MSG(gemm_within_bound(gif, rgi, agi, (size_t)N * C, OC + 3), "matmul dinp %dx%dx%d off", N, C, OC);
        CHECK_MSG(gemm_within_bound(gwf, rgw, agw, (size_t)OC * C, N + 3), "matmul dw %dx%dx%d off", N, C, OC);
        free(rgi), free(agi), free(rgw), free(agw), free(gif), free(gwf);
    }
    /* NULL gradient outputs are skipped (and the others still right) */
    g_ops->matmul_backward(NULL, NULL, NULL, d_cot, d_inp, d_w, N, C, OC);
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

/* The plain-C GEMM directly, all transposes, alpha and beta, sizes across its block edges (MR=6,
 * NR=16, KC=256, MC=120): it is built and checked in both builds, whatever the table uses. */
static void test_gemm_fallback_all_transposes(void) {
    an_rng r;
    an_rng_seed(&r, 77);
    const int shapes[][3] = {{1, 1, 1}, {6, 16, 3}, {7, 17, 257}, {121, 35, 300}, {130, 2100, 20}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
                size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, nc = (size_t)M * ldc;
                float *A = rand_f(&r, na, -1, 1), *B = rand_f(&r, nb, -1, 1), *C = rand_f(&r, nc, -1, 1);
                double *ref = malloc(sizeof(double) * M * N), *absdot = malloc(sizeof(double) * M * N);
                float *got = malloc(sizeof(float) * M * N);
                float alpha = 0.75f, beta = -0.5f;
                float *Cpad = malloc(nc * sizeof(float));
                memcpy(Cpad, C, nc * sizeof(float));
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        double acc = beta * (double)C[(size_t)i * ldc + j], aa = fabs(acc);
                        for (int k = 0; k < K; k++) {
                            double a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                            double b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                            acc += alpha * a * b;
                            aa += fabs(alpha * a * b);
                        }
                        ref[(size_t)i * N + j] = acc;
                        absdot[(size_t)i * N + j] = aa;
                    }
                an_cpu_sgemm_fallback(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
                for (int i = 0; i < M; i++) memcpy(got + (size_t)i * N, C + (size_t)i * ldc, sizeof(float) * N);
                CHECK_MSG(gemm_within_bound(got, ref, absdot, (size_t)M * N, K + 2), "fallback %dx%dx%d ta=%d tb=%d",
                          M, N, K, ta, tb);
                /* the padding columns of C (ldc > N) are left as they were */
                int pad_ok = 1;
                for (int i = 0; i < M; i++)
                    for (int j = N; j < ldc; j++) pad_ok &= C[(size_t)i * ldc + j] == Cpad[(size_t)i * ldc + j];
                CHECK_MSG(pad_ok, "fallback wrote past N");
                free(Cpad);
                free(A), free(B), free(C), free(ref), free(absdot), free(got);
            }
    }
}

/* ---------- embedding ---------- */

typedef struct emb_ctx {
    const int32_t *ids;
    const double *table;
    int N, C;
} emb_ctx;

static void ref_embedding(void *vc, double *out) {
    emb_ctx *c = vc;
    for (int n = 0; n < c->N; n++)
        for (int j = 0; j < c->C; j++) out[(size_t)n * c->C + j] = c->table[(size_t)c->ids[n] * c->C + j];
}

static void test_embedding(void) {
    enum { N = 11, V = 9, C = 70 };
    const int32_t ids[N] = {3, 0, 8, 3, 3, 5, 8, 1, 0, 7, 3}; /* repeats: the backward must add, not store */
    an_rng r;
    an_rng_seed(&r, 5);
    float *table = rand_f(&r, V * C, -1, 1), *cot = rand_f(&r, N * C, -1, 1), *g0 = rand_f(&r, V * C, -1, 1);
    double *table_d = oh_to_double(table, V * C), *cot_d = oh_to_double(cot, N * C);
    emb_ctx ctx = {ids, table_d, N, C};
    float *d_table = dev_f(table, V * C), *d_out = dev_f(NULL, N * C), *d_cot = dev_f(cot, N * C);
    int32_t *d_ids = dev_i(ids, N);
    g_ops->embedding_forward(d_out, d_ids, d_table, N, C);
    float *out = host_f(d_out, N * C);
    double ref[N * C];
    ref_embedding(&ctx, ref);
    CHECK(oh_rel_err_fd(out, ref, N * C, 1.0) == 0.0); /* a copy is exact */
    float *d_g = dev_f(g0, V * C);
    g_ops->embedding_backward(d_g, d_cot, d_ids, N, C);
    double *g = grad_delta(d_g, g0, V * C);
    /* sums of at most 4 terms plus a start value: a few ulp */
    double e = oh_fd_check(ref_embedding, &ctx, table_d, V * C, g, cot_d, N * C, V * C, 1.0);
    CHECK_MSG(e < 1e-6, "embedding backward %.3g", e);
    free(table), free(cot), free(g0), free(table_d), free(cot_d), free(out), free(g);
    dfree(d_table), dfree(d_out), dfree(d_cot), dfree(d_ids), dfree(d_g);
}

/* ---------- layernorm / rmsnorm ---------- */

typedef struct norm_ctx {
    const double *inp, *w, *b; /* b NULL for rmsnorm */
    int N, C;
    double eps;
} norm_ctx;

static void ref_layernorm(void *vc, double *out) {
    norm_ctx *c = vc;
    for (int n = 0; n < c->N; n++) {
        const double *x = c->inp + (size_t)n * c->C;
        double m = 0, v = 0;
        for (int j = 0; j < c->C; j++) m += x[j];
        m /= c->C;
        for (int j = 0; j < c->C; j++) v += (x[j] - m) * (x[j] - m);
        v /= c->C;
        for (int j = 0; j < c->C; j++) out[(size_t)n * c->C + j] = (x[j] - m) / sqrt(v + c->eps) * c->w[j] + c->b[j];
    }
}

static void ref_rmsnorm(void *vc, double *out) {
    norm_ctx *c = vc;
    for (int n = 0; n < c->N; n++) {
        const double *x = c->inp + (size_t)n * c->C;
        double ms = 0;
        for (int j = 0; j < c->C; j++) ms += x[j] * x[j];
        ms /= c->C;
        for (int j = 0; j < c->C; j++) out[(size_t)n * c->C + j] = x[j] / sqrt(ms + c->eps) * c->w[j];
    }
}

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
    norm_ctx ctx = {inp_d, w_d, rms ? NULL : b_d, N, C, eps};
    oh_forward_fn f = rms ? ref_rmsnorm : ref_layernorm;
    float *d_inp = dev_f(inp, nc), *d_w = dev_f(w, C), *d_b = dev_f(b, C), *d_out = dev_f(NULL, nc);
    float *d_mean = dev_f(NULL, N), *d_rstd = dev_f(NULL, N), *d_cot = dev_f(cot, nc);
    if (rms)
        g_ops->rmsnorm_forward(d_out, d_rstd, d_inp, d_w, N, C, eps);
    else
        g_ops->layernorm_forward(d_out, d_mean, d_rstd, d_inp, d_w, d_b, N, C, eps);
    float *out = host_f(d_out, nc);
    double *ref = malloc(nc * sizeof(double));
    f(&ctx, ref);
    double ef = oh_rel_err_fd(out, ref, nc, 1.0);
    CHECK_MSG(ef < 2e-6, "%s forward %.3g", rms ? "rmsnorm" : "layernorm", ef);
    float *d_gi = dev_f(g0i, nc), *d_gw = dev_f(g0w, C), *d_gb = dev_f(g0b, C);
    if (rms)
        g_ops->rmsnorm_backward(d_gi, d_gw, d_cot, d_inp, d_w, d_rstd, N, C);
    else
        g_ops->layernorm_backward(d_gi, d_gw, d_gb, d_cot, d_inp, d_w, d_mean, d_rstd, N, C);
    double *gi = grad_delta(d_gi, g0i, nc), *gw = grad_delta(d_gw, g0w, C), *gb = grad_delta(d_gb, g0b, C);
    double e1 = oh_fd_check(f, &ctx, inp_d, nc, gi, cot_d, nc, 300, 1e-3);
    double e2 = oh_fd_check(f, &ctx, w_d, C, gw, cot_d, nc, 300, 1e-3);
    CHECK_MSG(e1 < 1e-4 && e2 < 1e-4, "%s backward dinp %.3g dw %.3g", rms ? "rmsnorm" : "layernorm", e1, e2);
    if (!rms) {
        double e3 = oh_fd_check(f, &ctx, b_d, C, gb, cot_d, nc, 300, 1e-3);
        CHECK_MSG(e3 < 1e-4, "layernorm backward db %.3g", e3);
    }
    /* NULL weight gradients: dinp alone accumulates again by the same amount */
    if (rms)
        g_ops->rmsnorm_backward(d_gi, NULL, d_cot, d_inp, d_w, d_rstd, N, C);
    else
        g_ops->layernorm_backward(d_gi, NULL, NULL, d_cot, d_inp, d_w, d_mean, d_rstd, N, C);
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

/* ---------- rope ---------- */

typedef struct rope_ctx {
    const double *x;
    const int32_t *pos;
    int N, nh, hd, interleaved;
    double theta;
} rope_ctx;

/* The rotation in exact arithmetic: angle = pos * theta^(-2i/hd). The op rounds the angle to float32
 * as PyTorch does, which moves it by at most pos * 2^-23 relative: below 1e-5 for positions < 80. */
static void ref_rope(void *vc, double *out) {
    rope_ctx *c = vc;
    int half = c->hd / 2;
    for (int n = 0; n < c->N; n++)
        for (int h = 0; h < c->nh; h++) {
            const double *x = c->x + ((size_t)n * c->nh + h) * c->hd;
            double *o = out + ((size_t)n * c->nh + h) * c->hd;
            for (int i = 0; i < half; i++) {
                double ang = c->pos[n] * pow(c->theta, -2.0 * i / c->hd);
                int a = c->interleaved ? 2 * i : i, b = c->interleaved ? 2 * i + 1 : i + half;
                o[a] = x[a] * cos(ang) - x[b] * sin(ang);
                o[b] = x[a] * sin(ang) + x[b] * cos(ang);
            }
        }
}

static void test_rope_both_conventions(void) {
    enum { N = 6, NH = 3, HD = 20 };
    const int32_t pos[N] = {0, 1, 2, 17, 40, 63};
    for (int il = 0; il < 2; il++) {
        an_rng r;
        an_rng_seed(&r, 21 + (uint64_t)il);
        size_t n = N * NH * HD;
        float *x = rand_f(&r, n, -1, 1), *cot = rand_f(&r, n, -1, 1);
        double *x_d = oh_to_double(x, n), *cot_d = oh_to_double(cot, n);
        rope_ctx ctx = {x_d, pos, N, NH, HD, il, 10000.0};
        float *d_x = dev_f(x, n);
        int32_t *d_pos = dev_i(pos, N);
        g_ops->rope_forward(d_x, d_pos, N, NH, HD, 10000.0f, il);
        float *out = host_f(d_x, n);
        double *ref = malloc(n * sizeof(double));
        ref_rope(&ctx, ref);
        double ef = oh_rel_err_fd(out, ref, n, 1.0);
        CHECK_MSG(ef < 1e-5, "rope interleaved=%d forward %.3g", il, ef);
        /* backward overwrites: dx := R^T dout, the gradient of sum(R x * cot) */
        float *d_g = dev_f(cot, n);
        g_ops->rope_backward(d_g, d_pos, N, NH, HD, 10000.0f, il);
        float *gf = host_f(d_g, n);
        double *g = oh_to_double(gf, n);
        double eb = oh_fd_check(ref_rope, &ctx, x_d, n, g, cot_d, n, n, 1e-3);
        CHECK_MSG(eb < 1e-5, "rope interleaved=%d backward %.3g", il, eb);
        free(x), free(cot), free(x_d), free(cot_d), free(out), free(ref), free(gf), free(g);
        dfree(d_x), dfree(d_pos), dfree(d_g);
    }
}

/* ---------- attention ---------- */

typedef struct attn_ctx {
    const double *q, *k, *v;
    const int32_t *seg;
    int B, T, nh, nkv, hd;
} attn_ctx;

/* softmax over keys seg[t]..t of scale * q.k, the whole row at once */
static void ref_attention(void *vc, double *out) {
    attn_ctx *c = vc;
    int group = c->nh / c->nkv;
    double scale = 1.0 / sqrt((double)c->hd);
    double *p = malloc(sizeof(double) * c->T);
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->nh; h++)
            for (int t = 0; t < c->T; t++) {
                const double *qr = c->q + (((size_t)b * c->T + t) * c->nh + h) * c->hd;
                int s0 = c->seg[b * c->T + t];
                double mx = -INFINITY, sum = 0;
                for (int u = s0; u <= t; u++) {
                    const double *kr = c->k + (((size_t)b * c->T + u) * c->nkv + h / group) * c->hd;
                    double s = 0;
                    for (int d = 0; d < c->hd; d++) s += qr[d] * kr[d];
                    p[u] = s * scale;
                    if (p[u] > mx) mx = p[u];
                }
                for (int u = s0; u <= t; u++) sum += (p[u] = exp(p[u] - mx));
                double *o = out + (((size_t)b * c->T + t) * c->nh + h) * c->hd;
                for (int d = 0; d < c->hd; d++) o[d] = 0;
                for (int u = s0; u <= t; u++) {
                    const double *vr = c->v + (((size_t)b * c->T + u) * c->nkv + h / group) * c->hd;
                    for (int d = 0; d < c->hd; d++) o[d] += p[u] / sum * vr[d];
                }
            }
    free(p);
}

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
    g_ops->attention_forward(d_out, d_lse, d_q, d_k, d_v, d_seg, B, T, nh, nkv, hd);
    g_ops->attention_backward(d_dq, d_dk, d_dv, d_do, d_q, d_k, d_v, d_out, d_lse, d_seg, B, T, nh, nkv, hd);
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
    attn_ctx ctx = {q_d, k_d, v_d, seg, B, T, nh, nkv, hd};
    double *ref = malloc(nq * sizeof(double));
    ref_attention(&ctx, ref);
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
            maxe = e > maxe ? e : maxe;
        }
    CHECK_MSG(maxe < 1e-5, "attention lse %.3g", maxe); /* |lse| ~ 10: float rounding ~1e-6 */
    double *gq = malloc(nq * sizeof(double)), *gk = malloc(nk * sizeof(double)), *gv = malloc(nk * sizeof(double));
    for (size_t i = 0; i < nq; i++) gq[i] = (double)run.dq[i] - g0q[i];
    for (size_t i = 0; i < nk; i++) gk[i] = (double)run.dk[i] - g0kv[i], gv[i] = (double)run.dv[i] - g0kv[i];
    double e1 = oh_fd_check(ref_attention, &ctx, q_d, nq, gq, cot_d, nq, fd_samples, 1e-3);
    double e2 = oh_fd_check(ref_attention, &ctx, k_d, nk, gk, cot_d, nq, fd_samples, 1e-3);
    double e3 = oh_fd_check(ref_attention, &ctx, v_d, nk, gv, cot_d, nq, fd_samples, 1e-3);
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
                e[4] = d > e[4] ? d : e[4];
            }
        for (int i = 0; i < 5; i++) worst = e[i] > worst ? e[i] : worst;
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

typedef struct pw_ctx {
    const double *a, *b;
    size_t n;
    int kind; /* 0 gelu(a), 1 silu(a) * b */
} pw_ctx;

static void ref_pointwise(void *vc, double *out) {
    pw_ctx *c = vc;
    for (size_t i = 0; i < c->n; i++) {
        double x = c->a[i];
        if (c->kind == 0)
            out[i] = 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
        else
            out[i] = x / (1.0 + exp(-x)) * c->b[i];
    }
}

static void test_gelu_and_swiglu(void) {
    enum { N = 1001 };
    an_rng r;
    an_rng_seed(&r, 41);
    for (int kind = 0; kind < 2; kind++) {
        /* [-9, 9): the tails (where tanh and the sigmoid saturate) and the curved middle */
        float *a = rand_f(&r, N, -9, 9), *b = rand_f(&r, N, -2, 2), *cot = rand_f(&r, N, -1, 1);
        float *g0a = rand_f(&r, N, -1, 1), *g0b = rand_f(&r, N, -1, 1);
        double *a_d = oh_to_double(a, N), *b_d = oh_to_double(b, N), *cot_d = oh_to_double(cot, N);
        pw_ctx ctx = {a_d, b_d, N, kind};
        float *d_a = dev_f(a, N), *d_b = dev_f(b, N), *d_out = dev_f(NULL, N), *d_cot = dev_f(cot, N);
        float *d_ga = dev_f(g0a, N), *d_gb = dev_f(g0b, N);
        if (kind == 0) {
            g_ops->gelu_forward(d_out, d_a, N);
            g_ops->gelu_backward(d_ga, d_a, d_cot, N);
        } else {
            g_ops->swiglu_forward(d_out, d_a, d_b, N);
            g_ops->swiglu_backward(d_ga, d_gb, d_cot, d_a, d_b, N);
        }
        float *out = host_f(d_out, N);
        double ref[N];
        ref_pointwise(&ctx, ref);
        /* elementwise: compare each value to its own magnitude (floor 1e-3 for values near 0) */
        double worst = 0;
        for (int i = 0; i < N; i++) {
            double e = fabs(out[i] - ref[i]) / fmax(fabs(ref[i]), 1e-3);
            worst = e > worst ? e : worst;
        }
        CHECK_MSG(worst < 2e-6, "%s forward %.3g", kind ? "swiglu" : "gelu", worst);
        double *ga = grad_delta(d_ga, g0a, N), *gb = grad_delta(d_gb, g0b, N);
        double e1 = oh_fd_check(ref_pointwise, &ctx, a_d, N, ga, cot_d, N, N, 1e-3);
        CHECK_MSG(e1 < 1e-5, "%s backward %.3g", kind ? "swiglu" : "gelu", e1);
        if (kind == 1) {
            double e2 = oh_fd_check(ref_pointwise, &ctx, b_d, N, gb, cot_d, N, N, 1e-3);
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
    g_ops->add(d_o, d_a, d_b, N);
    float *o = host_f(d_o, N);
    int ok = 1;
    /* one float operation each: the result is the double result rounded, exactly */
    for (int i = 0; i < N; i++) ok &= o[i] == (float)((double)a[i] + (double)b[i]);
    CHECK_MSG(ok, "add");
    g_ops->add(d_a, d_a, d_b, N); /* out aliasing an input */
    free(o);
    o = host_f(d_a, N);
    ok = 1;
    for (int i = 0; i < N; i++) ok &= o[i] == (float)((double)a[i] + (double)b[i]);
    CHECK_MSG(ok, "add in place");
    free(o);
    g_ops->upload(d_a, a, N * sizeof(float));
    g_ops->axpy(d_a, d_b, -0.25f, N);
    o = host_f(d_a, N);
    ok = 1;
    /* -0.25 * b is exact in float, so the result is one rounding of the exact value */
    for (int i = 0; i < N; i++) ok &= o[i] == (float)((double)a[i] - 0.25 * (double)b[i]);
    CHECK_MSG(ok, "axpy");
    free(o);
    g_ops->scale(d_b, 0.1f, N);
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
    g_ops->cross_entropy_forward(d_loss, d_lse, d_lg, d_t, N, V);
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
    g_ops->cross_entropy_backward(d_g, d_lg, d_lse, d_t, N, V, dloss);
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
    g_ops->cross_entropy_backward(d_lg, d_lg, d_lse, d_t, N, V, dloss);
    float *g2 = host_f(d_lg, nv);
    CHECK(memcmp(g2, gf, nv * sizeof(float)) == 0);
    free(logits), free(lg_d), free(loss), free(gf), free(g), free(g2);
    dfree(d_lg), dfree(d_loss), dfree(d_lse), dfree(d_t), dfree(d_g);
}

/* ---------- optimizer ---------- */

/* torch.optim.AdamW (single-tensor path) in double: weight decay, lerp, addcmul, addcdiv.
 * The hyperparameters are the decimals as typed (0.999, not 0.999f), as Python passes them. */
static void ref_adamw(double *p, const double *g, double *m, double *v, size_t n, double lr, double b1, double b2,
                      double eps, double wd, int step) {
    double bc1 = 1 - pow(b1, step), bc2 = 1 - pow(b2, step);
    for (size_t i = 0; i < n; i++) {
        p[i] *= 1 - lr * wd;
        m[i] += (1 - b1) * (g[i] - m[i]);
        v[i] = v[i] * b2 + (1 - b2) * g[i] * g[i];
        p[i] -= lr / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + eps);
    }
}

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
        g_ops->upload(d_g, g, N * sizeof(float));
        g_ops->adamw_update(d_p, d_g, d_m, d_v, N, lr, b1, b2, eps, wd, step);
        ref_adamw(pd, gd, md, vd, N, 1e-2, 0.9, 0.999, 1e-8, 0.1, step);
        free(g), free(gd);
    }
    float *pf = host_f(d_p, N);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        double e = fabs(pf[i] - pd[i]) / fmax(fabs(pd[i]), 1e-2);
        worst = e > worst ? e : worst;
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
    CHECK_NEAR(g_ops->sum_squares(d[2], C), 144.0, 0);
    double norm = an_clip_grad_norm(g_ops, d, sizes, 3, 20.0); /* below max: untouched */
    CHECK_NEAR(norm, 13.0, 1e-12);
    float *back = host_f(d[0], A);
    CHECK(back[0] == 1.0f);
    free(back);
    norm = an_clip_grad_norm(g_ops, d, sizes, 3, 6.5);
    CHECK_NEAR(norm, 13.0, 1e-12);
    back = host_f(d[2], C);
    CHECK_NEAR(back[5], -6.5 / (13.0 + 1e-6), 1e-7); /* torch: max_norm / (norm + 1e-6) */
    free(back);
    CHECK_NEAR(an_clip_grad_norm(g_ops, d, sizes, 3, 0.0), 6.5, 1e-5);
    /* a large buffer: double accumulation of n = 1e6 squares matches the double sum closely */
    enum { BIG = 1000003 };
    an_rng r;
    an_rng_seed(&r, 81);
    float *x = rand_f(&r, BIG, -1, 1);
    double s = 0;
    for (int i = 0; i < BIG; i++) s += (double)x[i] * x[i];
    float *dx = dev_f(x, BIG);
    CHECK_NEAR(g_ops->sum_squares(dx, BIG), s, 1e-9 * s);
    free(x);
    dfree(dx), dfree(d[0]), dfree(d[1]), dfree(d[2]);
}

/* CPU backend: the reductions of every op run in a fixed order (see docs/kernels.md), so 1 and 2 threads give the
 * same bits: weight-gradient sums split by columns, CE rows, fixed sum_squares chunks, the plain GEMM. */
static void test_other_ops_same_bits_any_thread_count(void) {
    enum { N = 300, C = 200, V = 3000, OC = 70 };
    an_rng r;
    an_rng_seed(&r, 321);
    float *x = rand_f(&r, (size_t)N * C, -1, 1), *w = rand_f(&r, C, 0.5f, 1.5f), *b = rand_f(&r, C, -1, 1);
    float *dout = rand_f(&r, (size_t)N * C, -1, 1), *logits = rand_f(&r, (size_t)N * V, -5, 5);
    float *wl = rand_f(&r, (size_t)OC * C, -1, 1), *dl = rand_f(&r, (size_t)N * OC, -1, 1);
    int32_t *ids = malloc(N * sizeof(int32_t)), *tg = malloc(N * sizeof(int32_t));
    for (int i = 0; i < N; i++) ids[i] = (i * 7) % 13, tg[i] = i % 5 == 0 ? AN_IGNORE_INDEX : (i * 31) % V;
    float *d_x = dev_f(x, (size_t)N * C), *d_w = dev_f(w, C), *d_b = dev_f(b, C), *d_do = dev_f(dout, (size_t)N * C);
    float *d_lg = dev_f(logits, (size_t)N * V), *d_wl = dev_f(wl, (size_t)OC * C), *d_dl = dev_f(dl, (size_t)N * OC);
    int32_t *d_ids = dev_i(ids, N), *d_tg = dev_i(tg, N);
    size_t sizes[8] = {(size_t)N * C, N, N, (size_t)N * C, C, C, (size_t)13 * C, (size_t)N * V};
    float *res[2][11];
    double ss[2];
    int saved = omp_get_max_threads();
    for (int pass = 0; pass < 2; pass++) {
        omp_set_num_threads(pass + 1);
        float *o = dev_f(NULL, sizes[0]), *mean = dev_f(NULL, N), *rstd = dev_f(NULL, N), *dx = dev_f(NULL, sizes[3]);
        float *dw = dev_f(NULL, C), *db = dev_f(NULL, C), *demb = dev_f(NULL, sizes[6]), *dlg = dev_f(NULL, sizes[7]);
        float *loss = dev_f(NULL, N), *lse = dev_f(NULL, N), *dwl = dev_f(NULL, (size_t)OC * C), *dbl = dev_f(NULL, OC);
        g_ops->layernorm_forward(o, mean, rstd, d_x, d_w, d_b, N, C, 1e-5f);
        g_ops->layernorm_backward(dx, dw, db, d_do, d_x, d_w, mean, rstd, N, C);
        g_ops->rmsnorm_backward(dx, dw, d_do, d_x, d_w, rstd, N, C);
        g_ops->embedding_backward(demb, d_do, d_ids, N, C);
        g_ops->cross_entropy_forward(loss, lse, d_lg, d_tg, N, V);
        g_ops->cross_entropy_backward(dlg, d_lg, lse, d_tg, N, V, 0.01f);
        g_ops->matmul_backward(NULL, NULL, dbl, d_dl, d_x, d_wl, N, C, OC);
        /* dw's sgemm: the plain-C GEMM (OpenBLAS may split its sums by thread count) */
        an_cpu_sgemm_fallback(1, 0, OC, C, N, 1.0f, d_dl, OC, d_x, C, 0.0f, dwl, C);
        float *bufs[11] = {o, mean, rstd, dx, dw, db, demb, dlg, loss, dwl, dbl};
        size_t ns[11] = {sizes[0], N, N, sizes[3], C, C, sizes[6], sizes[7], N, (size_t)OC * C, OC};
        for (int i = 0; i < 11; i++) {
            res[pass][i] = host_f(bufs[i], ns[i]);
            dfree(bufs[i]);
        }
        dfree(lse);
        ss[pass] = g_ops->sum_squares(d_lg, sizes[7]);
        if (pass == 1) {
            for (int i = 0; i < 11; i++) {
                CHECK_MSG(memcmp(res[0][i], res[1][i], ns[i] * sizeof(float)) == 0, "output %d differs", i);
                free(res[0][i]), free(res[1][i]);
            }
        }
    }
    omp_set_num_threads(saved);
    CHECK(ss[0] == ss[1]);
    free(x), free(w), free(b), free(dout), free(logits), free(wl), free(dl), free(ids), free(tg);
    dfree(d_x), dfree(d_w), dfree(d_b), dfree(d_do), dfree(d_lg), dfree(d_wl), dfree(d_dl), dfree(d_ids), dfree(d_tg);
}

/* ---------- against PyTorch (tests/ref/ops_torch.txt, made by tests/ref/make_ops_fixtures.py) ---------- */

#define FIXTURE "tests/ref/ops_torch.txt"

/* the values of the record `name` ("name count v1 v2 ..."); malloc'd, count in *n; NULL if absent */
static double *fixture(const char *name, size_t *n) {
    FILE *f = fopen(FIXTURE, "r");
    if (!f) return NULL;
    char key[128];
    double *vals = NULL;
    while (fscanf(f, "%127s", key) == 1) {
        if (key[0] == '#') { /* comment line */
            int c;
            while ((c = fgetc(f)) != '\n' && c != EOF) {
            }
            continue;
        }
        size_t count;
        if (fscanf(f, "%zu", &count) != 1) break;
        int want = strcmp(key, name) == 0;
        if (want) vals = malloc((count ? count : 1) * sizeof(double));
        for (size_t i = 0; i < count; i++) {
            double x;
            if (fscanf(f, "%lf", &x) != 1) {
                free(vals);
                fclose(f);
                return NULL;
            }
            if (want) vals[i] = x;
        }
        if (want) {
            *n = count;
            break;
        }
    }
    fclose(f);
    return vals;
}

static float *to_float(const double *x, size_t n) {
    float *f = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) f[i] = (float)x[i];
    return f;
}

static void test_adamw_matches_torch(void) {
    size_t n = 0, k = 0;
    double *hp = fixture("adamw_hparams", &k), *p0 = fixture("adamw_p0", &n);
    CHECK_MSG(hp && p0 && k == 5, "%s: adamw records missing", FIXTURE);
    if (!hp || !p0) return;
    float *d_p = dev_f(NULL, n), *d_m = dev_f(NULL, n), *d_v = dev_f(NULL, n), *d_g = dev_f(NULL, n);
    float *pf = to_float(p0, n);
    g_ops->upload(d_p, pf, n * sizeof(float));
    for (int step = 1; step <= 5; step++) {
        char name[32];
        snprintf(name, sizeof name, "adamw_g%d", step);
        size_t ng = 0;
        double *g = fixture(name, &ng);
        CHECK(g && ng == n);
        if (!g) return;
        float *gf = to_float(g, n);
        g_ops->upload(d_g, gf, n * sizeof(float));
        g_ops->adamw_update(d_p, d_g, d_m, d_v, n, (float)hp[0], (float)hp[1], (float)hp[2], (float)hp[3],
                            (float)hp[4], step);
        free(g), free(gf);
    }
    const char *names[3] = {"adamw_p5", "adamw_m5", "adamw_v5"};
    float *devs[3] = {d_p, d_m, d_v};
    for (int r = 0; r < 3; r++) {
        size_t nr = 0;
        double *ref = fixture(names[r], &nr);
        float *got = host_f(devs[r], n);
        /* the same float32 operations in the same order as torch: agreement to a few ulp, so 1e-6
         * relative per element (gradients span 1e-6..1, so m and v span many magnitudes) */
        double worst = 0;
        for (size_t i = 0; ref && i < n; i++) {
            double e = fabs(got[i] - ref[i]) / fmax(fabs(ref[i]), 1e-30);
            worst = e > worst ? e : worst;
        }
        CHECK_MSG(ref && nr == n && worst < 1e-6, "%s vs torch: %.3g", names[r], worst);
        free(ref), free(got);
    }
    free(hp), free(p0), free(pf);
    dfree(d_p), dfree(d_m), dfree(d_v), dfree(d_g);
}

static void check_rope_vs_torch(const char *tag, float theta, int interleaved) {
    char name[64];
    size_t np = 0, nx = 0, no = 0;
    snprintf(name, sizeof name, "%s_pos", tag);
    double *pos = fixture(name, &np);
    snprintf(name, sizeof name, "%s_x", tag);
    double *x = fixture(name, &nx);
    snprintf(name, sizeof name, "%s_out", tag);
    double *out = fixture(name, &no);
    CHECK_MSG(pos && x && out && nx == no && nx == np * 2 * 64, "%s: %s records missing", FIXTURE, tag);
    if (!pos || !x || !out) return;
    int N = (int)np, nh = 2, hd = 64;
    int32_t *p = malloc(np * sizeof(int32_t));
    for (size_t i = 0; i < np; i++) p[i] = (int32_t)pos[i];
    float *xf = to_float(x, nx), *d_x = dev_f(xf, nx);
    int32_t *d_pos = dev_i(p, np);
    g_ops->rope_forward(d_x, d_pos, N, nh, hd, theta, interleaved);
    float *got = host_f(d_x, nx);
    /* positions up to 4095: PyTorch rounds the angle to float32 and so do we, then cos/sin agree to
     * ~1 ulp; the products and sum add ~2 ulp of values ~3 */
    double e = 0;
    for (size_t i = 0; i < nx; i++) e = fmax(e, fabs(got[i] - out[i]));
    CHECK_MSG(e < 2e-6, "%s forward vs torch: max abs err %.3g", tag, e);
    free(pos), free(x), free(out), free(p), free(xf), free(got);
    dfree(d_x), dfree(d_pos);
}

static void test_rope_matches_torch_at_long_positions(void) {
    check_rope_vs_torch("rope_hf_10000", 10000.0f, 0);
    check_rope_vs_torch("rope_hf_500000", 500000.0f, 0);
    check_rope_vs_torch("rope_meta_10000", 10000.0f, 1);
}

static void test_gelu_silu_ce_match_torch(void) {
    size_t n = 0, m = 0, s = 0;
    double *x = fixture("gelu_x", &n), *g = fixture("gelu_out", &m), *si = fixture("silu_out", &s);
    CHECK_MSG(x && g && si && n == m && n == s, "%s: gelu records missing", FIXTURE);
    if (!x || !g || !si) return;
    float *xf = to_float(x, n), *d_x = dev_f(xf, n), *d_o = dev_f(NULL, n), *ones = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) ones[i] = 1.0f;
    float *d_one = dev_f(ones, n);
    g_ops->gelu_forward(d_o, d_x, n);
    float *got = host_f(d_o, n);
    /* |x| <= 10: a few ulp of the value; torch's tanh form flushes the far negative tail to -0 where
     * ours gives ~1e-37, hence the absolute part */
    double e = 0;
    for (size_t i = 0; i < n; i++) e = fmax(e, fabs(got[i] - g[i]) / fmax(fabs(g[i]), 1.0));
    CHECK_MSG(e < 1e-6, "gelu vs torch %.3g", e);
    free(got);
    g_ops->swiglu_forward(d_o, d_x, d_one, n); /* silu(x) * 1 */
    got = host_f(d_o, n);
    e = 0;
    for (size_t i = 0; i < n; i++) e = fmax(e, fabs(got[i] - si[i]) / fmax(fabs(si[i]), 1e-3));
    CHECK_MSG(e < 1e-6, "silu vs torch %.3g", e);
    free(got), free(x), free(g), free(si), free(xf), free(ones);
    dfree(d_x), dfree(d_o), dfree(d_one);

    size_t nl = 0, nt = 0, nv = 0;
    double *lg = fixture("ce_logits", &nl), *tg = fixture("ce_targets", &nt), *ls = fixture("ce_losses", &nv);
    CHECK_MSG(lg && tg && ls && nt == nv && nl % nt == 0, "%s: ce records missing", FIXTURE);
    if (!lg || !tg || !ls) return;
    int N = (int)nt, V = (int)(nl / nt);
    int32_t *t = malloc(nt * sizeof(int32_t));
    for (size_t i = 0; i < nt; i++) t[i] = (int32_t)tg[i];
    float *lf = to_float(lg, nl), *d_l = dev_f(lf, nl), *d_loss = dev_f(NULL, N), *d_lse = dev_f(NULL, N);
    int32_t *d_t = dev_i(t, nt);
    g_ops->cross_entropy_forward(d_loss, d_lse, d_l, d_t, N, V);
    float *loss = host_f(d_loss, N);
    e = 0;
    for (int i = 0; i < N; i++) e = fmax(e, fabs(loss[i] - ls[i]) / fmax(fabs(ls[i]), 1.0));
    CHECK_MSG(e < 1e-6, "cross-entropy vs torch %.3g", e); /* losses ~10: float rounding of lse */
    free(lg), free(tg), free(ls), free(t), free(lf), free(loss);
    dfree(d_l), dfree(d_loss), dfree(d_lse), dfree(d_t);
}

int main(void) {
    /* every backend present; a CUDA build adds its table here */
    const an_ops *backends[] = {an_ops_cpu()};
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++) {
        g_ops = backends[i];
        fprintf(stderr, "backend: %s\n", g_ops->name);
        RUN(test_matmul_small_odd_shapes);
        RUN(test_matmul_large_exercises_blocking);
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
        RUN(test_adamw_matches_torch);
        RUN(test_rope_matches_torch_at_long_positions);
        RUN(test_gelu_silu_ce_match_torch);
    }
    /* CPU internals: thread-count independence, the plain-C GEMM */
    g_ops = an_ops_cpu();
    RUN(test_attention_same_bits_any_thread_count);
    RUN(test_other_ops_same_bits_any_thread_count);
    RUN(test_gemm_fallback_all_transposes);
    return test_finish();
}
