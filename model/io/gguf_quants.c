/* ggml tensor types: the size table and the reference dequantizers, written from the block layouts
 * (the gguf Python package's constants and numpy dequantizers describe them; ggml's C reference
 * computes the same). Each value is computed in float32 in the reference's order: the scale first
 * (d * sub-scale), times the quant, then the offset added or subtracted. An f16 scale times these small
 * integers is exact in float32, so the one rounding is in the last step, and writing each step as its
 * own statement keeps it that way whatever the compiler's contraction setting
 * (tests/test_gguf.c compares every type bit for bit with the gguf package). */
#include "model/io/gguf_quants.h"

#include <math.h>
#include <string.h>

#include "model/io/safetensors.h" /* an_f16_to_f32 */

#define QK_K 256

static const struct {
    uint32_t id;
    an_ggml_type_info info;
} types[] = {
    {0, {"F32", 1, 4, 1}},          {1, {"F16", 1, 2, 1}},
    {2, {"Q4_0", 32, 18, 1}},       {3, {"Q4_1", 32, 20, 1}},
    {6, {"Q5_0", 32, 22, 1}},       {7, {"Q5_1", 32, 24, 1}},
    {8, {"Q8_0", 32, 34, 1}},       {9, {"Q8_1", 32, 40, 0}},
    {10, {"Q2_K", QK_K, 84, 0}},    {11, {"Q3_K", QK_K, 110, 0}},
    {12, {"Q4_K", QK_K, 144, 1}},   {13, {"Q5_K", QK_K, 176, 1}},
    {14, {"Q6_K", QK_K, 210, 1}},   {15, {"Q8_K", QK_K, 292, 0}},
    {16, {"IQ2_XXS", QK_K, 66, 0}}, {17, {"IQ2_XS", QK_K, 74, 0}},
    {18, {"IQ3_XXS", QK_K, 98, 0}}, {19, {"IQ1_S", QK_K, 50, 0}},
    {20, {"IQ4_NL", 32, 18, 0}},    {21, {"IQ3_S", QK_K, 110, 0}},
    {22, {"IQ2_S", QK_K, 82, 0}},   {23, {"IQ4_XS", QK_K, 136, 0}},
    {24, {"I8", 1, 1, 0}},          {25, {"I16", 1, 2, 0}},
    {26, {"I32", 1, 4, 0}},         {27, {"I64", 1, 8, 0}},
    {28, {"F64", 1, 8, 0}},         {29, {"IQ1_M", QK_K, 56, 0}},
    {30, {"BF16", 1, 2, 1}},        {34, {"TQ1_0", QK_K, 54, 0}},
    {35, {"TQ2_0", QK_K, 66, 0}},   {39, {"MXFP4", 32, 17, 0}},
    {40, {"NVFP4", 64, 36, 0}},     {41, {"Q1_0", 128, 18, 0}},
};

const an_ggml_type_info *an_ggml_type_get(uint32_t type) {
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (types[i].id == type) return &types[i].info;
    return NULL;
}

an_dtype an_ggml_type_dtype(uint32_t type) {
    switch (type) {
    case AN_GGML_Q8_0: return AN_Q8_0;
    case AN_GGML_Q4_0: return AN_Q4_0;
    case AN_GGML_Q4_1: return AN_Q4_1;
    case AN_GGML_Q4_K: return AN_Q4_K;
    case AN_GGML_Q6_K: return AN_Q6_K;
    default: return (an_dtype)0;
    }
}

uint32_t an_dtype_ggml_type(an_dtype t) {
    switch (t) {
    case AN_Q8_0: return AN_GGML_Q8_0;
    case AN_Q4_0: return AN_GGML_Q4_0;
    case AN_Q4_1: return AN_GGML_Q4_1;
    case AN_Q4_K: return AN_GGML_Q4_K;
    case AN_Q6_K: return AN_GGML_Q6_K;
    default: return 0;
    }
}

/* Little-endian fields, read bytewise: blocks sit at any alignment (18- or 34-byte blocks). */
static float f16_at(const unsigned char *p) { return an_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

/* Q4_0, 18 bytes: f16 d; 16 bytes of nibbles. Element j < 16 is the low nibble of byte j, element
 * j + 16 its high nibble; value = d * (q - 8). */
static void dq_q4_0(const unsigned char *b, float *y) {
    float d = f16_at(b);
    const unsigned char *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)((qs[j] & 15) - 8);
        y[j + 16] = d * (float)((qs[j] >> 4) - 8);
    }
}

/* Q4_1, 20 bytes: f16 d, f16 m; nibbles as Q4_0; value = d * q + m. */
static void dq_q4_1(const unsigned char *b, float *y) {
    float d = f16_at(b), m = f16_at(b + 2);
    const unsigned char *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        float lo = d * (float)(qs[j] & 15), hi = d * (float)(qs[j] >> 4);
        y[j] = lo + m;
        y[j + 16] = hi + m;
    }
}

/* Q5_0 / Q5_1 high bits: a little-endian u32 whose bit j is bit 4 of element j. */
static uint32_t u32_at(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Q5_0, 22 bytes: f16 d, u32 qh, 16 bytes of nibbles as Q4_0; value = d * (q - 16). */
static void dq_q5_0(const unsigned char *b, float *y) {
    float d = f16_at(b);
    uint32_t qh = u32_at(b + 2);
    const unsigned char *qs = b + 6;
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 15) | (int)((qh >> j) & 1) << 4;
        int hi = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = d * (float)(lo - 16);
        y[j + 16] = d * (float)(hi - 16);
    }
}

/* Q5_1, 24 bytes: f16 d, f16 m, u32 qh, 16 bytes of nibbles; value = d * q + m. */
static void dq_q5_1(const unsigned char *b, float *y) {
    float d = f16_at(b), m = f16_at(b + 2);
    uint32_t qh = u32_at(b + 4);
    const unsigned char *qs = b + 8;
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 15) | (int)((qh >> j) & 1) << 4;
        int hi = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
        float plo = d * (float)lo, phi = d * (float)hi;
        y[j] = plo + m;
        y[j + 16] = phi + m;
    }
}

/* Q8_0, 34 bytes: f16 d, 32 int8; value = q * d. */
static void dq_q8_0(const unsigned char *b, float *y) {
    float d = f16_at(b);
    for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)b[2 + j] * d;
}

/* The 12 bytes of 6-bit scales and mins of Q4_K and Q5_K, for sub-blocks 0..7:
 * bytes 0-3 hold scale 0-3 in their low 6 bits, bytes 4-7 min 0-3; scale and min 4-7 have their low
 * 4 bits in the low and high nibble of bytes 8-11 and their top 2 bits in the top 2 bits of bytes
 * 0-3 (scales) and 4-7 (mins). */
static void k_scale_min(const unsigned char *s, int i, int *sc, int *mn) {
    if (i < 4) {
        *sc = s[i] & 63;
        *mn = s[i + 4] & 63;
    } else {
        *sc = (s[i + 4] & 15) | ((s[i - 4] >> 6) << 4);
        *mn = (s[i + 4] >> 4) | ((s[i] >> 6) << 4);
    }
}

/* Q4_K, 144 bytes for 256 elements: f16 d, f16 dmin, 12 bytes of scales/mins, 128 bytes of nibbles.
 * Eight sub-blocks of 32: sub-blocks 2k and 2k+1 are the low and high nibbles of bytes 32k..32k+31.
 * value = (d * sc) * q - (dmin * mn). */
static void dq_q4_k(const unsigned char *b, float *y) {
    float d = f16_at(b), dmin = f16_at(b + 2);
    const unsigned char *sc = b + 4, *qs = b + 16;
    for (int i = 0; i < 8; i++) {
        int s, m;
        k_scale_min(sc, i, &s, &m);
        float ds = d * (float)s, dm = dmin * (float)m;
        const unsigned char *q = qs + 32 * (i / 2);
        int shift = 4 * (i % 2);
        for (int l = 0; l < 32; l++) {
            float p = ds * (float)((q[l] >> shift) & 15);
            y[32 * i + l] = p - dm;
        }
    }
}

/* Q5_K, 176 bytes: f16 d, f16 dmin, 12 bytes of scales/mins, 32 bytes qh, 128 bytes of nibbles as
 * Q4_K; bit i of qh[l] is bit 4 of element l of sub-block i. value = (d * sc) * q - (dmin * mn). */
static void dq_q5_k(const unsigned char *b, float *y) {
    float d = f16_at(b), dmin = f16_at(b + 2);
    const unsigned char *sc = b + 4, *qh = b + 16, *qs = b + 48;
    for (int i = 0; i < 8; i++) {
        int s, m;
        k_scale_min(sc, i, &s, &m);
        float ds = d * (float)s, dm = dmin * (float)m;
        const unsigned char *q = qs + 32 * (i / 2);
        int shift = 4 * (i % 2);
        for (int l = 0; l < 32; l++) {
            int v = ((q[l] >> shift) & 15) | ((qh[l] >> i) & 1) << 4;
            float p = ds * (float)v;
            y[32 * i + l] = p - dm;
        }
    }
}

/* Q6_K, 210 bytes: 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits), 16 int8 scales, f16 d.
 * Two halves of 128 elements. Element k of half h (k = 0..127) takes nibble k / 64 (low, then high)
 * of ql[64h + k % 64] and bits 2r, 2r+1 (r = k / 32) of qh[32h + k % 32]. Every 16 elements share a
 * scale; value = (d * scale) * (q - 32). */
static void dq_q6_k(const unsigned char *b, float *y) {
    const unsigned char *ql = b, *qh = b + 128, *sc = b + 192;
    float d = f16_at(b + 208);
    for (int e = 0; e < QK_K; e++) {
        int h = e / 128, k = e % 128, r = k / 32, l = k % 32;
        int lo = (ql[64 * h + k % 64] >> (4 * (k / 64))) & 15;
        int hi = (qh[32 * h + l] >> (2 * r)) & 3;
        float ds = d * (float)(int8_t)sc[e / 16];
        y[e] = ds * (float)((lo | hi << 4) - 32);
    }
}

int an_ggml_dequantize(uint32_t type, const void *src, float *dst, int64_t n, an_error *err) {
    const an_ggml_type_info *ti = an_ggml_type_get(type);
    if (!ti) return an_fail(err, "ggml type %u is unknown", type);
    if (!ti->dequantizes) return an_fail(err, "ggml type %s: dequantization is not supported yet", ti->name);
    if (n < 0 || n % ti->block)
        return an_fail(err, "ggml type %s: %lld elements are not a whole number of %d-element blocks", ti->name,
                       (long long)n, ti->block);
    const unsigned char *s = src;
    int64_t nb = n / ti->block;
    switch (type) {
    case AN_GGML_F32:
        if (n) memcpy(dst, s, (size_t)n * 4);
        return 0;
    case AN_GGML_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = f16_at(s + 2 * i);
        return 0;
    case AN_GGML_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)(s[2 * i] | s[2 * i + 1] << 8) << 16;
            memcpy(&dst[i], &u, 4);
        }
        return 0;
    default:
        break;
    }
    void (*fn)(const unsigned char *, float *) = NULL;
    switch (type) {
    case AN_GGML_Q4_0: fn = dq_q4_0; break;
    case AN_GGML_Q4_1: fn = dq_q4_1; break;
    case AN_GGML_Q5_0: fn = dq_q5_0; break;
    case AN_GGML_Q5_1: fn = dq_q5_1; break;
    case AN_GGML_Q8_0: fn = dq_q8_0; break;
    case AN_GGML_Q4_K: fn = dq_q4_k; break;
    case AN_GGML_Q5_K: fn = dq_q5_k; break;
    case AN_GGML_Q6_K: fn = dq_q6_k; break;
    default: return an_fail(err, "ggml type %s: dequantization is not supported yet", ti->name);
    }
    for (int64_t i = 0; i < nb; i++) fn(s + (size_t)i * (size_t)ti->block_bytes, dst + (size_t)i * (size_t)ti->block);
    return 0;
}

/* ---- quantization (the writer's side) ----
 * The rounding follows the gguf Python package's numpy quantizers step by step, in float32, so the
 * bytes are the same as llama.cpp's converter writes: each step is its own statement so that no
 * compiler fuses a multiply and an add into one FMA (that would round once instead of twice). */

static void put_f16(unsigned char *p, float f) {
    uint16_t h = an_f32_to_f16(f);
    p[0] = (unsigned char)(h & 0xff);
    p[1] = (unsigned char)(h >> 8);
}

/* Q8_0: d = max|x| / 127; q = x * (1/d) rounded half away from zero (ggml's roundf, written as the
 * package's np_roundf: floor(a) + floor(2 * (a - floor(a))), then the sign); an all-zero block has d = 0
 * and q = 0. */
static void q_q8_0(const float *x, unsigned char *b) {
    float amax = 0;
    for (int j = 0; j < 32; j++) {
        float a = fabsf(x[j]);
        if (a > amax) amax = a;
    }
    float d = amax / 127.0f;
    float id = d == 0 ? 0.0f : 1.0f / d;
    put_f16(b, d);
    for (int j = 0; j < 32; j++) {
        float v = x[j] * id;
        float a = fabsf(v);
        float fl = floorf(a);
        float frac2 = 2.0f * (a - fl);
        float r = fl + floorf(frac2);
        int q = (int)(v > 0 ? r : v < 0 ? -r : 0.0f);
        b[2 + j] = (unsigned char)(int8_t)q;
    }
}

/* Q4_0: the element of largest |x| (the first of equals) keeps its sign: d = max / -8, so it maps to
 * q = 0; q = trunc(x * (1/d) + 8.5) clipped to 15. */
static void q_q4_0(const float *x, unsigned char *b) {
    float amax = 0, max = 0;
    for (int j = 0; j < 32; j++) {
        float a = fabsf(x[j]);
        if (a > amax) {
            amax = a;
            max = x[j];
        }
    }
    float d = max / -8.0f;
    float id = d == 0 ? 0.0f : 1.0f / d;
    put_f16(b, d);
    unsigned char q[32];
    for (int j = 0; j < 32; j++) {
        float v = x[j] * id;
        float s = v + 8.5f;
        float t = truncf(s);
        q[j] = t >= 15.0f ? 15 : t <= 0.0f ? 0 : (unsigned char)t;
    }
    for (int j = 0; j < 16; j++) b[2 + j] = (unsigned char)(q[j] | q[j + 16] << 4);
}

int an_ggml_quantize(uint32_t type, const float *src, void *dst, int64_t n, an_error *err) {
    const an_ggml_type_info *ti = an_ggml_type_get(type);
    if (!ti) return an_fail(err, "ggml type %u is unknown", (unsigned)type);
    if (n < 0 || n % ti->block)
        return an_fail(err, "ggml type %s: %lld elements are not a whole number of %d-element blocks", ti->name,
                       (long long)n, ti->block);
    unsigned char *d = dst;
    void (*fn)(const float *, unsigned char *) = NULL;
    switch (type) {
    case AN_GGML_F32:
        if (n) memcpy(d, src, (size_t)n * 4);
        return 0;
    case AN_GGML_F16:
        for (int64_t i = 0; i < n; i++) put_f16(d + 2 * i, src[i]);
        return 0;
    case AN_GGML_Q8_0: fn = q_q8_0; break;
    case AN_GGML_Q4_0: fn = q_q4_0; break;
    default: return an_fail(err, "ggml type %s: quantization is not supported (f32, f16, q8_0 and q4_0 are)", ti->name);
    }
    for (int64_t i = 0; i < n / ti->block; i++) fn(src + (size_t)i * (size_t)ti->block, d + (size_t)i * (size_t)ti->block_bytes);
    return 0;
}
