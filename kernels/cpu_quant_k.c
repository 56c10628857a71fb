/* Q4_K and Q6_K weights (kernels/cpu_quant.h): dequantization and the dot product with 8-bit
 * activations in blocks of 256. Each super-block is summed exactly in integers (plain C or AVX2), so
 * the float32 steps, the same statements in both, give the same bits. */
#if defined(__clang__) /* products and sums stay separate roundings (gcc's ISO C mode never fuses them) */
#pragma STDC FP_CONTRACT OFF
#endif
#include "kernels/cpu_quant.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

enum { Q4_K_BYTES = 144, Q6_K_BYTES = 210 };

/* The 6-bit scale and min of Q4_K sub-block i (0..7) from its 12 bytes: bytes 0-3 hold scales 0-3 in
 * their low 6 bits, bytes 4-7 mins 0-3; scale and min 4-7 have their low 4 bits in the low / high
 * nibble of bytes 8-11 and their top 2 bits in the top bits of bytes 0-3 (scales) and 4-7 (mins). */
static inline void scale_min(const uint8_t *s, int i, int *sc, int *mn) {
    if (i < 4) {
        *sc = s[i] & 63;
        *mn = s[i + 4] & 63;
    } else {
        *sc = (s[i + 4] & 15) | ((s[i - 4] >> 6) << 4);
        *mn = (s[i + 4] >> 4) | ((s[i] >> 6) << 4);
    }
}

void an_q4_k_dequantize(const uint8_t *w, float *y, int nb) {
    for (int b = 0; b < nb; b++, w += Q4_K_BYTES, y += 256) {
        float d = an_q_f16(w), dmin = an_q_f16(w + 2);
        for (int i = 0; i < 8; i++) {
            int s, m;
            scale_min(w + 4, i, &s, &m);
            float ds = d * (float)s, dm = dmin * (float)m;
            const uint8_t *q = w + 16 + 32 * (i / 2);
            int shift = 4 * (i % 2);
            for (int l = 0; l < 32; l++) {
                float p = ds * (float)((q[l] >> shift) & 15);
                y[32 * i + l] = p - dm;
            }
        }
    }
}

/* Q6_K element e (0..255) of a block as 0..63 (value q - 32): half h = e / 128, k = e % 128 takes
 * nibble k / 64 of ql[64h + k % 64] and bits 2r, 2r+1 (r = k / 32) of qh[32h + k % 32]. */
static inline int q6(const uint8_t *w, int e) {
    int h = e / 128, k = e % 128;
    int lo = (w[64 * h + k % 64] >> (4 * (k / 64))) & 15;
    int hi = (w[128 + 32 * h + k % 32] >> (2 * (k / 32))) & 3;
    return lo | hi << 4;
}

void an_q6_k_dequantize(const uint8_t *w, float *y, int nb) {
    for (int b = 0; b < nb; b++, w += Q6_K_BYTES, y += 256) {
        float d = an_q_f16(w + 208);
        for (int e = 0; e < 256; e++) {
            float ds = d * (float)(int8_t)w[192 + e / 16];
            y[e] = ds * (float)(q6(w, e) - 32);
        }
    }
}

/* ---- exact integer sums of one super-block: sumi = sum over sub-blocks of scale * sum(q * a), and
 * for Q4_K summ = sum of min * (sum of a over the sub-block) ---- */
static void q4_k_ints_plain(const uint8_t *w, const an_q8k_act *a, int32_t *sumi, int32_t *summ) {
    int32_t si = 0, sm = 0;
    for (int i = 0; i < 8; i++) {
        int s, m;
        scale_min(w + 4, i, &s, &m);
        const uint8_t *q = w + 16 + 32 * (i / 2);
        int shift = 4 * (i % 2);
        int32_t dot = 0;
        for (int l = 0; l < 32; l++) dot += ((q[l] >> shift) & 15) * a->q[32 * i + l];
        si += s * dot;
        sm += m * (a->bsum[2 * i] + a->bsum[2 * i + 1]);
    }
    *sumi = si;
    *summ = sm;
}

static int32_t q6_k_ints_plain(const uint8_t *w, const an_q8k_act *a) {
    int32_t si = 0;
    for (int j = 0; j < 16; j++) {
        int32_t dot = 0;
        for (int e = 16 * j; e < 16 * j + 16; e++) dot += (q6(w, e) - 32) * a->q[e];
        si += (int8_t)w[192 + j] * dot;
    }
    return si;
}

#if defined(__AVX2__)
static inline int32_t hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

static void q4_k_ints_avx2(const uint8_t *w, const an_q8k_act *a, int32_t *sumi, int32_t *summ) {
    const __m256i m4 = _mm256_set1_epi8(15);
    __m256i acc = _mm256_setzero_si256();
    int32_t sm = 0;
    for (int k = 0; k < 4; k++) {
        int s0, m0, s1, m1;
        scale_min(w + 4, 2 * k, &s0, &m0);
        scale_min(w + 4, 2 * k + 1, &s1, &m1);
        __m256i raw = _mm256_loadu_si256((const __m256i *)(w + 16 + 32 * k));
        __m256i lo = _mm256_and_si256(raw, m4), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
        /* pairs of q * a at most 2 * 15 * 127 in int16; times a 6-bit scale in the madd's int32 */
        __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(a->q + 64 * k)));
        __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(a->q + 64 * k + 32)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(plo, _mm256_set1_epi16((short)s0)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(phi, _mm256_set1_epi16((short)s1)));
        sm += m0 * (a->bsum[4 * k] + a->bsum[4 * k + 1]) + m1 * (a->bsum[4 * k + 2] + a->bsum[4 * k + 3]);
    }
    *sumi = hsum_i32(acc);
    *summ = sm;
}

static int32_t q6_k_ints_avx2(const uint8_t *w, const an_q8k_act *a) {
    const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3), k32 = _mm256_set1_epi8(32);
    __m256i acc = _mm256_setzero_si256();
    for (int h = 0; h < 2; h++) {
        __m256i qa = _mm256_loadu_si256((const __m256i *)(w + 64 * h));
        __m256i qb = _mm256_loadu_si256((const __m256i *)(w + 64 * h + 32));
        __m256i qh = _mm256_loadu_si256((const __m256i *)(w + 128 + 32 * h));
        __m256i g[4];
        g[0] = _mm256_or_si256(_mm256_and_si256(qa, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4));
        g[1] = _mm256_or_si256(_mm256_and_si256(qb, m4),
                               _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4));
        g[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qa, 4), m4),
                               _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4));
        g[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qb, 4), m4),
                               _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4));
        for (int r = 0; r < 4; r++) {
            const int8_t *sc = (const int8_t *)w + 192 + 8 * h + 2 * r;
            __m256i av = _mm256_loadu_si256((const __m256i *)(a->q + 128 * h + 32 * r));
            /* (q - 32) * a as q * a - 32 * a, pairs at most 2 * 63 * 127 in int16 */
            __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(g[r], av), _mm256_maddubs_epi16(k32, av));
            __m256i scv = _mm256_set_m128i(_mm_set1_epi16(sc[1]), _mm_set1_epi16(sc[0]));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, scv));
        }
    }
    return hsum_i32(acc);
}
#endif

float an_q4_k_dot(const uint8_t *w, const an_q8k_act *a, int nb, int simd) {
    float sumf = 0.0f;
    for (int b = 0; b < nb; b++, w += Q4_K_BYTES) {
        int32_t si, sm;
#if defined(__AVX2__)
        if (simd >= AN_Q_AVX2) q4_k_ints_avx2(w, a + b, &si, &sm);
        else
#endif
            q4_k_ints_plain(w, a + b, &si, &sm);
        float dd = an_q_f16(w) * a[b].d, dm = an_q_f16(w + 2) * a[b].d;
        float x = dd * (float)si, y = dm * (float)sm;
        sumf = sumf + x;
        sumf = sumf - y;
    }
    (void)simd;
    return sumf;
}

float an_q6_k_dot(const uint8_t *w, const an_q8k_act *a, int nb, int simd) {
    float sumf = 0.0f;
    for (int b = 0; b < nb; b++, w += Q6_K_BYTES) {
        int32_t si;
#if defined(__AVX2__)
        if (simd >= AN_Q_AVX2) si = q6_k_ints_avx2(w, a + b);
        else
#endif
            si = q6_k_ints_plain(w, a + b);
        float dd = an_q_f16(w + 208) * a[b].d;
        float x = dd * (float)si;
        sumf = sumf + x;
    }
    (void)simd;
    return sumf;
}
