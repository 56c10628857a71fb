/* Q8_0, Q4_0 and Q4_1 weights with eight rows interleaved (AN_Q8_0_X8 .. AN_Q4_1_X8,
 * kernels/quant_x8.h): the repacking from ggml's row-after-row blocks and back, and the product of
 * one group of eight weight rows with up to four rows of 8-bit activations, in plain C, AVX2 and
 * AVX-512 VNNI.
 *
 * Why: in ggml's layout a row's 32 products land in eight int32 lanes that must each be scaled and
 * summed before the next block, so most of a decoding step's instructions go to float work per
 * block and row. Interleaved, a 64-byte chunk holds eight consecutive quants of each of the eight
 * rows; `vpdpbusd` against eight broadcast activation bytes puts row r's products in the lane pair
 * (2r, 2r+1), the block's eight exact integer sums finish in one vector, and one convert, one
 * multiply by the eight scales and one add serve eight rows (llama.cpp repacks Q4_0 alike on x86).
 * Several activation rows share each unpacked chunk: the prompt's integer GEMM.
 *
 * The float order (every level the same bits; a row's value depends neither on the activation rows
 * run with it nor on how many): per weight row and activation row, acc = 0; for each block b in
 * order, isum_b = the exact integer sum of its 32 products; acc = acc + (float)isum_b * (d_w * d_a),
 * and for Q4_1 acc = acc + ((float)isum_b * (d_w * d_a) + m_w * s_a); the result is acc. */
#if defined(__clang__) /* products and sums stay separate roundings (gcc's ISO C mode never fuses them) */
#pragma STDC FP_CONTRACT OFF
#endif
#include <string.h>

#include "kernels/cpu_quant.h"

#if defined(__AVX2__) && defined(__F16C__)
#define X8_SIMD 1
#include <immintrin.h>
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define X8_VNNI 1
#endif
#endif

/* The group block of eight rows: their eight f16 scales (Q4_1: then their eight f16 minimums), then
 * 64-byte chunks, chunk m holding at bytes 8r .. 8r+7 row r's quant bytes 8m .. 8m+7: Q8_0 four chunks
 * (elements 8m .. 8m+7, stored + 128 as unsigned bytes); Q4_0 / Q4_1 two, of ggml's nibble bytes qs
 * (low nibbles elements 8m.., high nibbles 16 + 8m..). */
static int head_bytes(an_dtype base) { return base == AN_Q4_1 ? 32 : 16; }
static int quant_bytes(an_dtype base) { return base == AN_Q8_0 ? 32 : 16; }

void an_q_x8_repack(an_dtype base, const uint8_t *rows, int nb, uint8_t *dst) {
    int bb = an_dtype_block_bytes(base), hb = head_bytes(base), qb = quant_bytes(base), flip = base == AN_Q8_0 ? 0x80 : 0;
    for (int b = 0; b < nb; b++, dst += 8 * bb)
        for (int r = 0; r < 8; r++) {
            const uint8_t *s = rows + ((size_t)r * nb + b) * bb;
            memcpy(dst + 2 * r, s, 2);                               /* d */
            if (base == AN_Q4_1) memcpy(dst + 16 + 2 * r, s + 2, 2); /* m */
            const uint8_t *q = s + bb - qb;
            for (int m = 0; m < qb / 8; m++)
                for (int i = 0; i < 8; i++) dst[hb + 64 * m + 8 * r + i] = (uint8_t)(q[8 * m + i] ^ flip);
        }
}

void an_q_x8_row_blocks(an_dtype base, const uint8_t *data, int64_t row, int nb, uint8_t *dst) {
    int bb = an_dtype_block_bytes(base), hb = head_bytes(base), qb = quant_bytes(base), flip = base == AN_Q8_0 ? 0x80 : 0;
    int r = (int)(row % 8);
    const uint8_t *g = data + (size_t)(row / 8) * (size_t)nb * 8 * (size_t)bb;
    for (int b = 0; b < nb; b++, g += 8 * bb, dst += bb) {
        memcpy(dst, g + 2 * r, 2);
        if (base == AN_Q4_1) memcpy(dst + 2, g + 16 + 2 * r, 2);
        uint8_t *q = dst + bb - qb;
        for (int m = 0; m < qb / 8; m++)
            for (int i = 0; i < 8; i++) q[8 * m + i] = (uint8_t)(g[hb + 64 * m + 8 * r + i] ^ flip);
    }
}

/* Row `row` of an interleaved weight as float32, straight from the group blocks: the reference
 * dequantization's expressions (gguf_quants.c), so its bits. */
void an_q_x8_dequantize_row(an_dtype base, const uint8_t *data, int64_t row, int nb, float *y) {
    int bb = an_dtype_block_bytes(base), hb = head_bytes(base), r = (int)(row % 8);
    const uint8_t *g = data + (size_t)(row / 8) * (size_t)nb * 8 * (size_t)bb;
    for (int b = 0; b < nb; b++, g += 8 * bb, y += 32) {
        float d = an_q_f16(g + 2 * r);
        if (base == AN_Q8_0) {
#if X8_SIMD /* the same products, eight at a time (the byte loop does not vectorise) */
            for (int m = 0; m < 4; m++) {
                __m128i q = _mm_xor_si128(_mm_loadl_epi64((const __m128i *)(g + hb + 64 * m + 8 * r)), _mm_set1_epi8((char)0x80));
                _mm256_storeu_ps(y + 8 * m, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), _mm256_set1_ps(d)));
            }
#else
            for (int m = 0; m < 4; m++)
                for (int i = 0; i < 8; i++) y[8 * m + i] = (float)(int8_t)(g[hb + 64 * m + 8 * r + i] ^ 0x80) * d;
#endif
        } else if (base == AN_Q4_0) {
            for (int m = 0; m < 2; m++)
                for (int i = 0; i < 8; i++) {
                    int q = g[hb + 64 * m + 8 * r + i];
                    y[8 * m + i] = d * (float)((q & 15) - 8);
                    y[16 + 8 * m + i] = d * (float)((q >> 4) - 8);
                }
        } else {
            float mn = an_q_f16(g + 16 + 2 * r);
            for (int m = 0; m < 2; m++)
                for (int i = 0; i < 8; i++) {
                    int q = g[hb + 64 * m + 8 * r + i];
                    float lo = d * (float)(q & 15), hi = d * (float)(q >> 4);
                    y[8 * m + i] = lo + mn;
                    y[16 + 8 * m + i] = hi + mn;
                }
        }
    }
}

/* ---- plain C ---- */

/* the 32 products of row r in group block g with activation block a, exactly */
static int32_t isum_plain(an_dtype base, const uint8_t *g, int r, const an_q8_act *a) {
    int hb = head_bytes(base);
    int32_t s = 0;
    if (base == AN_Q8_0) {
        for (int m = 0; m < 4; m++)
            for (int i = 0; i < 8; i++) s += (int32_t)(int8_t)(g[hb + 64 * m + 8 * r + i] ^ 0x80) * a->q[8 * m + i];
        return s;
    }
    int off = base == AN_Q4_0 ? 8 : 0;
    for (int m = 0; m < 2; m++)
        for (int i = 0; i < 8; i++) {
            int byte = g[hb + 64 * m + 8 * r + i];
            s += ((byte & 15) - off) * a->q[8 * m + i] + ((byte >> 4) - off) * a->q[16 + 8 * m + i];
        }
    return s;
}

static void dot8_plain(an_dtype base, const uint8_t *w, const an_q8_act *a, int nb, int R, float *out) {
    int gb = 8 * an_dtype_block_bytes(base);
    for (int n = 0; n < R; n++)
        for (int r = 0; r < 8; r++) {
            float acc = 0.0f;
            const uint8_t *g = w;
            const an_q8_act *x = a + (size_t)n * nb;
            for (int b = 0; b < nb; b++, g += gb) {
                float p = (float)isum_plain(base, g, r, x + b) * (an_q_f16(g + 2 * r) * x[b].d);
                if (base == AN_Q4_1) p = p + an_q_f16(g + 16 + 2 * r) * x[b].s;
                acc = acc + p;
            }
            out[8 * n + r] = acc;
        }
}

#if X8_SIMD
/* the block's float step for one activation row, the same for every level: isum (8 rows) after the
 * unsigned-weight correction, scales dw (and minimums mw for Q4_1) of the eight rows */
static inline __m256 x8_block(__m256 acc, __m256i isum, __m256 dw, __m256 mw, const an_q8_act *x, int q4_1) {
    __m256 p = _mm256_mul_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, _mm256_set1_ps(x->d)));
    if (q4_1) p = _mm256_add_ps(p, _mm256_mul_ps(mw, _mm256_set1_ps(x->s)));
    return _mm256_add_ps(acc, p);
}

/* the eight rows' scales of group block w (Q4_1: and minimums; else mw is dw, unused) */
static inline void x8_scales(const uint8_t *w, int q4_1, __m256 *dw, __m256 *mw) {
    *dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)w));
    *mw = q4_1 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 16))) : *dw;
}

static inline int64_t bytes8(const int8_t *q) {
    int64_t v;
    memcpy(&v, q, 8);
    return v;
}

/* AVX2: a chunk is two 256-bit halves, rows 0-3 and 4-7, each row a lane pair; maddubs takes the
 * unsigned operand first (Q4's nibbles, at most 15, so pairs stay inside int16; Q8_0's |w| with w's
 * sign moved to a) */
static inline __m256i madd_avx2(__m256i w_unsigned, __m256i a) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w_unsigned, a), _mm256_set1_epi16(1));
}
static inline __m256i madd_q8_avx2(__m256i stored, __m256i a) {
    __m256i w = _mm256_xor_si256(stored, _mm256_set1_epi8((char)0x80));
    return madd_avx2(_mm256_abs_epi8(w), _mm256_sign_epi8(a, w));
}
/* lane pairs of h0 (rows 0-3) and h1 (rows 4-7) summed, in row order */
static inline __m256i pairs_avx2(__m256i h0, __m256i h1) {
    __m256i h = _mm256_hadd_epi32(h0, h1); /* rows 0 1 4 5 | 2 3 6 7 */
    return _mm256_permutevar8x32_epi32(h, _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7));
}

static inline __attribute__((always_inline)) void dot8_avx2(an_dtype base, const uint8_t *w, const an_q8_act *a,
                                                            int nb, int R, float *out) {
    const int gb = 8 * an_dtype_block_bytes(base), hb = head_bytes(base);
    const __m256i low4 = _mm256_set1_epi8(15);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int b = 0; b < nb; b++, w += gb) {
        __m256 dw, mw;
        x8_scales(w, base == AN_Q4_1, &dw, &mw);
        for (int n = 0; n < R; n++) {
            const an_q8_act *x = a + (size_t)n * nb + b;
            __m256i h0 = _mm256_setzero_si256(), h1 = _mm256_setzero_si256();
            if (base == AN_Q8_0) {
                for (int m = 0; m < 4; m++) {
                    __m256i av = _mm256_set1_epi64x(bytes8(x->q + 8 * m));
                    h0 = _mm256_add_epi32(h0, madd_q8_avx2(_mm256_loadu_si256((const __m256i *)(w + hb + 64 * m)), av));
                    h1 = _mm256_add_epi32(h1, madd_q8_avx2(_mm256_loadu_si256((const __m256i *)(w + hb + 64 * m + 32)), av));
                }
            } else {
                for (int m = 0; m < 2; m++) {
                    __m256i r0 = _mm256_loadu_si256((const __m256i *)(w + hb + 64 * m));
                    __m256i r1 = _mm256_loadu_si256((const __m256i *)(w + hb + 64 * m + 32));
                    __m256i al = _mm256_set1_epi64x(bytes8(x->q + 8 * m)), ah = _mm256_set1_epi64x(bytes8(x->q + 16 + 8 * m));
                    h0 = _mm256_add_epi32(h0, madd_avx2(_mm256_and_si256(r0, low4), al));
                    h0 = _mm256_add_epi32(h0, madd_avx2(_mm256_and_si256(_mm256_srli_epi16(r0, 4), low4), ah));
                    h1 = _mm256_add_epi32(h1, madd_avx2(_mm256_and_si256(r1, low4), al));
                    h1 = _mm256_add_epi32(h1, madd_avx2(_mm256_and_si256(_mm256_srli_epi16(r1, 4), low4), ah));
                }
            }
            __m256i isum = pairs_avx2(h0, h1);
            if (base == AN_Q4_0) isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(8 * x->sum));
            acc[n] = x8_block(acc[n], isum, dw, mw, x, base == AN_Q4_1);
        }
    }
    for (int n = 0; n < R; n++) _mm256_storeu_ps(out + 8 * n, acc[n]);
}

#if X8_VNNI
/* AVX-512 VNNI: a whole chunk per vpdpbusd, the eight activation bytes broadcast to every 64-bit lane;
 * the lane pairs summed with a shift and narrowed (vpmovqd) to eight int32 in row order. Each chunk is
 * unpacked once for all R activation rows. */
static inline __attribute__((always_inline)) void dot8_vnni(an_dtype base, const uint8_t *w, const an_q8_act *a,
                                                            int nb, int R, float *out) {
    const int gb = 8 * an_dtype_block_bytes(base), hb = head_bytes(base);
    const __m512i low4 = _mm512_set1_epi8(15);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int b = 0; b < nb; b++, w += gb) {
        __m512i c[4]; /* Q8_0: the four chunks; Q4: chunk 0's low and high nibbles, chunk 1's */
        if (base == AN_Q8_0) {
            for (int m = 0; m < 4; m++) c[m] = _mm512_loadu_si512((const void *)(w + hb + 64 * m));
        } else {
            for (int m = 0; m < 2; m++) {
                __m512i raw = _mm512_loadu_si512((const void *)(w + hb + 64 * m));
                c[2 * m] = _mm512_and_si512(raw, low4);
                c[2 * m + 1] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low4);
            }
        }
        __m256 dw, mw;
        x8_scales(w, base == AN_Q4_1, &dw, &mw);
        for (int n = 0; n < R; n++) {
            const an_q8_act *x = a + (size_t)n * nb + b;
            __m512i s = _mm512_setzero_si512();
            if (base == AN_Q8_0) {
                for (int m = 0; m < 4; m++) s = _mm512_dpbusd_epi32(s, c[m], _mm512_set1_epi64(bytes8(x->q + 8 * m)));
            } else {
                for (int m = 0; m < 2; m++) {
                    s = _mm512_dpbusd_epi32(s, c[2 * m], _mm512_set1_epi64(bytes8(x->q + 8 * m)));
                    s = _mm512_dpbusd_epi32(s, c[2 * m + 1], _mm512_set1_epi64(bytes8(x->q + 16 + 8 * m)));
                }
            }
            __m256i isum = _mm512_cvtepi64_epi32(_mm512_add_epi32(s, _mm512_srli_epi64(s, 32)));
            if (base == AN_Q4_0) isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(8 * x->sum));
            else if (base == AN_Q8_0) isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(128 * x->sum));
            acc[n] = x8_block(acc[n], isum, dw, mw, x, base == AN_Q4_1);
        }
    }
    for (int n = 0; n < R; n++) _mm256_storeu_ps(out + 8 * n, acc[n]);
}
#endif

/* one instance per type, level and row count (1 for decoding one sequence, 4 for batches and prompts) */
#define X8_INSTANCE(LEVEL, NAME, BASE, R)                                                                     \
    static void NAME(const uint8_t *w, const an_q8_act *a, int nb, float *out) { LEVEL(BASE, w, a, nb, R, out); }
X8_INSTANCE(dot8_avx2, q8_0_avx2_1, AN_Q8_0, 1)
X8_INSTANCE(dot8_avx2, q4_0_avx2_1, AN_Q4_0, 1)
X8_INSTANCE(dot8_avx2, q4_1_avx2_1, AN_Q4_1, 1)
X8_INSTANCE(dot8_avx2, q8_0_avx2_4, AN_Q8_0, 4)
X8_INSTANCE(dot8_avx2, q4_0_avx2_4, AN_Q4_0, 4)
X8_INSTANCE(dot8_avx2, q4_1_avx2_4, AN_Q4_1, 4)
#if X8_VNNI
X8_INSTANCE(dot8_vnni, q8_0_vnni_1, AN_Q8_0, 1)
X8_INSTANCE(dot8_vnni, q4_0_vnni_1, AN_Q4_0, 1)
X8_INSTANCE(dot8_vnni, q4_1_vnni_1, AN_Q4_1, 1)
X8_INSTANCE(dot8_vnni, q8_0_vnni_4, AN_Q8_0, 4)
X8_INSTANCE(dot8_vnni, q4_0_vnni_4, AN_Q4_0, 4)
X8_INSTANCE(dot8_vnni, q4_1_vnni_4, AN_Q4_1, 4)
#endif
#endif

typedef void (*dot8_fn)(const uint8_t *w, const an_q8_act *a, int nb, float *out);

void an_q_x8_dot8(an_dtype base, const uint8_t *w, const an_q8_act *a, int nb, int simd, int R, float *out) {
    int i = base == AN_Q8_0 ? 0 : base == AN_Q4_0 ? 1 : 2;
#if X8_SIMD
    if (R == 1 || R == AN_Q_X8_ROWS) {
        int k = R == 1 ? 0 : 1;
#if X8_VNNI
        static const dot8_fn vnni[2][3] = {{q8_0_vnni_1, q4_0_vnni_1, q4_1_vnni_1}, {q8_0_vnni_4, q4_0_vnni_4, q4_1_vnni_4}};
        if (simd >= AN_Q_VNNI) {
            vnni[k][i](w, a, nb, out);
            return;
        }
#endif
        static const dot8_fn avx2[2][3] = {{q8_0_avx2_1, q4_0_avx2_1, q4_1_avx2_1}, {q8_0_avx2_4, q4_0_avx2_4, q4_1_avx2_4}};
        if (simd >= AN_Q_AVX2) {
            avx2[k][i](w, a, nb, out);
            return;
        }
    }
    if (simd >= AN_Q_AVX2) { /* 2 or 3 rows: one at a time, the same bits */
        for (int n = 0; n < R; n++) an_q_x8_dot8(base, w, a + (size_t)n * nb, nb, simd, 1, out + 8 * n);
        return;
    }
#endif
    (void)simd, (void)i;
    dot8_plain(base, w, a, nb, R, out);
}
