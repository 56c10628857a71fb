/* A linear layer's LoRA adapter in two fused passes (kernels/ops.h, lora_forward / lora_backward).
 *
 * The adapter's products are skinny (rank r of 8..64 against widths of hundreds to thousands). Done as
 * BLAS calls they would need dropout(x) and its gradient as full [N, C] buffers, and their sums could
 * depend on the thread count. Here the dropout mask is regenerated a block of columns at a time into a
 * small stack buffer and each pass is one parallel region. Every product is a register tile of the
 * machine's vectors (AN_VL lanes, kernels/cpu_vec.h): 4 rows x JT ranks of dot products, or 4 rows
 * (ranks) x 2 vectors of columns of outer-product sums, so each load feeds several multiply-adds. That
 * is 1.4-1.8x the first version (one row of sums per load) and about the speed of the same products
 * through OpenBLAS without dropout (bench/lora_ops.sh; docs/kernels.md).
 *
 * Every output element is summed in a fixed order that does not depend on the thread count: rows are
 * independent in forward and in du, and the weight gradients are split by columns, each thread walking
 * all rows in order. So results are bit-identical run to run and for any number of threads.
 *
 * lora_grouped_forward (serving: each row its own adapter) runs the forward's row blocks of every
 * segment as the tasks of one parallel loop. */
#include <omp.h>

#include "kernels/cpu.h"
#include "kernels/cpu_vec.h"

enum {
    KC = 1024,       /* forward: input columns per chunk of the masked rows (16 KiB of them on the stack) */
    RB = 4,          /* rows per block: a block's rows share every load of A, Bt or the input */
    JT = AN_VL / 4,  /* ranks per dot-product tile: RB x JT accumulators (16 of 32 registers, 8 of 16) */
    /* ranks per outer-product tile and rows per input-gradient tile: JO (RI) x 2 accumulators, 16 of
     * AVX-512's 32 registers (8 of AVX2's 16), so each vector load feeds JO (RI) multiply-adds.
     * (4 with AVX-512: the LoRA backward ran at 0.67x of OpenBLAS on a Zen 4.) */
    JO = AN_VL == 16 ? 8 : 4,
    RI = AN_VL == 16 ? 8 : 4,
    CW = 2 * AN_VL,  /* backward: weight-gradient columns per block, two vectors */
    NB = 32,         /* backward: rows per step of the walk down the weight gradients' columns */
    DU_CHUNK = 256   /* backward: dout's columns per transposed chunk of Bt (16 KiB with AVX-512) */
};

/* worth a parallel region: enough multiply-adds to pay for waking the threads */
static int big(int N, int C, int OC, int r) { return (double)N * (C + OC) * r > 65536.0; }

/* this thread's share [*b0, *b1) of n blocks: contiguous, so its columns of a row are one stream */
static inline void thread_range(int n, int *b0, int *b1) {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    *b0 = (int)((long long)n * t / nt);
    *b1 = (int)((long long)n * (t + 1) / nt);
}

/* the rank of tile slot t from j0 on: a short last tile repeats its last rank (computed, never stored) */
static inline int rank_at(int j0, int t, int r) { return j0 + t < r ? j0 + t : r - 1; }

/* s[q][t] = x[q] . w[t] over n: RB x JT vector accumulators share each load of x[q] and of w[t],
 * then HSUMN and the tail in order, so each sum depends only on its own two rows */
static inline void dot_tile(float s[RB][JT], const float *const x[RB], const float *const w[JT], int n) {
    vnf acc[RB][JT];
    for (int q = 0; q < RB; q++)
        for (int t = 0; t < JT; t++) acc[q][t] = (vnf){0};
    int i = 0;
    for (; i + AN_VL <= n; i += AN_VL) {
        vnf wv[JT];
        for (int t = 0; t < JT; t++) wv[t] = LDN(w[t] + i);
        for (int q = 0; q < RB; q++) {
            vnf xv = LDN(x[q] + i);
            for (int t = 0; t < JT; t++) acc[q][t] += xv * wv[t];
        }
    }
    for (int q = 0; q < RB; q++)
        for (int t = 0; t < JT; t++) {
            float v = HSUMN(acc[q][t]);
            for (int k = i; k < n; k++) v += x[q][k] * w[t][k];
            s[q][t] = v;
        }
}

/* y[q][o] += sum_j u[q][j] bt[j * ld + o] for the first `rows` of the RB rows, o < len, summed over j in
 * order onto y: two vectors of outputs of every row stay in registers while the rank runs. Rows past
 * `rows` repeat a real one and are computed but not stored. */
static inline void add_rank_rows(float *const y[RB], const float *const u[RB], int rows, const float *bt, int ld,
                                 int r, int len) {
    int o = 0;
    for (; o + 2 * AN_VL <= len; o += 2 * AN_VL) {
        vnf acc[RB][2];
        for (int q = 0; q < RB; q++) acc[q][0] = LDN(y[q] + o), acc[q][1] = LDN(y[q] + o + AN_VL);
        for (int j = 0; j < r; j++) {
            vnf b0 = LDN(bt + (size_t)j * ld + o), b1 = LDN(bt + (size_t)j * ld + o + AN_VL);
            for (int q = 0; q < RB; q++) {
                float uq = u[q][j];
                acc[q][0] += uq * b0;
                acc[q][1] += uq * b1;
            }
        }
        for (int q = 0; q < rows; q++) STN(y[q] + o, acc[q][0]), STN(y[q] + o + AN_VL, acc[q][1]);
    }
    for (int q = 0; q < rows; q++)
        for (int oo = o; oo < len; oo++) {
            float acc = y[q][oo];
            for (int j = 0; j < r; j++) acc += u[q][j] * bt[(size_t)j * ld + oo];
            y[q][oo] = acc;
        }
}

/* g[j * ld + c] += sum_n s[n * r + j] v[n * ldv + c] for j < r, c < len (<= CW), over the n < rows in
 * order: the weight-gradient outer products, a JO x CW tile in registers for the whole run of rows */
static inline void outer_cols(float *g, int ld, const float *s, int r, const float *v, int ldv, int rows, int len) {
    for (int j0 = 0; j0 < r; j0 += JO) {
        int jt = r - j0 < JO ? r - j0 : JO;
        if (len == CW) {
            vnf acc[JO][2];
            for (int t = 0; t < JO; t++) {
                const float *gj = g + (size_t)rank_at(j0, t, r) * ld;
                acc[t][0] = LDN(gj), acc[t][1] = LDN(gj + AN_VL);
            }
            for (int n = 0; n < rows; n++) {
                const float *vn = v + (size_t)n * ldv, *sn = s + (size_t)n * r;
                vnf v0 = LDN(vn), v1 = LDN(vn + AN_VL);
                for (int t = 0; t < JO; t++) {
                    float st = sn[rank_at(j0, t, r)];
                    acc[t][0] += st * v0;
                    acc[t][1] += st * v1;
                }
            }
            for (int t = 0; t < jt; t++) {
                float *gj = g + (size_t)(j0 + t) * ld;
                STN(gj, acc[t][0]), STN(gj + AN_VL, acc[t][1]);
            }
        } else {
            for (int t = 0; t < jt; t++)
                for (int c = 0; c < len; c++) {
                    float acc = g[(size_t)(j0 + t) * ld + c];
                    for (int n = 0; n < rows; n++) acc += s[(size_t)n * r + j0 + t] * v[(size_t)n * ldv + c];
                    g[(size_t)(j0 + t) * ld + c] = acc;
                }
        }
    }
}

/* di[q][k] += scale[q][k] * sum_j du[q][j] a[j * lda + k] for the first `rows` of the RI rows, k < len
 * (<= CW): every sum runs over j in order from zero, so a row's result is the same in any block */
static inline void input_grad_rows(float *const di[RI], const float *const scale[RI], const float *const du[RI],
                                   int rows, const float *a, int lda, int r, int len) {
    if (len == CW) {
        vnf acc[RI][2];
        for (int q = 0; q < RI; q++) acc[q][0] = acc[q][1] = (vnf){0};
        for (int j = 0; j < r; j++) {
            vnf a0 = LDN(a + (size_t)j * lda), a1 = LDN(a + (size_t)j * lda + AN_VL);
            for (int q = 0; q < RI; q++) {
                float d = du[q][j];
                acc[q][0] += d * a0;
                acc[q][1] += d * a1;
            }
        }
        for (int q = 0; q < rows; q++) {
            STN(di[q], LDN(di[q]) + acc[q][0] * LDN(scale[q]));
            STN(di[q] + AN_VL, LDN(di[q] + AN_VL) + acc[q][1] * LDN(scale[q] + AN_VL));
        }
        return;
    }
    for (int q = 0; q < rows; q++)
        for (int k = 0; k < len; k++) {
            float acc = 0.0f;
            for (int j = 0; j < r; j++) acc += du[q][j] * a[(size_t)j * lda + k];
            di[q][k] += acc * scale[q][k];
        }
}

/* Rows n0 .. n0+rows-1 (rows <= RB) of the forward: u = scaling * dropout(x) A^T, out += u Bt. A row's
 * sums do not depend on the other rows of its block (each has its own accumulators), so a row gives
 * the same bits in any block, batch or segment. */
static void forward_block(float *out, float *u, const float *inp, const float *a, const float *bt, int n0, int rows,
                          int C, int OC, int r, float scaling, int drop, uint64_t seed, uint64_t counter, uint32_t thr,
                          float keep) {
    float xd[RB][KC];
    const float *xs[RB], *w[JT];
    for (int q = 0; q < rows; q++)
        for (int j = 0; j < r; j++) u[(size_t)(n0 + q) * r + j] = 0.0f;
    /* u = scaling * dropout(x) A^T, the inputs masked a chunk at a time; a short block repeats its first row */
    for (int k0 = 0; k0 < C; k0 += KC) {
        int len = C - k0 < KC ? C - k0 : KC;
        for (int q = 0; q < RB; q++) {
            int n = n0 + (q < rows ? q : 0);
            const float *x = inp + (size_t)n * C + k0;
            xs[q] = x;
            if (drop) {
                an_cpu_mask_row(xd[q], len, seed, counter + (uint64_t)n * (uint64_t)C + (uint64_t)k0, thr, keep);
                for (int k = 0; k < len; k++) xd[q][k] *= x[k];
                xs[q] = xd[q];
            }
        }
        for (int j0 = 0; j0 < r; j0 += JT) {
            float s[RB][JT];
            for (int t = 0; t < JT; t++) w[t] = a + (size_t)rank_at(j0, t, r) * C + k0;
            dot_tile(s, xs, w, len);
            for (int q = 0; q < rows; q++)
                for (int t = 0; t < JT && j0 + t < r; t++) u[(size_t)(n0 + q) * r + j0 + t] += s[q][t];
        }
    }
    float *y[RB];
    const float *us[RB];
    for (int q = 0; q < RB; q++) {
        int n = n0 + (q < rows ? q : 0);
        y[q] = out + (size_t)n * OC;
        us[q] = u + (size_t)n * r;
    }
    for (int q = 0; q < rows; q++)
        for (int j = 0; j < r; j++) u[(size_t)(n0 + q) * r + j] *= scaling;
    add_rank_rows(y, us, rows, bt, OC, r, OC); /* out += u Bt */
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
    int nrb = (N + RB - 1) / RB, nb_out = (OC + CW - 1) / CW, nb_in = (C + CW - 1) / CW;
#pragma omp parallel if (big(N, C, OC, r))
    {
        /* du = scaling * dout Bt^T. Ranks of one vector (r == AN_VL, as r 16 with AVX-512): per column o,
         * du[n][:] += dout[n][o] * Bt[:, o], Bt's column read from a transposed chunk on the stack and 8
         * rows a tile, with no horizontal sums; each du element is summed over o in order. Otherwise RB
         * rows x JT ranks of dot products. */
        if (need_du && r == AN_VL) {
            float bcol[DU_CHUNK][AN_VL];
            for (int o0 = 0; o0 < OC; o0 += DU_CHUNK) {
                int len = OC - o0 < DU_CHUNK ? OC - o0 : DU_CHUNK, last = o0 + len == OC;
                for (int o = 0; o < len; o++)
                    for (int j = 0; j < AN_VL; j++) bcol[o][j] = bt[(size_t)j * OC + o0 + o];
#pragma omp for schedule(static)
                for (int blk = 0; blk < (N + RI - 1) / RI; blk++) {
                    int n0 = blk * RI, rows = N - n0 < RI ? N - n0 : RI;
                    vnf acc[RI];
                    const float *d[RI];
                    for (int q = 0; q < RI; q++) {
                        int n = n0 + (q < rows ? q : 0);
                        d[q] = dout + (size_t)n * OC + o0;
                        acc[q] = (vnf){0};
                        if (o0) acc[q] = LDN(du + (size_t)n * AN_VL);
                    }
                    for (int o = 0; o < len; o++) {
                        vnf b = LDN(bcol[o]);
                        for (int q = 0; q < RI; q++) acc[q] += d[q][o] * b;
                    }
                    for (int q = 0; q < rows; q++) STN(du + (size_t)(n0 + q) * AN_VL, last ? acc[q] * scaling : acc[q]);
                }
            }
        } else if (need_du) {
#pragma omp for schedule(static)
            for (int blk = 0; blk < nrb; blk++) {
                int n0 = blk * RB, rows = N - n0 < RB ? N - n0 : RB;
                const float *d[RB], *w[JT];
                for (int q = 0; q < RB; q++) d[q] = dout + (size_t)(n0 + (q < rows ? q : 0)) * OC;
                for (int j0 = 0; j0 < r; j0 += JT) {
                    float s[RB][JT];
                    for (int t = 0; t < JT; t++) w[t] = bt + (size_t)rank_at(j0, t, r) * OC;
                    dot_tile(s, d, w, OC);
                    for (int q = 0; q < rows; q++)
                        for (int t = 0; t < JT && j0 + t < r; t++) du[(size_t)(n0 + q) * r + j0 + t] = scaling * s[q][t];
                }
            }
        }
        /* The weight gradients: each thread owns a contiguous range of column blocks of dBt and of
         * dA / dinp, and walks down the rows NB at a time, so it reads its part of each row of dout and
         * x as one stream rather than N short strided reads per column block. Every element is still
         * summed over the rows in order, whichever thread owns it. */
        int ob0, ob1, kb0, kb1;
        thread_range(nb_out, &ob0, &ob1);
        thread_range(nb_in, &kb0, &kb1);
        float scale[NB][CW], xd[NB][CW];
        for (int n0 = 0; n0 < N; n0 += NB) {
            int rows = N - n0 < NB ? N - n0 : NB;
            /* dBt += u^T dout */
            for (int blk = ob0; dbt && blk < ob1; blk++) {
                int o0 = blk * CW, len = OC - o0 < CW ? OC - o0 : CW;
                outer_cols(dbt + o0, OC, u + (size_t)n0 * r, r, dout + (size_t)n0 * OC + o0, OC, rows, len);
            }
            /* dA += du^T dropout(x) and dinp += dropout(du A), the block's mask made once per row for both */
            for (int blk = kb0; need_du && blk < kb1; blk++) {
                int k0 = blk * CW, len = C - k0 < CW ? C - k0 : CW;
                for (int q = 0; q < rows; q++) {
                    int n = n0 + q;
                    const float *x = inp + (size_t)n * C + k0;
                    if (drop)
                        an_cpu_mask_row(scale[q], len, seed, counter + (uint64_t)n * (uint64_t)C + (uint64_t)k0, thr, keep);
                    else
                        for (int k = 0; k < len; k++) scale[q][k] = 1.0f;
                    for (int k = 0; da && k < len; k++) xd[q][k] = x[k] * scale[q][k];
                }
                if (da) outer_cols(da + k0, C, du + (size_t)n0 * r, r, &xd[0][0], CW, rows, len);
                for (int q0 = 0; dinp && q0 < rows; q0 += RI) {
                    int rb = rows - q0 < RI ? rows - q0 : RI;
                    float *di[RI];
                    const float *sc[RI], *dq[RI];
                    for (int q = 0; q < RI; q++) {
                        int m = q0 + (q < rb ? q : 0);
                        di[q] = dinp + (size_t)(n0 + m) * C + k0;
                        sc[q] = scale[m];
                        dq[q] = du + (size_t)(n0 + m) * r;
                    }
                    input_grad_rows(di, sc, dq, rb, a + k0, C, r, len);
                }
            }
        }
    }
}
