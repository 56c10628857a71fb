/* Attention of one new query per row over a KV cache on the GPU (decoding, forward only): a warp per
 * (row, head) walks the row's cached keys 0 .. len - 1 with an online softmax, lanes holding the
 * dimensions (as kernels/cuda/attention.cu). Query row b reads cache row slot[b] (or b). A length
 * outside 1 .. max_T gives NaN, as on the CPU. */
#include <math.h>

#include "kernels/cuda/cuda.h"

#define HD_MAX 256
#define NR (HD_MAX / 32)

__device__ static inline float warp_sum(float v) {
    for (int mask = 16; mask > 0; mask /= 2) v += __shfl_xor_sync(0xffffffffu, v, mask);
    return v;
}

__global__ static void decode_k(float *out, const float *q, const float *k_cache, const float *v_cache, const int32_t *slot,
                                const int32_t *len, int max_T, int nh, int nkv, int hd, float scale) {
    int b = blockIdx.y, h = blockIdx.x, lane = threadIdx.x, kh = h / (nh / nkv);
    int row = slot ? slot[b] : b, L = len[b];
    float *o = out + ((size_t)b * nh + h) * hd;
    if (L <= 0 || L > max_T) {
        for (int dd = lane; dd < hd; dd += 32) o[dd] = __int_as_float(0x7fc00000);
        return;
    }
    const float *qr = q + ((size_t)b * nh + h) * hd;
    float qv[NR], acc[NR], m = -INFINITY, l = 0.0f;
#pragma unroll
    for (int i = 0; i < NR; i++) {
        int dd = lane + 32 * i;
        qv[i] = dd < hd ? qr[dd] : 0.0f;
        acc[i] = 0.0f;
    }
    size_t stride = (size_t)nkv * hd;
    const float *kr = k_cache + (size_t)row * max_T * stride + (size_t)kh * hd;
    const float *vr = v_cache + (size_t)row * max_T * stride + (size_t)kh * hd;
    for (int t = 0; t < L; t++) {
        float part = 0.0f;
#pragma unroll
        for (int i = 0; i < NR; i++) {
            int dd = lane + 32 * i;
            if (dd < hd) part += qv[i] * kr[t * stride + dd];
        }
        float score = warp_sum(part) * scale, p, corr;
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
            acc[i] = acc[i] * corr + (dd < hd ? p * vr[t * stride + dd] : 0.0f);
        }
    }
    float inv = 1.0f / l;
#pragma unroll
    for (int i = 0; i < NR; i++) {
        int dd = lane + 32 * i;
        if (dd < hd) o[dd] = acc[i] * inv;
    }
}

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
    decode_k<<<grid, 32, 0, an_cuda(o)->stream>>>(out, q, k_cache, v_cache, slot, len, max_T, nh, nkv, hd, 1.0f / sqrtf((float)hd));
    AN_CUDA_LAUNCHED("attention_decode_forward");
}
