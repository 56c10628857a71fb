/* Causal grouped-query attention on the GPU, tiled with an online softmax (never a T x T matrix), and
 * its backward without atomics: warp-per-row kernels on the CUDA cores, in float32 (cuda-bf16's forward
 * takes the tensor cores where the head allows, attention_mma.cu).
 *
 * Layout (kernels/ops.h): q[B, T, nh, hd], k and v [B, T, nkv, hd], lse[B, nh, T]; query head h reads
 * kv head h / (nh / nkv); token t of row b sees keys seg_start[b, t] .. t (packed samples).
 *
 * A warp owns one row (a query, or in the backward's second kernel a key), and its 32 lanes form
 * groups (kernels/cuda/lane_groups.h: 4 groups of 8 lanes for a 64-wide head), each taking a different
 * key (or query) of a tile at a time; a dot product is a butterfly of log2(LG) shuffles within the
 * group (the first version gave each key the whole warp and 5 shuffles, a shuffle a key being what
 * bounded it). Each group keeps its own running state (max, sum and output accumulator, or gradient
 * sums) over its keys; the row's groups are merged at the end.
 * The block's 8 warps share tiles of keys and values (or queries and output gradients) staged in
 * shared memory, row stride S = hd rounded up to 32, plus LG (the G groups' reads of one column then
 * fall in different banks).
 *  - forward, block = 8 consecutive queries of one (b, h): for each key tile that any of them sees,
 *    the online softmax (running max m, sum l, output accumulator rescaled when m grows); lse = m + log l.
 *  - backward dq, same blocks: p = exp(s - lse) recomputed per key, D = dout . out,
 *    ds = p (dout . v - D) scale, dq += sum ds k.
 *  - backward dk, dv, block = 8 consecutive keys of one (b, kv head): for every query head of the group
 *    and every query tile from the block's first key on, dv += p dout and dk += ds q.
 * Every output has one owner that sums in a fixed order: the same bits run to run. */
#include <math.h>

#include "kernels/cuda/cuda.h"
#include "kernels/cuda/lane_groups.h"

#define HD_MAX 256
#define WARPS 8 /* rows per block */
#define TILE 16 /* keys (forward, dq) or queries (dk, dv) per shared-memory tile; a multiple of 32 / 2 */

struct dims {
    int T, nh, nkv, hd;
};
__device__ static inline size_t q_index(dims d, int b, int t, int h) { return (((size_t)b * d.T + t) * d.nh + h) * d.hd; }
__device__ static inline size_t kv_index(dims d, int b, int t, int h) { return (((size_t)b * d.T + t) * d.nkv + h) * d.hd; }

/* the tiles' row stride */
static int tile_stride(int hd) { return (hd + 31) / 32 * 32 + an_cuda_group_lanes(hd); }

/* tile rows [r0, r0 + TILE) of x (rows r of the (b, head) at index(r)) into sh[TILE][S], zeros past
 * r_end; all threads of the block take part */
__device__ static void stage(float *sh, int S, const float *x, dims d, int b, int head, int kv, int r0, int r_end) {
    for (int i = threadIdx.x; i < TILE * d.hd; i += blockDim.x) {
        int j = i / d.hd, dd = i % d.hd, r = r0 + j;
        sh[j * S + dd] = r < r_end ? x[(kv ? kv_index(d, b, r, head) : q_index(d, b, r, head)) + dd] : 0.0f;
    }
}

template <int LG>
__global__ static void attn_fwd(float *out, float *lse, const float *q, const float *k, const float *v, const int32_t *seg_start,
                                dims d, float scale, int S) {
    const int G = 32 / LG;
    extern __shared__ float sh[];
    float *ks = sh, *vs = sh + TILE * S;
    int b = blockIdx.z, h = blockIdx.y, kh = h / (d.nh / d.nkv);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / LG, u = lane % LG;
    int q0 = blockIdx.x * WARPS, t = q0 + warp;
    const int32_t *seg = seg_start + (size_t)b * d.T;
    int last = q0 + WARPS - 1 < d.T - 1 ? q0 + WARPS - 1 : d.T - 1;
    int lo = seg[q0];
    for (int i = q0 + 1; i <= last; i++) lo = seg[i] < lo ? seg[i] : lo;
    lo = lo < 0 ? 0 : lo;
    int active = t < d.T;
    float qr[AN_CUDA_DL], acc[AN_CUDA_DL], m = -INFINITY, l = 0.0f;
    int my_lo = active ? seg[t] : 0;
    if (active) an_cuda_load_part<LG>(qr, q + q_index(d, b, t, h), d.hd, u);
#pragma unroll
    for (int i = 0; i < AN_CUDA_DL; i++) acc[i] = 0.0f;
    for (int k0 = lo; k0 <= last; k0 += TILE) {
        __syncthreads(); /* the previous tile is no longer read */
        stage(ks, S, k, d, b, kh, 1, k0, last + 1);
        stage(vs, S, v, d, b, kh, 1, k0, last + 1);
        __syncthreads();
        if (!active) continue; /* the whole warp: t is the warp's */
        for (int j = g; j < TILE; j += G) {
            int s = k0 + j;
            float score = an_cuda_group_dot<LG>(qr, ks + j * S, d.hd, u) * scale; /* every group, seen or not */
            if (s < my_lo || s > t) continue;
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
            for (int i = 0; i < AN_CUDA_DL; i++) {
                int dd = u + LG * i;
                acc[i] = acc[i] * corr + (dd < d.hd ? p * vs[j * S + dd] : 0.0f);
            }
        }
    }
    if (!active) return;
    an_cuda_merge_softmax_groups<LG>(m, l, acc);
    if (g != 0) return;
    float inv = 1.0f / l;
    float *o = out + q_index(d, b, t, h);
#pragma unroll
    for (int i = 0; i < AN_CUDA_DL; i++) {
        int dd = u + LG * i;
        if (dd < d.hd) o[dd] = acc[i] * inv;
    }
    if (u == 0) lse[((size_t)b * d.nh + h) * d.T + t] = m + logf(l);
}

template <int LG>
__global__ static void attn_bwd_dq(float *dq, const float *dout, const float *q, const float *k, const float *v, const float *out,
                                   const float *lse, const int32_t *seg_start, dims d, float scale, int S) {
    const int G = 32 / LG;
    extern __shared__ float sh[];
    float *ks = sh, *vs = sh + TILE * S;
    int b = blockIdx.z, h = blockIdx.y, kh = h / (d.nh / d.nkv);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / LG, u = lane % LG;
    int q0 = blockIdx.x * WARPS, t = q0 + warp;
    const int32_t *seg = seg_start + (size_t)b * d.T;
    int last = q0 + WARPS - 1 < d.T - 1 ? q0 + WARPS - 1 : d.T - 1;
    int lo = seg[q0];
    for (int i = q0 + 1; i <= last; i++) lo = seg[i] < lo ? seg[i] : lo;
    lo = lo < 0 ? 0 : lo;
    int active = t < d.T;
    float qr[AN_CUDA_DL], dor[AN_CUDA_DL], acc[AN_CUDA_DL], D = 0.0f, L = 0.0f;
    int my_lo = active ? seg[t] : 0;
    if (active) {
        an_cuda_load_part<LG>(qr, q + q_index(d, b, t, h), d.hd, u);
        an_cuda_load_part<LG>(dor, dout + q_index(d, b, t, h), d.hd, u);
        D = an_cuda_group_dot<LG>(dor, out + q_index(d, b, t, h), d.hd, u); /* each group the whole row: the same bits */
        L = lse[((size_t)b * d.nh + h) * d.T + t];
    }
#pragma unroll
    for (int i = 0; i < AN_CUDA_DL; i++) acc[i] = 0.0f;
    for (int k0 = lo; k0 <= last; k0 += TILE) {
        __syncthreads();
        stage(ks, S, k, d, b, kh, 1, k0, last + 1);
        stage(vs, S, v, d, b, kh, 1, k0, last + 1);
        __syncthreads();
        if (!active) continue;
        for (int j = g; j < TILE; j += G) {
            int s = k0 + j;
            float sc = an_cuda_group_dot<LG>(qr, ks + j * S, d.hd, u), dp = an_cuda_group_dot<LG>(dor, vs + j * S, d.hd, u);
            if (s < my_lo || s > t) continue;
            float p = expf(sc * scale - L);
            float ds = p * (dp - D) * scale;
#pragma unroll
            for (int i = 0; i < AN_CUDA_DL; i++) {
                int dd = u + LG * i;
                if (dd < d.hd) acc[i] += ds * ks[j * S + dd];
            }
        }
    }
    if (!active) return;
#pragma unroll
    for (int i = 0; i < AN_CUDA_DL; i++) acc[i] = an_cuda_across_groups<LG>(acc[i]);
    if (g != 0) return;
    float *gq = dq + q_index(d, b, t, h);
#pragma unroll
    for (int i = 0; i < AN_CUDA_DL; i++) {
        int dd = u + LG * i;
        if (dd < d.hd) gq[dd] += acc[i];
    }
}

template <int LG>
__global__ static void attn_bwd_dkdv(float *dk, float *dv, const float *dout, const float *q, const float *k, const float *v,
                                     const float *out, const float *lse, const int32_t *seg_start, dims d, float scale, int S) {
    const int G = 32 / LG;
    extern __shared__ float sh[];
    float *qs = sh, *ds_ = sh + TILE * S, *Ls = ds_ + TILE * S, *Ds = Ls + TILE;
    int b = blockIdx.z, kh = blockIdx.y, group = d.nh / d.nkv;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / LG, u = lane % LG;
    int s0 = blockIdx.x * WARPS, s = s0 + warp;
    const int32_t *seg = seg_start + (size_t)b * d.T;
    int active = s < d.T;
    float kr[AN_CUDA_DL], vr[AN_CUDA_DL], dka[AN_CUDA_DL], dva[AN_CUDA_DL];
    if (active) {
        an_cuda_load_part<LG>(kr, k + kv_index(d, b, s, kh), d.hd, u);
        an_cuda_load_part<LG>(vr, v + kv_index(d, b, s, kh), d.hd, u);
    }
#pragma unroll
    for (int i = 0; i < AN_CUDA_DL; i++) dka[i] = dva[i] = 0.0f;
    for (int h = kh * group; h < (kh + 1) * group; h++)
        for (int t0 = s0; t0 < d.T; t0 += TILE) {
            __syncthreads();
            stage(qs, S, q, d, b, h, 0, t0, d.T);
            stage(ds_, S, dout, d, b, h, 0, t0, d.T);
            /* lse and D = dout . out of the tile's queries, two per warp */
            for (int j = warp; j < TILE; j += WARPS) {
                int t = t0 + j;
                float Dj = 0.0f;
                if (t < d.T) {
                    const float *dr = dout + q_index(d, b, t, h), *orow = out + q_index(d, b, t, h);
                    float part = 0.0f;
                    for (int dd = lane; dd < d.hd; dd += 32) part += dr[dd] * orow[dd];
                    for (int mask = 16; mask > 0; mask /= 2) part += __shfl_xor_sync(0xffffffffu, part, mask);
                    Dj = part;
                }
                if (lane == 0) {
                    Ds[j] = Dj;
                    Ls[j] = t < d.T ? lse[((size_t)b * d.nh + h) * d.T + t] : 0.0f;
                }
            }
            __syncthreads();
            if (!active) continue;
            for (int j = g; j < TILE; j += G) {
                int t = t0 + j;
                const float *qrow = qs + j * S, *drow = ds_ + j * S;
                float sc = an_cuda_group_dot<LG>(kr, qrow, d.hd, u), dp = an_cuda_group_dot<LG>(vr, drow, d.hd, u);
                if (t >= d.T || s > t || s < seg[t]) continue; /* query t does not see key s */
                float p = expf(sc * scale - Ls[j]);
                float dsc = p * (dp - Ds[j]) * scale;
#pragma unroll
                for (int i = 0; i < AN_CUDA_DL; i++) {
                    int dd = u + LG * i;
                    if (dd < d.hd) {
                        dva[i] += p * drow[dd];
                        dka[i] += dsc * qrow[dd];
                    }
                }
            }
        }
    if (!active) return;
#pragma unroll
    for (int i = 0; i < AN_CUDA_DL; i++) dka[i] = an_cuda_across_groups<LG>(dka[i]), dva[i] = an_cuda_across_groups<LG>(dva[i]);
    if (g != 0) return;
#pragma unroll
    for (int i = 0; i < AN_CUDA_DL; i++) {
        int dd = u + LG * i;
        if (dd >= d.hd) continue;
        if (dk) dk[kv_index(d, b, s, kh) + dd] += dka[i];
        if (dv) dv[kv_index(d, b, s, kh) + dd] += dva[i];
    }
}

size_t an_cuda_attention_work_bytes(const an_ops *o, int T, int nh, int hd) {
    (void)o, (void)T, (void)nh, (void)hd;
    return 0; /* the kernels keep their tiles in shared memory and registers */
}

typedef void (*fwd_kernel)(float *, float *, const float *, const float *, const float *, const int32_t *, dims, float, int);
typedef void (*dq_kernel)(float *, const float *, const float *, const float *, const float *, const float *, const float *,
                          const int32_t *, dims, float, int);
typedef void (*dkdv_kernel)(float *, float *, const float *, const float *, const float *, const float *, const float *,
                            const float *, const int32_t *, dims, float, int);

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
    if (an_cuda_attention_forward_mma(o, out, lse, q, k, v, seg_start, B, T, nh, nkv, hd) == 0) return; /* bf16 */
    dims d = {T, nh, nkv, hd};
    dim3 grid((T + WARPS - 1) / WARPS, nh, B);
    int S = tile_stride(hd);
    size_t shm = 2 * TILE * (size_t)S * sizeof(float);
    fwd_kernel kernel = an_cuda_pick_lanes(hd, AN_CUDA_LANE_INSTANCES(attn_fwd));
    kernel<<<grid, WARPS * 32, shm, an_cuda(o)->stream>>>(out, lse, q, k, v, seg_start, d, 1.0f / sqrtf((float)hd), S);
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
    if (an_cuda_attention_backward_mma(o, dq, dk, dv, dout, q, k, v, out, lse, seg_start, B, T, nh, nkv, hd) == 0)
        return; /* bf16 */
    dims d = {T, nh, nkv, hd};
    float scale = 1.0f / sqrtf((float)hd);
    cudaStream_t st = an_cuda(o)->stream;
    int S = tile_stride(hd);
    if (dq) {
        dim3 grid((T + WARPS - 1) / WARPS, nh, B);
        dq_kernel kernel = an_cuda_pick_lanes(hd, AN_CUDA_LANE_INSTANCES(attn_bwd_dq));
        kernel<<<grid, WARPS * 32, 2 * TILE * (size_t)S * sizeof(float), st>>>(dq, dout, q, k, v, out, lse, seg_start, d,
                                                                                scale, S);
        AN_CUDA_LAUNCHED("attention_backward (dq)");
    }
    if (dk || dv) {
        dim3 grid((T + WARPS - 1) / WARPS, nkv, B);
        size_t shm = (2 * TILE * (size_t)S + 2 * TILE) * sizeof(float);
        dkdv_kernel kernel = an_cuda_pick_lanes(hd, AN_CUDA_LANE_INSTANCES(attn_bwd_dkdv));
        kernel<<<grid, WARPS * 32, shm, st>>>(dk, dv, dout, q, k, v, out, lse, seg_start, d, scale, S);
        AN_CUDA_LAUNCHED("attention_backward (dk, dv)");
    }
}
