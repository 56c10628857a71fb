/* Token embedding lookup and its scatter-add backward. Ids must lie in [0, rows of the table); the
 * model checks them when it reads a batch. */
#include "kernels/cpu.h"

void an_cpu_embedding_forward(const an_ops *o, float *out, const int32_t *ids, const float *table, int N, int C) {
    (void)o;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * C, table + (size_t)ids[n] * C, (size_t)C * sizeof(float));
}

void an_cpu_embedding_backward(const an_ops *o, float *dtable, const float *dout, const int32_t *ids, int N, int C) {
    (void)o;
    /* Repeated ids write the same row, so threads split the columns, not the tokens: each thread adds
     * the tokens in order into its own columns (no races, same bits for any thread count). */
    enum { COLS = 64 };
    int nblocks = (C + COLS - 1) / COLS;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblocks; blk++) {
        int j0 = blk * COLS, len = j0 + COLS < C ? COLS : C - j0;
        for (int n = 0; n < N; n++) {
            float *d = dtable + (size_t)ids[n] * C + j0;
            const float *g = dout + (size_t)n * C + j0;
            for (int j = 0; j < len; j++) d[j] += g[j];
        }
    }
}
