/* The matrix-vector product of a decode step: out[N, OC] = inp[N, C] @ w[OC, C]^T + bias, for the
 * few rows (one per sequence being decoded) of a decode step.
 *
 * Every weight is read from memory once: the kernel walks the weight rows four at a time and dots
 * each block with every input row while the block is in cache. With one input that is all there is
 * to it (bound by memory bandwidth). With a batch of inputs (16 sequences) there are 16 FMAs per
 * weight and the kernel is bound by how fast it feeds them, so it is written as a small register-
 * tiled GEMM:
 *  - The inputs are first copied into k-blocks of AN_MV_KB columns, each block's rows contiguous
 *    ([block][row][column]). Input rows of a power-of-two length sit a power of two apart and would
 *    all map to the same few L1 sets as the weight rows, evicting each other; packed, one block of
 *    16 inputs (16 KiB) and four weight-row slices (4 KiB) stay in L1 together.
 *  - A tile of 4 weight rows x 3 inputs keeps 12 accumulators of 8 lanes in registers (7 loads per
 *    12 FMAs, 16 vector registers); the lane sums carry over from one k-block to the next.
 *  - While a block of 4 rows computes, the next block's weights are prefetched a slice at a time,
 *    so memory and arithmetic overlap instead of taking turns (rows of up to 1024 columns).
 * Each output is the sum of its products in 8 lanes (column k goes to lane k mod 8), the lanes
 * reduced in a fixed tree, then the columns past the last multiple of 8 added in order: the same
 * operations whatever N, the thread count, or where a row sits in the batch, so a sequence decodes to
 * the same bits alone or among 15 others. Vectorised without -ffast-math. */
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu.h"
#include "kernels/cpu_vec.h"

/* The vectors (kernels/cpu_vec.h) are written out because the compilers turn the 4-row x 8-lane
 * array form into shuffles. FMA8: a * b + c, fused where the CPU has FMA (-std=c11 turns off gcc's
 * automatic contraction). */
#if defined(__AVX__)
#include <immintrin.h>
#endif
#if defined(__FMA__)
#define FMA8(a, b, c) ((v8f)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
#else
#define FMA8(a, b, c) ((a) * (b) + (c))
#endif

#define AN_MV_KB 256   /* columns per k-block (a multiple of 8) */
#define AN_MV_CHUNK 16 /* inputs whose accumulators one weight block holds at a time */

/* One k-block of kl columns (a multiple of 8) of 4 weight rows (w, row stride C) against M = 1, 2 or
 * 3 inputs (x, row stride ldx): acc[m * 4 + r] += lanes of w[r] * x[m], or = on the first k-block
 * (so nothing zeroes the accumulators). Written out per M with named accumulators: in array form
 * gcc keeps the inputs on the stack and reloads them for every row. */
#define ACC_IN(m)                                                                                    \
    v8f a##m##0 = first ? zero : acc[4 * m], a##m##1 = first ? zero : acc[4 * m + 1],                \
        a##m##2 = first ? zero : acc[4 * m + 2], a##m##3 = first ? zero : acc[4 * m + 3]
#define ACC_OUT(m) acc[4 * m] = a##m##0, acc[4 * m + 1] = a##m##1, acc[4 * m + 2] = a##m##2, acc[4 * m + 3] = a##m##3
#define WROW(r) v8f u##r; LOAD8(u##r, w + (size_t)(r) * C + i); IN_REG(u##r)
/* Pins a value to a register at this point. Without it gcc folds the loads of the inputs into the
 * FMAs as memory operands, one load per FMA instead of one per vector: 16 loads per 12 FMAs, and
 * loads, not FMAs, bound the loop. */
#if defined(__AVX__)
#define IN_REG(v) __asm__("" : "+x"(v))
#else
#define IN_REG(v) ((void)0)
#endif

static void tile3(const float *restrict w, size_t C, const float *restrict x, size_t ldx, int kl, v8f *restrict acc,
                  int first) {
    const v8f zero = {0};
    ACC_IN(0); ACC_IN(1); ACC_IN(2);
    for (int i = 0; i < kl; i += 8) {
        v8f x0, x1, x2;
        LOAD8(x0, x + i), LOAD8(x1, x + ldx + i), LOAD8(x2, x + 2 * ldx + i);
        IN_REG(x0); IN_REG(x1); IN_REG(x2);
        WROW(0); a00 = FMA8(u0, x0, a00), a10 = FMA8(u0, x1, a10), a20 = FMA8(u0, x2, a20);
        WROW(1); a01 = FMA8(u1, x0, a01), a11 = FMA8(u1, x1, a11), a21 = FMA8(u1, x2, a21);
        WROW(2); a02 = FMA8(u2, x0, a02), a12 = FMA8(u2, x1, a12), a22 = FMA8(u2, x2, a22);
        WROW(3); a03 = FMA8(u3, x0, a03), a13 = FMA8(u3, x1, a13), a23 = FMA8(u3, x2, a23);
    }
    ACC_OUT(0); ACC_OUT(1); ACC_OUT(2);
}

static void tile2(const float *restrict w, size_t C, const float *restrict x, size_t ldx, int kl, v8f *restrict acc,
                  int first) {
    const v8f zero = {0};
    ACC_IN(0); ACC_IN(1);
    for (int i = 0; i < kl; i += 8) {
        v8f x0, x1;
        LOAD8(x0, x + i), LOAD8(x1, x + ldx + i);
        IN_REG(x0); IN_REG(x1);
        WROW(0); a00 = FMA8(u0, x0, a00), a10 = FMA8(u0, x1, a10);
        WROW(1); a01 = FMA8(u1, x0, a01), a11 = FMA8(u1, x1, a11);
        WROW(2); a02 = FMA8(u2, x0, a02), a12 = FMA8(u2, x1, a12);
        WROW(3); a03 = FMA8(u3, x0, a03), a13 = FMA8(u3, x1, a13);
    }
    ACC_OUT(0); ACC_OUT(1);
}

static void tile1(const float *restrict w, size_t C, const float *restrict x, int kl, v8f *restrict acc,
                  int first) {
    const v8f zero = {0};
    ACC_IN(0);
    for (int i = 0; i < kl; i += 8) {
        v8f x0;
        LOAD8(x0, x + i);
        WROW(0); a00 = FMA8(u0, x0, a00);
        WROW(1); a01 = FMA8(u1, x0, a01);
        WROW(2); a02 = FMA8(u2, x0, a02);
        WROW(3); a03 = FMA8(u3, x0, a03);
    }
    ACC_OUT(0);
}

/* s[r] = HSUM8(a[r]) for r < 4, the same additions in the same pairs, four rows at once: a 512-column
 * row is only 64 FMAs per accumulator, so reducing them one at a time would be a visible share. */
static void hsum4(const v8f *a, float s[4]) {
#if defined(__AVX__)
    __m256 A = (__m256)a[0], B = (__m256)a[1], C = (__m256)a[2], D = (__m256)a[3];
    /* [x0+x4, x1+x5, x2+x6, x3+x7] of A and B, then of C and D */
    __m256 ab = _mm256_add_ps(_mm256_permute2f128_ps(A, B, 0x20), _mm256_permute2f128_ps(A, B, 0x31));
    __m256 cd = _mm256_add_ps(_mm256_permute2f128_ps(C, D, 0x20), _mm256_permute2f128_ps(C, D, 0x31));
    __m256 h = _mm256_hadd_ps(ab, cd); /* (x0+x4)+(x1+x5), (x2+x6)+(x3+x7): [A A C C | B B D D] */
    h = _mm256_hadd_ps(h, h);          /* their sums: [A C A C | B D B D] */
    _mm_storeu_ps(s, _mm_unpacklo_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
#else
    for (int r = 0; r < 4; r++) s[r] = HSUM8(a[r]);
#endif
}

/* A region of rows (rows x len floats, row stride ld) to prefetch, 64-byte line by line. */
typedef struct pf_region {
    const float *base;
    size_t ld, len, rows;
} pf_region;

static size_t pf_lines(const pf_region *p) { return p->rows * ((p->len + 15) / 16); }

/* Requests the next `count` lines of the region from line *cursor on. */
static void prefetch_lines(const pf_region *p, size_t *cursor, size_t count) {
    size_t per_row = (p->len + 15) / 16, end = pf_lines(p);
    for (size_t c = *cursor; c < end && c < *cursor + count; c++)
        __builtin_prefetch(p->base + (c / per_row) * p->ld + (c % per_row) * 16, 0, 3);
    *cursor = *cursor + count < end ? *cursor + count : end;
}

/* Rows j0 .. j0+3 of the output for inputs n0 .. n0+nc-1. xp: the packed inputs, or NULL to read
 * the rows in place (one input, or the packing buffer could not be allocated; same results).
 * more_rows: rows j0+4 .. j0+7 exist (what to prefetch after the last k-block). */
static void block4(float *out, const float *inp, const float *xp, const float *w, const float *bias, int N, int C,
                   int OC, int j0, int n0, int nc, int more_rows) {
    int C8 = C & ~7;
    const float *wr = w + (size_t)j0 * C;
    v8f acc[AN_MV_CHUNK * 4];
    if (C8 == 0) memset(acc, 0, sizeof acc); /* no k-block to start the sums */
    /* the next 4 rows' weights, requested a slice before each tile so that they stream in while this
     * block computes rather than each block starting with a wait on memory (a 16-row llama-60m step
     * measured 4-10% faster on one thread). Rows longer than 1024 columns stream on the hardware
     * prefetcher alone: SmolLM2's 576 x 1536 down projection read 28-29 GB/s without the hint, 21-22
     * with it (the 576-column rows 23-24 either way, and worse without it: 18-19). */
    pf_region next = {more_rows ? wr + (size_t)4 * C : NULL, (size_t)C, (size_t)C8, 4};
    const pf_region *pf = more_rows && C8 > 0 && C <= 1024 ? &next : NULL;
    size_t cursor = 0, calls = (size_t)((C8 + AN_MV_KB - 1) / AN_MV_KB) * (size_t)((nc + 2) / 3);
    size_t per_call = calls ? (pf_lines(&next) + calls - 1) / calls : 0;
    for (int k0 = 0; k0 < C8; k0 += AN_MV_KB) {
        int kl = C8 - k0 < AN_MV_KB ? C8 - k0 : AN_MV_KB;
        const float *x = xp ? xp + (size_t)k0 * N + (size_t)n0 * kl : inp + (size_t)n0 * C + k0;
        size_t ldx = xp ? (size_t)kl : (size_t)C;
        const float *wk = wr + k0;
        for (int m = 0; m < nc; m += 3) {
            if (pf) prefetch_lines(pf, &cursor, per_call);
            if (nc - m >= 3) tile3(wk, (size_t)C, x + m * ldx, ldx, kl, acc + m * 4, k0 == 0);
            else if (nc - m == 2) tile2(wk, (size_t)C, x + m * ldx, ldx, kl, acc + m * 4, k0 == 0);
            else tile1(wk, (size_t)C, x + m * ldx, kl, acc + m * 4, k0 == 0);
        }
    }
    for (int m = 0; m < nc; m++) {
        const float *xr = inp + (size_t)(n0 + m) * C;
        float *o = out + (size_t)(n0 + m) * OC + j0, s[4];
        hsum4(acc + m * 4, s);
        for (int r = 0; r < 4; r++) {
            const float *wrow = wr + (size_t)r * C;
            for (int k = C8; k < C; k++) s[r] += wrow[k] * xr[k];
            o[r] = s[r] + (bias ? bias[j0 + r] : 0.0f);
        }
    }
}

size_t an_cpu_matvec_work_bytes(int N, int C) {
    return N > 1 ? (size_t)N * (size_t)(C & ~7) * sizeof(float) + 64 : 0; /* + 64: room to align */
}

void an_cpu_matvec_forward(float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC,
                           void *work, size_t work_bytes) {
    if (N <= 0 || OC <= 0) return;
    int C8 = C & ~7, nblk = OC / 4;
    /* the packed copy in the caller's workspace: block k0 holds columns k0 .. k0+kl-1 of every input,
     * row after row. Without room for it the kernel reads the rows where they are (slower for N > 1,
     * the same bits). */
    float *xp = NULL;
    if (nblk > 0 && C8 > 0 && N > 1 && work && work_bytes >= an_cpu_matvec_work_bytes(N, C)) {
        xp = (float *)(((uintptr_t)work + 63) & ~(uintptr_t)63);
        for (int k0 = 0; xp && k0 < C8; k0 += AN_MV_KB) {
            int kl = C8 - k0 < AN_MV_KB ? C8 - k0 : AN_MV_KB;
            for (int n = 0; n < N; n++)
                memcpy(xp + (size_t)k0 * N + (size_t)n * kl, inp + (size_t)n * C + k0, (size_t)kl * sizeof(float));
        }
    }
    /* small products (tiny models) are not worth waking the thread team */
#pragma omp parallel for schedule(static) if ((size_t)OC * C >= 65536)
    for (int blk = 0; blk < nblk; blk++)
        for (int n0 = 0; n0 < N; n0 += AN_MV_CHUNK)
            block4(out, inp, xp, w, bias, N, C, OC, blk * 4, n0, N - n0 < AN_MV_CHUNK ? N - n0 : AN_MV_CHUNK,
                   blk + 1 < nblk);
    /* the last OC % 4 rows */
    for (int j = nblk * 4; j < OC; j++)
        for (int n = 0; n < N; n++)
            out[(size_t)n * OC + j] = an_dot(w + (size_t)j * C, inp + (size_t)n * C, C) + (bias ? bias[j] : 0.0f);
}
