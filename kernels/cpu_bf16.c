/* Ops on bf16-stored frozen weights (the embedding table and the LM head, model/bf16_weights.h).
 * A bf16 value is the top half of a float32, so widening is a shift and exact; the matmuls widen the
 * weight a tile of rows at a time into the caller's workspace and run the float32 GEMM on the tile,
 * so no float32 copy of the whole weight ever exists. */
#include <string.h>

#include "kernels/cpu.h"

static inline float widen(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void an_cpu_embedding_forward_bf16(float *out, const int32_t *ids, const uint16_t *table, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const uint16_t *row = table + (size_t)ids[n] * C;
        float *o = out + (size_t)n * C;
        for (int c = 0; c < C; c++) o[c] = widen(row[c]);
    }
}

/* Rows of w per tile: as many as the workspace holds (at least one). */
static int tile_rows(size_t work_floats, int C, int OC) {
    size_t t = work_floats / (size_t)C;
    if (t < 1) t = 1;
    return t > (size_t)OC ? OC : (int)t;
}

static void widen_rows(float *work, const uint16_t *w, int rows, int C) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < C; c++) work[(size_t)r * C + c] = widen(w[(size_t)r * C + c]);
}

void an_cpu_matmul_forward_bf16w(float *out, const float *inp, const uint16_t *w, const float *bias, int N, int C,
                                 int OC, float *work, size_t work_floats) {
    float beta = 0.0f;
    if (bias) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) memcpy(out + (size_t)n * OC, bias, (size_t)OC * sizeof(float));
        beta = 1.0f;
    }
    int tr = tile_rows(work_floats, C, OC);
    for (int o0 = 0; o0 < OC; o0 += tr) {
        int rows = OC - o0 < tr ? OC - o0 : tr;
        widen_rows(work, w + (size_t)o0 * C, rows, C);
        an_cpu_sgemm(0, 1, N, rows, C, 1.0f, inp, C, work, C, beta, out + o0, OC); /* out[:, o0:o0+rows] */
    }
}

void an_cpu_matmul_backward_input_bf16w(float *dinp, const float *dout, const uint16_t *w, int N, int C, int OC,
                                        float *work, size_t work_floats) {
    int tr = tile_rows(work_floats, C, OC);
    for (int o0 = 0; o0 < OC; o0 += tr) { /* dinp += dout[:, o0:o0+rows] @ w[o0:o0+rows, :] */
        int rows = OC - o0 < tr ? OC - o0 : tr;
        widen_rows(work, w + (size_t)o0 * C, rows, C);
        an_cpu_sgemm(0, 0, N, C, rows, 1.0f, dout + o0, OC, work, C, 1.0f, dinp, C);
    }
}
