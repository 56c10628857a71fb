/* The fused LoRA ops (lora_forward / lora_backward in kernels/ops.h) of every backend present, against a
 * double-precision reference written here, with the dropout mask taken from the backend's own dropout
 * op (so the two ops must agree on which element is which: counter + n * C + k).
 *
 * With the mask fixed, out is linear in x, in A and in Bt separately, so central finite differences of
 * loss = sum(out * cotangent) in double are exact up to double rounding (~1e-12 relative here); what is
 * left is the float32 rounding of the op's sums (length <= C + r or N, a few hundred: ~1e-5 of the
 * largest value at worst), hence 1e-4 of the largest gradient. u and the forward output are checked to
 * 1e-5 of their largest value for the same reason (sums of length <= 300). A wrong index, a missing
 * scaling or a mask applied twice gives errors of order 1.
 * Shapes are odd on purpose: N not a multiple of the kernel's row blocks, C above its column chunk
 * (256) and not a multiple of 8, so every tail path runs. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "kernels/ops.h"
#include "tests/op_harness.h"
#include "tests/test.h"

static const an_ops *g_ops;

static float *dev_f(const float *host, size_t n) { return oh_upload(g_ops, host, n * sizeof(float)); }
static float *host_f(const float *dev, size_t n) { return oh_download(g_ops, dev, n * sizeof(float)); }

typedef struct lora_ctx {
    const double *x, *a, *bt, *mask; /* mask: keep / (1 - p) or 0, per element of x */
    int N, C, OC, r;
    double scaling;
} lora_ctx;

/* out[N, OC] = scaling * ((x * mask) A^T) Bt */
static void ref_lora(void *vc, double *out) {
    lora_ctx *c = vc;
    double *u = malloc(sizeof(double) * c->r);
    for (int n = 0; n < c->N; n++) {
        for (int j = 0; j < c->r; j++) {
            double s = 0;
            for (int k = 0; k < c->C; k++) {
                size_t i = (size_t)n * c->C + k;
                s += c->x[i] * c->mask[i] * c->a[(size_t)j * c->C + k];
            }
            u[j] = c->scaling * s;
        }
        for (int o = 0; o < c->OC; o++) {
            double s = 0;
            for (int j = 0; j < c->r; j++) s += u[j] * c->bt[(size_t)j * c->OC + o];
            out[(size_t)n * c->OC + o] = s;
        }
    }
    free(u);
}

static void check_lora(int N, int C, int OC, int r, float p, uint64_t counter) {
    an_rng rng;
    an_rng_seed(&rng, 7000 + (uint64_t)N * 31 + (uint64_t)C);
    const float scaling = 1.75f;
    const uint64_t seed = 0xABCDEF12345ull;
    size_t nx = (size_t)N * C, no = (size_t)N * OC, na = (size_t)r * C, nb = (size_t)r * OC;
    float *x = oh_rand_f(&rng, nx, -1, 1), *a = oh_rand_f(&rng, na, -1, 1), *bt = oh_rand_f(&rng, nb, -1, 1);
    float *out0 = oh_rand_f(&rng, no, -1, 1), *cot = oh_rand_f(&rng, no, -1, 1);
    float *gx0 = oh_rand_f(&rng, nx, -1, 1), *ga0 = oh_rand_f(&rng, na, -1, 1), *gb0 = oh_rand_f(&rng, nb, -1, 1);

    /* the mask, as the dropout op sees it: dropout of a tensor of ones from the same counter */
    float *ones = malloc(nx * sizeof(float));
    for (size_t i = 0; i < nx; i++) ones[i] = 1.0f;
    float *d_ones = dev_f(ones, nx);
    g_ops->dropout(g_ops, d_ones, d_ones, nx, p, seed, counter);
    float *maskf = host_f(d_ones, nx);
    size_t dropped = 0;
    for (size_t i = 0; i < nx; i++) dropped += maskf[i] == 0.0f;
    if (p > 0) CHECK(dropped > 0 && dropped < nx);
    else CHECK(dropped == 0);

    double *x_d = oh_to_double(x, nx), *a_d = oh_to_double(a, na), *bt_d = oh_to_double(bt, nb);
    double *mask_d = oh_to_double(maskf, nx), *cot_d = oh_to_double(cot, no);
    lora_ctx ctx = {x_d, a_d, bt_d, mask_d, N, C, OC, r, scaling};

    float *d_x = dev_f(x, nx), *d_a = dev_f(a, na), *d_bt = dev_f(bt, nb), *d_out = dev_f(out0, no);
    float *d_u = dev_f(NULL, (size_t)N * r), *d_du = dev_f(NULL, (size_t)N * r), *d_cot = dev_f(cot, no);
    g_ops->lora_forward(g_ops, d_out, d_u, d_x, d_a, d_bt, N, C, OC, r, scaling, p, seed, counter);

    /* forward: out accumulates onto its start, u is scaling * xd A^T */
    double *ref = malloc(sizeof(double) * no);
    ref_lora(&ctx, ref);
    double *got = oh_grad_delta(g_ops, d_out, out0, no);
    double e_out = oh_rel_err_d(got, ref, no, 1e-3);
    CHECK_MSG(e_out < 1e-5, "lora forward %dx%dx%d r %d p %g: out off by %.3g", N, C, OC, r, (double)p, e_out);
    float *u = host_f(d_u, (size_t)N * r);
    double *u_ref = malloc(sizeof(double) * N * r);
    for (int n = 0; n < N; n++)
        for (int j = 0; j < r; j++) {
            double s = 0;
            for (int k = 0; k < C; k++) s += x_d[(size_t)n * C + k] * mask_d[(size_t)n * C + k] * a_d[(size_t)j * C + k];
            u_ref[(size_t)n * r + j] = scaling * s;
        }
    double e_u = oh_rel_err_fd(u, u_ref, (size_t)N * r, 1e-3);
    CHECK_MSG(e_u < 1e-5, "lora forward: u off by %.3g", e_u);

    /* backward: gradients accumulate onto non-zero starts; finite differences of the reference */
    float *d_gx = dev_f(gx0, nx), *d_ga = dev_f(ga0, na), *d_gb = dev_f(gb0, nb);
    g_ops->lora_backward(g_ops, d_gx, d_ga, d_gb, d_du, d_cot, d_x, d_u, d_a, d_bt, N, C, OC, r, scaling, p, seed, counter);
    double *gx = oh_grad_delta(g_ops, d_gx, gx0, nx), *ga = oh_grad_delta(g_ops, d_ga, ga0, na);
    double *gb = oh_grad_delta(g_ops, d_gb, gb0, nb);
    double e_x = oh_fd_check(ref_lora, &ctx, x_d, nx, gx, cot_d, no, 400, 1e-3);
    double e_a = oh_fd_check(ref_lora, &ctx, a_d, na, ga, cot_d, no, 400, 1e-3);
    double e_b = oh_fd_check(ref_lora, &ctx, bt_d, nb, gb, cot_d, no, 400, 1e-3);
    CHECK_MSG(e_x < 1e-4 && e_a < 1e-4 && e_b < 1e-4, "lora backward %dx%dx%d r %d p %g: dx %.3g dA %.3g dBt %.3g", N,
              C, OC, r, (double)p, e_x, e_a, e_b);
    /* a dropped input gets no gradient through the adapter */
    size_t leaked = 0;
    for (size_t i = 0; i < nx; i++) leaked += mask_d[i] == 0.0 && gx[i] != 0.0;
    CHECK(leaked == 0);

    /* NULL outputs are skipped, the others unchanged (bit for bit: same sums in the same order) */
    float *d_ga2 = dev_f(ga0, na);
    g_ops->lora_backward(g_ops, NULL, d_ga2, NULL, d_du, d_cot, d_x, d_u, d_a, d_bt, N, C, OC, r, scaling, p, seed, counter);
    float *ga_full = host_f(d_ga, na), *ga_only = host_f(d_ga2, na);
    CHECK(memcmp(ga_full, ga_only, na * sizeof(float)) == 0);

    free(x), free(a), free(bt), free(out0), free(cot), free(gx0), free(ga0), free(gb0), free(ones), free(maskf);
    free(x_d), free(a_d), free(bt_d), free(mask_d), free(cot_d), free(ref), free(got), free(u), free(u_ref);
    free(gx), free(ga), free(gb), free(ga_full), free(ga_only);
    g_ops->free(g_ops, d_ones), g_ops->free(g_ops, d_x), g_ops->free(g_ops, d_a), g_ops->free(g_ops, d_bt), g_ops->free(g_ops, d_out);
    g_ops->free(g_ops, d_u), g_ops->free(g_ops, d_du), g_ops->free(g_ops, d_cot), g_ops->free(g_ops, d_gx), g_ops->free(g_ops, d_ga), g_ops->free(g_ops, d_gb);
    g_ops->free(g_ops, d_ga2);
}

static void test_lora_no_dropout(void) { check_lora(37, 70, 45, 5, 0.0f, 0); }
static void test_lora_dropout_counter(void) {
    check_lora(37, 70, 45, 5, 0.3f, 12345); /* a head chunk's counter offset */
    check_lora(9, 300, 130, 16, 0.1f, 0);   /* C above the forward's 256-column chunk */
    check_lora(11, 70, 300, 16, 0.0f, 0);   /* OC above the backward's 256-column chunk of Bt (rank 16) */
}
/* large enough to go parallel (the kernel's threshold is N (C + OC) r > 65536) */
static void test_lora_parallel_shape(void) { check_lora(203, 96, 80, 8, 0.2f, 7); }

/* CPU: the same bits for 1 and 2 threads (the resume tests rely on bit-identical steps) */
static void test_lora_same_bits_any_thread_count(void) {
    enum { N = 301, C = 130, OC = 210, R = 16 };
    an_rng rng;
    an_rng_seed(&rng, 99);
    float *x = oh_rand_f(&rng, (size_t)N * C, -1, 1), *a = oh_rand_f(&rng, (size_t)R * C, -1, 1);
    float *bt = oh_rand_f(&rng, (size_t)R * OC, -1, 1), *dout = oh_rand_f(&rng, (size_t)N * OC, -1, 1);
    float *res[2][5];
    int saved = omp_get_max_threads();
    for (int t = 0; t < 2; t++) {
        omp_set_num_threads(t + 1);
        float *out = calloc((size_t)N * OC, 4), *u = calloc((size_t)N * R, 4), *du = calloc((size_t)N * R, 4);
        float *dx = calloc((size_t)N * C, 4), *da = calloc((size_t)R * C, 4), *db = calloc((size_t)R * OC, 4);
        g_ops->lora_forward(g_ops, out, u, x, a, bt, N, C, OC, R, 0.5f, 0.1f, 3, 0);
        g_ops->lora_backward(g_ops, dx, da, db, du, dout, x, u, a, bt, N, C, OC, R, 0.5f, 0.1f, 3, 0);
        res[t][0] = out, res[t][1] = u, res[t][2] = dx, res[t][3] = da, res[t][4] = db;
        free(du);
    }
    omp_set_num_threads(saved);
    size_t sizes[5] = {(size_t)N * OC, (size_t)N * R, (size_t)N * C, (size_t)R * C, (size_t)R * OC};
    for (int i = 0; i < 5; i++) {
        CHECK_MSG(memcmp(res[0][i], res[1][i], sizes[i] * 4) == 0, "output %d differs between 1 and 2 threads", i);
        free(res[0][i]), free(res[1][i]);
    }
    free(x), free(a), free(bt), free(dout);
}

int main(void) {
    const an_ops *backends[] = {an_ops_cpu()}; /* a CUDA build adds its table here */
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++) {
        g_ops = backends[i];
        fprintf(stderr, "backend: %s\n", g_ops->name);
        RUN(test_lora_no_dropout);
        RUN(test_lora_dropout_counter);
        RUN(test_lora_parallel_shape);
    }
    g_ops = an_ops_cpu();
    RUN(test_lora_same_bits_any_thread_count);
    return test_finish();
}
