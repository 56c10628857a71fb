/* Attention of one new query per row over a KV cache (forward only), for decoding. The matrix-vector
 * product of a decode step is in cpu_matvec.c. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "kernels/cpu.h"

size_t an_cpu_decode_work_floats(int max_T, int nh) {
    /* scores of up to nh heads over max_T positions, then each head's max and sum */
    return ((size_t)nh * (size_t)(max_T > 0 ? max_T : 1) + 2 * (size_t)nh + 15) / 16 * 16;
}

void an_cpu_attention_decode_forward(const an_ops *o, float *out, const float *q, const float *k_cache, const float *v_cache,
                                     const int32_t *slot, const int32_t *len, int B, int max_T, int nh, int nkv,
                                     int hd, void *work, size_t work_bytes) {
    (void)o;
    int group = nh / nkv;
    float scale = 1.0f / sqrtf((float)hd);
    /* A task is a run of heads of one sequence, walked position by position: the keys and values of a
     * position are nkv * hd contiguous floats, so the cache streams through in order (one head at a
     * time would read 256 bytes and jump a whole position ahead, 8 times over). Split the heads only
     * as far as it takes to give every thread two tasks; each head's sums run in the same order
     * however the heads are split. */
    size_t per = an_cpu_decode_work_floats(max_T, nh);
    float *base = NULL;
    int threads = an_cpu_scratch_threads(work, work_bytes, per, &base);
    int ok = threads > 0;
    threads = ok ? threads : 1;
    int split = (2 * threads + B - 1) / B;
    split = split < 1 ? 1 : split > nh ? nh : split;
    int hpt = (nh + split - 1) / split, ntasks = B * split;
    long long flops = 0;
    for (int b = 0; b < B; b++) flops += (long long)len[b] * nh * hd;
    size_t stride = (size_t)nkv * hd;
#pragma omp parallel num_threads(threads) if (flops >= 32768)
    {
        /* scores of hpt heads over max_T positions, then each head's max and sum */
        float *s = ok ? base + (size_t)omp_get_thread_num() * per : NULL;
#pragma omp for schedule(static)
        for (int task = 0; task < ntasks; task++) {
            int b = task / split, h0 = (task % split) * hpt, h1 = h0 + hpt < nh ? h0 + hpt : nh;
            int row = slot ? slot[b] : b, L = len[b];
            if (h0 >= h1) continue;
            if (!s || L <= 0 || L > max_T) { /* no workspace or a bad length: make it visible */
                for (int h = h0; h < h1; h++)
                    for (int d = 0; d < hd; d++) out[((size_t)b * nh + h) * hd + d] = NAN;
                continue;
            }
            float *mx = s + (size_t)hpt * max_T, *sum = mx + hpt;
            const float *kr = k_cache + (size_t)row * max_T * stride, *vr = v_cache + (size_t)row * max_T * stride;
            for (int h = h0; h < h1; h++) mx[h - h0] = -INFINITY, sum[h - h0] = 0.0f;
            for (int t = 0; t < L; t++)
                for (int h = h0; h < h1; h++) {
                    float *sh = s + (size_t)(h - h0) * max_T;
                    sh[t] = an_dot(q + ((size_t)b * nh + h) * hd, kr + t * stride + (size_t)(h / group) * hd, hd) * scale;
                    mx[h - h0] = an_maxf(mx[h - h0], sh[t]);
                }
            for (int h = h0; h < h1; h++) {
                float *sh = s + (size_t)(h - h0) * max_T, m = mx[h - h0], z = 0.0f;
                for (int t = 0; t < L; t++) {
                    sh[t] = an_expf(sh[t] - m);
                    z += sh[t];
                }
                sum[h - h0] = z;
                float *o = out + ((size_t)b * nh + h) * hd;
                for (int d = 0; d < hd; d++) o[d] = 0.0f;
            }
            for (int t = 0; t < L; t++)
                for (int h = h0; h < h1; h++) {
                    const float *vt = vr + t * stride + (size_t)(h / group) * hd;
                    float p = s[(size_t)(h - h0) * max_T + t], *o = out + ((size_t)b * nh + h) * hd;
                    for (int d = 0; d < hd; d++) o[d] += p * vt[d];
                }
            for (int h = h0; h < h1; h++) {
                float inv = 1.0f / sum[h - h0], *o = out + ((size_t)b * nh + h) * hd;
                for (int d = 0; d < hd; d++) o[d] *= inv;
            }
        }
    }
}
