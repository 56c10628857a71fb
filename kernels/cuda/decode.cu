/* Attention of one new query per row over a KV cache on the GPU (decoding, forward only): a warp per
 * (row, head) walks the row's cached keys 0 .. len - 1 with an online softmax, its lanes in groups that
 * take different keys (kernels/cuda/lane_groups.h, as attention.cu). Query row b reads cache row slot[b] (or b). A length
 * outside 1 .. max_T gives NaN, as on the CPU. */
#include <math.h>

#include "kernels/cuda/cuda.h"
#include "kernels/cuda/lane_groups.h"

#define HD_MAX 256

/* a warp per (row, head): its lane groups (lane_groups.h) take keys t = g, g + G, ..., each group its
 * own online softmax, merged at the end */
template <int LG>
__global__ static void decode_k(float *out, const float *q, const float *k_cache, const float *v_cache, const int32_t *slot,
                                const int32_t *len, int max_T, int nh, int nkv, int hd, float scale) {
    const int G = 32 / LG;
    int b = blockIdx.y, h = blockIdx.x, lane = threadIdx.x, kh = h / (nh / nkv), g = lane / LG, u = lane % LG;
    int row = slot ? slot[b] : b, L = len[b];
    float *o = out + ((size_t)b * nh + h) * hd;
    if (L <= 0 || L > max_T) {
        for (int dd = lane; dd < hd; dd += 32) o[dd] = __int_as_float(0x7fc00000);
        return;
    }
    float qv[AN_CUDA_DL], acc[AN_CUDA_DL], m = -INFINITY, l = 0.0f;
    an_cuda_load_part<LG>(qv, q + ((size_t)b * nh + h) * hd, hd, u);
#pragma unroll
    for (int i = 0; i < AN_CUDA_DL; i++) acc[i] = 0.0f;
    size_t stride = (size_t)nkv * hd;
    const float *kr = k_cache + (size_t)row * max_T * stride + (size_t)kh * hd;
    const float *vr = v_cache + (size_t)row * max_T * stride + (size_t)kh * hd;
    for (int t0 = 0; t0 < L; t0 += G) {
        int t = t0 + g, seen = t < L;
        /* every group takes part in the shuffles; one past the length reads key 0 and drops it */
        float score = an_cuda_group_dot<LG>(qv, kr + (seen ? (size_t)t : 0) * stride, hd, u) * scale, p, corr;
        if (!seen) continue;
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
            acc[i] = acc[i] * corr + (dd < hd ? p * vr[t * stride + dd] : 0.0f);
        }
    }
    an_cuda_merge_softmax_groups<LG>(m, l, acc);
    if (g != 0) return;
    float inv = 1.0f / l;
#pragma unroll
    for (int i = 0; i < AN_CUDA_DL; i++) {
        int dd = u + LG * i;
        if (dd < hd) o[dd] = acc[i] * inv;
    }
}

typedef void (*decode_kernel)(float *, const float *, const float *, const float *, const int32_t *, const int32_t *, int, int,
                              int, int, float);

void an_cuda_attention_decode_forward(const an_ops *o, float *out, const float *q, const float *k_cache, const float *v_cache,
                                      const int32_t *slot, const int32_t *len, int B, int max_T, int nh, int nkv, int hd,
                                      void *work, size_t work_bytes) {
    (void)work, (void)work_bytes;
    if (B <= 0 || nh <= 0 || hd <= 0) return;
    if (nkv <= 0 || nh % nkv != 0 || hd > HD_MAX) {
        an_cuda_fill_nan(o, out, (size_t)B * nh * hd);
        return;
    }
    dim3 grid(nh, B);
    decode_kernel kernel = an_cuda_pick_lanes(hd, AN_CUDA_LANE_INSTANCES(decode_k));
    kernel<<<grid, 32, 0, an_cuda(o)->stream>>>(out, q, k_cache, v_cache, slot, len, max_T, nh, nkv, hd, 1.0f / sqrtf((float)hd));
    AN_CUDA_LAUNCHED("attention_decode_forward");
}
