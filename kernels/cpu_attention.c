/* Causal grouped-query attention, tiled like FlashAttention: never a T x T matrix per head.
 *
 * Forward: for each (batch, head, block of BQ queries), walk the key blocks the block can see with an
 * online softmax (running max m and sum l per query, output accumulator rescaled when m grows), and
 * save lse = m + log(l). Backward: for each (batch, kv head), walk its query heads and query blocks,
 * recompute P = exp(S - lse) tile by tile, and use D_i = rowsum(dout_i * out_i) for
 * dS = P * (dP - D). A task owns its kv head's dk/dv and its query heads' dq, so there are no races and
 * every sum runs in a fixed order (same bits for any thread count).
 *
 * Inner loops are written as broadcast-times-row updates (S[i, :] += q[i, d] * kT[d, :]) over packed
 * tiles so they vectorise. A token t of row b attends to keys seg_start[b, t] .. t. */
#include <math.h>
#include <stdlib.h>

#include "kernels/cpu.h"

enum { BQ = 64, BK = 64 };

typedef struct dims {
    int T, nh, nkv, hd;
} dims;

static inline size_t q_index(dims d, int b, int t, int h) { return (((size_t)b * d.T + t) * d.nh + h) * d.hd; }
static inline size_t kv_index(dims d, int b, int t, int h) { return (((size_t)b * d.T + t) * d.nkv + h) * d.hd; }

/* kT[dd][j] = k[b, k0 + j, kh, dd] for j < nk; zero past nk so full-width loops stay finite */
static void pack_transposed(float *kT, const float *k, dims d, int b, int kh, int k0, int nk) {
    for (int j = 0; j < BK; j++) {
        if (j < nk) {
            const float *src = k + kv_index(d, b, k0 + j, kh);
            for (int dd = 0; dd < d.hd; dd++) kT[(size_t)dd * BK + j] = src[dd];
        } else {
            for (int dd = 0; dd < d.hd; dd++) kT[(size_t)dd * BK + j] = 0.0f;
        }
    }
}

/* S[i][j] = alpha * sum_dd a[i][dd] * bT[dd][j], for i < nq (a rows of stride lda) */
static void tile_scores(float *S, const float *const *a_rows, const float *bT, int nq, int hd, float alpha) {
    for (int i = 0; i < nq; i++) {
        float row[BK];
        for (int j = 0; j < BK; j++) row[j] = 0.0f;
        const float *a = a_rows[i];
        for (int dd = 0; dd < hd; dd++) {
            float x = a[dd];
            const float *bt = bT + (size_t)dd * BK;
            for (int j = 0; j < BK; j++) row[j] += x * bt[j];
        }
        for (int j = 0; j < BK; j++) S[i * BK + j] = alpha * row[j];
    }
}

static inline void axpy_row(float *restrict y, float a, const float *restrict x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

/* the span of keys [lo, hi] any query of the block [t0, t0 + nq) may see */
static void key_span(const int32_t *seg, int t0, int nq, int *lo, int *hi) {
    int m = seg[t0];
    for (int i = 1; i < nq; i++) m = seg[t0 + i] < m ? seg[t0 + i] : m;
    *lo = m;
    *hi = t0 + nq - 1;
}

void an_cpu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                              const int32_t *seg_start, int B, int T, int nh, int nkv, int hd) {
    dims d = {T, nh, nkv, hd};
    int group = nh / nkv;
    int nqb = (T + BQ - 1) / BQ;
    float scale = 1.0f / sqrtf((float)hd);
    int ntasks = B * nh * nqb;
#pragma omp parallel
    {
        float *kT = malloc(sizeof(float) * (size_t)hd * BK);
        float *S = malloc(sizeof(float) * BQ * BK);
        float *acc = malloc(sizeof(float) * (size_t)BQ * hd);
        int ok = kT && S && acc;
#pragma omp for schedule(dynamic, 1)
        for (int task = ntasks - 1; task >= 0; task--) { /* longest blocks (the last ones) first */
            int qb = task % nqb, h = (task / nqb) % nh, b = task / (nqb * nh), kh = h / group;
            int t0 = qb * BQ, nq = T - t0 < BQ ? T - t0 : BQ;
            const int32_t *seg = seg_start + (size_t)b * T;
            float *lse_bh = lse + ((size_t)b * nh + h) * T;
            if (!ok) { /* out of memory: no way to report from a void op, so make it visible */
                for (int i = 0; i < nq; i++) {
                    float *o = out + q_index(d, b, t0 + i, h);
                    for (int dd = 0; dd < hd; dd++) o[dd] = NAN;
                    lse_bh[t0 + i] = NAN;
                }
                continue;
            }
            const float *qrows[BQ];
            float m[BQ], l[BQ];
            for (int i = 0; i < nq; i++) {
                qrows[i] = q + q_index(d, b, t0 + i, h);
                m[i] = -INFINITY;
                l[i] = 0.0f;
                for (int dd = 0; dd < hd; dd++) acc[(size_t)i * hd + dd] = 0.0f;
            }
            int lo, hi;
            key_span(seg, t0, nq, &lo, &hi);
            for (int k0 = lo; k0 <= hi; k0 += BK) {
                int nk = hi + 1 - k0 < BK ? hi + 1 - k0 : BK;
                pack_transposed(kT, k, d, b, kh, k0, nk);
                tile_scores(S, qrows, kT, nq, hd, scale);
                for (int i = 0; i < nq; i++) {
                    int t = t0 + i;
                    /* visible keys of this query inside the tile: [jlo, jhi) */
                    int jlo = seg[t] - k0, jhi = t + 1 - k0;
                    jlo = jlo < 0 ? 0 : jlo;
                    jhi = jhi > nk ? nk : jhi;
                    if (jlo >= jhi) continue;
                    float *s = S + i * BK;
                    float mx = m[i];
                    for (int j = jlo; j < jhi; j++) mx = an_maxf(mx, s[j]);
                    float corr = an_expf(m[i] - mx); /* m = -inf on the first visible tile: corr = ~0 */
                    if (m[i] == -INFINITY) corr = 0.0f;
                    float psum = 0.0f;
                    for (int j = 0; j < BK; j++) {
                        /* exp everywhere, then a 0/1 mask: no branch, so the loop vectorises (the masked
                         * scores are finite, and an_expf saturates, so e * 0 is an exact 0) */
                        float p = an_expf(s[j] - mx) * (float)(j >= jlo && j < jhi);
                        s[j] = p;
                        psum += p;
                    }
                    m[i] = mx;
                    l[i] = l[i] * corr + psum;
                    float *a = acc + (size_t)i * hd;
                    if (corr != 1.0f)
                        for (int dd = 0; dd < hd; dd++) a[dd] *= corr;
                    for (int j = jlo; j < jhi; j++) axpy_row(a, s[j], v + kv_index(d, b, k0 + j, kh), hd);
                }
            }
            for (int i = 0; i < nq; i++) {
                float *o = out + q_index(d, b, t0 + i, h);
                float inv = 1.0f / l[i];
                for (int dd = 0; dd < hd; dd++) o[dd] = acc[(size_t)i * hd + dd] * inv;
                lse_bh[t0 + i] = m[i] + logf(l[i]);
            }
        }
        free(kT);
        free(S);
        free(acc);
    }
}

void an_cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                               const float *k, const float *v, const float *out, const float *lse,
                               const int32_t *seg_start, int B, int T, int nh, int nkv, int hd) {
    dims d = {T, nh, nkv, hd};
    int group = nh / nkv;
    int nqb = (T + BQ - 1) / BQ;
    float scale = 1.0f / sqrtf((float)hd);
    int ntasks = B * nkv;
#pragma omp parallel
    {
        float *kT = malloc(sizeof(float) * (size_t)hd * BK);
        float *vT = malloc(sizeof(float) * (size_t)hd * BK);
        float *P = malloc(sizeof(float) * BQ * BK);
        float *dS = malloc(sizeof(float) * BQ * BK);
        float *dqacc = malloc(sizeof(float) * (size_t)BQ * hd);
        int ok = kT && vT && P && dS && dqacc;
#pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < ntasks; task++) {
            int b = task / nkv, kh = task % nkv;
            const int32_t *seg = seg_start + (size_t)b * T;
            if (!ok) { /* out of memory: poison this task's gradients rather than leave them silently short */
                for (int t = 0; t < T; t++)
                    for (int dd = 0; dd < hd; dd++) {
                        if (dk) dk[kv_index(d, b, t, kh) + dd] = NAN;
                        if (dv) dv[kv_index(d, b, t, kh) + dd] = NAN;
                    }
                continue;
            }
            for (int h = kh * group; h < (kh + 1) * group; h++) {
                const float *lse_bh = lse + ((size_t)b * nh + h) * T;
                for (int qb = 0; qb < nqb; qb++) {
                    int t0 = qb * BQ, nq = T - t0 < BQ ? T - t0 : BQ;
                    const float *qrows[BQ], *dorows[BQ];
                    float Di[BQ];
                    for (int i = 0; i < nq; i++) {
                        qrows[i] = q + q_index(d, b, t0 + i, h);
                        dorows[i] = dout + q_index(d, b, t0 + i, h);
                        Di[i] = an_dot(dorows[i], out + q_index(d, b, t0 + i, h), hd);
                        for (int dd = 0; dd < hd; dd++) dqacc[(size_t)i * hd + dd] = 0.0f;
                    }
                    int lo, hi;
                    key_span(seg, t0, nq, &lo, &hi);
                    for (int k0 = lo; k0 <= hi; k0 += BK) {
                        int nk = hi + 1 - k0 < BK ? hi + 1 - k0 : BK;
                        pack_transposed(kT, k, d, b, kh, k0, nk);
                        pack_transposed(vT, v, d, b, kh, k0, nk);
                        tile_scores(P, qrows, kT, nq, hd, scale);
                        tile_scores(dS, dorows, vT, nq, hd, 1.0f); /* dP = dout V^T */
                        for (int i = 0; i < nq; i++) {
                            int t = t0 + i;
                            int jlo = seg[t] - k0, jhi = t + 1 - k0;
                            jlo = jlo < 0 ? 0 : jlo;
                            jhi = jhi > nk ? nk : jhi;
                            float *p = P + i * BK, *ds = dS + i * BK;
                            float li = lse_bh[t];
                            for (int j = 0; j < BK; j++) {
                                float pj = an_expf(p[j] - li) * (float)(j >= jlo && j < jhi);
                                p[j] = pj;
                                /* the softmax scale of S = scale * q k^T, folded into dS */
                                ds[j] = pj * (ds[j] - Di[i]) * scale;
                            }
                            float *dqa = dqacc + (size_t)i * hd;
                            for (int j = jlo; j < jhi; j++) axpy_row(dqa, ds[j], k + kv_index(d, b, k0 + j, kh), hd);
                        }
                        for (int j = 0; j < nk; j++) {
                            float *dkj = dk ? dk + kv_index(d, b, k0 + j, kh) : NULL;
                            float *dvj = dv ? dv + kv_index(d, b, k0 + j, kh) : NULL;
                            for (int i = 0; i < nq; i++) {
                                float pij = P[i * BK + j];
                                if (pij == 0.0f) continue; /* masked (or underflowed: contributes 0 anyway) */
                                if (dvj) axpy_row(dvj, pij, dorows[i], hd);
                                if (dkj) axpy_row(dkj, dS[i * BK + j], qrows[i], hd);
                            }
                        }
                    }
                    if (dq)
                        for (int i = 0; i < nq; i++) {
                            float *dst = dq + q_index(d, b, t0 + i, h);
                            for (int dd = 0; dd < hd; dd++) dst[dd] += dqacc[(size_t)i * hd + dd];
                        }
                }
            }
        }
        free(kT);
        free(vT);
        free(P);
        free(dS);
        free(dqacc);
    }
}
