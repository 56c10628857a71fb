/* Causal grouped-query attention, tiled like FlashAttention: never a T x T matrix per head.
 *
 * Forward, one task per (batch, head): K is transposed once into a [hd, T] panel; each block of BQ
 * queries walks the key blocks it can see with an online softmax (running max m and sum l per query,
 * output accumulator rescaled when m grows) and saves lse = m + log(l).
 * Backward, one task per (batch, kv head): for each of its query heads and query blocks, P = exp(S - lse)
 * is recomputed tile by tile and D_i = rowsum(dout_i * out_i) gives dS = P * (dP - D). A task owns its
 * kv head's dk/dv and its query heads' dq, so there are no races and every sum runs in a fixed order
 * (same bits for any thread count).
 *
 * Every tile product is small_gemm, a register-blocked kernel of 6 rows x 2 vectors (kernels/cpu_vec.h).
 * A token t of row b attends to keys seg_start[b, t] .. t. */
/* GCC under -std=c11 does not fuse a * b + c; these loops are multiply-adds (see cpu_gemm_fallback.c) */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
#endif

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu.h"
#include "kernels/cpu_vec.h"

enum { BQ = 64, BK = 64 };

typedef struct dims {
    int T, nh, nkv, hd;
} dims;

static inline size_t q_index(dims d, int b, int t, int h) { return (((size_t)b * d.T + t) * d.nh + h) * d.hd; }
static inline size_t kv_index(dims d, int b, int t, int h) { return (((size_t)b * d.T + t) * d.nkv + h) * d.hd; }

/* kT[dd][t] = k[b, t, kh, dd] for the row's first n keys (t < n <= T), zero from n up to ld (a
 * multiple of BK), so every key tile is a column slice kT + k0 with row stride ld, and a tile that starts
 * below n reads zeros past it. Packed once per task and reused by all its query blocks. */
static void pack_transposed(float *kT, size_t ld, const float *k, dims d, int b, int kh, int n) {
    /* 8 rows at a time: 8 contiguous stores per dd instead of one store per cache line */
    int t = 0;
    for (; t + 8 <= n; t += 8) {
        const float *src[8];
        for (int r = 0; r < 8; r++) src[r] = k + kv_index(d, b, t + r, kh);
        for (int dd = 0; dd < d.hd; dd++)
            for (int r = 0; r < 8; r++) kT[(size_t)dd * ld + t + r] = src[r][dd];
    }
    for (; t < n; t++) {
        const float *src = k + kv_index(d, b, t, kh);
        for (int dd = 0; dd < d.hd; dd++) kT[(size_t)dd * ld + t] = src[dd];
    }
    size_t zero_end = (size_t)n + BK < ld ? (size_t)n + BK : ld; /* no tile starting below n reads further */
    for (int dd = 0; dd < d.hd; dd++)
        for (size_t u = (size_t)n; u < zero_end; u++) kT[(size_t)dd * ld + u] = 0.0f;
}

/* C[m][n] += sum_k A(m, k) * B[k][n] for m < M, n < N, k < K, with A(m, k) = A[m * a_rs + k * a_cs]
 * (so A may be a tile or its transpose) and B, C rows at strides ldb, ldc. Every product of the
 * attention tiles is one of these. */
/* rows [m, m + R) x columns [n, n + AN_VL V): R broadcast A values times V B vectors per k, each element
 * summed over k in order from zero, then added to C (a macro, not a function: a vector passed by value
 * changes the ABI on builds without the instructions) */
#define SMALL_GEMM_BLOCK(R, V)                                                                               \
    do {                                                                                                       \
        vnf c_[R][V];                                                                                          \
        for (int r = 0; r < R; r++)                                                                            \
            for (int v = 0; v < V; v++) c_[r][v] = (vnf){0};                                                   \
        for (int k = 0; k < K; k++) {                                                                          \
            const float *b = B + (size_t)k * ldb + n;                                                          \
            vnf b_[V];                                                                                         \
            for (int v = 0; v < V; v++) b_[v] = LDN(b + AN_VL * v);                                            \
            const float *a = A + (size_t)m * a_rs + (size_t)k * a_cs;                                          \
            for (int r = 0; r < R; r++) {                                                                      \
                float x = a[(size_t)r * a_rs];                                                                 \
                for (int v = 0; v < V; v++) c_[r][v] += x * b_[v];                                             \
            }                                                                                                  \
        }                                                                                                      \
        for (int r = 0; r < R; r++) {                                                                          \
            float *c = C + (size_t)(m + r) * ldc + n;                                                          \
            for (int v = 0; v < V; v++) STN(c + AN_VL * v, LDN(c + AN_VL * v) + c_[r][v]);                     \
        }                                                                                                      \
    } while (0)

/* Register-blocked 6 rows x 2 vectors (12 accumulators) over whole blocks, then 4-row and 1-row blocks,
 * a one-vector block, and a scalar loop for columns past the last whole vector. */
static void small_gemm(int M, int N, int K, const float *A, int a_rs, int a_cs, const float *B, size_t ldb, float *C,
                       size_t ldc) {
    int n2v = N / (2 * AN_VL) * (2 * AN_VL), nv = N / AN_VL * AN_VL;
    for (int n = 0; n < n2v; n += 2 * AN_VL) {
        int m = 0;
        for (; m + 6 <= M; m += 6) SMALL_GEMM_BLOCK(6, 2);
        for (; m + 4 <= M; m += 4) SMALL_GEMM_BLOCK(4, 2);
        for (; m < M; m++) SMALL_GEMM_BLOCK(1, 2);
    }
    for (int n = n2v; n < nv; n += AN_VL) {
        int m = 0;
        for (; m + 6 <= M; m += 6) SMALL_GEMM_BLOCK(6, 1);
        for (; m < M; m++) SMALL_GEMM_BLOCK(1, 1);
    }
    if (nv < N)
        for (int mm = 0; mm < M; mm++)
            for (int k = 0; k < K; k++) {
                float x = A[(size_t)mm * a_rs + (size_t)k * a_cs];
                const float *b = B + (size_t)k * ldb;
                float *c = C + (size_t)mm * ldc;
                for (int n = nv; n < N; n++) c[n] += x * b[n];
            }
}

/* Scratch: each thread of an op gets its own slice of the caller's workspace (kernels/ops.h
 * attention_work_bytes), pieces rounded to 16 floats so every one starts on a cache line. */
static size_t r16(size_t n) { return (n + 15) / 16 * 16; }
static size_t panel_ld(int T) { return (size_t)((T + BQ - 1) / BQ) * BK + BK; }
static size_t fwd_floats(int T, int hd) { return r16((size_t)hd * panel_ld(T)) + r16(BQ * BK) + r16((size_t)BQ * hd); }
static size_t bwd_floats(int T, int hd) { return 2 * r16((size_t)hd * panel_ld(T)) + 2 * r16(BQ * BK) + r16((size_t)BQ * hd); }

size_t an_cpu_attention_work_bytes(const an_ops *o, int T, int nh, int hd) {
    (void)o;
    size_t per = fwd_floats(T, hd), b = bwd_floats(T, hd), dec = an_cpu_decode_work_floats(T, nh);
    per = b > per ? b : per;
    per = dec > per ? dec : per;
    return per * sizeof(float) * (size_t)omp_get_max_threads() + 64; /* + 64: room to align */
}

/* the span of keys [lo, hi] any query of the block [t0, t0 + nq) may see */
static void key_span(const int32_t *seg, int t0, int nq, int *lo, int *hi) {
    int m = seg[t0];
    for (int i = 1; i < nq; i++) m = seg[t0 + i] < m ? seg[t0 + i] : m;
    *lo = m < 0 ? 0 : m; /* a negative seg_start (bad input) must not index before the row */
    *hi = t0 + nq - 1;
}

/* One query's row s of a score tile (BK scores), in place, for the online softmax: the scores scaled,
 * the keys outside [jlo, jhi) hidden, the running max m and sum l moved on, and s turned into
 * p = exp(score - m) (exact zeros where hidden). Returns corr = exp(m_old - m), by which the caller
 * rescales the row's output accumulator. All in whole vectors (AN_EXPN). The max is exact; the sum is
 * kept as AN_VL lane sums (l, a whole vector), added up once when the row is done (HSUMN), so no tile
 * pays for a horizontal sum. */
static float online_softmax_row(float *s, int jlo, int jhi, float scale, float *m, vnf *l) {
    enum { NV = BK / AN_VL };
    vnf x[NV];
    vni vis[NV];
    int partial = jlo > 0 || jhi < BK;
    for (int v = 0; v < NV; v++) {
        x[v] = LDN(s + v * AN_VL) * scale;
        vis[v] = (vni){0} - 1;
        if (partial) {
            vni j;
            for (int u = 0; u < AN_VL; u++) j[u] = v * AN_VL + u;
            vis[v] = (j >= (vni){0} + jlo) & (j < (vni){0} + jhi);
            /* -1e30, finite, so no inf - inf below */
            x[v] = SELECTN(vis[v], x[v], SPLATN(-1e30f));
        }
    }
    vnf mv = x[0];
    for (int v = 1; v < NV; v++) mv = SELECTN(x[v] > mv, x[v], mv);
    float mx;
    HMAXN(mx, mv);
    mx = mx > *m ? mx : *m;
    float corr = *m == -INFINITY ? 0.0f : an_expf(*m - mx);
    vnf sum = (vnf){0};
    for (int v = 0; v < NV; v++) {
        vnf p;
        AN_EXPN(p, x[v] - mx);
        if (partial) p = SELECTN(vis[v], p, (vnf){0}); /* an_expf(-1e30 - mx) is ~1e-38, not 0 */
        STN(s + v * AN_VL, p);
        sum += p;
    }
    *m = mx;
    *l = *l * corr + sum;
    return corr;
}

/* The backward's row of a tile, in place: p = exp(scale * s - lse) on the visible keys [jlo, jhi)
 * (exact zeros elsewhere) and ds = p * (dp - D) * scale (the softmax scale of S = scale * q k^T folded
 * into dS). Whole vectors, as online_softmax_row. */
static void softmax_grad_row(float *p, float *ds, int jlo, int jhi, float scale, float lse, float D) {
    int partial = jlo > 0 || jhi < BK;
    for (int v = 0; v < BK / AN_VL; v++) {
        vnf e;
        AN_EXPN(e, LDN(p + v * AN_VL) * scale - lse);
        if (partial) {
            vni j;
            for (int u = 0; u < AN_VL; u++) j[u] = v * AN_VL + u;
            e = SELECTN((j >= (vni){0} + jlo) & (j < (vni){0} + jhi), e, (vnf){0});
        }
        STN(p + v * AN_VL, e);
        STN(ds + v * AN_VL, e * (LDN(ds + v * AN_VL) - D) * scale);
    }
}

/* The forward's tasks: each (batch, head) cut into `parts` runs of query blocks of about equal causal
 * work (block qb sees qb + 1 key blocks), so that a single prompt's few heads still keep every thread
 * busy. part_first[p] .. part_first[p + 1] are part p's query blocks. */
static void causal_parts(int nqb, int parts, int *part_first) {
    double total = (double)nqb * (nqb + 1) / 2;
    int qb = 0;
    double done = 0;
    part_first[0] = 0;
    for (int p = 1; p < parts; p++) {
        while (qb < nqb && done + (qb + 1) <= total * p / parts) done += ++qb;
        part_first[p] = qb;
    }
    part_first[parts] = nqb;
}

void an_cpu_attention_forward(const an_ops *o, float *out, float *lse, const float *q, const float *k, const float *v,
                              const int32_t *seg_start, int B, int T, int nh, int nkv, int hd, void *work,
                              size_t work_bytes) {
    (void)o;
    if (B <= 0 || nh <= 0 || T <= 0) return; /* no query */
    dims d = {T, nh, nkv, hd};
    int group = nh / nkv;
    int nqb = (T + BQ - 1) / BQ;
    float scale = 1.0f / sqrtf((float)hd);
    size_t ld = panel_ld(T); /* a tile may start anywhere below T (at a sample start) */
    size_t per = fwd_floats(T, hd);
    float *base = NULL;
    int nt = an_cpu_scratch_threads(work, work_bytes, per, &base);
    /* eight tasks a thread at least, where the query blocks allow */
    enum { MAX_PARTS = 16 };
    int parts = (8 * (nt > 0 ? nt : 1) + B * nh - 1) / (B * nh);
    parts = parts > nqb ? nqb : parts > MAX_PARTS ? MAX_PARTS : parts;
    int part_first[MAX_PARTS + 1];
    causal_parts(nqb, parts, part_first);
    int ntasks = B * nh * parts;
#pragma omp parallel num_threads(nt > 0 ? nt : 1)
    {
        float *kT = nt > 0 ? base + (size_t)omp_get_thread_num() * per : NULL;
        float *S = kT ? kT + r16((size_t)hd * ld) : NULL;
        float *acc = S ? S + r16(BQ * BK) : NULL;
        int ok = kT != NULL;
#pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < ntasks; task++) {
            int part = task % parts, h = task / parts % nh, b = task / parts / nh, kh = h / group;
            int qb0 = part_first[part], qb1 = part_first[part + 1];
            const int32_t *seg = seg_start + (size_t)b * T;
            float *lse_bh = lse + ((size_t)b * nh + h) * T;
            int t_end = qb1 * BQ < T ? qb1 * BQ : T; /* this task's queries see keys below t_end only */
            if (!ok) { /* no workspace: no way to report from a void op, so make it visible */
                for (int t = qb0 * BQ; t < t_end; t++) {
                    float *o = out + q_index(d, b, t, h);
                    for (int dd = 0; dd < hd; dd++) o[dd] = NAN;
                    lse_bh[t] = NAN;
                }
                continue;
            }
            if (qb0 == qb1) continue;
            pack_transposed(kT, ld, k, d, b, kh, t_end);
            for (int qb = qb0; qb < qb1; qb++) {
                int t0 = qb * BQ, nq = T - t0 < BQ ? T - t0 : BQ;
                const float *q0 = q + q_index(d, b, t0, h);
                size_t q_stride = (size_t)nh * hd, kv_stride = (size_t)nkv * hd;
                float m[BQ];
                vnf l[BQ];
                for (int i = 0; i < nq; i++) {
                    m[i] = -INFINITY;
                    l[i] = (vnf){0};
                    for (int dd = 0; dd < hd; dd++) acc[(size_t)i * hd + dd] = 0.0f;
                }
                int lo, hi;
                key_span(seg, t0, nq, &lo, &hi);
                for (int k0 = lo; k0 <= hi; k0 += BK) {
                    int nk = hi + 1 - k0 < BK ? hi + 1 - k0 : BK;
                    memset(S, 0, sizeof(float) * BQ * BK);
                    small_gemm(nq, BK, hd, q0, (int)q_stride, 1, kT + k0, ld, S, BK); /* S = Q K^T */
                    for (int i = 0; i < nq; i++) {
                        int t = t0 + i;
                        /* visible keys of this query inside the tile: [jlo, jhi) */
                        int jlo = seg[t] - k0, jhi = t + 1 - k0;
                        jlo = jlo < 0 ? 0 : jlo;
                        jhi = jhi > nk ? nk : jhi;
                        float *s = S + i * BK;
                        if (jlo >= jhi) { /* sees nothing here: a zero row of P, state unchanged */
                            memset(s, 0, sizeof(float) * BK);
                            continue;
                        }
                        float corr = online_softmax_row(s, jlo, jhi, scale, &m[i], &l[i]);
                        float *a = acc + (size_t)i * hd;
                        if (corr != 1.0f)
                            for (int dd = 0; dd < hd; dd++) a[dd] *= corr;
                    }
                    /* acc += P V (rows that saw nothing in this tile have P = 0) */
                    small_gemm(nq, hd, nk, S, BK, 1, v + kv_index(d, b, k0, kh), kv_stride, acc, hd);
                }
                for (int i = 0; i < nq; i++) {
                    float *o = out + q_index(d, b, t0 + i, h);
                    float li = HSUMN(l[i]), inv = 1.0f / li;
                    for (int dd = 0; dd < hd; dd++) o[dd] = acc[(size_t)i * hd + dd] * inv;
                    lse_bh[t0 + i] = m[i] + logf(li);
                }
            }
        }
    }
}

void an_cpu_attention_backward(const an_ops *o, float *dq, float *dk, float *dv, const float *dout, const float *q,
                               const float *k, const float *v, const float *out, const float *lse,
                               const int32_t *seg_start, int B, int T, int nh, int nkv, int hd, void *work,
                               size_t work_bytes) {
    (void)o;
    dims d = {T, nh, nkv, hd};
    int group = nh / nkv;
    int nqb = (T + BQ - 1) / BQ;
    float scale = 1.0f / sqrtf((float)hd);
    int ntasks = B * nkv;
    size_t ld = panel_ld(T); /* a tile may start anywhere below T (at a sample start) */
    size_t per = bwd_floats(T, hd);
    float *base = NULL;
    int nt = an_cpu_scratch_threads(work, work_bytes, per, &base);
#pragma omp parallel num_threads(nt > 0 ? nt : 1)
    {
        float *kT = nt > 0 ? base + (size_t)omp_get_thread_num() * per : NULL;
        float *vT = kT ? kT + r16((size_t)hd * ld) : NULL;
        float *P = vT ? vT + r16((size_t)hd * ld) : NULL;
        float *dS = P ? P + r16(BQ * BK) : NULL;
        float *dqacc = dS ? dS + r16(BQ * BK) : NULL;
        int ok = kT != NULL;
#pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < ntasks; task++) {
            int b = task / nkv, kh = task % nkv;
            const int32_t *seg = seg_start + (size_t)b * T;
            if (!ok) { /* no workspace: poison this task's gradients rather than leave them silently short */
                for (int t = 0; t < T; t++)
                    for (int dd = 0; dd < hd; dd++) {
                        if (dk) dk[kv_index(d, b, t, kh) + dd] = NAN;
                        if (dv) dv[kv_index(d, b, t, kh) + dd] = NAN;
                    }
                continue;
            }
            pack_transposed(kT, ld, k, d, b, kh, T);
            pack_transposed(vT, ld, v, d, b, kh, T);
            for (int h = kh * group; h < (kh + 1) * group; h++) {
                const float *lse_bh = lse + ((size_t)b * nh + h) * T;
                for (int qb = 0; qb < nqb; qb++) {
                    int t0 = qb * BQ, nq = T - t0 < BQ ? T - t0 : BQ;
                    const float *q0 = q + q_index(d, b, t0, h), *do0 = dout + q_index(d, b, t0, h);
                    size_t q_stride = (size_t)nh * hd, kv_stride = (size_t)nkv * hd;
                    float Di[BQ];
                    for (int i = 0; i < nq; i++)
                        Di[i] = an_dot(do0 + i * q_stride, out + q_index(d, b, t0 + i, h), hd);
                    memset(dqacc, 0, sizeof(float) * (size_t)nq * hd);
                    int lo, hi;
                    key_span(seg, t0, nq, &lo, &hi);
                    for (int k0 = lo; k0 <= hi; k0 += BK) {
                        int nk = hi + 1 - k0 < BK ? hi + 1 - k0 : BK;
                        const float *k_tile = k + kv_index(d, b, k0, kh);
                        memset(P, 0, sizeof(float) * BQ * BK);
                        memset(dS, 0, sizeof(float) * BQ * BK);
                        small_gemm(nq, BK, hd, q0, (int)q_stride, 1, kT + k0, ld, P, BK);   /* S = Q K^T */
                        small_gemm(nq, BK, hd, do0, (int)q_stride, 1, vT + k0, ld, dS, BK); /* dP = dO V^T */
                        for (int i = 0; i < nq; i++) {
                            int t = t0 + i;
                            int jlo = seg[t] - k0, jhi = t + 1 - k0;
                            jhi = jhi > nk ? nk : jhi; /* keys past nk are zero padding, never visible */
                            float *p = P + i * BK, *ds = dS + i * BK;
                            softmax_grad_row(p, ds, jlo, jhi, scale, lse_bh[t], Di[i]);
                        }
                        small_gemm(nq, hd, nk, dS, BK, 1, k_tile, kv_stride, dqacc, hd); /* dQ += dS K */
                        if (dv) /* dV += P^T dO */
                            small_gemm(nk, hd, nq, P, 1, BK, do0, q_stride, dv + kv_index(d, b, k0, kh), kv_stride);
                        if (dk) /* dK += dS^T Q */
                            small_gemm(nk, hd, nq, dS, 1, BK, q0, q_stride, dk + kv_index(d, b, k0, kh), kv_stride);
                    }
                    if (dq)
                        for (int i = 0; i < nq; i++) {
                            float *dst = dq + q_index(d, b, t0 + i, h);
                            for (int dd = 0; dd < hd; dd++) dst[dd] += dqacc[(size_t)i * hd + dd];
                        }
                }
            }
        }
    }
}
