/* Linear layers: out = inp @ w^T + bias with w[OC, C] as nn.Linear stores it (alone or with the GELU
 * after it), and its backward (alone or through the GELU before it).
 * The three products (NT forward, NN for dinp, TN for dw) all go through an_cpu_sgemm. */
#include "kernels/cpu.h"

void an_cpu_matmul_forward(const an_ops *o, float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC) {
    (void)o;
    float beta = 0.0f;
    if (bias) {
        /* start from the bias and let sgemm accumulate: no second pass over out */
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) memcpy(out + (size_t)n * OC, bias, (size_t)OC * sizeof(float));
        beta = 1.0f;
    }
    an_cpu_sgemm(0, 1, N, OC, C, 1.0f, inp, C, w, C, beta, out, OC);
}

/* The product, then the GELU in a second pass: OpenBLAS writes the product whole, so there is no
 * epilogue to put it in here; the bits of matmul_forward then gelu_forward. */
void an_cpu_matmul_gelu_forward(const an_ops *o, float *out, float *pre, const float *inp, const float *w, const float *bias,
                                int N, int C, int OC) {
    an_cpu_matmul_forward(o, pre, inp, w, bias, N, C, OC);
    an_cpu_gelu_forward(o, out, pre, (size_t)N * OC);
}

/* dpre = (dout w) gelu'(pre): the product written (beta 0), then scaled in place by the slope */
void an_cpu_matmul_backward_gelu(const an_ops *o, float *dpre, float *dw, float *dbias, const float *dout, const float *h,
                                 const float *pre, const float *w, int N, int C, int OC) {
    an_cpu_sgemm(0, 0, N, C, OC, 1.0f, dout, OC, w, C, 0.0f, dpre, C);
    an_cpu_gelu_scale(dpre, pre, (size_t)N * C);
    an_cpu_matmul_backward(o, NULL, dw, dbias, dout, h, w, N, C, OC);
}

void an_cpu_matmul_backward(const an_ops *o, float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                            const float *w, int N, int C, int OC) {
    (void)o;
    if (dinp) an_cpu_sgemm(0, 0, N, C, OC, 1.0f, dout, OC, w, C, 1.0f, dinp, C);
    if (dw) an_cpu_sgemm(1, 0, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dw, C);
    if (dbias) {
        /* column sums: each thread owns a range of columns and walks the rows in order (deterministic) */
        enum { COLS = 256 };
        int nblocks = (OC + COLS - 1) / COLS;
#pragma omp parallel for schedule(static)
        for (int blk = 0; blk < nblocks; blk++) {
            int j0 = blk * COLS, j1 = j0 + COLS < OC ? j0 + COLS : OC;
            float acc[COLS];
            for (int j = 0; j < j1 - j0; j++) acc[j] = 0.0f;
            for (int n = 0; n < N; n++) {
                const float *d = dout + (size_t)n * OC + j0;
                for (int j = 0; j < j1 - j0; j++) acc[j] += d[j];
            }
            for (int j = 0; j < j1 - j0; j++) dbias[j0 + j] += acc[j];
        }
    }
}
