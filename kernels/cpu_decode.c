/* Attention of one new query per row over a KV cache (forward only), for decoding. The matrix-vector
 * product of a decode step is in cpu_matvec.c. */
/* GCC under -std=c11 does not fuse a * b + c; the vector loops below are multiply-adds */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
#endif

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu.h"
#include "kernels/cpu_vec.h"

size_t an_cpu_decode_work_floats(int max_T, int nh) {
    /* scores of up to nh heads over max_T positions, then each head's max and sum */
    return ((size_t)nh * (size_t)(max_T > 0 ? max_T : 1) + 2 * (size_t)nh + 15) / 16 * 16;
}

/* The lane sums of four vectors, as the four lanes of one: halves added, then pairs of vectors
 * interleaved and added, so four positions' dot products share the shuffles one would take alone.
 * (The vectors by address: passed by value, their ABI would depend on the build's vector flags.) */
static inline v4f hsum4(const vnf *x) {
    vnf a = x[0], b = x[1], c = x[2], d = x[3];
#if AN_VL == 16
#define HALVES_(x) \
    (__builtin_shufflevector(x, x, 0, 1, 2, 3, 4, 5, 6, 7) + __builtin_shufflevector(x, x, 8, 9, 10, 11, 12, 13, 14, 15))
    v8f a8 = HALVES_(a), b8 = HALVES_(b), c8 = HALVES_(c), d8 = HALVES_(d);
#undef HALVES_
#else
    v8f a8 = a, b8 = b, c8 = c, d8 = d;
#endif
    v8f ab = __builtin_shufflevector(a8, b8, 0, 1, 2, 3, 8, 9, 10, 11) +
             __builtin_shufflevector(a8, b8, 4, 5, 6, 7, 12, 13, 14, 15);
    v8f cd = __builtin_shufflevector(c8, d8, 0, 1, 2, 3, 8, 9, 10, 11) +
             __builtin_shufflevector(c8, d8, 4, 5, 6, 7, 12, 13, 14, 15);
    v8f y = __builtin_shufflevector(ab, cd, 0, 1, 4, 5, 8, 9, 12, 13) +
            __builtin_shufflevector(ab, cd, 2, 3, 6, 7, 10, 11, 14, 15);
    return __builtin_shufflevector(y, y, 0, 2, 4, 6) + __builtin_shufflevector(y, y, 1, 3, 5, 7);
}

/* NH heads of one key/value head, one sequence, positions 0 .. L-1, hd = NV whole vectors (NH and NV
 * constants where this is inlined, NH * NV at most 12, so the queries and the output sums stay in
 * registers). o, qh: the first head's output and query (the others follow, hd apart); sh: NH rows of
 * ld scores. Each position's key and value (hd floats of the nkv * hd it holds) is loaded once for
 * all NH heads. Scores four positions at a time (one multiply-add per vector, the lanes summed by
 * hsum4); exp and its sum in whole vectors; then the values weighted. A head's results do not depend
 * on NH: the same operations in the same order for each head. */
static inline __attribute__((always_inline)) void heads_vec(float *o, const float *qh, const float *k, const float *v,
                                                            size_t stride, int L, float scale, float *sh, size_t ld,
                                                            int hd, int NH, int NV) {
    vnf qv[12], acc[12];
    for (int h = 0; h < NH; h++)
        for (int i = 0; i < NV; i++) qv[h * NV + i] = LDN(qh + (size_t)h * hd + i * AN_VL);
    int t = 0;
    for (; t + 4 <= L; t += 4) {
        vnf d[3][4];
        for (int j = 0; j < 4; j++) {
            const float *kt = k + (size_t)(t + j) * stride;
            for (int i = 0; i < NV; i++) {
                vnf kv = LDN(kt + i * AN_VL);
                for (int h = 0; h < NH; h++) d[h][j] = i ? d[h][j] + qv[h * NV + i] * kv : qv[h * NV] * kv;
            }
        }
        for (int h = 0; h < NH; h++) {
            v4f s4 = hsum4(d[h]) * scale;
            memcpy(sh + (size_t)h * ld + t, &s4, sizeof s4);
        }
    }
    for (; t < L; t++) {
        const float *kt = k + (size_t)t * stride;
        for (int h = 0; h < NH; h++) {
            vnf d = qv[h * NV] * LDN(kt);
            for (int i = 1; i < NV; i++) d += qv[h * NV + i] * LDN(kt + i * AN_VL);
            sh[(size_t)h * ld + t] = HSUMN(d) * scale;
        }
    }
    float inv[3];
    for (int h = 0; h < NH; h++) {
        float *s = sh + (size_t)h * ld, m = an_max(s, L);
        vnf zs = {0};
        for (t = 0; t + AN_VL <= L; t += AN_VL) {
            vnf e;
            AN_EXPN(e, LDN(s + t) - m);
            STN(s + t, e);
            zs += e;
        }
        float z = HSUMN(zs);
        for (; t < L; t++) {
            s[t] = an_expf(s[t] - m);
            z += s[t];
        }
        inv[h] = 1.0f / z;
    }
    for (int i = 0; i < NH * NV; i++) acc[i] = (vnf){0};
    for (t = 0; t < L; t++) {
        const float *vt = v + (size_t)t * stride;
        for (int i = 0; i < NV; i++) {
            vnf vv = LDN(vt + i * AN_VL);
            for (int h = 0; h < NH; h++) acc[h * NV + i] += SPLATN(sh[(size_t)h * ld + t]) * vv;
        }
    }
    for (int h = 0; h < NH; h++)
        for (int i = 0; i < NV; i++) STN(o + (size_t)h * hd + i * AN_VL, acc[h * NV + i] * inv[h]);
}

/* The head sizes heads_vec takes: 1, 2, 4 or 8 whole vectors. */
static int whole_vectors(int hd) {
    int n = hd / AN_VL;
    return hd % AN_VL == 0 && (n == 1 || n == 2 || n == 4 || n == 8);
}

/* The most heads one heads_vec call takes for this head size (whole_vectors). */
static int heads_at_once(int hd) {
    int n = 12 / (hd / AN_VL);
    return n > 3 ? 3 : n;
}

static void heads_vectors(float *o, const float *qh, const float *k, const float *v, size_t stride, int L,
                          float scale, float *sh, size_t ld, int hd, int nheads) {
#define CASE(nh, nv) \
    case nh * 16 + nv: heads_vec(o, qh, k, v, stride, L, scale, sh, ld, hd, nh, nv); return;
    switch (nheads * 16 + hd / AN_VL) {
        CASE(1, 1) CASE(2, 1) CASE(3, 1) CASE(1, 2) CASE(2, 2) CASE(3, 2)
        CASE(1, 4) CASE(2, 4) CASE(3, 4) CASE(1, 8)
    default: return; /* not reached: whole_vectors and heads_at_once keep to the cases above */
    }
#undef CASE
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
            if (whole_vectors(hd)) { /* runs of heads that share a key/value head */
                for (int h = h0; h < h1;) {
                    int end = (h / group + 1) * group, n = heads_at_once(hd);
                    n = n < h1 - h ? n : h1 - h;
                    n = n < end - h ? n : end - h;
                    size_t kv = (size_t)(h / group) * hd;
                    heads_vectors(out + ((size_t)b * nh + h) * hd, q + ((size_t)b * nh + h) * hd, kr + kv, vr + kv,
                                  stride, L, scale, s, (size_t)max_T, hd, n);
                    h += n;
                }
                continue;
            }
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
