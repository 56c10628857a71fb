/* Compute with a frozen NF4 weight: the fused dequantize-and-multiply forward, the input gradient,
 * and the single-token matrix-vector kernel (AVX2 + FMA when built for it, plain C otherwise). */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/nf4.h"

#if AN_BLAS
#include <cblas.h>
#endif
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define NF4_SIMD 1
#else
#define NF4_SIMD 0
#endif

/* Tiles: the forward dequantizes FWD_TR rows of W by FWD_KC columns at a time (256 KB of floats
 * per thread, so the tile stays in L2 while the GEMM sweeps the inputs over it); the backward
 * gives each thread its own BWD_KC columns of dinp so no two threads write the same output. */
enum { FWD_TR = 64, FWD_KC = 1024, BWD_TR = 256, BWD_KC = 256 };

/* C[M, Nc] += A[M, K] @ B[Nc, K]^T (row-major, leading dimensions lda, ldb, ldc) */
static void sgemm_nt_acc(int M, int Nc, int K, const float *A, int lda, const float *B, int ldb, float *C, int ldc) {
#if AN_BLAS
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, Nc, K, 1.0f, A, lda, B, ldb, 1.0f, C, ldc);
#else
    for (int i = 0; i < M; i++)
        for (int j = 0; j < Nc; j++) {
            const float *a = A + (size_t)i * lda, *b = B + (size_t)j * ldb;
            float s = 0.0f;
            for (int k = 0; k < K; k++) s += a[k] * b[k];
            C[(size_t)i * ldc + j] += s;
        }
#endif
}

/* C[M, Nc] += A[M, K] @ B[K, Nc] */
static void sgemm_nn_acc(int M, int Nc, int K, const float *A, int lda, const float *B, int ldb, float *C, int ldc) {
#if AN_BLAS
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, Nc, K, 1.0f, A, lda, B, ldb, 1.0f, C, ldc);
#else
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        for (int k = 0; k < K; k++) {
            float a = A[(size_t)i * lda + k];
            const float *b = B + (size_t)k * ldb;
            for (int j = 0; j < Nc; j++) c[j] += a * b[j];
        }
    }
#endif
}

/* buf[tr, kc] = W[r0 : r0 + tr, k0 : k0 + kc] */
static void dequant_tile(const an_nf4_tensor *w, int64_t r0, int tr, int64_t k0, int kc, float *buf) {
    for (int r = 0; r < tr; r++) an_nf4_tensor_dequantize_range(w, (r0 + r) * w->cols + k0, kc, buf + (size_t)r * kc);
}

static int check_shape(const an_nf4_tensor *w, int N, an_error *err) {
    if (N < 0) return an_fail(err, "nf4 matmul: N = %d rows", N);
    if (w->rows > 1 << 30 || w->cols > 1 << 30)
        return an_fail(err, "nf4 matmul: weight [%lld, %lld] is too large for int indexing", (long long)w->rows,
                       (long long)w->cols);
    return 0;
}

int an_nf4_matmul_forward(float *out, const float *inp, const an_nf4_tensor *w, const float *bias, int N,
                          an_error *err) {
    if (check_shape(w, N, err)) return -1;
    if (N <= AN_NF4_MATVEC_MAX_N) {
        an_nf4_matvec(out, inp, w, bias, N, AN_NF4_PATH_AUTO);
        return 0;
    }
    const int C = (int)w->cols, OC = (int)w->rows;
    const int kc_max = C < FWD_KC ? C : FWD_KC;
    const int n_tiles = (OC + FWD_TR - 1) / FWD_TR;
    const int nthreads = omp_get_max_threads();
    float *bufs = malloc((size_t)nthreads * FWD_TR * kc_max * sizeof(float));
    if (!bufs) return an_fail(err, "nf4 matmul: out of memory for %d tile buffers", nthreads);
    for (int i = 0; i < N; i++) {
        float *o = out + (size_t)i * OC;
        if (bias) memcpy(o, bias, (size_t)OC * sizeof(float));
        else memset(o, 0, (size_t)OC * sizeof(float));
    }
    /* Few tiles: one thread walks them and the BLAS call uses the threads instead. */
#pragma omp parallel for schedule(dynamic, 1) if (n_tiles >= 2 * nthreads)
    for (int t = 0; t < n_tiles; t++) {
        float *buf = bufs + (size_t)omp_get_thread_num() * FWD_TR * kc_max;
        int r0 = t * FWD_TR, tr = OC - r0 < FWD_TR ? OC - r0 : FWD_TR;
        for (int k0 = 0; k0 < C; k0 += kc_max) {
            int kc = C - k0 < kc_max ? C - k0 : kc_max;
            dequant_tile(w, r0, tr, k0, kc, buf);
            sgemm_nt_acc(N, tr, kc, inp + k0, C, buf, kc, out + r0, OC);
        }
    }
    free(bufs);
    return 0;
}

int an_nf4_matmul_backward_input(float *dinp, const float *dout, const an_nf4_tensor *w, int N, an_error *err) {
    if (check_shape(w, N, err)) return -1;
    if (N == 0) return 0;
    const int C = (int)w->cols, OC = (int)w->rows;
    const int tr_max = OC < BWD_TR ? OC : BWD_TR;
    const int kc_max = C < BWD_KC ? C : BWD_KC;
    const int n_panels = (C + kc_max - 1) / kc_max;
    const int nthreads = omp_get_max_threads();
    float *bufs = malloc((size_t)nthreads * tr_max * kc_max * sizeof(float));
    if (!bufs) return an_fail(err, "nf4 matmul backward: out of memory for %d tile buffers", nthreads);
#pragma omp parallel for schedule(dynamic, 1) if (n_panels >= 2 * nthreads)
    for (int p = 0; p < n_panels; p++) {
        float *buf = bufs + (size_t)omp_get_thread_num() * tr_max * kc_max;
        int k0 = p * kc_max, kc = C - k0 < kc_max ? C - k0 : kc_max;
        for (int r0 = 0; r0 < OC; r0 += tr_max) {
            int tr = OC - r0 < tr_max ? OC - r0 : tr_max;
            dequant_tile(w, r0, tr, k0, kc, buf);
            /* dinp[:, k0:k0+kc] += dout[:, r0:r0+tr] @ W[r0:r0+tr, k0:k0+kc] */
            sgemm_nn_acc(N, kc, tr, dout + r0, OC, buf, kc, dinp + k0, C);
        }
    }
    free(bufs);
    return 0;
}

/* ---- matrix-vector ---- */

int an_nf4_matvec_is_simd(void) { return NF4_SIMD; }

/* sums[n] = W[o, :] . x[n, :] for one row o whose elements start on a block boundary (C is a
 * multiple of the blocksize): decode each byte once through the 16-entry table, accumulate a
 * block, then scale it. */
static void row_dot_plain(const an_nf4_tensor *w, int64_t o, const float *x, int N, float *sums) {
    const int64_t C = w->cols, bs = w->blocksize;
    const uint8_t *p = w->packed + (o * C) / 2;
    int64_t b0 = o * C / bs;
    for (int n = 0; n < N; n++) sums[n] = 0.0f;
    for (int64_t k0 = 0; k0 < C; k0 += bs) {
        float scale = an_nf4_block_scale(w, b0 + k0 / bs);
        for (int n = 0; n < N; n++) {
            const float *xn = x + (size_t)n * C + k0;
            const uint8_t *pb = p + k0 / 2;
            float s = 0.0f;
            for (int64_t i = 0; i < bs; i += 2) {
                uint8_t byte = pb[i / 2];
                s += an_nf4_code[byte >> 4] * xn[i];
                s += an_nf4_code[byte & 15] * xn[i + 1];
            }
            sums[n] += s * scale;
        }
    }
}

#if NF4_SIMD
/* 8 code values for 8 nibble indices (in 32-bit lanes): two 8-entry permutes and a select on bit 3 */
static inline __m256 nf4_lookup8(__m256i idx, __m256 lut_lo, __m256 lut_hi) {
    __m256 lo = _mm256_permutevar8x32_ps(lut_lo, idx);
    __m256 hi = _mm256_permutevar8x32_ps(lut_hi, idx);
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

static void row_dot_avx2(const an_nf4_tensor *w, int64_t o, const float *x, int N, float *sums) {
    const int64_t C = w->cols, bs = w->blocksize;
    const uint8_t *p = w->packed + (o * C) / 2;
    const int64_t b0 = o * C / bs;
    const __m256 lut_lo = _mm256_loadu_ps(an_nf4_code), lut_hi = _mm256_loadu_ps(an_nf4_code + 8);
    /* a byte duplicated into two lanes gives its high nibble (shift 4) then its low nibble */
    const __m256i shift = _mm256_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0), m15 = _mm256_set1_epi32(15);
    __m256 tot[AN_NF4_MATVEC_MAX_N];
    for (int n = 0; n < N; n++) tot[n] = _mm256_setzero_ps();
    for (int64_t k0 = 0; k0 < C; k0 += bs) {
        __m256 acc[AN_NF4_MATVEC_MAX_N];
        for (int n = 0; n < N; n++) acc[n] = _mm256_setzero_ps();
        for (int64_t i = 0; i < bs; i += 32) { /* 16 bytes = 32 weights */
            __m128i bytes = _mm_loadu_si128((const __m128i *)(p + (k0 + i) / 2));
            __m128i dup[2] = {_mm_unpacklo_epi8(bytes, bytes), _mm_unpackhi_epi8(bytes, bytes)};
            for (int h = 0; h < 2; h++)
                for (int q = 0; q < 2; q++) {
                    __m128i part = q ? _mm_srli_si128(dup[h], 8) : dup[h];
                    __m256i idx = _mm256_and_si256(_mm256_srlv_epi32(_mm256_cvtepu8_epi32(part), shift), m15);
                    __m256 wv = nf4_lookup8(idx, lut_lo, lut_hi);
                    int64_t e = k0 + i + h * 16 + q * 8;
                    for (int n = 0; n < N; n++)
                        acc[n] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + (size_t)n * C + e), acc[n]);
                }
        }
        __m256 scale = _mm256_set1_ps(an_nf4_block_scale(w, b0 + k0 / bs));
        for (int n = 0; n < N; n++) tot[n] = _mm256_fmadd_ps(acc[n], scale, tot[n]);
    }
    for (int n = 0; n < N; n++) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(tot[n]), _mm256_extractf128_ps(tot[n], 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        sums[n] = _mm_cvtss_f32(s);
    }
}
#endif

void an_nf4_matvec(float *out, const float *x, const an_nf4_tensor *w, const float *bias, int N, an_nf4_path path) {
    const int64_t C = w->cols, OC = w->rows;
    /* rows start on a block boundary only when C is a multiple of the blocksize (every real
     * model); otherwise each row is dequantized into a scratch row first */
    const int aligned = C % w->blocksize == 0;
    const int simd = NF4_SIMD && path == AN_NF4_PATH_AUTO && aligned;
    for (int n0 = 0; n0 < N; n0 += AN_NF4_MATVEC_MAX_N) {
        int nn = N - n0 < AN_NF4_MATVEC_MAX_N ? N - n0 : AN_NF4_MATVEC_MAX_N;
        const float *xs = x + (size_t)n0 * C;
        float *os = out + (size_t)n0 * OC;
#pragma omp parallel
        {
            float *row = aligned ? NULL : malloc((size_t)C * sizeof(float));
#pragma omp for schedule(static)
            for (int64_t o = 0; o < OC; o++) {
                float sums[AN_NF4_MATVEC_MAX_N];
                if (simd) {
#if NF4_SIMD
                    row_dot_avx2(w, o, xs, nn, sums);
#endif
                } else if (aligned) {
                    row_dot_plain(w, o, xs, nn, sums);
                } else if (row) {
                    an_nf4_tensor_dequantize_range(w, o * C, C, row);
                    for (int n = 0; n < nn; n++) {
                        float s = 0.0f;
                        for (int64_t k = 0; k < C; k++) s += row[k] * xs[(size_t)n * C + k];
                        sums[n] = s;
                    }
                } else { /* no scratch row: decode element by element */
                    for (int n = 0; n < nn; n++) {
                        float s = 0.0f, v;
                        for (int64_t k = 0; k < C; k++) {
                            an_nf4_tensor_dequantize_range(w, o * C + k, 1, &v);
                            s += v * xs[(size_t)n * C + k];
                        }
                        sums[n] = s;
                    }
                }
                for (int n = 0; n < nn; n++) os[(size_t)n * OC + o] = sums[n] + (bias ? bias[o] : 0.0f);
            }
            free(row);
        }
    }
}
