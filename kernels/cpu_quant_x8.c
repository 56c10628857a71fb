/* Q8_0, Q4_0 and Q4_1 weights with eight rows interleaved (AN_Q8_0_X8 .. AN_Q4_1_X8,
 * kernels/quant_x8.h): the repacking from ggml's row-after-row blocks and back, and the product of
 * one group of eight weight rows with one row of 8-bit activations, in plain C, AVX2 and AVX-512 VNNI.
 *
 * Why: in ggml's layout a row's 32 products land in eight int32 lanes that must each be scaled and
 * summed before the next block, so most of a decoding step's instructions go to float work per
 * block and row. Interleaved, lane r of one vector is row r: four bytes of each of the eight rows
 * multiply four broadcast activation bytes, the block's integer sums of the eight rows finish in one
 * vector, and one convert, one multiply by the eight scales and one add serve eight rows (llama.cpp
 * repacks Q4_0 the same way on x86, "q4_0_8x8").
 *
 * The float order (every level the same bits; a row's value does not depend on the activation rows
 * beside it): per row, acc = 0; for each block b in order, isum_b = the exact integer sum of its 32
 * products; acc = acc + (float)isum_b * (d_w * d_a), and for Q4_1
 * acc = acc + ((float)isum_b * (d_w * d_a) + m_w * s_a); the result is acc. */
#if defined(__clang__) /* products and sums stay separate roundings (gcc's ISO C mode never fuses them) */
#pragma STDC FP_CONTRACT OFF
#endif
#include <string.h>

#include "kernels/cpu_quant.h"

#if defined(__AVX2__) && defined(__F16C__)
#define X8_SIMD 1
#include <immintrin.h>
#endif

/* The group block of eight rows: their eight f16 scales (Q4_1: then their eight f16 minimums), then
 * the quants: Q8_0 eight vectors of 32 bytes, vector j holding elements 4j .. 4j+3 of row r at bytes
 * 4r .. 4r+3, stored as q + 128 (unsigned); Q4_0 / Q4_1 four vectors, vector c holding at bytes
 * 4r .. 4r+3 row r's ggml bytes qs[4c .. 4c+3] (low nibbles: elements 4c.., high: 16 + 4c..). */
static int head_bytes(an_dtype base) { return base == AN_Q4_1 ? 32 : 16; }

void an_q_x8_repack(an_dtype base, const uint8_t *rows, int nb, uint8_t *dst) {
    int bb = an_dtype_block_bytes(base), hb = head_bytes(base), qoff = bb - (base == AN_Q8_0 ? 32 : 16);
    for (int b = 0; b < nb; b++, dst += 8 * bb) {
        for (int r = 0; r < 8; r++) {
            const uint8_t *s = rows + ((size_t)r * nb + b) * bb;
            memcpy(dst + 2 * r, s, 2);                          /* d */
            if (base == AN_Q4_1) memcpy(dst + 16 + 2 * r, s + 2, 2); /* m */
            const uint8_t *q = s + qoff;
            if (base == AN_Q8_0)
                for (int j = 0; j < 8; j++)
                    for (int e = 0; e < 4; e++) dst[hb + 32 * j + 4 * r + e] = (uint8_t)(q[4 * j + e] ^ 0x80);
            else
                for (int c = 0; c < 4; c++) memcpy(dst + hb + 32 * c + 4 * r, q + 4 * c, 4);
        }
    }
}

void an_q_x8_row_blocks(an_dtype base, const uint8_t *data, int64_t row, int nb, uint8_t *dst) {
    int bb = an_dtype_block_bytes(base), hb = head_bytes(base), qoff = bb - (base == AN_Q8_0 ? 32 : 16);
    int r = (int)(row % 8);
    const uint8_t *g = data + (size_t)(row / 8) * (size_t)nb * 8 * (size_t)bb;
    for (int b = 0; b < nb; b++, g += 8 * bb, dst += bb) {
        memcpy(dst, g + 2 * r, 2);
        if (base == AN_Q4_1) memcpy(dst + 2, g + 16 + 2 * r, 2);
        uint8_t *q = dst + qoff;
        if (base == AN_Q8_0)
            for (int j = 0; j < 8; j++)
                for (int e = 0; e < 4; e++) q[4 * j + e] = (uint8_t)(g[hb + 32 * j + 4 * r + e] ^ 0x80);
        else
            for (int c = 0; c < 4; c++) memcpy(q + 4 * c, g + hb + 32 * c + 4 * r, 4);
    }
}

/* ---- the product of eight rows with one activation row: out[r] for rows r = 0..7 of the group ---- */

/* the 32 products of row r in group block g with activation block a, exactly */
static int32_t isum_plain(an_dtype base, const uint8_t *g, int r, const an_q8_act *a) {
    int hb = head_bytes(base);
    int32_t s = 0;
    if (base == AN_Q8_0) {
        for (int j = 0; j < 8; j++)
            for (int e = 0; e < 4; e++) s += (int32_t)(int8_t)(g[hb + 32 * j + 4 * r + e] ^ 0x80) * a->q[4 * j + e];
        return s;
    }
    int off = base == AN_Q4_0 ? 8 : 0;
    for (int c = 0; c < 4; c++)
        for (int e = 0; e < 4; e++) {
            int byte = g[hb + 32 * c + 4 * r + e];
            s += ((byte & 15) - off) * a->q[4 * c + e] + ((byte >> 4) - off) * a->q[16 + 4 * c + e];
        }
    return s;
}

static void dot8_plain(an_dtype base, const uint8_t *w, const an_q8_act *a, int nb, float *out) {
    int gb = 8 * an_dtype_block_bytes(base);
    for (int r = 0; r < 8; r++) {
        float acc = 0.0f;
        const uint8_t *g = w;
        for (int b = 0; b < nb; b++, g += gb) {
            float p = (float)isum_plain(base, g, r, a + b) * (an_q_f16(g + 2 * r) * a[b].d);
            if (base == AN_Q4_1) p = p + an_q_f16(g + 16 + 2 * r) * a[b].s;
            acc = acc + p;
        }
        out[r] = acc;
    }
}

#if X8_SIMD
/* four activation bytes, elements 4k .. 4k+3, in every int32 lane */
static inline __m256i bcast4(const int8_t *q, int k) {
    int32_t v;
    memcpy(&v, q + 4 * k, 4);
    return _mm256_set1_epi32(v);
}

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define X8_VNNI 1
/* eight int32 lanes (rows) += sum over each lane's four bytes of unsigned w times signed a */
static inline __m256i madd4_vnni(__m256i acc, __m256i w, __m256i a) { return _mm256_dpbusd_epi32(acc, w, a); }
#endif
/* the same with AVX2; unsigned w at most 15 (Q4): pairs at most 2 * 15 * 127, inside int16 */
static inline __m256i madd4_avx2(__m256i acc, __m256i w, __m256i a) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1)));
}
/* Q8_0's signed bytes (stored + 128) on AVX2: |w| times a with w's sign (|w| <= 128, |a| <= 127) */
static inline __m256i madd4_q8_avx2(__m256i acc, __m256i stored, __m256i a) {
    __m256i w = _mm256_xor_si256(stored, _mm256_set1_epi8((char)0x80));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(a, w)),
                                                   _mm256_set1_epi16(1)));
}

/* One kernel per type and level: ISUM computes the block's eight integer sums into isum. */
#define X8_DOT8(NAME, BASE, ISUM)                                                                              \
    static void NAME(const uint8_t *w, const an_q8_act *a, int nb, float *out) {                              \
        enum { GB = 8 * ((BASE) == AN_Q8_0 ? 34 : (BASE) == AN_Q4_0 ? 18 : 20) };                              \
        __m256 acc = _mm256_setzero_ps();                                                                      \
        const __m256i low4 = _mm256_set1_epi8(15);                                                             \
        (void)low4;                                                                                            \
        for (int b = 0; b < nb; b++, w += GB) {                                                                \
            const an_q8_act *x = a + b;                                                                        \
            __m256i isum = _mm256_setzero_si256();                                                             \
            ISUM                                                                                               \
            __m256 sc = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)w)), _mm256_set1_ps(x->d)); \
            __m256 p = _mm256_mul_ps(_mm256_cvtepi32_ps(isum), sc);                                            \
            if ((BASE) == AN_Q4_1)                                                                             \
                p = _mm256_add_ps(p, _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 16))), \
                                                   _mm256_set1_ps(x->s)));                                     \
            acc = _mm256_add_ps(acc, p);                                                                       \
        }                                                                                                      \
        _mm256_storeu_ps(out, acc);                                                                            \
    }

/* Q4: vector c's low nibbles are elements 4c.., its high nibbles 16 + 4c..; Q4_0 then takes 8 sum(a) */
#define X8_ISUM_Q4(MADD, HB, OFF8)                                                                             \
    for (int c = 0; c < 4; c++) {                                                                              \
        __m256i raw = _mm256_loadu_si256((const __m256i *)(w + (HB) + 32 * c));                                \
        isum = MADD(isum, _mm256_and_si256(raw, low4), bcast4(x->q, c));                                       \
        isum = MADD(isum, _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4), bcast4(x->q, 4 + c));             \
    }                                                                                                          \
    if (OFF8) isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(8 * x->sum));
/* Q8_0 stored + 128: VNNI multiplies it unsigned and takes 128 sum(a) off; AVX2 restores the sign */
#define X8_ISUM_Q8(MADD, OFF128)                                                                               \
    for (int j = 0; j < 8; j++)                                                                                \
        isum = MADD(isum, _mm256_loadu_si256((const __m256i *)(w + 16 + 32 * j)), bcast4(x->q, j));            \
    if (OFF128) isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(128 * x->sum));

X8_DOT8(q8_0_avx2, AN_Q8_0, X8_ISUM_Q8(madd4_q8_avx2, 0))
X8_DOT8(q4_0_avx2, AN_Q4_0, X8_ISUM_Q4(madd4_avx2, 16, 1))
X8_DOT8(q4_1_avx2, AN_Q4_1, X8_ISUM_Q4(madd4_avx2, 32, 0))
#if X8_VNNI
X8_DOT8(q8_0_vnni, AN_Q8_0, X8_ISUM_Q8(madd4_vnni, 1))
X8_DOT8(q4_0_vnni, AN_Q4_0, X8_ISUM_Q4(madd4_vnni, 16, 1))
X8_DOT8(q4_1_vnni, AN_Q4_1, X8_ISUM_Q4(madd4_vnni, 32, 0))
#endif
#endif

typedef void (*dot8_fn)(const uint8_t *w, const an_q8_act *a, int nb, float *out);

void an_q_x8_dot8(an_dtype base, const uint8_t *w, const an_q8_act *a, int nb, int simd, float *out) {
    int i = base == AN_Q8_0 ? 0 : base == AN_Q4_0 ? 1 : 2;
#if X8_SIMD
#if X8_VNNI
    static const dot8_fn vnni[3] = {q8_0_vnni, q4_0_vnni, q4_1_vnni};
    if (simd >= AN_Q_VNNI) {
        vnni[i](w, a, nb, out);
        return;
    }
#endif
    static const dot8_fn avx2[3] = {q8_0_avx2, q4_0_avx2, q4_1_avx2};
    if (simd >= AN_Q_AVX2) {
        avx2[i](w, a, nb, out);
        return;
    }
#endif
    (void)simd, (void)i;
    dot8_plain(base, w, a, nb, out);
}
