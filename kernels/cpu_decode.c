/* Attention of one new query per row over a KV cache (forward only), for decoding. The matrix-vector
 * product of a decode step is in cpu_matvec.c. */
#include <math.h>
#include <stdlib.h>

#include "kernels/cpu.h"

void an_cpu_attention_decode_forward(float *out, const float *q, const float *k_cache, const float *v_cache,
                                     const int32_t *slot, const int32_t *len, int B, int max_T, int nh, int nkv,
                                     int hd) {
    int group = nh / nkv;
    float scale = 1.0f / sqrtf((float)hd);
    int ntasks = B * nh;
    long long work = 0;
    for (int b = 0; b < B; b++) work += (long long)len[b] * nh * hd;
#pragma omp parallel if (work >= 32768)
    {
        float *s = malloc(sizeof(float) * (size_t)(max_T > 0 ? max_T : 1));
#pragma omp for schedule(static)
        for (int task = 0; task < ntasks; task++) {
            int b = task / nh, h = task % nh, kh = h / group;
            int row = slot ? slot[b] : b, L = len[b];
            float *o = out + ((size_t)b * nh + h) * hd;
            if (!s || L <= 0 || L > max_T) { /* out of memory or a bad length: make it visible */
                for (int d = 0; d < hd; d++) o[d] = NAN;
                continue;
            }
            const float *qh = q + ((size_t)b * nh + h) * hd;
            const float *kr = k_cache + (size_t)row * max_T * nkv * hd + (size_t)kh * hd;
            const float *vr = v_cache + (size_t)row * max_T * nkv * hd + (size_t)kh * hd;
            size_t stride = (size_t)nkv * hd;
            float mx = -INFINITY;
            for (int t = 0; t < L; t++) {
                s[t] = an_dot(qh, kr + t * stride, hd) * scale;
                mx = an_maxf(mx, s[t]);
            }
            float sum = 0.0f;
            for (int t = 0; t < L; t++) {
                s[t] = an_expf(s[t] - mx);
                sum += s[t];
            }
            for (int d = 0; d < hd; d++) o[d] = 0.0f;
            for (int t = 0; t < L; t++) {
                const float *vt = vr + t * stride;
                float p = s[t];
                for (int d = 0; d < hd; d++) o[d] += p * vt[d];
            }
            float inv = 1.0f / sum;
            for (int d = 0; d < hd; d++) o[d] *= inv;
        }
        free(s);
    }
}
