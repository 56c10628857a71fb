/* Decoding ops (forward only): the matrix-vector product of a decode step and attention of one new
 * query per row over a KV cache.
 *
 * A decode step multiplies each weight matrix by a handful of vectors, so it is bound by reading the
 * weights: the kernel walks the weight rows once, four at a time, and dots each with every input row
 * while it is in cache. Sums keep 8 independent lanes (vectorised without -ffast-math, same bits for
 * any thread count). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu.h"

/* Eight floats as one vector (GCC/Clang vector extension: AVX with -march=native, two SSE halves
 * elsewhere). Written out because the compilers turn the 4-row x 8-lane array form into shuffles.
 * Helpers are macros: passing a 32-byte vector to a function changes the ABI without AVX. */
typedef float v8f __attribute__((vector_size(32)));

#define LOAD8(dst, p) memcpy(&(dst), (p), sizeof(v8f))
/* a * b + c, fused where the CPU has FMA (-std=c11 turns off gcc's automatic contraction) */
#if defined(__FMA__)
#include <immintrin.h>
#define FMA8(a, b, c) ((v8f)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
#else
#define FMA8(a, b, c) ((a) * (b) + (c))
#endif
#define HSUM8(a) ((((a)[0] + (a)[4]) + ((a)[1] + (a)[5])) + (((a)[2] + (a)[6]) + ((a)[3] + (a)[7])))

/* out[0..3] = rows w0..w3 dotted with x */
static void dot4(const float *restrict w0, const float *restrict w1, const float *restrict w2,
                 const float *restrict w3, const float *restrict x, int C, float out[4]) {
    v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    int i = 0;
    for (; i + 8 <= C; i += 8) {
        v8f xv, u0, u1, u2, u3;
        LOAD8(xv, x + i), LOAD8(u0, w0 + i), LOAD8(u1, w1 + i), LOAD8(u2, w2 + i), LOAD8(u3, w3 + i);
        a0 = FMA8(u0, xv, a0), a1 = FMA8(u1, xv, a1), a2 = FMA8(u2, xv, a2), a3 = FMA8(u3, xv, a3);
    }
    float s[4] = {HSUM8(a0), HSUM8(a1), HSUM8(a2), HSUM8(a3)};
    const float *w[4] = {w0, w1, w2, w3};
    for (int r = 0; r < 4; r++) {
        for (int k = i; k < C; k++) s[r] += w[r][k] * x[k];
        out[r] = s[r];
    }
}

/* out[0..3] and out[4..7] = rows w0..w3 dotted with x and with y: each weight load feeds two inputs */
static void dot4x2(const float *restrict w0, const float *restrict w1, const float *restrict w2,
                   const float *restrict w3, const float *restrict x, const float *restrict y, int C, float out[8]) {
    v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
    int i = 0;
    for (; i + 8 <= C; i += 8) {
        v8f xv, yv, u0, u1, u2, u3;
        LOAD8(xv, x + i), LOAD8(yv, y + i);
        LOAD8(u0, w0 + i), LOAD8(u1, w1 + i), LOAD8(u2, w2 + i), LOAD8(u3, w3 + i);
        a0 = FMA8(u0, xv, a0), a1 = FMA8(u1, xv, a1), a2 = FMA8(u2, xv, a2), a3 = FMA8(u3, xv, a3);
        b0 = FMA8(u0, yv, b0), b1 = FMA8(u1, yv, b1), b2 = FMA8(u2, yv, b2), b3 = FMA8(u3, yv, b3);
    }
    float s[8] = {HSUM8(a0), HSUM8(a1), HSUM8(a2), HSUM8(a3), HSUM8(b0), HSUM8(b1), HSUM8(b2), HSUM8(b3)};
    const float *w[4] = {w0, w1, w2, w3};
    for (int r = 0; r < 4; r++)
        for (int k = i; k < C; k++) {
            s[r] += w[r][k] * x[k];
            s[4 + r] += w[r][k] * y[k];
        }
    for (int r = 0; r < 8; r++) out[r] = s[r];
}

void an_cpu_matvec_forward(float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC) {
    int nblk = (OC + 3) / 4;
    /* small products (tiny models) are not worth waking the thread team */
#pragma omp parallel for schedule(static) if ((size_t)OC * C >= 65536)
    for (int blk = 0; blk < nblk; blk++) {
        int j0 = blk * 4;
        if (j0 + 4 <= OC) {
            const float *w0 = w + (size_t)j0 * C, *w1 = w0 + C, *w2 = w1 + C, *w3 = w2 + C;
            int n = 0;
            for (; n + 2 <= N; n += 2) {
                float r[8];
                dot4x2(w0, w1, w2, w3, inp + (size_t)n * C, inp + (size_t)(n + 1) * C, C, r);
                float *o = out + (size_t)n * OC + j0, *o2 = o + OC;
                for (int k = 0; k < 4; k++) {
                    o[k] = r[k] + (bias ? bias[j0 + k] : 0.0f);
                    o2[k] = r[4 + k] + (bias ? bias[j0 + k] : 0.0f);
                }
            }
            for (; n < N; n++) {
                float r[4];
                dot4(w0, w1, w2, w3, inp + (size_t)n * C, C, r);
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
