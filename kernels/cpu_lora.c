/* A linear layer's LoRA adapter in two fused passes (kernels/ops.h, lora_forward / lora_backward).
 *
 * The adapter's products are skinny (rank r of 8..64 against widths of hundreds to thousands), where a
 * BLAS call per product spends more on packing, thread start-up and synchronisation than on the
 * arithmetic, and the unfused version also wrote dropout(x) and its gradient as full [N, C] buffers.
 * Here the dropout mask is regenerated a block of columns at a time into a small stack buffer, each
 * pass is one parallel region, and the loops run along contiguous rows so they vectorise.
 *
 * Every output element is summed in a fixed order that does not depend on the thread count: rows are
 * independent in forward and in du, and the weight gradients are split by columns, each thread walking
 * all rows in order. So results are bit-identical run to run and for any number of threads.
 *
 * lora_grouped_forward (serving: each row its own adapter) runs the forward's row blocks of every
 * segment as the tasks of one parallel loop. */
#include "kernels/cpu.h"
#include "kernels/cpu_vec.h"

enum {
    KC = 256, /* forward: input columns per chunk of the masked rows */
    CB = 64,  /* backward: columns per block of dA / dBt (a block of r rows stays in L1) */
    RB = 4    /* rows at a time: four independent sums share each load of A or Bt */
};

/* worth a parallel region: enough multiply-adds to pay for waking the threads */
static int big(int N, int C, int OC, int r) { return (double)N * (C + OC) * r > 65536.0; }

/* s[q] = x[q] . w over n for the RB rows x[q]: 8 lanes each, then the tail; the loads of w are shared
 * and RB independent accumulators are in flight */
static inline void dot_rows(float s[RB], const float *const x[RB], const float *w, int n) {
    v8f acc[RB];
    for (int q = 0; q < RB; q++) acc[q] = (v8f){0};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f wv = LD8(w + i);
        for (int q = 0; q < RB; q++) acc[q] += LD8(x[q] + i) * wv;
    }
    for (int q = 0; q < RB; q++) {
        float t = HSUM8(acc[q]);
        for (int k = i; k < n; k++) t += x[q][k] * w[k];
        s[q] = t;
    }
}

/* y[o] += sum_j u[j] bt[j * ld + o] for o < len, summed over j in order, a register tile of y at a time */
static inline void add_rank_r(float *y, const float *u, const float *bt, int ld, int r, int len) {
    int o0 = 0;
    for (; o0 + 32 <= len; o0 += 32) {
        v8f a0 = LD8(y + o0), a1 = LD8(y + o0 + 8), a2 = LD8(y + o0 + 16), a3 = LD8(y + o0 + 24);
        for (int j = 0; j < r; j++) {
            float uj = u[j];
            const float *b = bt + (size_t)j * ld + o0;
            a0 += uj * LD8(b);
            a1 += uj * LD8(b + 8);
            a2 += uj * LD8(b + 16);
            a3 += uj * LD8(b + 24);
        }
        ST8(y + o0, a0), ST8(y + o0 + 8, a1), ST8(y + o0 + 16, a2), ST8(y + o0 + 24, a3);
    }
    for (int o = o0; o < len; o++) {
        float acc = y[o];
        for (int j = 0; j < r; j++) acc += u[j] * bt[(size_t)j * ld + o];
        y[o] = acc;
    }
}

/* acc[j * ld + c] += s[q * r + j] * v[q][c] for the rows q < rows (<= RB) in order, c < len */
static inline void outer_rows(float *acc, int ld, const float *s, int r, const float *const v[RB], int rows, int len) {
    for (int j = 0; j < r; j++) {
        float *aj = acc + (size_t)j * ld;
        if (rows == RB) {
            float s0 = s[j], s1 = s[r + j], s2 = s[2 * r + j], s3 = s[3 * r + j];
            int c = 0;
            for (; c + 8 <= len; c += 8)
                ST8(aj + c, (((LD8(aj + c) + s0 * LD8(v[0] + c)) + s1 * LD8(v[1] + c)) + s2 * LD8(v[2] + c)) +
                                s3 * LD8(v[3] + c));
            for (; c < len; c++) aj[c] = (((aj[c] + s0 * v[0][c]) + s1 * v[1][c]) + s2 * v[2][c]) + s3 * v[3][c];
        } else {
            for (int q = 0; q < rows; q++) {
                float sq = s[q * r + j];
                for (int c = 0; c < len; c++) aj[c] += sq * v[q][c];
            }
        }
    }
}

/* di[q][k] += scale[q][k] * sum_j du[q * r + j] a[j * lda + k] for rows q < rows, k < len: the rows
 * share each load of A; every sum runs over j in order, so a row's result is the same in any block */
static inline void input_grad_rows(float *const di[RB], float scale[RB][CB], const float *du, const float *a, int lda,
                                   int r, int rows, int len) {
    int k = 0;
    if (rows == RB)
        for (; k + 8 <= len; k += 8) {
            v8f acc[RB];
            for (int q = 0; q < RB; q++) acc[q] = (v8f){0};
            for (int j = 0; j < r; j++) {
                v8f av = LD8(a + (size_t)j * lda + k);
                for (int q = 0; q < RB; q++) acc[q] += du[q * r + j] * av;
            }
            for (int q = 0; q < RB; q++) ST8(di[q] + k, LD8(di[q] + k) + acc[q] * LD8(scale[q] + k));
        }
    for (int q = 0; q < rows; q++)
        for (int kk = k; kk < len; kk++) {
            float acc = 0.0f;
            for (int j = 0; j < r; j++) acc += du[q * r + j] * a[(size_t)j * lda + kk];
            di[q][kk] += acc * scale[q][kk];
        }
}

/* Rows n0 .. n0+rows-1 (rows <= RB) of the forward: u = scaling * dropout(x) A^T, out += u Bt. A row's
 * sums do not depend on the other rows of its block (each has its own accumulators), so a row gives
 * the same bits in any block, batch or segment. */
static void forward_block(float *out, float *u, const float *inp, const float *a, const float *bt, int n0, int rows,
                          int C, int OC, int r, float scaling, int drop, uint64_t seed, uint64_t counter, uint32_t thr,
                          float keep) {
    float xd[RB][KC];
    const float *xs[RB];
    for (int q = 0; q < rows; q++)
        for (int j = 0; j < r; j++) u[(size_t)(n0 + q) * r + j] = 0.0f;
    /* u = scaling * dropout(x) A^T, the inputs masked a chunk at a time */
    for (int k0 = 0; k0 < C; k0 += KC) {
        int len = C - k0 < KC ? C - k0 : KC;
        for (int q = 0; q < RB; q++) {
            int n = n0 + (q < rows ? q : 0); /* a short block repeats its first row */
            const float *x = inp + (size_t)n * C + k0;
            xs[q] = x;
            if (drop) {
                an_cpu_mask_row(xd[q], len, seed, counter + (uint64_t)n * (uint64_t)C + (uint64_t)k0, thr, keep);
                for (int k = 0; k < len; k++) xd[q][k] *= x[k];
                xs[q] = xd[q];
            }
        }
        for (int j = 0; j < r; j++) {
            float s[RB];
            dot_rows(s, xs, a + (size_t)j * C + k0, len);
            for (int q = 0; q < rows; q++) u[(size_t)(n0 + q) * r + j] += s[q];
        }
    }
    for (int q = 0; q < rows; q++) {
        float *un = u + (size_t)(n0 + q) * r;
        for (int j = 0; j < r; j++) un[j] *= scaling;
        add_rank_r(out + (size_t)(n0 + q) * OC, un, bt, OC, r, OC); /* out += u Bt */
    }
}

void an_cpu_lora_forward(const an_ops *o, float *out, float *u, const float *inp, const float *a, const float *bt, int N, int C, int OC,
                         int r, float scaling, float p, uint64_t seed, uint64_t counter) {
    (void)o;
    int drop = p > 0.0f;
    float keep = drop ? 1.0f / (1.0f - p) : 1.0f;
    uint32_t thr = an_cpu_mask_threshold(p);
    int nblk = (N + RB - 1) / RB;
#pragma omp parallel for schedule(static) if (big(N, C, OC, r))
    for (int blk = 0; blk < nblk; blk++) {
        int n0 = blk * RB, rows = N - n0 < RB ? N - n0 : RB;
        forward_block(out, u, inp, a, bt, n0, rows, C, OC, r, scaling, drop, seed, counter, thr, keep);
    }
}

/* Every segment's blocks of RB rows are tasks of one parallel loop (rather than one parallel region per
 * adapter); segment s's u is the slice after the earlier segments' n * r floats. */
void an_cpu_lora_grouped_forward(const an_ops *o, float *out, float *u, const float *x, int C, int OC,
                                 const an_lora_seg *segs, int n_segs) {
    (void)o;
    enum { MAX_SEGS_STACK = 64 };
    int first[MAX_SEGS_STACK + 1]; /* first task of each segment, for up to 64 segments per loop */
    for (int s0 = 0; s0 < n_segs; s0 += MAX_SEGS_STACK) {
        int ns = n_segs - s0 < MAX_SEGS_STACK ? n_segs - s0 : MAX_SEGS_STACK;
        size_t uoff = 0;
        for (int s = 0; s < s0; s++) uoff += (size_t)segs[s].n * segs[s].r;
        double work = 0.0;
        first[0] = 0;
        for (int s = 0; s < ns; s++) {
            const an_lora_seg *g = &segs[s0 + s];
            first[s + 1] = first[s] + (g->n + RB - 1) / RB;
            work += (double)g->n * (C + OC) * g->r;
        }
        int ntasks = first[ns];
#pragma omp parallel for schedule(static) if (work > 65536.0)
        for (int t = 0; t < ntasks; t++) {
            int s = 0;
            while (first[s + 1] <= t) s++;
            const an_lora_seg *g = &segs[s0 + s];
            size_t off = uoff;
            for (int k = 0; k < s; k++) off += (size_t)segs[s0 + k].n * segs[s0 + k].r;
            int n0 = (t - first[s]) * RB, rows = g->n - n0 < RB ? g->n - n0 : RB;
            forward_block(out + (size_t)g->row0 * OC, u + off, x + (size_t)g->row0 * C, g->a, g->bt, n0, rows, C, OC,
                          g->r, g->scaling, 0, 0, 0, 0, 1.0f);
        }
    }
}

void an_cpu_lora_backward(const an_ops *o, float *dinp, float *da, float *dbt, float *du, const float *dout, const float *inp,
                          const float *u, const float *a, const float *bt, int N, int C, int OC, int r, float scaling,
                          float p, uint64_t seed, uint64_t counter) {
    (void)o;
    int drop = p > 0.0f;
    float keep = drop ? 1.0f / (1.0f - p) : 1.0f;
    uint32_t thr = an_cpu_mask_threshold(p);
    int need_du = da || dinp;
    int nrb = (N + RB - 1) / RB, nb_out = (OC + CB - 1) / CB, nb_in = (C + CB - 1) / CB;
#pragma omp parallel if (big(N, C, OC, r))
    {
        /* du = scaling * dout Bt^T, RB rows at a time */
        if (need_du) {
#pragma omp for schedule(static)
            for (int blk = 0; blk < nrb; blk++) {
                int n0 = blk * RB, rows = N - n0 < RB ? N - n0 : RB;
                const float *d[RB];
                for (int q = 0; q < RB; q++) d[q] = dout + (size_t)(n0 + (q < rows ? q : 0)) * OC;
                for (int j = 0; j < r; j++) {
                    float s[RB];
                    dot_rows(s, d, bt + (size_t)j * OC, OC);
                    for (int q = 0; q < rows; q++) du[(size_t)(n0 + q) * r + j] = scaling * s[q];
                }
            }
        }
        /* dBt += u^T dout, a block of output columns per task, all rows in order */
        if (dbt) {
#pragma omp for schedule(static) nowait
            for (int blk = 0; blk < nb_out; blk++) {
                int o0 = blk * CB, len = OC - o0 < CB ? OC - o0 : CB;
                for (int n0 = 0; n0 < N; n0 += RB) {
                    int rows = N - n0 < RB ? N - n0 : RB;
                    const float *v[RB];
                    for (int q = 0; q < RB; q++) v[q] = dout + (size_t)(n0 + (q < rows ? q : 0)) * OC + o0;
                    outer_rows(dbt + o0, OC, u + (size_t)n0 * r, r, v, rows, len);
                }
            }
        }
        /* dA += du^T dropout(x) and dinp += dropout(du A), a block of input columns per task, the
         * block's mask regenerated once per row for both */
        if (need_du) {
#pragma omp for schedule(static)
            for (int blk = 0; blk < nb_in; blk++) {
                int k0 = blk * CB, len = C - k0 < CB ? C - k0 : CB;
                float scale[RB][CB], xd[RB][CB];
                for (int n0 = 0; n0 < N; n0 += RB) {
                    int rows = N - n0 < RB ? N - n0 : RB;
                    const float *v[RB];
                    for (int q = 0; q < rows; q++) {
                        int n = n0 + q;
                        const float *x = inp + (size_t)n * C + k0;
                        if (drop)
                            an_cpu_mask_row(scale[q], len, seed, counter + (uint64_t)n * (uint64_t)C + (uint64_t)k0, thr,
                                            keep);
                        else
                            for (int k = 0; k < len; k++) scale[q][k] = 1.0f;
                        for (int k = 0; k < len; k++) xd[q][k] = x[k] * scale[q][k];
                        v[q] = xd[q];
                    }
                    for (int q = rows; q < RB; q++) v[q] = xd[0];
                    if (da) outer_rows(da + k0, C, du + (size_t)n0 * r, r, v, rows, len);
                    if (!dinp) continue;
                    float *di[RB];
                    for (int q = 0; q < rows; q++) di[q] = dinp + (size_t)(n0 + q) * C + k0;
                    input_grad_rows(di, scale, du + (size_t)n0 * r, a + k0, C, r, rows, len);
                }
            }
        }
    }
}
