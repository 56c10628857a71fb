/* LayerNorm and RMSNorm over the last dimension, forward (alone or after a residual add) and backward.
 * Statistics are float sums in 8 lanes (C is at most a few thousand, so float is as accurate as the
 * float inputs). Backward splits rows for dinp and columns for dw/db, so no two threads add into the
 * same weight gradient and the order of additions is fixed. */
#include <math.h>

#include "kernels/cpu.h"

enum { COLS = 128 };

/* one row: its mean and rstd (two passes: the variance of x - m does not cancel catastrophically when
 * |mean| >> std), then the normalised row */
static void layernorm_row(float *o, float *mean, float *rstd, const float *x, const float *w, const float *b, int C,
                          float eps) {
    float m = an_sum(x, C) / (float)C;
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= C; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += (x[i + l] - m) * (x[i + l] - m);
    float var = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < C; i++) var += (x[i] - m) * (x[i] - m);
    var /= (float)C;
    float s = 1.0f / sqrtf(var + eps);
    if (b)
        for (int j = 0; j < C; j++) o[j] = (x[j] - m) * s * w[j] + b[j];
    else /* LayerNorm(bias=False) */
        for (int j = 0; j < C; j++) o[j] = (x[j] - m) * s * w[j];
    if (mean) *mean = m;
    if (rstd) *rstd = s;
}

/* res_out = res_in + delta for one row, then the norm reads it while it is in cache; the sum is the
 * one rounding of add (cpu_pointwise.c), so the row's bits are those of add then the norm */
static void add_row(float *res_out, const float *res_in, const float *delta, int C) {
    for (int j = 0; j < C; j++) res_out[j] = res_in[j] + delta[j];
}

void an_cpu_layernorm_forward(const an_ops *o, float *out, float *mean, float *rstd, const float *inp, const float *w,
                              const float *b, int N, int C, float eps) {
    (void)o;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        layernorm_row(out + (size_t)n * C, mean ? mean + n : NULL, rstd ? rstd + n : NULL, inp + (size_t)n * C, w, b, C,
                      eps);
}

void an_cpu_add_layernorm_forward(const an_ops *o, float *res_out, float *out, float *mean, float *rstd, const float *res_in,
                                  const float *delta, const float *w, const float *b, int N, int C, float eps) {
    (void)o;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        size_t at = (size_t)n * C;
        add_row(res_out + at, res_in + at, delta + at, C);
        layernorm_row(out + at, mean ? mean + n : NULL, rstd ? rstd + n : NULL, res_out + at, w, b, C, eps);
    }
}

void an_cpu_layernorm_backward(const an_ops *o, float *dinp, float *dw, float *db, const float *dout, const float *inp,
                               const float *w, const float *mean, const float *rstd, int N, int C) {
    (void)o;
    if (dinp) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C, *g = dout + (size_t)n * C;
            float *dx = dinp + (size_t)n * C;
            float m = mean[n], s = rstd[n];
            /* dinp = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)), dnorm = dout * w */
            float a1[8] = {0}, a2[8] = {0};
            int i = 0;
            for (; i + 8 <= C; i += 8)
                for (int l = 0; l < 8; l++) {
                    float dn = g[i + l] * w[i + l];
                    a1[l] += dn;
                    a2[l] += dn * (x[i + l] - m) * s;
                }
            float sum_dn = ((a1[0] + a1[4]) + (a1[1] + a1[5])) + ((a1[2] + a1[6]) + (a1[3] + a1[7]));
            float sum_dnn = ((a2[0] + a2[4]) + (a2[1] + a2[5])) + ((a2[2] + a2[6]) + (a2[3] + a2[7]));
            for (; i < C; i++) {
                float dn = g[i] * w[i];
                sum_dn += dn;
                sum_dnn += dn * (x[i] - m) * s;
            }
            float mdn = sum_dn / (float)C, mdnn = sum_dnn / (float)C;
            for (int j = 0; j < C; j++) dx[j] += s * (g[j] * w[j] - mdn - (x[j] - m) * s * mdnn);
        }
    }
    if (dw || db) {
        int nblocks = (C + COLS - 1) / COLS;
#pragma omp parallel for schedule(static)
        for (int blk = 0; blk < nblocks; blk++) {
            int j0 = blk * COLS, len = j0 + COLS < C ? COLS : C - j0;
            float aw[COLS], ab[COLS];
            for (int j = 0; j < len; j++) aw[j] = ab[j] = 0.0f;
            for (int n = 0; n < N; n++) {
                const float *x = inp + (size_t)n * C + j0, *g = dout + (size_t)n * C + j0;
                float m = mean[n], s = rstd[n];
                for (int j = 0; j < len; j++) {
                    aw[j] += g[j] * (x[j] - m) * s;
                    ab[j] += g[j];
                }
            }
            if (dw)
                for (int j = 0; j < len; j++) dw[j0 + j] += aw[j];
            if (db)
                for (int j = 0; j < len; j++) db[j0 + j] += ab[j];
        }
    }
}

static void rmsnorm_row(float *o, float *rstd, const float *x, const float *w, int C, float eps) {
    float s = 1.0f / sqrtf(an_dot(x, x, C) / (float)C + eps);
    for (int j = 0; j < C; j++) o[j] = x[j] * s * w[j];
    if (rstd) *rstd = s;
}

void an_cpu_rmsnorm_forward(const an_ops *o, float *out, float *rstd, const float *inp, const float *w, int N, int C, float eps) {
    (void)o;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        rmsnorm_row(out + (size_t)n * C, rstd ? rstd + n : NULL, inp + (size_t)n * C, w, C, eps);
}

void an_cpu_add_rmsnorm_forward(const an_ops *o, float *res_out, float *out, float *rstd, const float *res_in,
                                const float *delta, const float *w, int N, int C, float eps) {
    (void)o;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        size_t at = (size_t)n * C;
        add_row(res_out + at, res_in + at, delta + at, C);
        rmsnorm_row(out + at, rstd ? rstd + n : NULL, res_out + at, w, C, eps);
    }
}

void an_cpu_rmsnorm_backward(const an_ops *o, float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                             const float *rstd, int N, int C) {
    (void)o;
    if (dinp) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C, *g = dout + (size_t)n * C;
            float *dx = dinp + (size_t)n * C;
            float s = rstd[n];
            /* dinp = rstd * (dnorm - norm * mean(dnorm * norm)), norm = x * rstd, dnorm = dout * w */
            float a[8] = {0};
            int i = 0;
            for (; i + 8 <= C; i += 8)
                for (int l = 0; l < 8; l++) a[l] += g[i + l] * w[i + l] * x[i + l];
            float sum = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
            for (; i < C; i++) sum += g[i] * w[i] * x[i];
            float c = sum * s * s / (float)C; /* mean(dnorm * norm) / rstd, folded */
            for (int j = 0; j < C; j++) dx[j] += s * (g[j] * w[j] - x[j] * c);
        }
    }
    if (dw) {
        int nblocks = (C + COLS - 1) / COLS;
#pragma omp parallel for schedule(static)
        for (int blk = 0; blk < nblocks; blk++) {
            int j0 = blk * COLS, len = j0 + COLS < C ? COLS : C - j0;
            float aw[COLS];
            for (int j = 0; j < len; j++) aw[j] = 0.0f;
            for (int n = 0; n < N; n++) {
                const float *x = inp + (size_t)n * C + j0, *g = dout + (size_t)n * C + j0;
                float s = rstd[n];
                for (int j = 0; j < len; j++) aw[j] += g[j] * x[j] * s;
            }
            for (int j = 0; j < len; j++) dw[j0 + j] += aw[j];
        }
    }
}
