/* The typed linear ops and the embedding lookup on GGUF-quantized weights (kernels/cpu_quant.h):
 * the activations' 8-bit quantization, the matrix-vector product for a few rows, and the tiles of
 * dequantized rows under the float32 GEMM for many rows and for input gradients. A GGUF float32
 * weight kept in panels (AN_F32_X32) has its own forward (kernels/cpu_f32x32.c, dispatched in
 * cpu_linear.c) and goes through the same row tiles for its input gradient and lookup. */
#if defined(__clang__) /* products and sums stay separate roundings (gcc's ISO C mode never fuses them) */
#pragma STDC FP_CONTRACT OFF
#endif
#include <math.h>
#include <omp.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "kernels/cpu.h"
#include "kernels/cpu_quant.h"
#include "kernels/f32x32.h"

int an_q_best_simd(void) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__) && defined(__AVX2__)
    return AN_Q_VNNI;
#elif defined(__AVX2__)
    return AN_Q_AVX2;
#else
    return AN_Q_PLAIN;
#endif
}

/* d = max|x| / 127 and q = round(x / d) (|q| <= 127); NaN or infinity anywhere gives d = NaN */
static float block_scale(const float *x, int n, float *inv) {
    float amax = 0.0f;
    int bad = 0;
    for (int i = 0; i < n; i++) {
        float v = fabsf(x[i]);
        bad |= !(v <= 3.402823466e38f);
        amax = v > amax ? v : amax;
    }
    if (bad) {
        *inv = 0.0f;
        return NAN;
    }
    float d = amax / 127.0f;
    *inv = d > 0.0f ? 1.0f / d : 0.0f;
    return d;
}

static inline int8_t round_q(float v) {
    long r = lrintf(v); /* to nearest even; |v| <= 127 up to rounding */
    return (int8_t)(r > 127 ? 127 : r < -127 ? -127 : r);
}

#if defined(__AVX2__)
/* One block with AVX2, the bits of the plain loop below: the same max, the same product x * (1 / d)
 * rounded to nearest even (the default rounding, as lrintf), the same clamp. */
static void quantize_block_avx2(an_q8_act *dst, const float *x) {
    const __m256 sign = _mm256_set1_ps(-0.0f), big = _mm256_set1_ps(3.402823466e38f);
    __m256 v[4], amax8 = _mm256_setzero_ps();
    int bad = 0;
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        __m256 a = _mm256_andnot_ps(sign, v[k]);
        bad |= _mm256_movemask_ps(_mm256_cmp_ps(a, big, _CMP_NLE_UQ)); /* NaN or infinity */
        amax8 = _mm256_max_ps(amax8, a);
    }
    if (bad) { /* d = NaN (the products will be NaN): the plain loop's bits for the rest */
        an_q8_act_quantize_plain(dst, x, 32);
        return;
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax8), _mm256_extractf128_ps(amax8, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float amax = _mm_cvtss_f32(m4), d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
    __m256i q[4], lim = _mm256_set1_epi32(127), sum = _mm256_setzero_si256();
    for (int k = 0; k < 4; k++) {
        q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], _mm256_set1_ps(inv)));
        q[k] = _mm256_max_epi32(_mm256_min_epi32(q[k], lim), _mm256_sub_epi32(_mm256_setzero_si256(), lim));
        sum = _mm256_add_epi32(sum, q[k]);
    }
    /* 32 int32 -> 32 int8 in order: the packs interleave 128-bit lanes, the permute undoes it */
    __m256i p16 = _mm256_packs_epi32(q[0], q[1]), p16b = _mm256_packs_epi32(q[2], q[3]);
    __m256i p8 = _mm256_packs_epi16(p16, p16b);
    p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)dst->q, p8);
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
    int32_t total = _mm_cvtsi128_si32(s4);
    dst->d = d;
    dst->s = d * (float)total;
    dst->sum = total;
}
#endif

void an_q8_act_quantize(an_q8_act *dst, const float *x, int n) {
#if defined(__AVX2__)
    for (int b = 0; b < n / 32; b++) quantize_block_avx2(dst + b, x + 32 * b);
    return;
#endif
    an_q8_act_quantize_plain(dst, x, n);
}

void an_q8_act_quantize_plain(an_q8_act *dst, const float *x, int n) {
    for (int b = 0; b < n / 32; b++, x += 32) {
        float inv, d = block_scale(x, 32, &inv);
        int32_t sum = 0;
        for (int i = 0; i < 32; i++) {
            dst[b].q[i] = round_q(x[i] * inv);
            sum += dst[b].q[i];
        }
        dst[b].d = d;
        dst[b].s = d * (float)sum;
        dst[b].sum = sum;
    }
}

void an_q8k_act_quantize(an_q8k_act *dst, const float *x, int n) {
    for (int b = 0; b < n / 256; b++, x += 256) {
        float inv, d = block_scale(x, 256, &inv);
        for (int i = 0; i < 256; i++) dst[b].q[i] = round_q(x[i] * inv);
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int i = 16 * j; i < 16 * j + 16; i++) s += dst[b].q[i];
            dst[b].bsum[j] = (int16_t)s;
        }
        dst[b].d = d;
    }
}

/* ---- per dtype: how activations are quantized, how a row dots and dequantizes ---- */
static int is_k(an_dtype t) { return t == AN_Q4_K || t == AN_Q6_K; }

static size_t act_row_bytes(an_dtype t, int C) {
    return is_k(t) ? (size_t)(C / 256) * sizeof(an_q8k_act) : (size_t)(C / 32) * sizeof(an_q8_act);
}

size_t an_quant_act_bytes(an_dtype t, int N, int C) {
    if (!an_dtype_is_ggml(t) || t == AN_F32_X32) return 0; /* floats need no quantized copy */
    return (size_t)N * act_row_bytes(t, C) + 64; /* + 64: room to align */
}

static float row_dot(an_dtype t, const uint8_t *w, const void *a, int nb, int simd) {
    switch (t) {
    case AN_Q8_0: return an_q8_0_dot(w, a, nb, simd);
    case AN_Q4_0: return an_q4_0_dot(w, a, nb, simd);
    case AN_Q4_1: return an_q4_1_dot(w, a, nb, simd);
    case AN_Q4_K: return an_q4_k_dot(w, a, nb, simd);
    case AN_Q6_K: return an_q6_k_dot(w, a, nb, simd);
    default: return NAN;
    }
}

void an_q_dot_rows(const an_q_rows_kernels *k, const uint8_t *w, const an_q8_act *a, int nb, int simd, int R,
                   float *out) {
    int i = R == AN_Q_ROWS ? 1 : R == AN_Q_ROWS / 2 ? 0 : -1;
    an_q_rows_fn f = i < 0 ? NULL : simd >= AN_Q_VNNI && k->vnni[i] ? k->vnni[i] : simd >= AN_Q_AVX2 ? k->avx2[i] : NULL;
    if (f) {
        f(w, a, nb, out);
        return;
    }
    for (int r = 0; r < R; r++) out[r] = k->dot(w, a + (size_t)r * (size_t)nb, nb, simd);
}

/* R (AN_Q_ROWS or half of it) rows of activations at once: the 32-block types only */
static void rows_dot(an_dtype t, const uint8_t *w, const void *a, int nb, int simd, int R, float *out) {
    switch (t) {
    case AN_Q8_0: an_q8_0_dot_rows(w, a, nb, simd, R, out); return;
    case AN_Q4_0: an_q4_0_dot_rows(w, a, nb, simd, R, out); return;
    case AN_Q4_1: an_q4_1_dot_rows(w, a, nb, simd, R, out); return;
    default:
        for (int r = 0; r < R; r++) out[r] = NAN;
        return;
    }
}

static void dequantize_row(an_dtype t, const uint8_t *w, float *y, int nb) {
    switch (t) {
    case AN_Q8_0: an_q8_0_dequantize(w, y, nb); return;
    case AN_Q4_0: an_q4_0_dequantize(w, y, nb); return;
    case AN_Q4_1: an_q4_1_dequantize(w, y, nb); return;
    case AN_Q4_K: an_q4_k_dequantize(w, y, nb); return;
    case AN_Q6_K: an_q6_k_dequantize(w, y, nb); return;
    default: return;
    }
}

static size_t row_bytes(const an_weight *w) {
    return (size_t)(w->cols / an_dtype_block(w->dtype)) * (size_t)an_dtype_block_bytes(w->dtype);
}

/* Row `row` of w as float32 (the reference dequantization's bits), in any layout. */
static void dequantize_weight_row(const an_weight *w, int64_t row, float *y) {
    if (w->dtype == AN_F32_X32) {
        an_f32x32_row(w->data, w->cols, row, y);
        return;
    }
    an_dtype base = an_dtype_x8_base(w->dtype);
    int nb = (int)w->cols / an_dtype_block(base);
    const uint8_t *data = w->data;
    if (base == w->dtype) dequantize_row(base, data + (size_t)row * row_bytes(w), y, nb);
    else an_q_x8_dequantize_row(base, data, row, nb, y);
}

static void *align64(void *p) { return (void *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

int an_cpu_quant_matvec(float *out, const float *inp, const an_weight *w, const float *bias, int N, void *work,
                        size_t work_bytes, int simd) {
    an_dtype t = w->dtype;
    int C = (int)w->cols, OC = (int)w->rows;
    if (!an_dtype_is_ggml(t) || t == AN_F32_X32 || N > AN_QUANT_MATVEC_MAX_ROWS || !work ||
        work_bytes < an_quant_act_bytes(t, N, C))
        return -1;
    uint8_t *act = align64(work);
    size_t arow = act_row_bytes(t, C), wrow = row_bytes(w);
    int nb = C / an_dtype_block(t);
    const uint8_t *wd = w->data;
    an_dtype base = an_dtype_x8_base(t);
    if (base != t) { /* eight interleaved rows at a time against up to AN_Q_X8_ROWS activation rows */
        size_t group = 8 * wrow;
        /* one team for both steps: the rows' quantization is a tenth of a prompt's product */
#pragma omp parallel if ((size_t)OC * C >= 65536)
        {
#pragma omp for schedule(static)
            for (int n = 0; n < N; n++) an_q8_act_quantize((an_q8_act *)(act + n * arow), inp + (size_t)n * C, C);
#pragma omp for schedule(static)
            for (int g = 0; g < OC / 8; g++)
                for (int n0 = 0; n0 < N; n0 += AN_Q_X8_ROWS) {
                    int R = N - n0 < AN_Q_X8_ROWS ? N - n0 : AN_Q_X8_ROWS;
                    float s[AN_Q_X8_ROWS * 8];
                    an_q_x8_dot8(base, wd + (size_t)g * group, (const an_q8_act *)(act + n0 * arow), nb, simd, R, s);
                    for (int n = 0; n < R; n++) {
                        float *o = out + (size_t)(n0 + n) * OC + 8 * g;
                        for (int r = 0; r < 8; r++) o[r] = bias ? s[8 * n + r] + bias[8 * g + r] : s[8 * n + r];
                    }
                }
        }
        return 0;
    }
    for (int n = 0; n < N; n++) {
        if (is_k(t)) an_q8k_act_quantize((an_q8k_act *)(act + n * arow), inp + (size_t)n * C, C);
        else an_q8_act_quantize((an_q8_act *)(act + n * arow), inp + (size_t)n * C, C);
    }
    int grouped = t == AN_Q8_0 || t == AN_Q4_0 || t == AN_Q4_1;
    /* weight rows in chunks of 16 per thread step (16 rows stay in L1 while every group of input
     * rows passes over them); small products are not worth waking the team */
#pragma omp parallel for schedule(static) if ((size_t)OC * C >= 65536)
    for (int o0 = 0; o0 < OC; o0 += 16) {
        int o1 = o0 + 16 < OC ? o0 + 16 : OC;
        for (int n0 = 0; n0 < N;) {
            /* groups of AN_Q_ROWS input rows, then of half that, then one by one */
            int left = N - n0, R = !grouped ? 1 : left >= AN_Q_ROWS ? AN_Q_ROWS : left >= AN_Q_ROWS / 2 ? AN_Q_ROWS / 2 : 1;
            for (int o = o0; o < o1; o++) {
                float s[AN_Q_ROWS];
                if (R > 1) rows_dot(t, wd + (size_t)o * wrow, act + n0 * arow, nb, simd, R, s);
                else s[0] = row_dot(t, wd + (size_t)o * wrow, act + n0 * arow, nb, simd);
                for (int r = 0; r < R; r++) out[(size_t)(n0 + r) * OC + o] = bias ? s[r] + bias[o] : s[r];
            }
            n0 += R;
        }
    }
    return 0;
}

/* ---- tiles of dequantized rows under the GEMM ---- */
static int tile_rows(size_t work_floats, int C, int OC) {
    size_t t = work_floats / (size_t)C;
    if (t < 1) t = 1;
    return t > (size_t)OC ? OC : (int)t;
}

static void dequantize_tile(const an_weight *w, int o0, int rows, float *dst) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) dequantize_weight_row(w, o0 + r, dst + (size_t)r * w->cols);
}

size_t an_cpu_quant_work_bytes(const an_weight *w, int N) {
    int n = N < AN_QUANT_MATVEC_MAX_ROWS ? N : AN_QUANT_MATVEC_MAX_ROWS;
    return an_bf16_work_floats((size_t)w->cols) * sizeof(float) + 64 + an_quant_act_bytes(w->dtype, n, (int)w->cols);
}

static void fill_nan(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = NAN;
}

void an_cpu_quant_forward(float *out, const float *inp, const an_weight *w, const float *bias, int N, void *work,
                          size_t work_bytes, int mode) {
    int C = (int)w->cols, OC = (int)w->rows;
    /* inference: the integer product on quantized activations, up to AN_QUANT_MATVEC_MAX_ROWS rows at a
     * time; for interleaved weights at every row count (a prompt's GEMM in int8, faster than dequantized
     * tiles under the float32 GEMM), for the others only up to that many rows */
    if (mode == AN_LINEAR_INFER && (N <= AN_QUANT_MATVEC_MAX_ROWS || an_dtype_x8_base(w->dtype) != w->dtype)) {
        int ok = 1;
        for (int n0 = 0; ok && n0 < N; n0 += AN_QUANT_MATVEC_MAX_ROWS) {
            int rows = N - n0 < AN_QUANT_MATVEC_MAX_ROWS ? N - n0 : AN_QUANT_MATVEC_MAX_ROWS;
            ok = !an_cpu_quant_matvec(out + (size_t)n0 * OC, inp + (size_t)n0 * C, w, bias, rows, work, work_bytes,
                                      an_q_best_simd());
        }
        if (ok) return;
    }
    size_t floats = work_bytes > 64 ? (work_bytes - 64) / sizeof(float) : 0;
    if (floats < (size_t)C) { /* no room for one row: NaN, never a wrong sum */
        fill_nan(out, (size_t)N * OC);
        return;
    }
    float *tile = align64(work);
    float beta = 0.0f;
    if (bias) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) memcpy(out + (size_t)n * OC, bias, (size_t)OC * sizeof(float));
        beta = 1.0f;
    }
    int tr = tile_rows(floats, C, OC);
    for (int o0 = 0; o0 < OC; o0 += tr) {
        int rows = OC - o0 < tr ? OC - o0 : tr;
        dequantize_tile(w, o0, rows, tile);
        an_cpu_sgemm(0, 1, N, rows, C, 1.0f, inp, C, tile, C, beta, out + o0, OC); /* out[:, o0:o0+rows] */
    }
}

void an_cpu_quant_backward_input(float *dinp, const float *dout, const an_weight *w, int N, void *work,
                                 size_t work_bytes) {
    int C = (int)w->cols, OC = (int)w->rows;
    size_t floats = work_bytes > 64 ? (work_bytes - 64) / sizeof(float) : 0;
    if (!work || floats < (size_t)C) {
        fill_nan(dinp, (size_t)N * C);
        return;
    }
    float *tile = align64(work);
    int tr = tile_rows(floats, C, OC);
    for (int o0 = 0; o0 < OC; o0 += tr) { /* dinp += dout[:, o0:o0+rows] @ w[o0:o0+rows, :] */
        int rows = OC - o0 < tr ? OC - o0 : tr;
        dequantize_tile(w, o0, rows, tile);
        an_cpu_sgemm(0, 0, N, C, rows, 1.0f, dout + o0, OC, tile, C, 1.0f, dinp, C);
    }
}

void an_cpu_quant_embedding(float *out, const int32_t *ids, const an_weight *table, int N) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) dequantize_weight_row(table, ids[n], out + (size_t)n * table->cols);
}
