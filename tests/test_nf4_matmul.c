/* Compute with a frozen NF4 weight: the fused tiled forward against dequantize-then-multiply in
 * double precision, the input gradient against PyTorch autograd, the matrix-vector kernel against
 * the GEMM path, and the AVX2 kernel against the plain C one. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/rng.h"
#include "kernels/nf4.h"
#include "model/io/nf4_bnb.h"
#include "tests/test.h"

/* Float32 sums of up to a few thousand products in a different order than the reference: the
 * error is a few ulp times sqrt(C) of the largest term, well under 1e-5 of the largest output. */
#define REL_TOL 1e-5

static void *load(const char *name, size_t elem, size_t *count) {
    char path[256];
    snprintf(path, sizeof path, "tests/ref/nf4/%s", name);
    an_error e;
    size_t n = 0;
    void *p = an_read_file(path, &n, &e);
    CHECK_MSG(p != NULL, "%s", e.msg);
    if (count) *count = p ? n / elem : 0;
    return p;
}

static float *randn(int64_t n, float scale, uint64_t seed) {
    float *x = malloc((size_t)n * sizeof(float));
    an_rng r;
    an_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) x[i] = an_rng_normal(&r) * scale;
    return x;
}

/* out[N, OC] = inp @ W^T + bias in double, W dequantized whole (the reference path) */
static void ref_forward(double *out, const float *inp, const float *w, const float *bias, int N, int C, int OC) {
    for (int i = 0; i < N; i++)
        for (int o = 0; o < OC; o++) {
            double s = bias ? bias[o] : 0.0;
            for (int k = 0; k < C; k++) s += (double)inp[(size_t)i * C + k] * w[(size_t)o * C + k];
            out[(size_t)i * OC + o] = s;
        }
}

static double rel_err_d(const float *got, const double *want, size_t n) {
    double maxw = 1e-30, maxd = 0;
    for (size_t i = 0; i < n; i++) {
        maxw = test_nan_max(maxw, fabs(want[i]));
        maxd = test_nan_max(maxd, fabs(got[i] - want[i]));
    }
    return maxd / maxw;
}

/* Shapes: cols not a multiple of the blocksize (blocks straddle rows), more rows than one tile,
 * more columns than one k-panel (1024 forward, 256 backward), and N on both sides of the
 * matrix-vector cut-off. */
static const int SHAPES[][2] = {{64, 130}, {300, 192}, {70, 2100}, {257, 512}};

static void test_forward_equals_dequantize_then_multiply(void) {
    const int Ns[] = {1, 3, 4, 5, 37};
    for (int s = 0; s < 4; s++) {
        int OC = SHAPES[s][0], C = SHAPES[s][1];
        float *w = randn((int64_t)OC * C, 0.02f, 11 + s);
        for (int dq = 0; dq < 2; dq++) {
            an_nf4_tensor t;
            an_error e;
            CHECK_MSG(an_nf4_tensor_quantize(&t, w, OC, C, 64, dq, &e) == 0, "%s", e.msg);
            float *wd = malloc((size_t)OC * C * sizeof(float));
            an_nf4_tensor_dequantize(&t, wd);
            float *bias = randn(OC, 0.5f, 99);
            for (int ni = 0; ni < 5; ni++) {
                int N = Ns[ni];
                float *x = randn((int64_t)N * C, 1.0f, 1000 + N);
                float *out = malloc((size_t)N * OC * sizeof(float));
                double *ref = malloc((size_t)N * OC * sizeof(double));
                CHECK_MSG(an_nf4_matmul_forward(out, x, &t, ni % 2 ? bias : NULL, N, NULL, 0, &e) == 0, "%s", e.msg);
                ref_forward(ref, x, wd, ni % 2 ? bias : NULL, N, C, OC);
                double err = rel_err_d(out, ref, (size_t)N * OC);
                CHECK_MSG(err <= REL_TOL, "[%d x %d] dq=%d N=%d: relative error %.3g", OC, C, dq, N, err);
                free(x);
                free(out);
                free(ref);
            }
            free(bias);
            free(wd);
            an_nf4_tensor_free(&t);
        }
        free(w);
    }
}

static void test_backward_input_equals_reference_and_accumulates(void) {
    for (int s = 0; s < 4; s++) {
        int OC = SHAPES[s][0], C = SHAPES[s][1], N = 6;
        float *w = randn((int64_t)OC * C, 0.02f, 21 + s);
        an_nf4_tensor t;
        an_error e;
        CHECK(an_nf4_tensor_quantize(&t, w, OC, C, 64, 1, &e) == 0);
        float *wd = malloc((size_t)OC * C * sizeof(float));
        an_nf4_tensor_dequantize(&t, wd);
        float *dout = randn((int64_t)N * OC, 1.0f, 5);
        float *dinp = randn((int64_t)N * C, 1.0f, 6); /* must be added to, not overwritten */
        void *work = malloc(an_nf4_matmul_work_bytes(&t)); /* a caller's workspace, sized once */
        double *ref = malloc((size_t)N * C * sizeof(double));
        for (int i = 0; i < N; i++)
            for (int k = 0; k < C; k++) {
                double acc = dinp[(size_t)i * C + k];
                for (int o = 0; o < OC; o++) acc += (double)dout[(size_t)i * OC + o] * wd[(size_t)o * C + k];
                ref[(size_t)i * C + k] = acc;
            }
        CHECK_MSG(an_nf4_matmul_backward_input(dinp, dout, &t, N, work, an_nf4_matmul_work_bytes(&t), &e) == 0, "%s", e.msg);
        double err = rel_err_d(dinp, ref, (size_t)N * C);
        CHECK_MSG(err <= REL_TOL, "[%d x %d]: relative error %.3g", OC, C, err);
        free(w);
        free(wd);
        free(dout);
        free(dinp);
        free(ref);
        free(work);
        an_nf4_tensor_free(&t);
    }
}

/* PyTorch: y = x @ dequant(W)^T + b and x.grad for dout, W quantized by bitsandbytes (wide_dq). */
static void test_forward_and_input_gradient_match_pytorch(void) {
    size_t nw, na, nn, nnm, nq, njs, nx, nd, nb, ny, ndx;
    uint8_t *wq = load("wide_dq.weight.u8", 1, &nw), *am = load("wide_dq.absmax.u8", 1, &na);
    float *nab = load("wide_dq.nested_absmax.f32", 4, &nn), *nmap = load("wide_dq.nested_quant_map.f32", 4, &nnm);
    float *qmap = load("wide_dq.quant_map.f32", 4, &nq);
    char *js = load("wide_dq.quant_state.json", 1, &njs);
    float *x = load("grad.x.f32", 4, &nx), *dout = load("grad.dout.f32", 4, &nd), *b = load("grad.bias.f32", 4, &nb);
    float *y = load("grad.y.f32", 4, &ny), *dx = load("grad.dx.f32", 4, &ndx);
    an_nf4_bnb_arrays a = {
        .name = "wide", .weight = wq, .weight_bytes = (int64_t)nw, .absmax_u8 = am, .absmax_count = (int64_t)na,
        .quant_map = qmap, .quant_map_count = (int64_t)nq, .nested_absmax = nab, .nested_absmax_count = (int64_t)nn,
        .nested_quant_map = nmap, .nested_quant_map_count = (int64_t)nnm, .quant_state_json = js,
        .quant_state_len = njs,
    };
    an_nf4_tensor t;
    an_error e;
    int ok = wq && am && nab && nmap && qmap && js && x && dout && b && y && dx;
    CHECK(ok);
    if (ok && an_nf4_from_bnb(&t, &a, &e) == 0) {
        const int N = 5, C = 130, OC = 64;
        CHECK(t.rows == OC && t.cols == C && nx == (size_t)N * C && ny == (size_t)N * OC && ndx == nx);
        float out[5 * 64], din[5 * 130];
        CHECK(an_nf4_matmul_forward(out, x, &t, b, N, NULL, 0, &e) == 0);
        double err = test_max_rel_err(out, y, (size_t)N * OC, 1e-30);
        CHECK_MSG(err <= REL_TOL, "forward vs torch: relative error %.3g", err);
        memset(din, 0, sizeof din);
        CHECK(an_nf4_matmul_backward_input(din, dout, &t, N, NULL, 0, &e) == 0);
        err = test_max_rel_err(din, dx, (size_t)N * C, 1e-30);
        CHECK_MSG(err <= REL_TOL, "input gradient vs torch: relative error %.3g", err);
        /* one row through the matrix-vector kernel too */
        float one[64];
        an_nf4_matvec(one, x + 2 * C, &t, b, 1, AN_NF4_PATH_AUTO, NULL, 0);
        err = test_max_rel_err(one, y + 2 * OC, OC, 1e-30);
        CHECK_MSG(err <= REL_TOL, "matvec vs torch: relative error %.3g", err);
        an_nf4_tensor_free(&t);
    } else if (ok) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
    }
    free(wq), free(am), free(nab), free(nmap), free(qmap), free(js);
    free(x), free(dout), free(b), free(y), free(dx);
}

/* The matrix-vector kernel (N = 1, 2, 3 and 7, the last run as 4 + 3) against the tiled GEMM
 * path (forced by giving the forward 8 rows, above AN_NF4_MATVEC_MAX_N, of which the first N are
 * compared), and the AVX2 kernel against the plain C one. */
static void test_matvec_paths_agree_with_gemm(void) {
    const int shapes[][2] = {{512, 4096}, {96, 256}, {64, 130}};
    const int Ns[] = {1, 2, 3, 7};
    for (int s = 0; s < 3; s++) {
        int OC = shapes[s][0], C = shapes[s][1];
        float *w = randn((int64_t)OC * C, 0.02f, 31 + s);
        an_nf4_tensor t;
        an_error e;
        CHECK(an_nf4_tensor_quantize(&t, w, OC, C, 64, 1, &e) == 0);
        float *x = randn((int64_t)8 * C, 1.0f, 41), *bias = randn(OC, 1.0f, 42);
        float *g = malloc((size_t)8 * OC * 4), *v = malloc((size_t)8 * OC * 4), *p = malloc((size_t)8 * OC * 4);
        void *work = malloc(an_nf4_matmul_work_bytes(&t));
        CHECK(an_nf4_matmul_forward(g, x, &t, bias, 8, work, an_nf4_matmul_work_bytes(&t), &e) == 0);
        for (int ni = 0; ni < 4; ni++) {
            int N = Ns[ni];
            an_nf4_matvec(v, x, &t, bias, N, AN_NF4_PATH_AUTO, work, an_nf4_matmul_work_bytes(&t));
            an_nf4_matvec(p, x, &t, bias, N, AN_NF4_PATH_PLAIN, NULL, 0);
            double e1 = test_max_rel_err(v, g, (size_t)N * OC, 1e-30), e2 = test_max_rel_err(p, v, (size_t)N * OC, 1e-30);
            CHECK_MSG(e1 <= REL_TOL, "[%d x %d] N=%d matvec vs GEMM: relative error %.3g", OC, C, N, e1);
            CHECK_MSG(e2 <= REL_TOL, "[%d x %d] N=%d plain vs %s matvec: relative error %.3g", OC, C, N,
                      an_nf4_matvec_is_simd() ? "AVX2" : "plain", e2);
        }
        free(w), free(x), free(bias), free(g), free(v), free(p), free(work);
        an_nf4_tensor_free(&t);
    }
#if defined(__AVX2__) && defined(__FMA__)
    CHECK(an_nf4_matvec_is_simd()); /* built with -march=native on an AVX2 machine: the fast path is live */
#endif
}

/* The matrix-vector kernel on its own against dequantize-then-multiply in double precision, for
 * every code path of the AVX2 kernel: blocksize 64 (QLoRA's, the block loop written out) and 32 and
 * 128 (the general loop), with and without double quantization, odd row counts, and 1..4 input rows
 * (each count is its own unrolled variant). Reference: the weight dequantized to float32
 * (an_nf4_tensor_dequantize) and multiplied in double. The kernel sums code * x in float32 per
 * block, scales the block sum once and adds the blocks: every term passes through at most C + 2
 * float32 roundings (plus one in the reference's float32 weight), so by Higham's bound the error is
 * within (C + 4) * 2^-24 * sum |w x| plus a rounding of the bias. */
static void test_matvec_equals_dequantize_then_multiply(void) {
    const int cfg[][4] = {/* OC, C, blocksize, double quant */
                          {37, 512, 64, 1}, {5, 192, 64, 0}, {9, 256, 32, 1}, {13, 384, 128, 0}, {3, 128, 128, 1}};
    for (int s = 0; s < 5; s++) {
        int OC = cfg[s][0], C = cfg[s][1];
        float *w = randn((int64_t)OC * C, 0.05f, 51 + s), *x = randn((int64_t)4 * C, 1.0f, 61 + s);
        float *bias = randn(OC, 1.0f, 71 + s), *wd = malloc(sizeof(float) * (size_t)OC * C), y[4 * 64];
        an_nf4_tensor t;
        an_error e;
        CHECK(an_nf4_tensor_quantize(&t, w, OC, C, cfg[s][2], cfg[s][3], &e) == 0);
        an_nf4_tensor_dequantize(&t, wd);
        for (int path = 0; path < 2; path++)
            for (int N = 1; N <= 4; N++) {
                an_nf4_matvec(y, x, &t, path ? NULL : bias, N, path ? AN_NF4_PATH_PLAIN : AN_NF4_PATH_AUTO, NULL, 0);
                for (int n = 0; n < N; n++)
                    for (int o = 0; o < OC; o++) {
                        double exact = path ? 0.0 : bias[o], mag = 0.0;
                        for (int c = 0; c < C; c++) {
                            double p = (double)wd[(size_t)o * C + c] * x[(size_t)n * C + c];
                            exact += p;
                            mag += fabs(p);
                        }
                        double bound = (C + 4) * ldexp(1.0, -24) * mag + ldexp(1.0, -24) * fabs(exact);
                        CHECK_MSG(fabs(y[n * OC + o] - exact) <= bound,
                                  "[%d x %d] bs %d dq %d %s N=%d row %d out %d: %.9g vs %.9g (bound %.3g)", OC, C,
                                  cfg[s][2], cfg[s][3], path ? "plain" : "auto", N, n, o, y[n * OC + o], exact, bound);
                    }
            }
        free(w), free(x), free(bias), free(wd);
        an_nf4_tensor_free(&t);
    }
}

int main(void) {
    RUN(test_forward_equals_dequantize_then_multiply);
    RUN(test_backward_input_equals_reference_and_accumulates);
    RUN(test_forward_and_input_gradient_match_pytorch);
    RUN(test_matvec_paths_agree_with_gemm);
    RUN(test_matvec_equals_dequantize_then_multiply);
    return test_finish();
}
