/* A plain-C sgemm for builds without OpenBLAS (make BLAS=0).
 *
 * The classic layered GEMM (Goto / BLIS): op(B) is packed into KC x NC slices of NR-wide column panels,
 * op(A) into MC x KC blocks of MR-high row panels, and a register-blocked MR x NR micro-kernel runs over
 * the packed panels. Packing makes every inner load contiguous whatever the transposes, so the one
 * micro-kernel serves NN, NT and TN. The micro-kernel uses GCC/clang generic vector types (no intrinsics),
 * compile to broadcast + FMA on 12 vector accumulators (6 rows x 2 vectors of 8 with AVX2).
 * OpenMP splits the packing and the micro-tiles of each block; every C element is computed by one thread
 * in a fixed order, so results do not depend on the thread count. */
#include <assert.h>
#include <math.h>

#include "kernels/cpu.h"
#include "kernels/cpu_vec.h"

/* NC 512: the packed B slice (KC x NC, 512 KiB) and A block (KC x MC, 120 KiB) live on the caller's
 * stack, so a product allocates nothing; A is packed again every 512 columns, a copy of M x K per
 * 2 x M x K x 512 flops. */
enum { MR = 6, NR = 16, KC = 256, MC = 120, NC = 512 };

/* GCC does not fuse a * b + c under -std=c11 (fp-contract=off); the micro-kernel wants FMA. clang
 * fuses within an expression by default. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
#endif

/* acc = sum_p a[p, 0..MR) (x) b[p, 0..NR); C[0..mr, 0..nr) += alpha * acc.
 * 12 accumulators + 2 B vectors + 1 broadcast A value = 15 of the 16 AVX registers. */
static void micro_kernel(int kc, const float *restrict a, const float *restrict b, float *restrict c, int ldc,
                         float alpha, int mr, int nr) {
    v8f acc[MR][2];
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = (v8f){0, 0, 0, 0, 0, 0, 0, 0};
    for (int p = 0; p < kc; p++) {
        const float *ap = a + (size_t)p * MR;
        v8f b0, b1;
        memcpy(&b0, b + (size_t)p * NR, sizeof b0);
        memcpy(&b1, b + (size_t)p * NR + 8, sizeof b1);
        for (int i = 0; i < MR; i++) {
            float x = ap[i];
            v8f ai = {x, x, x, x, x, x, x, x};
            acc[i][0] += ai * b0;
            acc[i][1] += ai * b1;
        }
    }
    for (int i = 0; i < mr; i++) {
        float row[NR];
        memcpy(row, &acc[i][0], sizeof acc[i][0]);
        memcpy(row + 8, &acc[i][1], sizeof acc[i][1]);
        float *ci = c + (size_t)i * ldc;
        if (nr == NR)
            for (int j = 0; j < NR; j++) ci[j] += alpha * row[j];
        else
            for (int j = 0; j < nr; j++) ci[j] += alpha * row[j];
    }
}

/* op(A)[i0.., p0..] into MR-row panels: dst[panel][p][i], rows past M zero-padded */
static void pack_a_panel(float *restrict dst, int trans_a, const float *A, int lda, int i0, int mr, int p0, int kc) {
    if (!trans_a) {
        for (int i = 0; i < MR; i++) {
            if (i < mr) {
                const float *src = A + (size_t)(i0 + i) * lda + p0;
                for (int p = 0; p < kc; p++) dst[(size_t)p * MR + i] = src[p];
            } else {
                for (int p = 0; p < kc; p++) dst[(size_t)p * MR + i] = 0.0f;
            }
        }
    } else {
        for (int p = 0; p < kc; p++) {
            const float *src = A + (size_t)(p0 + p) * lda + i0;
            for (int i = 0; i < MR; i++) dst[(size_t)p * MR + i] = i < mr ? src[i] : 0.0f;
        }
    }
}

/* op(B)[p0.., j0..] into one NR-column panel: dst[p][j], columns past N zero-padded */
static void pack_b_panel(float *restrict dst, int trans_b, const float *B, int ldb, int p0, int kc, int j0, int nr) {
    if (!trans_b) {
        for (int p = 0; p < kc; p++) {
            const float *src = B + (size_t)(p0 + p) * ldb + j0;
            for (int j = 0; j < NR; j++) dst[(size_t)p * NR + j] = j < nr ? src[j] : 0.0f;
        }
    } else {
        for (int j = 0; j < NR; j++) {
            if (j < nr) {
                const float *src = B + (size_t)(j0 + j) * ldb + p0;
                for (int p = 0; p < kc; p++) dst[(size_t)p * NR + j] = src[p];
            } else {
                for (int p = 0; p < kc; p++) dst[(size_t)p * NR + j] = 0.0f;
            }
        }
    }
}

static int min_int(int a, int b) { return a < b ? a : b; }

void an_cpu_sgemm_fallback(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                           int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    /* beta first, so every later pass only accumulates; beta == 0 clears NaNs as BLAS does */
#pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        if (beta == 0.0f)
            for (int j = 0; j < N; j++) c[j] = 0.0f;
        else if (beta != 1.0f)
            for (int j = 0; j < N; j++) c[j] *= beta;
    }
    if (K <= 0 || alpha == 0.0f) return;

    static_assert(NC % NR == 0 && MC % MR == 0, "packed panels fill the slices");
    _Alignas(64) float bpack[KC * NC];
    _Alignas(64) float apack[KC * MC];

#pragma omp parallel
    for (int jc = 0; jc < N; jc += NC) {
        int nc = min_int(NC, N - jc);
        int npanels_b = (nc + NR - 1) / NR;
        for (int pc = 0; pc < K; pc += KC) {
            int kc = min_int(KC, K - pc);
#pragma omp for schedule(static)
            for (int jp = 0; jp < npanels_b; jp++)
                pack_b_panel(bpack + (size_t)jp * kc * NR, trans_b, B, ldb, pc, kc, jc + jp * NR,
                             min_int(NR, nc - jp * NR));
            for (int ic = 0; ic < M; ic += MC) {
                int mc = min_int(MC, M - ic);
                int npanels_a = (mc + MR - 1) / MR;
#pragma omp for schedule(static)
                for (int ip = 0; ip < npanels_a; ip++)
                    pack_a_panel(apack + (size_t)ip * kc * MR, trans_a, A, lda, ic + ip * MR,
                                 min_int(MR, mc - ip * MR), pc, kc);
                /* the implicit barrier above also guards apack/bpack reuse in the next round */
#pragma omp for collapse(2) schedule(static)
                for (int jp = 0; jp < npanels_b; jp++)
                    for (int ip = 0; ip < npanels_a; ip++) {
                        int i = ic + ip * MR, j = jc + jp * NR;
                        micro_kernel(kc, apack + (size_t)ip * kc * MR, bpack + (size_t)jp * kc * NR,
                                     C + (size_t)i * ldc + j, ldc, alpha, min_int(MR, M - i), min_int(NR, N - j));
                    }
            }
        }
    }
}
