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

/* Scratch memory: the caller's workspace when it is given and large enough (so a training step
 * allocates nothing), otherwise a malloc that the caller of take_work frees when *owned. */
static void *take_work(void *work, size_t have, size_t need, int *owned) {
    if (work && have >= need) {
        *owned = 0;
        return work;
    }
    *owned = 1;
    return malloc(need ? need : 1);
}

static size_t fwd_work_bytes(const an_nf4_tensor *w, int nthreads) {
    size_t kc = (size_t)(w->cols < FWD_KC ? w->cols : FWD_KC);
    return (size_t)nthreads * FWD_TR * kc * sizeof(float);
}

static size_t bwd_work_bytes(const an_nf4_tensor *w, int nthreads) {
    size_t tr = (size_t)(w->rows < BWD_TR ? w->rows : BWD_TR), kc = (size_t)(w->cols < BWD_KC ? w->cols : BWD_KC);
    return (size_t)nthreads * tr * kc * sizeof(float);
}

/* x in the vector kernel's order (AN_NF4_MATVEC_MAX_N rows), then one scratch row per thread */
static size_t matvec_work_bytes(const an_nf4_tensor *w, int nthreads) {
    return ((size_t)AN_NF4_MATVEC_MAX_N + (size_t)nthreads) * (size_t)w->cols * sizeof(float);
}

size_t an_nf4_matmul_work_bytes(const an_nf4_tensor *w) {
    int nt = omp_get_max_threads();
    size_t a = fwd_work_bytes(w, nt), b = bwd_work_bytes(w, nt), c = matvec_work_bytes(w, nt);
    size_t m = a > b ? a : b;
    return m > c ? m : c;
}

int an_nf4_matmul_forward(float *out, const float *inp, const an_nf4_tensor *w, const float *bias, int N,
                          void *work, size_t work_bytes, an_error *err) {
    if (check_shape(w, N, err)) return -1;
    if (N <= AN_NF4_MATVEC_MAX_N) {
        an_nf4_matvec(out, inp, w, bias, N, AN_NF4_PATH_AUTO, work, work_bytes);
        return 0;
    }
    const int C = (int)w->cols, OC = (int)w->rows;
    const int kc_max = C < FWD_KC ? C : FWD_KC;
    const int n_tiles = (OC + FWD_TR - 1) / FWD_TR;
    const int nthreads = omp_get_max_threads();
    int owned;
    float *bufs = take_work(work, work_bytes, fwd_work_bytes(w, nthreads), &owned);
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
    if (owned) free(bufs);
    return 0;
}

int an_nf4_matmul_backward_input(float *dinp, const float *dout, const an_nf4_tensor *w, int N, void *work,
                                 size_t work_bytes, an_error *err) {
    if (check_shape(w, N, err)) return -1;
    if (N == 0) return 0;
    const int C = (int)w->cols, OC = (int)w->rows;
    const int tr_max = OC < BWD_TR ? OC : BWD_TR;
    const int kc_max = C < BWD_KC ? C : BWD_KC;
    const int n_panels = (C + kc_max - 1) / kc_max;
    const int nthreads = omp_get_max_threads();
    int owned;
    float *bufs = take_work(work, work_bytes, bwd_work_bytes(w, nthreads), &owned);
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
    if (owned) free(bufs);
    return 0;
}

/* ---- matrix-vector ---- */

int an_nf4_matvec_is_simd(void) { return NF4_SIMD; }

/* Walks the scales of consecutive blocks without a 64-bit division per block (which costs as
 * much as decoding the block's weights). */
typedef struct scale_iter {
    const an_nf4_tensor *w;
    int64_t b, b2, r2; /* block, nested block, position inside the nested block */
} scale_iter;

static inline scale_iter scale_iter_at(const an_nf4_tensor *w, int64_t b) {
    scale_iter it = {w, b, 0, 0};
    if (w->double_quant) {
        it.b2 = b / w->blocksize2;
        it.r2 = b % w->blocksize2;
    }
    return it;
}

/* The scale of the current block (the same arithmetic as an_nf4_block_scale), then advance. */
static inline float scale_iter_next(scale_iter *it) {
    const an_nf4_tensor *w = it->w;
    float s;
    if (!w->double_quant) {
        s = w->absmax[it->b];
    } else {
        float p = w->code8[w->qabsmax[it->b]] * w->absmax2[it->b2];
        s = p + w->offset;
        if (++it->r2 == w->blocksize2) {
            it->r2 = 0;
            it->b2++;
        }
    }
    it->b++;
    return s;
}

/* sums[n] = W[o, :] . x[n, :] for one row o whose elements start on a block boundary (C is a
 * multiple of the blocksize): decode each byte once through the 16-entry table, accumulate a
 * block, then scale it. */
static void row_dot_plain(const an_nf4_tensor *w, int64_t o, const float *x, int N, float *sums) {
    const int64_t C = w->cols, bs = w->blocksize;
    const uint8_t *p = w->packed + (o * C) / 2;
    scale_iter it = scale_iter_at(w, o * C / bs);
    for (int n = 0; n < N; n++) sums[n] = 0.0f;
    for (int64_t k0 = 0; k0 < C; k0 += bs) {
        float scale = scale_iter_next(&it);
        for (int n = 0; n < N; n++) {
            const float *xn = x + (size_t)n * C + k0;
            const uint8_t *pb = p + k0 / 2;
            /* four partial sums so consecutive adds do not wait on each other */
            float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
            for (int64_t i = 0; i < bs; i += 4) {
                uint8_t b0 = pb[i / 2], b1 = pb[i / 2 + 1];
                s0 += an_nf4_code[b0 >> 4] * xn[i];
                s1 += an_nf4_code[b0 & 15] * xn[i + 1];
                s2 += an_nf4_code[b1 >> 4] * xn[i + 2];
                s3 += an_nf4_code[b1 & 15] * xn[i + 3];
            }
            float s = (s0 + s1) + (s2 + s3);
            sums[n] += s * scale;
        }
    }
}

#if NF4_SIMD
/* The AVX2 kernel decodes 32 weights (16 packed bytes) per step with byte shuffles, which are
 * cheap, instead of 8-lane float permutes, which are not:
 *  - the 16 bytes are broadcast to both 128-bit lanes; lane 0 keeps the high nibbles (elements
 *    0, 2, .., 30), lane 1 the low nibbles (elements 1, 3, .., 31);
 *  - four vpshufb look the nibbles up in the four byte planes of the 16 float32 code values;
 *  - two rounds of unpacks reassemble the bytes into 4 x 8 floats.
 * The floats come out in a fixed shuffled order, so x is copied once per call into that same
 * order (xperm) and the products are plain vertical FMAs. NF4_PERM gives, for position k of a
 * 32-element group, the element it holds: vector g (0..3), lane h (0..1), float t (0..3) holds
 * element 2 * (4g + t) + h. */
static inline int64_t nf4_perm(int k) {
    int g = k / 8, h = (k / 4) % 2, t = k % 4;
    return 2 * (4 * g + t) + h;
}

#ifndef NF4_PREFETCH
#define NF4_PREFETCH 2048
#endif

typedef struct nf4_planes {
    __m256i p0, p1, p2, p3;
} nf4_planes;

static nf4_planes nf4_make_planes(void) {
    uint8_t plane[4][16];
    for (int k = 0; k < 16; k++) {
        uint32_t bits;
        memcpy(&bits, &an_nf4_code[k], 4);
        for (int b = 0; b < 4; b++) plane[b][k] = (uint8_t)(bits >> (8 * b));
    }
    nf4_planes pl;
    pl.p0 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)plane[0]));
    pl.p1 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)plane[1]));
    pl.p2 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)plane[2]));
    pl.p3 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)plane[3]));
    return pl;
}

static inline void nf4_decode32(const uint8_t *p16, const nf4_planes *pl, __m256 f[4]) {
    const __m256i m4 = _mm256_set1_epi8(15);
    __m256i raw = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p16));
    __m256i idx = _mm256_and_si256(_mm256_blend_epi32(raw, _mm256_srli_epi16(raw, 4), 0x0F), m4);
    __m256i b0 = _mm256_shuffle_epi8(pl->p0, idx), b1 = _mm256_shuffle_epi8(pl->p1, idx);
    __m256i b2 = _mm256_shuffle_epi8(pl->p2, idx), b3 = _mm256_shuffle_epi8(pl->p3, idx);
    __m256i w01l = _mm256_unpacklo_epi8(b0, b1), w23l = _mm256_unpacklo_epi8(b2, b3);
    __m256i w01h = _mm256_unpackhi_epi8(b0, b1), w23h = _mm256_unpackhi_epi8(b2, b3);
    f[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(w01l, w23l));
    f[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(w01l, w23l));
    f[2] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(w01h, w23h));
    f[3] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(w01h, w23h));
}

/* One output row for a fixed number of input rows NR (1..4), so the accumulators stay in
 * registers; xp is x[NR, C] in the decode order. Each block's products go into two accumulators
 * per input row (blocks are independent, so the out-of-order core overlaps their FMA chains), and
 * the block's scale is applied once, onto two running totals. Two rather than four accumulators:
 * with the 4 code planes, the nibble mask and a decoded group they fit the 16 vector registers
 * without spills (6% fewer instructions). */
static inline __attribute__((always_inline)) void row_dot_avx2_n(const an_nf4_tensor *w, const nf4_planes *pl,
                                                                  int64_t o, const float *xp, float *sums,
                                                                  const int NR, const int BS) {
    /* BS: the blocksize as a constant (64, QLoRA's) so the block loop unrolls, or 0 for any other */
    const int64_t C = w->cols, bs = BS ? BS : w->blocksize;
    const uint8_t *p = w->packed + (o * C) / 2;
    scale_iter it = scale_iter_at(w, o * C / bs);
    __m256 tot[4][2];
    for (int n = 0; n < NR; n++) tot[n][0] = tot[n][1] = _mm256_setzero_ps();
    const float *xk = xp;
    for (const uint8_t *pk = p, *pend = p + C / 2; pk < pend; pk += bs / 2, xk += bs) {
        __m256 a[4][2];
        for (int n = 0; n < NR; n++) a[n][0] = a[n][1] = _mm256_setzero_ps();
        /* the packed stream is read once, far from the cache: fetch it a few rows ahead (a block
         * of 64 is half a cache line, so once per block is enough) */
        _mm_prefetch((const char *)pk + NF4_PREFETCH, _MM_HINT_T0);
        for (int64_t i = 0; i < bs; i += 32) {
            __m256 f[4];
            nf4_decode32(pk + i / 2, pl, f);
            for (int n = 0; n < NR; n++) {
                const float *xn = xk + (size_t)n * C + i;
                a[n][0] = _mm256_fmadd_ps(f[0], _mm256_loadu_ps(xn), a[n][0]);
                a[n][1] = _mm256_fmadd_ps(f[1], _mm256_loadu_ps(xn + 8), a[n][1]);
                a[n][0] = _mm256_fmadd_ps(f[2], _mm256_loadu_ps(xn + 16), a[n][0]);
                a[n][1] = _mm256_fmadd_ps(f[3], _mm256_loadu_ps(xn + 24), a[n][1]);
            }
        }
        __m256 scale = _mm256_set1_ps(scale_iter_next(&it));
        for (int n = 0; n < NR; n++) {
            tot[n][0] = _mm256_fmadd_ps(a[n][0], scale, tot[n][0]);
            tot[n][1] = _mm256_fmadd_ps(a[n][1], scale, tot[n][1]);
        }
    }
    for (int n = 0; n < NR; n++) tot[n][0] = _mm256_add_ps(tot[n][0], tot[n][1]);
    for (int n = 0; n < NR; n++) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(tot[n][0]), _mm256_extractf128_ps(tot[n][0], 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        sums[n] = _mm_cvtss_f32(s);
    }
}

static void row_dot_avx2(const an_nf4_tensor *w, const nf4_planes *pl, int64_t o, const float *xp, int N,
                         float *sums) {
    if (w->blocksize == 64) {
        switch (N) {
        case 1: row_dot_avx2_n(w, pl, o, xp, sums, 1, 64); break;
        case 2: row_dot_avx2_n(w, pl, o, xp, sums, 2, 64); break;
        case 3: row_dot_avx2_n(w, pl, o, xp, sums, 3, 64); break;
        default: row_dot_avx2_n(w, pl, o, xp, sums, 4, 64); break;
        }
        return;
    }
    switch (N) {
    case 1: row_dot_avx2_n(w, pl, o, xp, sums, 1, 0); break;
    case 2: row_dot_avx2_n(w, pl, o, xp, sums, 2, 0); break;
    case 3: row_dot_avx2_n(w, pl, o, xp, sums, 3, 0); break;
    default: row_dot_avx2_n(w, pl, o, xp, sums, 4, 0); break;
    }
}
#endif

void an_nf4_matvec(float *out, const float *x, const an_nf4_tensor *w, const float *bias, int N, an_nf4_path path,
                   void *work, size_t work_bytes) {
    const int64_t C = w->cols, OC = w->rows;
    /* rows start on a block boundary only when C is a multiple of the blocksize (every real
     * model); otherwise each row is dequantized into a scratch row first */
    const int aligned = C % w->blocksize == 0;
    /* Scratch: without it (no memory) the kernels below still run, on the slowest path. */
    int owned;
    float *scratch = take_work(work, work_bytes, matvec_work_bytes(w, omp_get_max_threads()), &owned);
    float *xp = NULL; /* x in the vector kernel's order; without it the plain kernel runs */
    float *rows = scratch ? scratch + (size_t)AN_NF4_MATVEC_MAX_N * C : NULL;
    (void)path;
#if NF4_SIMD
    nf4_planes pl = nf4_make_planes();
    if (path == AN_NF4_PATH_AUTO && aligned && w->blocksize % 32 == 0) xp = scratch;
#endif
    for (int n0 = 0; n0 < N; n0 += AN_NF4_MATVEC_MAX_N) {
        int nn = N - n0 < AN_NF4_MATVEC_MAX_N ? N - n0 : AN_NF4_MATVEC_MAX_N;
        const float *xs = x + (size_t)n0 * C;
        float *os = out + (size_t)n0 * OC;
#if NF4_SIMD
        if (xp)
            for (int n = 0; n < nn; n++)
                for (int64_t k0 = 0; k0 < C; k0 += 32)
                    for (int k = 0; k < 32; k++) xp[(size_t)n * C + k0 + k] = xs[(size_t)n * C + k0 + nf4_perm(k)];
#endif
#pragma omp parallel
        {
            float *row = aligned || !rows ? NULL : rows + (size_t)omp_get_thread_num() * C;
#pragma omp for schedule(static)
            for (int64_t o = 0; o < OC; o++) {
                float sums[AN_NF4_MATVEC_MAX_N];
                if (xp) {
#if NF4_SIMD
                    row_dot_avx2(w, &pl, o, xp, nn, sums);
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
        }
    }
    if (owned) free(scratch);
}
