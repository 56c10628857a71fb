/* Float32 weights in panels of 32 rows (AN_F32_X32, kernels/f32x32.h): the product of a frozen GGUF
 * float32 matrix with a prompt's rows or a decode step's, without the packing a BLAS call does.
 *
 * OpenBLAS copies both operands into its own panels on every call; for a prompt's products (512 rows
 * against SmolLM2's 576-column matrices) the copies and the clearing of the output took 16 % of its
 * time. A frozen weight can be stored in the kernel's layout once, at load, and the rows (activations)
 * are read where they are, so a call does nothing but multiply-adds:
 *  - a tile of MR rows x one panel (32 outputs) keeps MR x 32 sums in registers (12 x 2 vectors of 16
 *    with AVX-512, 3 x 4 of 8 without); per column k it loads the panel's 32 weights once and
 *    broadcasts each row's input;
 *  - columns go in blocks of at most KC (a panel's block, up to 40 KiB, stays in L1 while every row
 *    tile passes over it); with no more rows than one tile, the whole row at once;
 *  - each thread owns a contiguous run of panels, so a decode step streams its share of the weights
 *    front to back; in a prompt's products a thread that ends its run takes panels from the back of
 *    another's (panel_run below), column block by column block. One thread computes a panel's block.
 * Each output is its bias (or 0) plus the products in column order, one multiply-add each, whatever
 * the blocking: the same bits for any row count, thread count or place of the row in the batch. */
/* GCC under -std=c11 does not fuse a * b + c; these loops are multiply-adds (see cpu_gemm_fallback.c) */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
#endif

#include <omp.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/cpu_vec.h"
#include "kernels/f32x32.h"

/* rows of a tile: a macro, as tile_rows's cases depend on it */
#if AN_VL == 16
#define MR 12
#else
#define MR 3
#endif
enum { NV = AN_X32_ROWS / AN_VL, KC = 320 };

void an_f32x32_put_row(float *x32, int64_t cols, int64_t row, const float *y) {
    float *panel = x32 + (size_t)(row / AN_X32_ROWS) * (size_t)cols * AN_X32_ROWS + row % AN_X32_ROWS;
    for (int64_t k = 0; k < cols; k++) panel[(size_t)k * AN_X32_ROWS] = y[k];
}

void an_f32x32_row(const float *x32, int64_t cols, int64_t row, float *y) {
    const float *panel = x32 + (size_t)(row / AN_X32_ROWS) * (size_t)cols * AN_X32_ROWS + row % AN_X32_ROWS;
    for (int64_t k = 0; k < cols; k++) y[k] = panel[(size_t)k * AN_X32_ROWS];
}

static const float zeros[AN_X32_ROWS];

/* R rows (inp, stride ldi, from this block's first column) x one panel's block of kc columns (w) into
 * out (stride ldo): the sums start from init (32 floats) on the first block, else from out. R is a
 * constant where this is inlined, so the tile's sums are named registers. */
static inline __attribute__((always_inline)) void tile(float *out, size_t ldo, const float *inp, size_t ldi,
                                                       const float *w, int kc, int R, const float *init) {
    vnf acc[MR][NV];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++) acc[r][v] = init ? LDN(init + v * AN_VL) : LDN(out + (size_t)r * ldo + v * AN_VL);
    for (int k = 0; k < kc; k++) {
        vnf b[NV];
        for (int v = 0; v < NV; v++) b[v] = LDN(w + (size_t)k * AN_X32_ROWS + v * AN_VL);
        for (int r = 0; r < R; r++) {
            float a = inp[(size_t)r * ldi + k];
            for (int v = 0; v < NV; v++) acc[r][v] += a * b[v];
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++) STN(out + (size_t)r * ldo + v * AN_VL, acc[r][v]);
}

static void tile_rows(float *out, size_t ldo, const float *inp, size_t ldi, const float *w, int kc, int R,
                      const float *init) {
    switch (R) {
#define ROWS(n) \
    case n: tile(out, ldo, inp, ldi, w, kc, n, init); return;
        ROWS(1) ROWS(2)
#if MR == 12
        ROWS(3) ROWS(4) ROWS(5) ROWS(6) ROWS(7) ROWS(8) ROWS(9) ROWS(10) ROWS(11)
#endif
#undef ROWS
    default: tile(out, ldo, inp, ldi, w, kc, MR, init); return;
    }
}

/* Panel p's block of columns k0 .. k0+kc-1 against all N rows: the panel's 32 columns of out get the
 * block's products added (its first block starts them from the bias). next (may be NULL): a block of
 * next_kc columns requested a slice per row tile, so that it comes from memory while this one
 * computes from L1. */
static void panel_block(float *out, const float *inp, const float *x32, const float *bias, int N, int C, int OC, int p,
                        int k0, int kc, const float *next, int next_kc) {
    const float *w = x32 + ((size_t)p * C + k0) * AN_X32_ROWS;
    const float *init = k0 ? NULL : bias ? bias + (size_t)p * AN_X32_ROWS : zeros;
    size_t lines = next ? (size_t)next_kc * AN_X32_ROWS * sizeof(float) / 64 : 0, line = 0;
    size_t tiles = (size_t)(N + MR - 1) / MR, per_tile = (lines + tiles - 1) / tiles;
    for (int n = 0; n < N; n += MR) {
        for (size_t e = line + per_tile; line < e && line < lines; line++)
            __builtin_prefetch((const char *)next + line * 64, 0, 3);
        tile_rows(out + (size_t)n * OC + (size_t)p * AN_X32_ROWS, (size_t)OC, inp + (size_t)n * C + k0, (size_t)C, w,
                  kc, N - n < MR ? N - n : MR, init);
    }
}

/* Work sharing for a prompt's products: each thread owns a contiguous run of panels (front to back,
 * so the next block can be requested ahead) and, when its run is done, takes panels from the back of
 * another thread's run. A run is one cache line: the next panel to take (low half) and the end (high
 * half), claimed with compare-and-swap. Static runs alone lost 2-17 % of the products' time to one
 * thread waiting for the other (the VM slows one virtual CPU now and then; measured per call). */
enum { MAX_TEAM = 64 };
typedef struct panel_run {
    _Alignas(64) _Atomic uint64_t next_end; /* a line of its own: runs are taken from while others' move */
} panel_run;

static void run_reset(panel_run *r, int first, int end) {
    atomic_store_explicit(&r->next_end, (uint64_t)(uint32_t)end << 32 | (uint32_t)first, memory_order_relaxed);
}

/* The owner's next panel (from the front), or -1 when the run is empty. */
static int run_take_front(panel_run *r) {
    uint64_t v = atomic_load_explicit(&r->next_end, memory_order_relaxed);
    for (;;) {
        uint32_t f = (uint32_t)v, e = (uint32_t)(v >> 32);
        if (f >= e) return -1;
        if (atomic_compare_exchange_weak_explicit(&r->next_end, &v, (uint64_t)e << 32 | (f + 1), memory_order_relaxed,
                                                  memory_order_relaxed))
            return (int)f;
    }
}

/* Another thread's last panel (from the back), or -1 when the run is empty. */
static int run_take_back(panel_run *r) {
    uint64_t v = atomic_load_explicit(&r->next_end, memory_order_relaxed);
    for (;;) {
        uint32_t f = (uint32_t)v, e = (uint32_t)(v >> 32);
        if (f >= e) return -1;
        if (atomic_compare_exchange_weak_explicit(&r->next_end, &v, (uint64_t)(e - 1) << 32 | f, memory_order_relaxed,
                                                  memory_order_relaxed))
            return (int)(e - 1);
    }
}

void an_f32x32_forward(float *out, const float *inp, const float *x32, const float *bias, int N, int C, int OC) {
    if (N <= 0 || OC <= 0) return;
    int np = OC / AN_X32_ROWS;
    if (C <= 0) { /* no products: the bias alone */
        for (int n = 0; n < N; n++)
            for (int j = 0; j < OC; j++) out[(size_t)n * OC + j] = bias ? bias[j] : 0.0f;
        return;
    }
    /* blocks of at most KC columns, as even as whole blocks allow (576 columns: two of 288, not 256,
     * 256 and 64); with no more rows than one tile, the whole row at once and no requests (a decode
     * step streams its panels front to back, which the hardware prefetcher follows) */
    int few = N <= MR, kc_max = few ? C : (C + (C + KC - 1) / KC - 1) / ((C + KC - 1) / KC);
    /* the runs of the current column block and of the next (two sets, so that an owner can reset its
     * run for the next block while others may still take from this one) */
    panel_run runs[2][MAX_TEAM];
    /* small products (tiny models) are not worth waking the thread team */
#pragma omp parallel if ((size_t)OC * (size_t)C >= 65536)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int p0 = (int)((long long)np * t / nt), p1 = (int)((long long)np * (t + 1) / nt);
        /* decode (and teams past MAX_TEAM): each thread streams its own run; sharing only slowed it */
        int share = !few && nt <= MAX_TEAM;
        if (share) {
            run_reset(&runs[0][t], p0, p1);
#pragma omp barrier
        }
        for (int k0 = 0, b = 0; k0 < C; k0 += kc_max, b ^= 1) {
            int kc = C - k0 < kc_max ? C - k0 : kc_max, k1 = k0 + kc;
            int next_kc = C - k1 < kc_max ? C - k1 : kc_max;
            /* every thread is past the previous block's barrier, so no one takes from the set it used */
            if (share) run_reset(&runs[b ^ 1][t], p0, p1);
            for (int q = p0;;) {
                int p, own = 1;
                if (!share) {
                    p = q < p1 ? q++ : -1;
                } else {
                    p = run_take_front(&runs[b][t]), own = p >= 0;
                    for (int i = 1; i < nt && p < 0; i++) p = run_take_back(&runs[b][(t + i) % nt]);
                }
                if (p < 0) break;
                /* next: the following panel of the run, or, after its last, the next block of its first */
                const float *next = few                 ? NULL
                                    : own && p + 1 < p1 ? x32 + ((size_t)(p + 1) * C + k0) * AN_X32_ROWS
                                    : own && k1 < C     ? x32 + ((size_t)p0 * C + k1) * AN_X32_ROWS
                                                        : NULL;
                panel_block(out, inp, x32, bias, N, C, OC, p, k0, kc, next, own && p + 1 < p1 ? kc : next_kc);
            }
            if (share) { /* the next block adds to this one's sums, which another thread may have made */
#pragma omp barrier
            }
        }
    }
}
