/* Causal grouped-query attention on the GPU, tiled with an online softmax (never a T x T matrix), and
 * its backward without atomics. Correctness first: simple warp-per-row kernels, not tensor cores.
 *
 * Layout (kernels/ops.h): q[B, T, nh, hd], k and v [B, T, nkv, hd], lse[B, nh, T]; query head h reads
 * kv head h / (nh / nkv); token t of row b sees keys seg_start[b, t] .. t (packed samples).
 *
 * A warp owns one row (a query, or in the backward's second kernel a key); lane l holds dimensions
 * l, l + 32, ... (at most HD_MAX / 32 = 8 of them) in registers. Dot products are a lane sum and a
 * butterfly of shuffles, which leaves the same bits in every lane. The block's 8 warps share tiles of
 * keys and values (or queries and output gradients) staged in shared memory.
 *  - forward, block = 8 consecutive queries of one (b, h): for each key tile that any of them sees,
 *    the online softmax (running max m, sum l, output accumulator rescaled when m grows); lse = m + log l.
 *  - backward dq, same blocks: p = exp(s - lse) recomputed per key, D = dout . out,
 *    ds = p (dout . v - D) scale, dq += sum ds k.
 *  - backward dk, dv, block = 8 consecutive keys of one (b, kv head): for every query head of the group
 *    and every query tile from the block's first key on, dv += p dout and dk += ds q.
 * Every output has one owner that sums in a fixed order: the same bits run to run. */
#include <math.h>

#include "kernels/cuda/cuda.h"

#define HD_MAX 256
#define WARPS 8          /* rows per block */
#define TILE 16          /* keys (forward, dq) or queries (dk, dv) per shared-memory tile */

__device__ static inline float warp_sum(float v) {
    for (int mask = 16; mask > 0; mask /= 2) v += __shfl_xor_sync(0xffffffffu, v, mask);
    return v;
}

/* The kernels are templates on NR, the registers a lane holds of a row (hd <= 32 NR): a loop over a
 * constant NR unrolls into just the dimensions the head has, where one NR for every hd (HD_MAX / 32 = 8,
 * predicated off past hd) cost a 64-wide head four times the instructions per key it needs. */

/* r[i] = row[lane + 32 i] (0 past hd) */
template <int NR>
__device__ static inline void load_row(float (&r)[NR], const float *row, int hd, int lane) {
#pragma unroll
    for (int i = 0; i < NR; i++) {
        int d = lane + 32 * i;
        r[i] = d < hd ? row[d] : 0.0f;
    }
}

template <int NR>
__device__ static inline float dot_row(const float (&r)[NR], const float *row, int hd, int lane) {
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < NR; i++) {
        int d = lane + 32 * i;
        if (d < hd) s += r[i] * row[d];
    }
    return warp_sum(s);
}

struct dims {
    int T, nh, nkv, hd;
};
__device__ static inline size_t q_index(dims d, int b, int t, int h) { return (((size_t)b * d.T + t) * d.nh + h) * d.hd; }
__device__ static inline size_t kv_index(dims d, int b, int t, int h) { return (((size_t)b * d.T + t) * d.nkv + h) * d.hd; }

/* tile rows [r0, r0 + TILE) of x (rows r of the (b, head) at index(r)) into sh[TILE][hd], zeros past
 * r_end; all threads of the block take part */
__device__ static void stage(float *sh, const float *x, dims d, int b, int head, int kv, int r0, int r_end) {
    for (int i = threadIdx.x; i < TILE * d.hd; i += blockDim.x) {
        int j = i / d.hd, dd = i % d.hd, r = r0 + j;
        sh[i] = r < r_end ? x[(kv ? kv_index(d, b, r, head) : q_index(d, b, r, head)) + dd] : 0.0f;
    }
}

template <int NR>
__global__ static void attn_fwd(float *out, float *lse, const float *q, const float *k, const float *v, const int32_t *seg_start,
                                dims d, float scale) {
    extern __shared__ float sh[];
    float *ks = sh, *vs = sh + TILE * d.hd;
    int b = blockIdx.z, h = blockIdx.y, kh = h / (d.nh / d.nkv);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int q0 = blockIdx.x * WARPS, t = q0 + warp;
    const int32_t *seg = seg_start + (size_t)b * d.T;
    int last = q0 + WARPS - 1 < d.T - 1 ? q0 + WARPS - 1 : d.T - 1;
    int lo = seg[q0];
    for (int i = q0 + 1; i <= last; i++) lo = seg[i] < lo ? seg[i] : lo;
    lo = lo < 0 ? 0 : lo;
    int active = t < d.T;
    float qr[NR], acc[NR], m = -INFINITY, l = 0.0f;
    int my_lo = active ? seg[t] : 0;
    if (active) load_row(qr, q + q_index(d, b, t, h), d.hd, lane);
#pragma unroll
    for (int i = 0; i < NR; i++) acc[i] = 0.0f;
    for (int k0 = lo; k0 <= last; k0 += TILE) {
        __syncthreads(); /* the previous tile is no longer read */
        stage(ks, k, d, b, kh, 1, k0, last + 1);
        stage(vs, v, d, b, kh, 1, k0, last + 1);
        __syncthreads();
        if (!active) continue;
        for (int j = 0; j < TILE; j++) {
            int s = k0 + j;
            if (s < my_lo || s > t) continue; /* the same for the whole warp: no divergence in the shuffles */
            float score = dot_row(qr, ks + j * d.hd, d.hd, lane) * scale;
            float p, corr;
            if (score > m) {
                corr = m == -INFINITY ? 0.0f : expf(m - score);
                p = 1.0f;
                m = score;
            } else {
                corr = 1.0f;
                p = expf(score - m);
            }
            l = l * corr + p;
#pragma unroll
            for (int i = 0; i < NR; i++) {
                int dd = lane + 32 * i;
                acc[i] = acc[i] * corr + (dd < d.hd ? p * vs[j * d.hd + dd] : 0.0f);
            }
        }
    }
    if (!active) return;
    float inv = 1.0f / l;
    float *o = out + q_index(d, b, t, h);
#pragma unroll
    for (int i = 0; i < NR; i++) {
        int dd = lane + 32 * i;
        if (dd < d.hd) o[dd] = acc[i] * inv;
    }
    if (lane == 0) lse[((size_t)b * d.nh + h) * d.T + t] = m + logf(l);
}

template <int NR>
__global__ static void attn_bwd_dq(float *dq, const float *dout, const float *q, const float *k, const float *v, const float *out,
                                   const float *lse, const int32_t *seg_start, dims d, float scale) {
    extern __shared__ float sh[];
    float *ks = sh, *vs = sh + TILE * d.hd;
    int b = blockIdx.z, h = blockIdx.y, kh = h / (d.nh / d.nkv);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int q0 = blockIdx.x * WARPS, t = q0 + warp;
    const int32_t *seg = seg_start + (size_t)b * d.T;
    int last = q0 + WARPS - 1 < d.T - 1 ? q0 + WARPS - 1 : d.T - 1;
    int lo = seg[q0];
    for (int i = q0 + 1; i <= last; i++) lo = seg[i] < lo ? seg[i] : lo;
    lo = lo < 0 ? 0 : lo;
    int active = t < d.T;
    float qr[NR], dor[NR], acc[NR], D = 0.0f, L = 0.0f;
    int my_lo = active ? seg[t] : 0;
    if (active) {
        load_row(qr, q + q_index(d, b, t, h), d.hd, lane);
        load_row(dor, dout + q_index(d, b, t, h), d.hd, lane);
        D = dot_row(dor, out + q_index(d, b, t, h), d.hd, lane);
        L = lse[((size_t)b * d.nh + h) * d.T + t];
    }
#pragma unroll
    for (int i = 0; i < NR; i++) acc[i] = 0.0f;
    for (int k0 = lo; k0 <= last; k0 += TILE) {
        __syncthreads();
        stage(ks, k, d, b, kh, 1, k0, last + 1);
        stage(vs, v, d, b, kh, 1, k0, last + 1);
        __syncthreads();
        if (!active) continue;
        for (int j = 0; j < TILE; j++) {
            int s = k0 + j;
            if (s < my_lo || s > t) continue;
            float p = expf(dot_row(qr, ks + j * d.hd, d.hd, lane) * scale - L);
            float ds = p * (dot_row(dor, vs + j * d.hd, d.hd, lane) - D) * scale;
#pragma unroll
            for (int i = 0; i < NR; i++) {
                int dd = lane + 32 * i;
                if (dd < d.hd) acc[i] += ds * ks[j * d.hd + dd];
            }
        }
    }
    if (!active) return;
    float *g = dq + q_index(d, b, t, h);
#pragma unroll
    for (int i = 0; i < NR; i++) {
        int dd = lane + 32 * i;
        if (dd < d.hd) g[dd] += acc[i];
    }
}

template <int NR>
__global__ static void attn_bwd_dkdv(float *dk, float *dv, const float *dout, const float *q, const float *k, const float *v,
                                     const float *out, const float *lse, const int32_t *seg_start, dims d, float scale) {
    extern __shared__ float sh[];
    float *qs = sh, *ds_ = sh + TILE * d.hd, *Ls = ds_ + TILE * d.hd, *Ds = Ls + TILE;
    int b = blockIdx.z, kh = blockIdx.y, group = d.nh / d.nkv;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int s0 = blockIdx.x * WARPS, s = s0 + warp;
    const int32_t *seg = seg_start + (size_t)b * d.T;
    int active = s < d.T;
    float kr[NR], vr[NR], dka[NR], dva[NR];
    if (active) {
        load_row(kr, k + kv_index(d, b, s, kh), d.hd, lane);
        load_row(vr, v + kv_index(d, b, s, kh), d.hd, lane);
    }
#pragma unroll
    for (int i = 0; i < NR; i++) dka[i] = dva[i] = 0.0f;
    for (int h = kh * group; h < (kh + 1) * group; h++)
        for (int t0 = s0; t0 < d.T; t0 += TILE) {
            __syncthreads();
            stage(qs, q, d, b, h, 0, t0, d.T);
            stage(ds_, dout, d, b, h, 0, t0, d.T);
            /* lse and D = dout . out of the tile's queries, two per warp */
            for (int j = warp; j < TILE; j += WARPS) {
                int t = t0 + j;
                float Dj = 0.0f;
                if (t < d.T) {
                    const float *dr = dout + q_index(d, b, t, h), *orow = out + q_index(d, b, t, h);
                    float part = 0.0f;
                    for (int dd = lane; dd < d.hd; dd += 32) part += dr[dd] * orow[dd];
                    Dj = warp_sum(part);
                }
                if (lane == 0) {
                    Ds[j] = Dj;
                    Ls[j] = t < d.T ? lse[((size_t)b * d.nh + h) * d.T + t] : 0.0f;
                }
            }
            __syncthreads();
            if (!active) continue;
            for (int j = 0; j < TILE; j++) {
                int t = t0 + j;
                if (t >= d.T || s > t || s < seg[t]) continue; /* query t does not see key s */
                const float *qrow = qs + j * d.hd, *drow = ds_ + j * d.hd;
                float p = expf(dot_row(kr, qrow, d.hd, lane) * scale - Ls[j]);
                float dsc = p * (dot_row(vr, drow, d.hd, lane) - Ds[j]) * scale;
#pragma unroll
                for (int i = 0; i < NR; i++) {
                    int dd = lane + 32 * i;
                    if (dd < d.hd) {
                        dva[i] += p * drow[dd];
                        dka[i] += dsc * qrow[dd];
                    }
                }
            }
        }
    if (!active) return;
#pragma unroll
    for (int i = 0; i < NR; i++) {
        int dd = lane + 32 * i;
        if (dd >= d.hd) continue;
        if (dk) dk[kv_index(d, b, s, kh) + dd] += dka[i];
        if (dv) dv[kv_index(d, b, s, kh) + dd] += dva[i];
    }
}

size_t an_cuda_attention_work_bytes(const an_ops *o, int T, int nh, int hd) {
    (void)o, (void)T, (void)nh, (void)hd;
    return 0; /* the kernels keep their tiles in shared memory and registers */
}

typedef void (*fwd_kernel)(float *, float *, const float *, const float *, const float *, const int32_t *, dims, float);
typedef void (*dq_kernel)(float *, const float *, const float *, const float *, const float *, const float *, const float *,
                          const int32_t *, dims, float);
typedef void (*dkdv_kernel)(float *, float *, const float *, const float *, const float *, const float *, const float *,
                            const float *, const int32_t *, dims, float);

/* the instance for hd: the fewest registers a lane that hold a row (launched through a pointer, which
 * CUDA allows and the host emulation's launch rewriting reads as a name) */
template <typename K> static K pick(int hd, K nr1, K nr2, K nr3, K nr4, K nr_max) {
    switch ((hd + 31) / 32) {
    case 1: return nr1;
    case 2: return nr2;
    case 3: return nr3;
    case 4: return nr4;
    default: return nr_max;
    }
}

static int shape_ok(int B, int T, int nh, int nkv, int hd) {
    return B > 0 && T > 0 && nkv > 0 && nh % nkv == 0 && hd > 0 && hd <= HD_MAX;
}

void an_cuda_attention_forward(const an_ops *o, float *out, float *lse, const float *q, const float *k, const float *v,
                               const int32_t *seg_start, int B, int T, int nh, int nkv, int hd, void *work, size_t work_bytes) {
    (void)work, (void)work_bytes;
    if (!shape_ok(B, T, nh, nkv, hd)) { /* a head wider than HD_MAX: visible, not wrong */
        if (B > 0 && T > 0 && nh > 0 && hd > 0) {
            an_cuda_fill_nan(o, out, (size_t)B * T * nh * hd);
            an_cuda_fill_nan(o, lse, (size_t)B * nh * T);
        }
        return;
    }
    dims d = {T, nh, nkv, hd};
    dim3 grid((T + WARPS - 1) / WARPS, nh, B);
    size_t shm = 2 * TILE * (size_t)hd * sizeof(float);
    fwd_kernel kernel = pick(hd, attn_fwd<1>, attn_fwd<2>, attn_fwd<3>, attn_fwd<4>, attn_fwd<HD_MAX / 32>);
    kernel<<<grid, WARPS * 32, shm, an_cuda(o)->stream>>>(out, lse, q, k, v, seg_start, d, 1.0f / sqrtf((float)hd));
    AN_CUDA_LAUNCHED("attention_forward");
}

void an_cuda_attention_backward(const an_ops *o, float *dq, float *dk, float *dv, const float *dout, const float *q,
                                const float *k, const float *v, const float *out, const float *lse, const int32_t *seg_start,
                                int B, int T, int nh, int nkv, int hd, void *work, size_t work_bytes) {
    (void)work, (void)work_bytes;
    if (!shape_ok(B, T, nh, nkv, hd)) {
        if (B > 0 && T > 0 && nkv > 0 && hd > 0) {
            if (dk) an_cuda_fill_nan(o, dk, (size_t)B * T * nkv * hd);
            if (dv) an_cuda_fill_nan(o, dv, (size_t)B * T * nkv * hd);
        }
        return;
    }
    dims d = {T, nh, nkv, hd};
    float scale = 1.0f / sqrtf((float)hd);
    cudaStream_t st = an_cuda(o)->stream;
    if (dq) {
        dim3 grid((T + WARPS - 1) / WARPS, nh, B);
        dq_kernel kernel = pick(hd, attn_bwd_dq<1>, attn_bwd_dq<2>, attn_bwd_dq<3>, attn_bwd_dq<4>, attn_bwd_dq<HD_MAX / 32>);
        kernel<<<grid, WARPS * 32, 2 * TILE * (size_t)hd * sizeof(float), st>>>(dq, dout, q, k, v, out, lse, seg_start, d,
                                                                                 scale);
        AN_CUDA_LAUNCHED("attention_backward (dq)");
    }
    if (dk || dv) {
        dim3 grid((T + WARPS - 1) / WARPS, nkv, B);
        size_t shm = (2 * TILE * (size_t)hd + 2 * TILE) * sizeof(float);
        dkdv_kernel kernel = pick(hd, attn_bwd_dkdv<1>, attn_bwd_dkdv<2>, attn_bwd_dkdv<3>, attn_bwd_dkdv<4>,
                                  attn_bwd_dkdv<HD_MAX / 32>);
        kernel<<<grid, WARPS * 32, shm, st>>>(dk, dv, dout, q, k, v, out, lse, seg_start, d, scale);
        AN_CUDA_LAUNCHED("attention_backward (dk, dv)");
    }
}
