/* The attention forward on the tensor cores, for cuda-bf16 (what PyTorch's scaled_dot_product_attention
 * does under bf16 autocast): q, k, v rounded to bf16, the products Q K^T and P V by the warp matrix
 * functions (nvcuda::wmma, 16 x 16 x 16, float32 accumulators), the online softmax in float32 between
 * them; the backward likewise (below). attention.cu's kernels (float32 on the CUDA cores) run
 * everything else: the float32 mode, and heads that are not a multiple of 16 or wider than 128.
 *
 * A block is MMA_WARPS warps and 16 queries a warp, all of one (b, h); it walks the key tiles of KT
 * keys that any of its queries sees. Per tile, each warp: S = Q K^T (16 x KT) into shared memory; its
 * lanes, two a query (half the tile's keys each), scale and mask the scores (keys seg_start[b, t] .. t),
 * update the row's running max m and sum l, rescale the row's output accumulator O and write the
 * probabilities P rounded to bf16 (l sums the rounded values, the ones that multiply V); then
 * O += P V (16 x hd), O kept in shared memory between tiles. At the end out = O / l, lse = m + log l.
 * Shared memory for hd = 128 is 46 KiB, under the 48 KiB a block may take without opting in. Every
 * sum has a fixed order (a tile's products in the tensor cores' own), so a run repeats its bits. */
#include <math.h>

#include <cuda_bf16.h>
#include <mma.h>

#include "kernels/cuda/cuda.h"

using namespace nvcuda;

#define MMA_WARPS 2
#define QT (16 * MMA_WARPS) /* queries per block */
#define KT 32               /* keys per tile */
#define MMA_HD_MAX 128

typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc_frag;

/* the pieces of the block's shared memory, in bytes from its start (each a multiple of 32: wmma's
 * pointers must be 256-bit aligned) */
struct mma_layout {
    size_t q, k, v, s, p, o, lo, total;
};

static mma_layout layout_of(int hd) {
    mma_layout l;
    size_t off = 0;
    l.q = off, off += (size_t)QT * hd * sizeof(uint16_t);
    l.k = off, off += (size_t)KT * hd * sizeof(uint16_t);
    l.v = off, off += (size_t)KT * hd * sizeof(uint16_t);
    l.s = off, off += (size_t)QT * KT * sizeof(float);
    l.p = off, off += (size_t)QT * KT * sizeof(uint16_t);
    l.o = off, off += (size_t)QT * hd * sizeof(float);
    l.lo = off, off += 32; /* the first key any query of the block sees */
    l.total = off;
    return l;
}

__device__ static inline uint16_t to_bf16(float x) { return an_cuda_round_bf16(__float_as_uint(x)); }

/* rows r0 .. r0 + n - 1 (of T) of x[B, T, heads, hd] at (b, head), as bf16, zero past T */
__device__ static void load_rows(uint16_t *dst, const float *x, int b, int head, int heads, int T, int hd, int r0, int n) {
    for (int e = threadIdx.x; e < n * hd; e += blockDim.x) {
        int r = r0 + e / hd, c = e % hd;
        dst[e] = to_bf16(r < T ? x[(((size_t)b * T + r) * heads + head) * hd + c] : 0.0f);
    }
}

__global__ static void attn_fwd_mma(float *out, float *lse, const float *q, const float *k, const float *v,
                                    const int32_t *seg_start, int T, int nh, int nkv, int hd, float scale, mma_layout L) {
    extern __shared__ float smem[];
    char *base = (char *)smem;
    uint16_t *Qs = (uint16_t *)(base + L.q), *Ks = (uint16_t *)(base + L.k), *Vs = (uint16_t *)(base + L.v);
    int *lo_s = (int *)(base + L.lo);
    int b = blockIdx.z, h = blockIdx.y, kvh = h / (nh / nkv), q0 = blockIdx.x * QT;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, row = lane / 2, half = lane % 2;
    float *Sw = (float *)(base + L.s) + (size_t)warp * 16 * KT, *Ow = (float *)(base + L.o) + (size_t)warp * 16 * hd;
    uint16_t *Pw = (uint16_t *)(base + L.p) + (size_t)warp * 16 * KT;
    int t = q0 + warp * 16 + row, valid = t < T, seg = valid ? seg_start[(size_t)b * T + t] : 0;

    load_rows(Qs, q, b, h, nh, T, hd, q0, QT);
    for (int e = lane; e < 16 * hd; e += 32) Ow[e] = 0.0f;
    if (threadIdx.x == 0) *lo_s = q0;
    __syncthreads();
    for (int i = 0; i < QT; i++) /* the block's first key: the least segment start of its queries */
        if (threadIdx.x == 0 && q0 + i < T && seg_start[(size_t)b * T + q0 + i] < *lo_s) *lo_s = seg_start[(size_t)b * T + q0 + i];
    __syncthreads();
    int k_first = *lo_s / KT * KT, k_last = (q0 + QT < T ? q0 + QT : T) - 1;
    float m = -INFINITY, l = 0.0f;
    for (int k0 = k_first; k0 <= k_last; k0 += KT) {
        __syncthreads(); /* the last tile's K and V are read */
        load_rows(Ks, k, b, kvh, nkv, T, hd, k0, KT);
        load_rows(Vs, v, b, kvh, nkv, T, hd, k0, KT);
        __syncthreads();
        for (int j = 0; j < KT / 16; j++) { /* S[:, 16 j ..] = Q K[16 j ..]^T */
            acc_frag acc;
            wmma::fill_fragment(acc, 0.0f);
            for (int kk = 0; kk < hd; kk += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> bt;
                wmma::load_matrix_sync(a, (const __nv_bfloat16 *)(Qs + (size_t)warp * 16 * hd + kk), hd);
                wmma::load_matrix_sync(bt, (const __nv_bfloat16 *)(Ks + (size_t)j * 16 * hd + kk), hd);
                wmma::mma_sync(acc, a, bt, acc);
            }
            wmma::store_matrix_sync(Sw + j * 16, acc, KT, wmma::mem_row_major);
        }
        __syncwarp();
        /* this lane's query, keys k0 + 16 half .. + 15 */
        float s[16], mx = -INFINITY;
        for (int c = 0; c < 16; c++) {
            int key = k0 + half * 16 + c;
            s[c] = valid && key >= seg && key <= t ? Sw[row * KT + half * 16 + c] * scale : -INFINITY;
            mx = fmaxf(mx, s[c]);
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        float m_new = fmaxf(m, mx), sum = 0.0f;
        float alpha = m_new == -INFINITY ? 1.0f : expf(m - m_new); /* nothing seen yet: O and l are 0 */
        for (int c = 0; c < 16; c++) {
            uint16_t p = to_bf16(m_new == -INFINITY ? 0.0f : expf(s[c] - m_new));
            Pw[row * KT + half * 16 + c] = p;
            sum += an_cuda_widen_bf16(p);
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        l = l * alpha + sum;
        m = m_new;
        for (int c = half * (hd / 2); c < (half + 1) * (hd / 2); c++) Ow[row * hd + c] *= alpha;
        __syncwarp();
        for (int dd = 0; dd < hd; dd += 16) { /* O[:, dd ..] += P V[:, dd ..] */
            acc_frag acc;
            wmma::load_matrix_sync(acc, Ow + dd, hd, wmma::mem_row_major);
            for (int j = 0; j < KT / 16; j++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> bv;
                wmma::load_matrix_sync(a, (const __nv_bfloat16 *)(Pw + j * 16), KT);
                wmma::load_matrix_sync(bv, (const __nv_bfloat16 *)(Vs + (size_t)j * 16 * hd + dd), hd);
                wmma::mma_sync(acc, a, bv, acc);
            }
            wmma::store_matrix_sync(Ow + dd, acc, hd, wmma::mem_row_major);
        }
        __syncwarp();
    }
    if (!valid) return;
    for (int c = half * (hd / 2); c < (half + 1) * (hd / 2); c++)
        out[(((size_t)b * T + t) * nh + h) * hd + c] = Ow[row * hd + c] / l;
    if (half == 0) lse[((size_t)b * nh + h) * T + t] = m + logf(l);
}

/* ---- backward: a warp a block, 16 rows, tiles of 16 (shared memory for hd = 128: 27 KiB for dq, 35 KiB
 * for dk, dv). Like attention.cu's backward, p = exp(s scale - lse) is recomputed from the forward's
 * lse, D = dout . out, ds = p (dout . v - D) scale; here every product is a wmma product of bf16 inputs:
 *  - dq kernel, 16 queries of (b, h): over the key tiles they see, S = Q K^T and dP = dO V^T, then
 *    dS in bf16 and dQ += dS K (dQ in shared memory, added to dq at the end);
 *  - dk / dv kernel, 16 keys of (b, kv head): over every query head of its group and the query tiles from
 *    its first key on, S^T = K Q^T and dP^T = V dO^T, then P^T and dS^T in bf16, dV += P^T dO and
 *    dK += dS^T Q. Each output has one owner: no atomics, a fixed order. ---- */
#define BT 16 /* rows of a backward block, and its tiles */

struct bwd_layout {
    size_t a, b, c, d, s, dp, p, ds, acc1, acc2, rows, total;
};

/* a, b: the block's own rows (Q, dO or K, V); c, d: the tile's (K, V or Q, dO); s, dp: the products;
 * p, ds: their bf16 results; acc1, acc2: the gradients (dQ; or dK, dV); rows: the tile's lse and D */
static bwd_layout bwd_layout_of(int hd, int two_accs) {
    bwd_layout l;
    size_t off = 0, tile = (size_t)BT * hd * sizeof(uint16_t), sq = (size_t)BT * BT;
    l.a = off, off += tile;
    l.b = off, off += tile;
    l.c = off, off += tile;
    l.d = off, off += tile;
    l.s = off, off += sq * sizeof(float);
    l.dp = off, off += sq * sizeof(float);
    l.p = off, off += sq * sizeof(uint16_t);
    l.ds = off, off += sq * sizeof(uint16_t);
    l.acc1 = off, off += (size_t)BT * hd * sizeof(float);
    l.acc2 = off, off += two_accs ? (size_t)BT * hd * sizeof(float) : 0;
    l.rows = off, off += 2 * BT * sizeof(float);
    l.total = off;
    return l;
}

typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a_frag;

/* out[16 x 16] = X Y^T over hd, X and Y row-major [16, hd] bf16 (a query or key tile each) */
__device__ static void product_xyt(float *out, const uint16_t *X, const uint16_t *Y, int hd) {
    acc_frag acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int kk = 0; kk < hd; kk += 16) {
        a_frag a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> yt;
        wmma::load_matrix_sync(a, (const __nv_bfloat16 *)(X + kk), hd);
        wmma::load_matrix_sync(yt, (const __nv_bfloat16 *)(Y + kk), hd);
        wmma::mma_sync(acc, a, yt, acc);
    }
    wmma::store_matrix_sync(out, acc, BT, wmma::mem_row_major);
}

/* acc[16, hd] += A Y, A [16 x 16] bf16, Y row-major [16, hd] bf16 */
__device__ static void accumulate_ay(float *acc_s, const uint16_t *A, const uint16_t *Y, int hd) {
    for (int dd = 0; dd < hd; dd += 16) {
        acc_frag acc;
        a_frag a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> y;
        wmma::load_matrix_sync(acc, acc_s + dd, hd, wmma::mem_row_major);
        wmma::load_matrix_sync(a, (const __nv_bfloat16 *)A, BT);
        wmma::load_matrix_sync(y, (const __nv_bfloat16 *)(Y + dd), hd);
        wmma::mma_sync(acc, a, y, acc);
        wmma::store_matrix_sync(acc_s + dd, acc, hd, wmma::mem_row_major);
    }
}

/* D = dout . out of query t (float32), its two lanes each half the row and then each other's half */
__device__ static float dout_dot_out(const float *dout, const float *out, size_t at, int hd, int half) {
    float part = 0.0f;
    for (int c = half * (hd / 2); c < (half + 1) * (hd / 2); c++) part += dout[at + c] * out[at + c];
    return part + __shfl_xor_sync(0xffffffffu, part, 1);
}

__global__ static void attn_bwd_dq_mma(float *dq, const float *dout, const float *q, const float *k, const float *v,
                                       const float *out, const float *lse, const int32_t *seg_start, int T, int nh,
                                       int nkv, int hd, float scale, bwd_layout L) {
    extern __shared__ float smem[];
    char *base = (char *)smem;
    uint16_t *Qs = (uint16_t *)(base + L.a), *dOs = (uint16_t *)(base + L.b), *Ks = (uint16_t *)(base + L.c),
             *Vs = (uint16_t *)(base + L.d), *dSs = (uint16_t *)(base + L.ds);
    float *Ss = (float *)(base + L.s), *dPs = (float *)(base + L.dp), *dQs = (float *)(base + L.acc1);
    int b = blockIdx.z, h = blockIdx.y, kvh = h / (nh / nkv), t0 = blockIdx.x * BT;
    int lane = threadIdx.x, row = lane / 2, half = lane % 2, t = t0 + row, valid = t < T;
    int seg = valid ? seg_start[(size_t)b * T + t] : t0;
    /* rows past T read row T - 1 (every lane takes the shuffles) and are not written */
    size_t at = (((size_t)b * T + (valid ? t : T - 1)) * nh + h) * hd;
    load_rows(Qs, q, b, h, nh, T, hd, t0, BT);
    load_rows(dOs, dout, b, h, nh, T, hd, t0, BT);
    for (int e = lane; e < BT * hd; e += 32) dQs[e] = 0.0f;
    __syncthreads(); /* the rows each lane reads at the end are zeroed by others */
    float D = dout_dot_out(dout, out, at, hd, half), lse_t = valid ? lse[((size_t)b * nh + h) * T + t] : 0.0f;
    int lo = seg; /* the first key any of the 16 queries sees */
    for (int m = 16; m > 0; m /= 2) {
        int other = (int)__shfl_xor_sync(0xffffffffu, (float)lo, m);
        lo = other < lo ? other : lo;
    }
    int k_last = (t0 + BT < T ? t0 + BT : T) - 1;
    for (int k0 = lo / BT * BT; k0 <= k_last; k0 += BT) {
        __syncthreads(); /* the last tile is read */
        load_rows(Ks, k, b, kvh, nkv, T, hd, k0, BT);
        load_rows(Vs, v, b, kvh, nkv, T, hd, k0, BT);
        __syncthreads();
        product_xyt(Ss, Qs, Ks, hd);
        product_xyt(dPs, dOs, Vs, hd);
        __syncwarp();
        for (int c = half * 8; c < half * 8 + 8; c++) {
            int key = k0 + c;
            float ds = 0.0f;
            if (valid && key >= seg && key <= t) ds = expf(Ss[row * BT + c] * scale - lse_t) * (dPs[row * BT + c] - D) * scale;
            dSs[row * BT + c] = to_bf16(ds);
        }
        __syncwarp();
        accumulate_ay(dQs, dSs, Ks, hd);
        __syncwarp();
    }
    if (!valid) return;
    for (int c = half * (hd / 2); c < (half + 1) * (hd / 2); c++) dq[at + c] += dQs[row * hd + c];
}

__global__ static void attn_bwd_dkdv_mma(float *dk, float *dv, const float *dout, const float *q, const float *k,
                                         const float *v, const float *out, const float *lse, const int32_t *seg_start,
                                         int T, int nh, int nkv, int hd, float scale, bwd_layout L) {
    extern __shared__ float smem[];
    char *base = (char *)smem;
    uint16_t *Ks = (uint16_t *)(base + L.a), *Vs = (uint16_t *)(base + L.b), *Qs = (uint16_t *)(base + L.c),
             *dOs = (uint16_t *)(base + L.d), *Pt = (uint16_t *)(base + L.p), *dSt = (uint16_t *)(base + L.ds);
    float *St = (float *)(base + L.s), *dPt = (float *)(base + L.dp), *dKs = (float *)(base + L.acc1),
          *dVs = (float *)(base + L.acc2), *Ls = (float *)(base + L.rows), *Dsh = Ls + BT;
    int b = blockIdx.z, kvh = blockIdx.y, group = nh / nkv, s0 = blockIdx.x * BT;
    int lane = threadIdx.x, row = lane / 2, half = lane % 2, s = s0 + row; /* this lane's key */
    const int32_t *seg = seg_start + (size_t)b * T;
    load_rows(Ks, k, b, kvh, nkv, T, hd, s0, BT);
    load_rows(Vs, v, b, kvh, nkv, T, hd, s0, BT);
    for (int e = lane; e < BT * hd; e += 32) dKs[e] = dVs[e] = 0.0f;
    __syncthreads();
    for (int h = kvh * group; h < (kvh + 1) * group; h++)
        for (int t0 = s0; t0 < T; t0 += BT) {
            __syncthreads(); /* the last tile is read */
            load_rows(Qs, q, b, h, nh, T, hd, t0, BT);
            load_rows(dOs, dout, b, h, nh, T, hd, t0, BT);
            int t = t0 + row; /* the tile's query whose lse and D this pair of lanes finds (past T: row T - 1's, unused) */
            float D = dout_dot_out(dout, out, (((size_t)b * T + (t < T ? t : T - 1)) * nh + h) * hd, hd, half);
            if (half == 0) Dsh[row] = D, Ls[row] = t < T ? lse[((size_t)b * nh + h) * T + t] : 0.0f;
            __syncthreads();
            product_xyt(St, Ks, Qs, hd);
            product_xyt(dPt, Vs, dOs, hd);
            __syncwarp();
            for (int c = half * 8; c < half * 8 + 8; c++) { /* key s, query t0 + c */
                int tq = t0 + c;
                float p = 0.0f, ds = 0.0f;
                if (s < T && tq < T && s <= tq && s >= seg[tq]) {
                    p = expf(St[row * BT + c] * scale - Ls[c]);
                    ds = p * (dPt[row * BT + c] - Dsh[c]) * scale;
                }
                Pt[row * BT + c] = to_bf16(p);
                dSt[row * BT + c] = to_bf16(ds);
            }
            __syncwarp();
            accumulate_ay(dVs, Pt, dOs, hd);
            accumulate_ay(dKs, dSt, Qs, hd);
            __syncwarp();
        }
    if (s >= T) return;
    size_t at = (((size_t)b * T + s) * nkv + kvh) * hd;
    for (int c = half * (hd / 2); c < (half + 1) * (hd / 2); c++) {
        if (dk) dk[at + c] += dKs[row * hd + c];
        if (dv) dv[at + c] += dVs[row * hd + c];
    }
}

/* 1 where these kernels run: cuda-bf16, a head of whole 16-wide tiles up to MMA_HD_MAX, a grid that fits */
static int applies(const an_cuda_ctx *c, int B, int T, int nh, int nkv, int hd) {
    return c->bf16 && hd % 16 == 0 && hd <= MMA_HD_MAX && B > 0 && T > 0 && nh > 0 && nkv > 0 && nh % nkv == 0 &&
           B <= 65535 && nh <= 65535;
}

int an_cuda_attention_backward_mma(const an_ops *o, float *dq, float *dk, float *dv, const float *dout, const float *q,
                                   const float *k, const float *v, const float *out, const float *lse,
                                   const int32_t *seg_start, int B, int T, int nh, int nkv, int hd) {
    an_cuda_ctx *c = an_cuda(o);
    if (!applies(c, B, T, nh, nkv, hd)) return -1;
    float scale = 1.0f / sqrtf((float)hd);
    if (dq) {
        bwd_layout L = bwd_layout_of(hd, 0);
        dim3 grid((T + BT - 1) / BT, nh, B);
        attn_bwd_dq_mma<<<grid, 32, L.total, c->stream>>>(dq, dout, q, k, v, out, lse, seg_start, T, nh, nkv, hd, scale, L);
        AN_CUDA_LAUNCHED("attention_backward (dq, tensor cores)");
    }
    if (dk || dv) {
        bwd_layout L = bwd_layout_of(hd, 1);
        dim3 grid((T + BT - 1) / BT, nkv, B);
        attn_bwd_dkdv_mma<<<grid, 32, L.total, c->stream>>>(dk, dv, dout, q, k, v, out, lse, seg_start, T, nh, nkv, hd,
                                                           scale, L);
        AN_CUDA_LAUNCHED("attention_backward (dk, dv, tensor cores)");
    }
    return 0;
}

int an_cuda_attention_forward_mma(const an_ops *o, float *out, float *lse, const float *q, const float *k, const float *v,
                                  const int32_t *seg_start, int B, int T, int nh, int nkv, int hd) {
    an_cuda_ctx *c = an_cuda(o);
    if (!applies(c, B, T, nh, nkv, hd)) return -1;
    mma_layout L = layout_of(hd);
    dim3 grid((T + QT - 1) / QT, nh, B);
    attn_fwd_mma<<<grid, MMA_WARPS * 32, L.total, c->stream>>>(out, lse, q, k, v, seg_start, T, nh, nkv, hd,
                                                               1.0f / sqrtf((float)hd), L);
    AN_CUDA_LAUNCHED("attention_forward (tensor cores)");
    return 0;
}
