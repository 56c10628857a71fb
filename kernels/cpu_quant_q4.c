/* Q4_0 and Q4_1 weights (kernels/cpu_quant.h): dequantization and the dot product with 8-bit
 * activations, in plain C, AVX2 and AVX-512 VNNI, all summing in the order cpu_quant.h fixes. */
#if defined(__clang__) /* products and sums stay separate roundings (gcc's ISO C mode never fuses them) */
#pragma STDC FP_CONTRACT OFF
#endif
#include "kernels/cpu_quant.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

enum { Q4_0_BYTES = 18, Q4_1_BYTES = 20 };

void an_q4_0_dequantize(const uint8_t *w, float *y, int nb) {
    for (int b = 0; b < nb; b++, w += Q4_0_BYTES, y += 32) {
        float d = an_q_f16(w);
        const uint8_t *qs = w + 2;
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)((qs[j] & 15) - 8);
            y[j + 16] = d * (float)((qs[j] >> 4) - 8);
        }
    }
}

void an_q4_1_dequantize(const uint8_t *w, float *y, int nb) {
    for (int b = 0; b < nb; b++, w += Q4_1_BYTES, y += 32) {
        float d = an_q_f16(w), m = an_q_f16(w + 2);
        const uint8_t *qs = w + 4;
        for (int j = 0; j < 16; j++) {
            float lo = d * (float)(qs[j] & 15), hi = d * (float)(qs[j] >> 4);
            y[j] = lo + m;
            y[j + 16] = hi + m;
        }
    }
}

/* element i (0..31) of a block's nibbles */
static inline int nib(const uint8_t *qs, int i) { return i < 16 ? qs[i] & 15 : qs[i - 16] >> 4; }

/* offset: 8 for Q4_0 (values q - 8), 0 for Q4_1 (d * q, the minimum apart) */
static float dot_plain(const uint8_t *w, const an_q8_act *a, int nb, int bytes, int offset) {
    float acc[16] = {0}, summ[2] = {0.0f, 0.0f};
    for (int b = 0; b < nb; b++, w += bytes) {
        const uint8_t *qs = w + bytes - 16;
        float sc = an_q_f16(w) * a[b].d;
        for (int l = 0; l < 8; l++) {
            int32_t s = 0;
            for (int i = 4 * l; i < 4 * l + 4; i++) s += (nib(qs, i) - offset) * a[b].q[i];
            float p = (float)s * sc;
            acc[(b & 1) * 8 + l] = acc[(b & 1) * 8 + l] + p;
        }
        if (!offset) {
            float mt = an_q_f16(w + 2) * a[b].s;
            summ[b & 1] = summ[b & 1] + mt;
        }
    }
    return an_q_reduce16(acc) + (summ[0] + summ[1]);
}

#if defined(__AVX2__)
#include "kernels/cpu_quant_dot32.h"

/* the 32 nibbles as bytes 0..31 in element order */
static inline __m256i unpack(const uint8_t *qs) {
    __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(15));
}
/* eight int32 lanes of sum over 4 bytes: signed q - 8 (|.| <= 8) by sign and magnitude; unsigned q
 * directly (pairs at most 2 * 15 * 127, inside int16) */
static inline __m256i lanes_q4_0_avx2(__m256i q, __m256i a) {
    __m256i s = _mm256_sub_epi8(q, _mm256_set1_epi8(8));
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(s, s), _mm256_sign_epi8(a, s)), _mm256_set1_epi16(1));
}
static inline __m256i lanes_q4_1_avx2(__m256i q, __m256i a) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(q, a), _mm256_set1_epi16(1));
}
AN_Q32_DOT_AVX2(q4_0_avx2, Q4_0_BYTES, 2, unpack, lanes_q4_0_avx2, 0)
AN_Q32_DOTR_AVX2(q4_0_rows4_avx2, 4, Q4_0_BYTES, 2, unpack, lanes_q4_0_avx2, 0)
AN_Q32_DOTR_AVX2(q4_0_rows8_avx2, 8, Q4_0_BYTES, 2, unpack, lanes_q4_0_avx2, 0)
AN_Q32_DOT_AVX2(q4_1_avx2, Q4_1_BYTES, 4, unpack, lanes_q4_1_avx2, 1)
AN_Q32_DOTR_AVX2(q4_1_rows4_avx2, 4, Q4_1_BYTES, 4, unpack, lanes_q4_1_avx2, 1)
AN_Q32_DOTR_AVX2(q4_1_rows8_avx2, 8, Q4_1_BYTES, 4, unpack, lanes_q4_1_avx2, 1)
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
static inline __m256i lanes_q4_0_vnni(__m256i q, __m256i a) {
    __m256i s = _mm256_sub_epi8(q, _mm256_set1_epi8(8));
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(s, s), _mm256_sign_epi8(a, s));
}
static inline __m256i lanes_q4_1_vnni(__m256i q, __m256i a) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), q, a);
}
AN_Q32_DOT_AVX2(q4_0_vnni, Q4_0_BYTES, 2, unpack, lanes_q4_0_vnni, 0)
AN_Q32_DOTR_AVX2(q4_0_rows4_vnni, 4, Q4_0_BYTES, 2, unpack, lanes_q4_0_vnni, 0)
AN_Q32_DOTR_AVX2(q4_0_rows8_vnni, 8, Q4_0_BYTES, 2, unpack, lanes_q4_0_vnni, 0)
AN_Q32_DOT_AVX2(q4_1_vnni, Q4_1_BYTES, 4, unpack, lanes_q4_1_vnni, 1)
AN_Q32_DOTR_AVX2(q4_1_rows4_vnni, 4, Q4_1_BYTES, 4, unpack, lanes_q4_1_vnni, 1)
AN_Q32_DOTR_AVX2(q4_1_rows8_vnni, 8, Q4_1_BYTES, 4, unpack, lanes_q4_1_vnni, 1)
#endif
#endif

float an_q4_0_dot(const uint8_t *w, const an_q8_act *a, int nb, int simd) {
#if defined(__AVX2__)
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    if (simd >= AN_Q_VNNI) return q4_0_vnni(w, a, nb);
#endif
    if (simd >= AN_Q_AVX2) return q4_0_avx2(w, a, nb);
#endif
    (void)simd;
    return dot_plain(w, a, nb, Q4_0_BYTES, 8);
}

float an_q4_1_dot(const uint8_t *w, const an_q8_act *a, int nb, int simd) {
#if defined(__AVX2__)
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    if (simd >= AN_Q_VNNI) return q4_1_vnni(w, a, nb);
#endif
    if (simd >= AN_Q_AVX2) return q4_1_avx2(w, a, nb);
#endif
    (void)simd;
    return dot_plain(w, a, nb, Q4_1_BYTES, 0);
}

static const an_q_rows_kernels q4_0_rows = {{AN_Q_IF_AVX2(q4_0_rows4_avx2), AN_Q_IF_AVX2(q4_0_rows8_avx2)},
                                              {AN_Q_IF_VNNI(q4_0_rows4_vnni), AN_Q_IF_VNNI(q4_0_rows8_vnni)}, an_q4_0_dot};

void an_q4_0_dot_rows(const uint8_t *w, const an_q8_act *a, int nb, int simd, int R, float *out) {
    an_q_dot_rows(&q4_0_rows, w, a, nb, simd, R, out);
}

static const an_q_rows_kernels q4_1_rows = {{AN_Q_IF_AVX2(q4_1_rows4_avx2), AN_Q_IF_AVX2(q4_1_rows8_avx2)},
                                              {AN_Q_IF_VNNI(q4_1_rows4_vnni), AN_Q_IF_VNNI(q4_1_rows8_vnni)}, an_q4_1_dot};

void an_q4_1_dot_rows(const uint8_t *w, const an_q8_act *a, int nb, int simd, int R, float *out) {
    an_q_dot_rows(&q4_1_rows, w, a, nb, simd, R, out);
}
