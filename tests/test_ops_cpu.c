/* CPU backend internals behind the op table: the plain-C GEMM (built and checked in every build,
 * whichever sgemm the table uses), an_expf, and results that do not depend on the thread count. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "kernels/cpu.h"
#include "kernels/cpu_vec.h"
#include "kernels/ops.h"
#include "tests/op_harness.h"
#include "tests/test.h"

static const an_ops *g_ops; /* the backend under test */

static float *dev_f(const float *host, size_t n) { return oh_upload(g_ops, host, n * sizeof(float)); }
static int32_t *dev_i(const int32_t *host, size_t n) { return oh_upload(g_ops, host, n * sizeof(int32_t)); }
static float *host_f(const float *dev, size_t n) { return oh_download(g_ops, dev, n * sizeof(float)); }
static float *rand_f(an_rng *r, size_t n, float lo, float hi) { return oh_rand_f(r, n, lo, hi); }
static void dfree(void *p) { g_ops->free(g_ops, p); }

/* an_expf against exp in double over its whole range: the 2e-7 relative error cpu.h states */
static void test_expf_accuracy(void) {
    double worst = 0;
    for (int i = 0; i <= 2000000; i++) {
        float x = -87.0f + 175.0f * (float)i / 2000000.0f;
        double e = fabs((double)an_expf(x) - exp((double)x)) / exp((double)x);
        worst = test_nan_max(worst, e);
    }
    CHECK_MSG(worst < 2e-7, "an_expf max relative error %.3g", worst);
    CHECK(an_expf(0.0f) == 1.0f);
    CHECK(an_expf(-1000.0f) < 1e-37f && an_expf(-1000.0f) >= 0.0f);
    CHECK(isnan(an_expf(NAN)));
}

/* AN_EXPN, the vector exp of the attention kernels, gives every lane the bits an_expf gives it (both
 * compiled here alike): over the whole range, at the clamps, beyond them, and NaN; and HMAXN finds the
 * largest lane wherever it sits. */
static void test_vector_exp_and_max(void) {
    int mismatched = 0;
    for (int i = 0; i <= 200000; i += AN_VL) {
        float x[AN_VL], y[AN_VL];
        for (int u = 0; u < AN_VL; u++) x[u] = -90.0f + 180.0f * (float)(i + u) / 200000.0f;
        if (i == 0) x[1] = NAN, x[2] = -INFINITY, x[3] = INFINITY, x[4] = -1e30f, x[5] = 0.0f;
        vnf xv, yv;
        memcpy(&xv, x, sizeof xv);
        AN_EXPN(yv, xv);
        memcpy(y, &yv, sizeof yv);
        for (int u = 0; u < AN_VL; u++) {
            float want = an_expf(x[u]);
            if (memcmp(&want, &y[u], sizeof want)) mismatched++;
        }
    }
    CHECK_MSG(mismatched == 0, "%d lanes of AN_EXPN differ from an_expf", mismatched);
    an_rng r;
    an_rng_seed(&r, 5);
    int wrong = 0;
    for (int where = 0; where < AN_VL; where++) {
        float x[AN_VL];
        for (int u = 0; u < AN_VL; u++) x[u] = an_rng_uniform(&r) * 2.0f - 3.0f; /* [-3, -1) */
        x[where] = 0.5f;
        vnf xv;
        memcpy(&xv, x, sizeof xv);
        float got;
        HMAXN(got, xv);
        wrong += got != 0.5f;
    }
    CHECK_MSG(wrong == 0, "HMAXN missed the largest lane %d times of %d", wrong, AN_VL);
}

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
                CHECK_MSG(oh_within_dot_bound(got, ref, absdot, (size_t)M * N, K + 2), "fallback %dx%dx%d ta=%d tb=%d",
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
        g_ops->layernorm_forward(g_ops, o, mean, rstd, d_x, d_w, d_b, N, C, 1e-5f);
        g_ops->layernorm_backward(g_ops, dx, dw, db, d_do, d_x, d_w, mean, rstd, N, C);
        g_ops->rmsnorm_backward(g_ops, dx, dw, d_do, d_x, d_w, rstd, N, C);
        g_ops->embedding_backward(g_ops, demb, d_do, d_ids, N, C);
        g_ops->cross_entropy_forward(g_ops, loss, lse, d_lg, d_tg, N, V);
        g_ops->cross_entropy_backward(g_ops, dlg, d_lg, lse, d_tg, N, V, 0.01f);
        g_ops->matmul_backward(g_ops, NULL, NULL, dbl, d_dl, d_x, d_wl, N, C, OC);
        /* dw's sgemm: the plain-C GEMM (OpenBLAS may split its sums by thread count) */
        an_cpu_sgemm_fallback(1, 0, OC, C, N, 1.0f, d_dl, OC, d_x, C, 0.0f, dwl, C);
        float *bufs[11] = {o, mean, rstd, dx, dw, db, demb, dlg, loss, dwl, dbl};
        size_t ns[11] = {sizes[0], N, N, sizes[3], C, C, sizes[6], sizes[7], N, (size_t)OC * C, OC};
        for (int i = 0; i < 11; i++) {
            res[pass][i] = host_f(bufs[i], ns[i]);
            dfree(bufs[i]);
        }
        dfree(lse);
        ss[pass] = g_ops->sum_squares(g_ops, d_lg, sizes[7]);
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

/* The attention ops take their scratch from the caller (kernels/ops.h attention_work_bytes): with
 * room for only one thread's slice they run on one thread and give the same bits (their sums run in
 * a fixed order whatever the team); with no workspace their outputs are NaN, never silently short. */
static int all_nan(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isnan(x[i])) return 0;
    return 1;
}

static void test_attention_workspace(void) {
    enum { B = 2, T = 70, NH = 4, NKV = 2, HD = 8 };
    size_t nq = (size_t)B * T * NH * HD, nk = (size_t)B * T * NKV * HD, nl = (size_t)B * NH * T;
    an_rng r;
    an_rng_seed(&r, 91);
    float *q = rand_f(&r, nq, -1, 1), *k = rand_f(&r, nk, -1, 1), *v = rand_f(&r, nk, -1, 1);
    float *dout = rand_f(&r, nq, -1, 1);
    int32_t *seg = calloc((size_t)B * T, sizeof(int32_t));
    int saved = omp_get_max_threads();
    omp_set_num_threads(2);
    size_t full = g_ops->attention_work_bytes(g_ops, T, NH, HD);
    omp_set_num_threads(1);
    size_t one = g_ops->attention_work_bytes(g_ops, T, NH, HD);
    omp_set_num_threads(2);
    CHECK(one < full);
    void *work = malloc(full);
    float *out[3], *lse[3], *dq[3], *dk[3], *dv[3];
    size_t sizes[3] = {full, one, 0};
    for (int c = 0; c < 3; c++) {
        out[c] = malloc(nq * 4), lse[c] = malloc(nl * 4);
        dq[c] = calloc(nq, 4), dk[c] = calloc(nk, 4), dv[c] = calloc(nk, 4);
        void *w = sizes[c] ? work : NULL;
        g_ops->attention_forward(g_ops, out[c], lse[c], q, k, v, seg, B, T, NH, NKV, HD, w, sizes[c]);
        g_ops->attention_backward(g_ops, dq[c], dk[c], dv[c], dout, q, k, v, out[0], lse[0], seg, B, T, NH, NKV, HD, w,
                                  sizes[c]);
    }
    CHECK(!all_nan(out[0], nq) && isfinite(out[0][0]) && isfinite(dk[0][nk - 1]));
    CHECK(memcmp(out[0], out[1], nq * 4) == 0 && memcmp(lse[0], lse[1], nl * 4) == 0);
    CHECK(memcmp(dq[0], dq[1], nq * 4) == 0 && memcmp(dk[0], dk[1], nk * 4) == 0 && memcmp(dv[0], dv[1], nk * 4) == 0);
    CHECK(all_nan(out[2], nq) && all_nan(lse[2], nl) && all_nan(dk[2], nk) && all_nan(dv[2], nk));
    /* decode over a cache of T positions: the same rule */
    int32_t len[B] = {T, 33};
    float *od[3];
    for (int c = 0; c < 3; c++) {
        od[c] = malloc((size_t)B * NH * HD * 4);
        g_ops->attention_decode_forward(g_ops, od[c], q, k, v, NULL, len, B, T, NH, NKV, HD, sizes[c] ? work : NULL,
                                        sizes[c]);
    }
    CHECK(isfinite(od[0][0]) && memcmp(od[0], od[1], (size_t)B * NH * HD * 4) == 0);
    CHECK(all_nan(od[2], (size_t)B * NH * HD));
    omp_set_num_threads(saved);
    for (int c = 0; c < 3; c++) free(out[c]), free(lse[c]), free(dq[c]), free(dk[c]), free(dv[c]), free(od[c]);
    free(q), free(k), free(v), free(dout), free(seg), free(work);
}

int main(void) {
    g_ops = an_ops_cpu();
    RUN(test_attention_workspace);
    RUN(test_gemm_fallback_all_transposes);
    RUN(test_expf_accuracy);
    RUN(test_vector_exp_and_max);
    RUN(test_other_ops_same_bits_any_thread_count);
    return test_finish();
}
