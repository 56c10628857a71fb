/* Decoding ops (forward only): the matrix-vector product of a decode step and attention of one new
 * query per row over a KV cache.
 *
 * A decode step multiplies each weight matrix by a handful of vectors, so it is bound by reading the
 * weights: the kernel walks the weight rows once, four at a time, and dots each with every input row
 * while it is in cache. Sums keep 8 independent lanes (vectorised without -ffast-math, same bits for
 * any thread count). */
#include <math.h>
#include <stdlib.h>

#include "kernels/cpu.h"

/* out[n][0..3] = rows w0..w3 dotted with x */
static void dot4(const float *restrict w0, const float *restrict w1, const float *restrict w2,
                 const float *restrict w3, const float *restrict x, int C, float out[4]) {
    float a0[8] = {0}, a1[8] = {0}, a2[8] = {0}, a3[8] = {0};
    int i = 0;
    for (; i + 8 <= C; i += 8)
        for (int l = 0; l < 8; l++) {
            float xv = x[i + l];
            a0[l] += w0[i + l] * xv;
            a1[l] += w1[i + l] * xv;
            a2[l] += w2[i + l] * xv;
            a3[l] += w3[i + l] * xv;
        }
    float *acc[4] = {a0, a1, a2, a3};
    const float *w[4] = {w0, w1, w2, w3};
    for (int r = 0; r < 4; r++) {
        float *a = acc[r];
        float s = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
        for (int k = i; k < C; k++) s += w[r][k] * x[k];
        out[r] = s;
    }
}

void an_cpu_matvec_forward(float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC) {
    int nblk = (OC + 3) / 4;
    /* small products (tiny models) are not worth waking the thread team */
#pragma omp parallel for schedule(static) if ((size_t)OC * C >= 65536)
    for (int blk = 0; blk < nblk; blk++) {
        int j0 = blk * 4;
        if (j0 + 4 <= OC) {
            const float *w0 = w + (size_t)j0 * C;
            for (int n = 0; n < N; n++) {
                float r[4];
                dot4(w0, w0 + C, w0 + 2 * (size_t)C, w0 + 3 * (size_t)C, inp + (size_t)n * C, C, r);
                float *o = out + (size_t)n * OC + j0;
                for (int k = 0; k < 4; k++) o[k] = r[k] + (bias ? bias[j0 + k] : 0.0f);
            }
        } else {
            for (int j = j0; j < OC; j++)
                for (int n = 0; n < N; n++)
                    out[(size_t)n * OC + j] = an_dot(w + (size_t)j * C, inp + (size_t)n * C, C) + (bias ? bias[j] : 0.0f);
        }
    }
}

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
