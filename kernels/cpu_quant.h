#ifndef AN_CPU_QUANT_H
#define AN_CPU_QUANT_H
/* Internals of the CPU kernels on GGUF-quantized weights (AN_Q8_0 .. AN_Q6_K, kernels/dtype.h).
 *
 * The weights stay in ggml's blocks, byte for byte as the GGUF file stores them (blocks of 18, 20,
 * 34, 144 or 210 bytes, so at any alignment: fields are read bytewise or with unaligned loads):
 *   Q8_0  f16 d; int8 q[32]                         value = q * d
 *   Q4_0  f16 d; u8 qs[16]                          value = d * (q - 8); element j < 16 is the low
 *                                                   nibble of qs[j], element j + 16 its high nibble
 *   Q4_1  f16 d, m; u8 qs[16]                       value = d * q + m (nibbles as Q4_0)
 *   Q4_K  f16 d, dmin; u8 scales[12]; u8 qs[128]    8 sub-blocks of 32 with 6-bit scale sc and min mn:
 *                                                   value = (d * sc) * q - (dmin * mn); sub-blocks 2k,
 *                                                   2k+1 are the low / high nibbles of qs[32k .. 32k+31]
 *   Q6_K  u8 ql[128], qh[64]; int8 scales[16]; f16 d  value = (d * scale) * (q - 32), 16 per scale
 * (model/io/gguf_quants.c documents the same layouts; its dequantization is the reference.)
 *
 * Two ways to multiply (kernels/cpu_quant.c):
 *  - inference on up to AN_QUANT_MATVEC_MAX_ROWS rows (decode steps, short prompts; AN_LINEAR_INFER):
 *    the activations are quantized to 8 bits per block of 32 (an_q8_act) or 256 (an_q8k_act) and each
 *    weight block is dotted with them in integers, exactly; the integer sums become float32 in a
 *    fixed order (below), so the plain-C and the SIMD kernels (AVX2, AVX-512 VNNI) give the same bits,
 *    and a row's result does not depend on how many rows run with it (the 32-block types unpack each
 *    weight block once for 8 or 4 input rows, summing each row in the same order);
 *  - more rows, and training (AN_LINEAR_EXACT: the function its backward differentiates), and input
 *    gradients: a tile of weight rows is dequantized to float32 (bit-identical to the reference) and
 *    the float32 GEMM runs on it.
 *
 * The float order of the 32-block dot products (Q8_0, Q4_0, Q4_1): block b's 32 products are summed
 * exactly in eight int32 lanes, lane l holding elements 4l .. 4l+3; acc[b % 2][l] += (float)lane *
 * (d_w * d_a), a product then a sum, never fused; at the end t[l] = acc[0][l] + acc[1][l] and the
 * result is ((t0 + t4) + (t2 + t6)) + ((t1 + t5) + (t3 + t7)), plus, for Q4_1, the minimum terms
 * m_w * s_a summed block by block into m[b % 2] and added last as (m0 + m1).
 * The 256-block dot products (Q4_K, Q6_K) sum each super-block exactly in integers and add
 * (d_w * d_a) * sum (minus (dmin_w * d_a) * min sum for Q4_K) block by block. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/ops.h"
#include "kernels/quant_x8.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

/* ggml's f16 scale at p (little-endian, any alignment) as float32: exact either way. */
static inline float an_q_f16(const uint8_t *p) {
    uint16_t h = (uint16_t)(p[0] | p[1] << 8);
#if defined(__F16C__)
    return _cvtsh_ss(h);
#else
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, u;
    if (exp == 0x1f) u = sign | 0x7f800000u | (mant << 13);
    else if (exp == 0) {
        float v = (float)mant * (1.0f / 16777216.0f);
        return sign ? -v : v;
    } else u = sign | ((exp + 112) << 23) | (mant << 13);
    float f;
    memcpy(&f, &u, 4);
    return f;
#endif
}

/* Activations quantized per block of 32: q = round(x / d), d = max|x| / 127 (so |q| <= 127); s = d *
 * sum(q) for Q4_1's minimum term. A block with a NaN or infinity gets d = NaN (the product is NaN). */
typedef struct an_q8_act {
    float d, s;
    int32_t sum; /* sum(q): the interleaved kernels' correction for unsigned weights */
    int8_t q[32];
} an_q8_act;

/* Per block of 256 (the k-quants): d and q as above, bsum[j] = sum of q[16j .. 16j+15]. */
typedef struct an_q8k_act {
    float d;
    int8_t q[256];
    int16_t bsum[16];
} an_q8k_act;

void an_q8_act_quantize(an_q8_act *dst, const float *x, int n);   /* n: a multiple of 32 */
void an_q8_act_quantize_plain(an_q8_act *dst, const float *x, int n); /* the same bits without SIMD */
void an_q8k_act_quantize(an_q8k_act *dst, const float *x, int n); /* n: a multiple of 256 */

/* The SIMD level a dot product runs at: 0 plain C; 1 AVX2; 2 AVX-512 VNNI (256-bit vpdpbusd). Each
 * gives the same bits; a level the build lacks runs the best one it has below it. */
enum { AN_Q_PLAIN = 0, AN_Q_AVX2 = 1, AN_Q_VNNI = 2 };
int an_q_best_simd(void);

/* The eight-lane float order of the 32-block family (see above): acc[16] -> one float. */
static inline float an_q_reduce16(const float *acc) {
    float t[8];
    for (int l = 0; l < 8; l++) t[l] = acc[l] + acc[8 + l];
    return ((t[0] + t[4]) + (t[2] + t[6])) + ((t[1] + t[5]) + (t[3] + t[7]));
}

/* One weight row (nb blocks) dotted with one quantized activation row, at a SIMD level. */
float an_q8_0_dot(const uint8_t *w, const an_q8_act *a, int nb, int simd);
float an_q4_0_dot(const uint8_t *w, const an_q8_act *a, int nb, int simd);
float an_q4_1_dot(const uint8_t *w, const an_q8_act *a, int nb, int simd);
float an_q4_k_dot(const uint8_t *w, const an_q8k_act *a, int nb, int simd);
float an_q6_k_dot(const uint8_t *w, const an_q8k_act *a, int nb, int simd);

/* The 32-block products for R activation rows at once (rows a, a + nb, ..., R = AN_Q_ROWS or
 * AN_Q_ROWS / 2): each weight block is unpacked once for all of them; out[r] has the bits of the
 * single-row product of row r. (8 rows keep 16 accumulators in AVX-512's 32 vector registers; 4
 * serve the batches of 4 to 7.) */
#define AN_Q_ROWS 8
typedef void (*an_q_rows_fn)(const uint8_t *w, const an_q8_act *a, int nb, float *out);
typedef struct an_q_rows_kernels {
    an_q_rows_fn avx2[2], vnni[2]; /* for 4 and 8 rows; NULL where the build lacks the level */
    float (*dot)(const uint8_t *w, const an_q8_act *a, int nb, int simd); /* the single-row product */
} an_q_rows_kernels;
/* A kernel where the build has its SIMD level, else NULL (for an_q_rows_kernels tables). */
#if defined(__AVX2__)
#define AN_Q_IF_AVX2(f) f
#else
#define AN_Q_IF_AVX2(f) NULL
#endif
#if defined(__AVX2__) && defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define AN_Q_IF_VNNI(f) f
#else
#define AN_Q_IF_VNNI(f) NULL
#endif
/* The dispatch every type shares: the best kernel for R rows at level simd, else R single rows. */
void an_q_dot_rows(const an_q_rows_kernels *k, const uint8_t *w, const an_q8_act *a, int nb, int simd, int R,
                   float *out);
void an_q8_0_dot_rows(const uint8_t *w, const an_q8_act *a, int nb, int simd, int R, float *out);
void an_q4_0_dot_rows(const uint8_t *w, const an_q8_act *a, int nb, int simd, int R, float *out);
void an_q4_1_dot_rows(const uint8_t *w, const an_q8_act *a, int nb, int simd, int R, float *out);

/* nb blocks to float32, the same bits as model/io/gguf_quants.c's reference dequantization. */
void an_q8_0_dequantize(const uint8_t *w, float *y, int nb);
void an_q4_0_dequantize(const uint8_t *w, float *y, int nb);
void an_q4_1_dequantize(const uint8_t *w, float *y, int nb);
void an_q4_k_dequantize(const uint8_t *w, float *y, int nb);
void an_q6_k_dequantize(const uint8_t *w, float *y, int nb);

/* Eight rows interleaved (AN_Q8_0_X8, AN_Q4_0_X8, AN_Q4_1_X8; kernels/quant_x8.h, and
 * kernels/cpu_quant_x8.c for the layout and the float order, which differs from the row-by-row one
 * above): an_q_x8_dot8 multiplies one group (w, nb group blocks) with R <= AN_Q_X8_ROWS activation
 * rows (a, a + nb, ...) into out[R][8], each activation row's eight outputs the same bits for any R. */
#define AN_Q_X8_ROWS 4
void an_q_x8_dot8(an_dtype base, const uint8_t *w, const an_q8_act *a, int nb, int simd, int R, float *out);
/* Row `row` of an interleaved weight (data: its first group, nb blocks a row) as float32: the bits of
 * the reference dequantization of its ggml blocks. */
void an_q_x8_dequantize_row(an_dtype base, const uint8_t *data, int64_t row, int nb, float *y);

/* The matrix-vector product of the typed linear op at a given SIMD level (the op uses the best;
 * 32 rows: above that, in ggml's layout, the dequantized tiles under the GEMM were faster for SmolLM2's
 * shapes on the development machine, 582 against 338 prompt tokens/s at 64 rows, 332 against 361 at
 * 32; interleaved weights stay on the integer product, in pieces of 32 rows):
 * out[N, OC] = inp[N, C] W^T + bias with the activations quantized, N <= AN_QUANT_MATVEC_MAX_ROWS;
 * work: an_quant_act_bytes(w->dtype, N, C). Row n of the result does not depend on the other rows.
 * Returns -1 (writing nothing) for a dtype that is not a GGUF block type or too little work. */
#define AN_QUANT_MATVEC_MAX_ROWS 32
size_t an_quant_act_bytes(an_dtype t, int N, int C);
int an_cpu_quant_matvec(float *out, const float *inp, const an_weight *w, const float *bias, int N, void *work,
                        size_t work_bytes, int simd);

#endif
