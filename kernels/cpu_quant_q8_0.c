/* Q8_0 weights (kernels/cpu_quant.h): dequantization and the dot product with 8-bit activations,
 * in plain C, AVX2 and AVX-512 VNNI, all three summing in the order cpu_quant.h fixes. */
#if defined(__clang__) /* products and sums stay separate roundings (gcc's ISO C mode never fuses them) */
#pragma STDC FP_CONTRACT OFF
#endif
#include "kernels/cpu_quant.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

enum { Q8_0_BYTES = 34 };

void an_q8_0_dequantize(const uint8_t *w, float *y, int nb) {
    for (int b = 0; b < nb; b++, w += Q8_0_BYTES, y += 32) {
        float d = an_q_f16(w);
        for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)w[2 + j] * d; /* the reference's order */
    }
}

static float dot_plain(const uint8_t *w, const an_q8_act *a, int nb) {
    float acc[16] = {0};
    for (int b = 0; b < nb; b++, w += Q8_0_BYTES) {
        float sc = an_q_f16(w) * a[b].d;
        for (int l = 0; l < 8; l++) {
            int32_t s = 0;
            for (int i = 4 * l; i < 4 * l + 4; i++) s += (int32_t)(int8_t)w[2 + i] * a[b].q[i];
            float p = (float)s * sc;
            acc[(b & 1) * 8 + l] = acc[(b & 1) * 8 + l] + p;
        }
    }
    return an_q_reduce16(acc);
}

#if defined(__AVX2__)
#include "kernels/cpu_quant_dot32.h"

static inline __m256i load32(const uint8_t *p) { return _mm256_loadu_si256((const __m256i *)p); }
/* eight int32 lanes of sum(w * a) over 4 bytes each: |w| times a with w's sign, exact (|w| <= 128,
 * |a| <= 127: a pair sums to at most 32512, inside int16) */
static inline __m256i lanes_avx2(__m256i w, __m256i a) {
    __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}
AN_Q32_DOT_AVX2(dot_avx2, Q8_0_BYTES, 2, load32, lanes_avx2, 0)
AN_Q32_DOTR_AVX2(rows4_avx2, 4, Q8_0_BYTES, 2, load32, lanes_avx2, 0)
AN_Q32_DOTR_AVX2(rows8_avx2, 8, Q8_0_BYTES, 2, load32, lanes_avx2, 0)
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
static inline __m256i lanes_vnni(__m256i w, __m256i a) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
}
AN_Q32_DOT_AVX2(dot_vnni, Q8_0_BYTES, 2, load32, lanes_vnni, 0)
AN_Q32_DOTR_AVX2(rows4_vnni, 4, Q8_0_BYTES, 2, load32, lanes_vnni, 0)
AN_Q32_DOTR_AVX2(rows8_vnni, 8, Q8_0_BYTES, 2, load32, lanes_vnni, 0)
#endif
#endif

float an_q8_0_dot(const uint8_t *w, const an_q8_act *a, int nb, int simd) {
#if defined(__AVX2__)
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    if (simd >= AN_Q_VNNI) return dot_vnni(w, a, nb);
#endif
    if (simd >= AN_Q_AVX2) return dot_avx2(w, a, nb);
#endif
    (void)simd;
    return dot_plain(w, a, nb);
}

static const an_q_rows_kernels q8_0_rows = {{AN_Q_IF_AVX2(rows4_avx2), AN_Q_IF_AVX2(rows8_avx2)},
                                              {AN_Q_IF_VNNI(rows4_vnni), AN_Q_IF_VNNI(rows8_vnni)}, an_q8_0_dot};

void an_q8_0_dot_rows(const uint8_t *w, const an_q8_act *a, int nb, int simd, int R, float *out) {
    an_q_dot_rows(&q8_0_rows, w, a, nb, simd, R, out);
}
