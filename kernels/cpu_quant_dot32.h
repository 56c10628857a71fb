#ifndef AN_CPU_QUANT_DOT32_H
#define AN_CPU_QUANT_DOT32_H
/* The SIMD loop of the 32-block dot products (Q8_0, Q4_0, Q4_1), in the float order cpu_quant.h fixes:
 * block b's eight int32 lanes, times d_w * d_a, go to accumulator b % 2; Q4_1's minimum terms go to a
 * float of their own per parity, summed after the lanes. A file instantiates it with
 *   LOAD(p)          the block's 32 quants at p (its first byte) as a __m256i in element order
 *   LANES(w, a)      eight int32 lanes of sum(w * a) over 4 bytes each (AVX2, or 256-bit VNNI)
 * BYTES the block size, QOFF where the quants start, MIN 1 for a minimum term (f16 m at byte 2).
 * (Two blocks per 512-bit vector, its halves as the two accumulators, gave the same bits but ran
 * slower than 256-bit vpdpbusd on the development machine: the inserts cost more than they save.) */
#include <immintrin.h>

#include "kernels/cpu_quant.h"

#define AN_Q32_BLOCK256(LOAD, LANES, QOFF, w, a)                                                               \
    _mm256_mul_ps(_mm256_cvtepi32_ps(LANES(LOAD((w) + (QOFF)), _mm256_loadu_si256((const __m256i *)(a)->q))),    \
                  _mm256_set1_ps(an_q_f16(w) * (a)->d))

#define AN_Q32_MIN(MIN, w, a) ((MIN) ? an_q_f16((w) + 2) * (a)->s : 0.0f)

#define AN_Q32_DOT_AVX2(NAME, BYTES, QOFF, LOAD, LANES, MIN)                                                   \
    static float NAME(const uint8_t *w, const an_q8_act *a, int nb) {                                         \
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();                                        \
        float m0 = 0.0f, m1 = 0.0f;                                                                            \
        int b = 0;                                                                                             \
        for (; b + 2 <= nb; b += 2, w += 2 * (BYTES)) {                                                       \
            acc0 = _mm256_add_ps(acc0, AN_Q32_BLOCK256(LOAD, LANES, QOFF, w, a + b));                         \
            acc1 = _mm256_add_ps(acc1, AN_Q32_BLOCK256(LOAD, LANES, QOFF, w + (BYTES), a + b + 1));           \
            float t0 = AN_Q32_MIN(MIN, w, a + b), t1 = AN_Q32_MIN(MIN, w + (BYTES), a + b + 1);                \
            m0 = m0 + t0;                                                                                      \
            m1 = m1 + t1;                                                                                      \
        }                                                                                                      \
        if (b < nb) {                                                                                          \
            acc0 = _mm256_add_ps(acc0, AN_Q32_BLOCK256(LOAD, LANES, QOFF, w, a + b));                         \
            float t0 = AN_Q32_MIN(MIN, w, a + b);                                                              \
            m0 = m0 + t0;                                                                                      \
        }                                                                                                      \
        float t[16];                                                                                           \
        _mm256_storeu_ps(t, acc0);                                                                             \
        _mm256_storeu_ps(t + 8, acc1);                                                                         \
        return an_q_reduce16(t) + (m0 + m1);                                                                   \
    }

/* The same dot products for R activation rows at once (rows a, a + nb, ..., a + (R-1) nb): each
 * weight block is loaded, unpacked and its scales converted once for all R rows, and every row's
 * sums run in exactly the order above, so out[r] has the bits of NAME's single-row product. */
#define AN_Q32_DOTR_AVX2(NAME, R, BYTES, QOFF, LOAD, LANES, MIN)                                              \
    static void NAME(const uint8_t *w, const an_q8_act *a, int nb, float *out) {                              \
        __m256 acc0[R], acc1[R];                                                                               \
        float m0[R], m1[R];                                                                                    \
        for (int r = 0; r < (R); r++) {                                                                        \
            acc0[r] = acc1[r] = _mm256_setzero_ps();                                                           \
            m0[r] = m1[r] = 0.0f;                                                                              \
        }                                                                                                      \
        int b = 0;                                                                                             \
        for (; b + 2 <= nb; b += 2, w += 2 * (BYTES)) {                                                       \
            __m256i q0 = LOAD(w + (QOFF)), q1 = LOAD(w + (BYTES) + (QOFF));                                   \
            float d0 = an_q_f16(w), d1 = an_q_f16(w + (BYTES));                                                \
            float n0 = (MIN) ? an_q_f16(w + 2) : 0.0f, n1 = (MIN) ? an_q_f16(w + (BYTES) + 2) : 0.0f;          \
            for (int r = 0; r < (R); r++) {                                                                    \
                const an_q8_act *x = a + (size_t)r * (size_t)nb + b;                                           \
                __m256i l0 = LANES(q0, _mm256_loadu_si256((const __m256i *)x[0].q));                          \
                __m256i l1 = LANES(q1, _mm256_loadu_si256((const __m256i *)x[1].q));                          \
                acc0[r] = _mm256_add_ps(acc0[r], _mm256_mul_ps(_mm256_cvtepi32_ps(l0), _mm256_set1_ps(d0 * x[0].d))); \
                acc1[r] = _mm256_add_ps(acc1[r], _mm256_mul_ps(_mm256_cvtepi32_ps(l1), _mm256_set1_ps(d1 * x[1].d))); \
                float t0 = (MIN) ? n0 * x[0].s : 0.0f, t1 = (MIN) ? n1 * x[1].s : 0.0f;                         \
                m0[r] = m0[r] + t0;                                                                            \
                m1[r] = m1[r] + t1;                                                                            \
            }                                                                                                  \
        }                                                                                                      \
        if (b < nb) {                                                                                          \
            __m256i q0 = LOAD(w + (QOFF));                                                                     \
            float d0 = an_q_f16(w), n0 = (MIN) ? an_q_f16(w + 2) : 0.0f;                                       \
            for (int r = 0; r < (R); r++) {                                                                    \
                const an_q8_act *x = a + (size_t)r * (size_t)nb + b;                                           \
                __m256i l0 = LANES(q0, _mm256_loadu_si256((const __m256i *)x[0].q));                          \
                acc0[r] = _mm256_add_ps(acc0[r], _mm256_mul_ps(_mm256_cvtepi32_ps(l0), _mm256_set1_ps(d0 * x[0].d))); \
                float t0 = (MIN) ? n0 * x[0].s : 0.0f;                                                         \
                m0[r] = m0[r] + t0;                                                                            \
            }                                                                                                  \
        }                                                                                                      \
        for (int r = 0; r < (R); r++) {                                                                        \
            float t[16];                                                                                       \
            _mm256_storeu_ps(t, acc0[r]);                                                                      \
            _mm256_storeu_ps(t + 8, acc1[r]);                                                                  \
            out[r] = an_q_reduce16(t) + (m0[r] + m1[r]);                                                       \
        }                                                                                                      \
    }

#endif
