/* Ops on bf16-stored frozen weights (the embedding table and the LM head, kernels/cpu.h: AN_BF16_TILE_BYTES).
 * A bf16 value is the top half of a float32, so widening is a shift and exact; the matmuls widen the
 * weight a tile of rows at a time into the caller's workspace and run the float32 GEMM on the tile,
 * so no float32 copy of the whole weight ever exists. */
#include <string.h>

#include "kernels/cpu.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define BF16_SIMD 1
#else
#define BF16_SIMD 0
#endif

/* Up to this many input rows the forward reads each bf16 weight once, widening it in registers
 * (the single-token path of decoding); above it, tiles of widened rows and the float32 GEMM. */
#define BF16_MATVEC_MAX_N 4

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

/* ---- matrix-vector: rows of w dotted with NR (1 or 2) input rows, RB (1 or 4) weight rows at a
 * time, so every widened weight vector feeds NR products and every x vector RB of them. Sums are
 * float32, 8 lanes per (weight row, input row), reduced at the end. */
static inline __attribute__((always_inline)) void dot_bf16(const uint16_t *w, const float *x, int C, int RB, int NR,
                                                           float *s /* [NR][RB] */) {
    int c = 0;
#if BF16_SIMD
    __m256 acc[2][4];
    for (int n = 0; n < NR; n++)
        for (int r = 0; r < RB; r++) acc[n][r] = _mm256_setzero_ps();
    for (; c + 8 <= C; c += 8) {
        __m256 xv[2];
        for (int n = 0; n < NR; n++) xv[n] = _mm256_loadu_ps(x + (size_t)n * C + c);
        for (int r = 0; r < RB; r++) {
            /* bf16 -> float32: zero-extend to 32 bits and shift into the top half */
            __m128i h = _mm_loadu_si128((const __m128i *)(w + (size_t)r * C + c));
            __m256 wv = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
            for (int n = 0; n < NR; n++) acc[n][r] = _mm256_fmadd_ps(wv, xv[n], acc[n][r]);
        }
    }
    for (int n = 0; n < NR; n++)
        for (int r = 0; r < RB; r++) {
            __m128 q = _mm_add_ps(_mm256_castps256_ps128(acc[n][r]), _mm256_extractf128_ps(acc[n][r], 1));
            q = _mm_add_ps(q, _mm_movehl_ps(q, q));
            q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
            s[n * RB + r] = _mm_cvtss_f32(q);
        }
#else
    for (int i = 0; i < NR * RB; i++) s[i] = 0.0f;
#endif
    for (; c < C; c++)
        for (int r = 0; r < RB; r++) {
            float wv = widen(w[(size_t)r * C + c]);
            for (int n = 0; n < NR; n++) s[n * RB + r] += wv * x[(size_t)n * C + c];
        }
}

static void matvec_rows(float *out, const float *x, const uint16_t *w, const float *bias, int NR, int C, int OC) {
    int nblk = (OC + 3) / 4;
    /* small products (tiny models) are not worth waking the thread team */
#pragma omp parallel for schedule(static) if ((size_t)OC * C >= 65536)
    for (int blk = 0; blk < nblk; blk++) {
        int o0 = blk * 4, rb = OC - o0 < 4 ? OC - o0 : 4;
        const uint16_t *wr = w + (size_t)o0 * C;
        float s[8];
        if (rb == 4 && NR == 1) dot_bf16(wr, x, C, 4, 1, s);
        else if (rb == 4) dot_bf16(wr, x, C, 4, 2, s);
        else
            for (int r = 0; r < rb; r++) {
                float t[2];
                if (NR == 1) dot_bf16(wr + (size_t)r * C, x, C, 1, 1, t);
                else dot_bf16(wr + (size_t)r * C, x, C, 1, 2, t);
                for (int n = 0; n < NR; n++) s[n * 4 + r] = t[n];
            }
        for (int n = 0; n < NR; n++)
            for (int r = 0; r < rb; r++) out[(size_t)n * OC + o0 + r] = s[n * 4 + r] + (bias ? bias[o0 + r] : 0.0f);
    }
}

void an_cpu_matmul_forward_bf16w(float *out, const float *inp, const uint16_t *w, const float *bias, int N, int C,
                                 int OC, float *work, size_t work_floats) {
    /* input rows in pairs: each pass reads the weights once. Also the path without room for a tile. */
    if (N <= BF16_MATVEC_MAX_N || !work || work_floats < (size_t)C) {
        for (int n = 0; n < N; n += 2)
            matvec_rows(out + (size_t)n * OC, inp + (size_t)n * C, w, bias, N - n < 2 ? 1 : 2, C, OC);
        return;
    }
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
    if (!work || work_floats < (size_t)C) { /* no room for one widened row: NaN, never a wrong sum */
        for (size_t i = 0; i < (size_t)N * C; i++) dinp[i] = __builtin_nanf("");
        return;
    }
    int tr = tile_rows(work_floats, C, OC);
    for (int o0 = 0; o0 < OC; o0 += tr) { /* dinp += dout[:, o0:o0+rows] @ w[o0:o0+rows, :] */
        int rows = OC - o0 < tr ? OC - o0 : tr;
        widen_rows(work, w + (size_t)o0 * C, rows, C);
        an_cpu_sgemm(0, 0, N, C, rows, 1.0f, dout + o0, OC, work, C, 1.0f, dinp, C);
    }
}
