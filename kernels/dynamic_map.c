/* bitsandbytes' signed dynamic 8-bit map and blockwise 8-bit quantization (see dynamic_map.h). */
#include "kernels/dynamic_map.h"

#include <math.h>
#include <stdlib.h>

/* Bit-exactness needs every product rounded on its own; clang would otherwise fuse a*b+c. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* torch.linspace(start, end, steps) for float32 on CPU: the first half counts up from start, the
 * second half down from end, and torch's build fuses each step * idx + base into one FMA. */
static float torch_linspace_f32(float start, float end, int64_t steps, int64_t idx) {
    float step = (end - start) / (float)(steps - 1);
    if (idx < steps / 2) return fmaf(step, (float)idx, start);
    return fmaf(-step, (float)(steps - idx - 1), end);
}

void an_dynamic_map_signed8(float code[256]) {
    int k = 0;
    for (int i = 0; i < 7; i++) {
        int64_t steps = ((int64_t)1 << i) + 1;
        /* 10 ** (i - 6) is a Python scalar; torch multiplies the float32 tensor by it in float32 */
        float scale = (float)pow(10.0, i - 6);
        for (int64_t j = 0; j + 1 < steps; j++) {
            float lo = torch_linspace_f32(0.1f, 1.0f, steps, j);
            float hi = torch_linspace_f32(0.1f, 1.0f, steps, j + 1);
            float mean = (lo + hi) / 2.0f;
            float v = scale * mean;
            code[k++] = v;
            code[k++] = -v;
        }
    }
    code[k++] = 0.0f;
    code[k++] = 1.0f;
    qsort(code, 256, sizeof(float), cmp_float);
}

/* bitsandbytes' CPU kernel does not search the code per value: it cuts [-1, 1] into 65536 even
 * steps and precomputes, for each step, the code index that step falls on (the number of
 * midpoints (code[i] + code[i+1]) / 2 below it). A value is then rounded to the nearest step, so
 * a value within half a step (1.5e-5) of a midpoint can take the code on the other side. */
#define LUT_STEPS 65536

static void build_lut(const float code[256], uint8_t *lut) {
    float mid[255];
    for (int i = 0; i < 255; i++) mid[i] = 0.5f * (code[i] + code[i + 1]);
    int c = 0;
    for (int i = 0; i < LUT_STEPS; i++) {
        float v = -1.0f + (2.0f * (float)i) / (float)(LUT_STEPS - 1);
        while (c < 255 && mid[c] < v) c++;
        lut[i] = (uint8_t)c;
    }
}

static uint16_t lut_step(float v) {
    v = fminf(fmaxf(v, -1.0f), 1.0f);
    float t = (v + 1.0f) * 0.5f;
    t = t * (float)(LUT_STEPS - 1);
    t = t + 0.5f;
    return (uint16_t)t;
}

int an_quantize_blockwise8(const float *x, int64_t n, int blocksize, const float code[256], uint8_t *q,
                           float *absmax) {
    uint8_t *lut = malloc(LUT_STEPS);
    if (!lut) return -1;
    build_lut(code, lut);
    for (int64_t b0 = 0, b = 0; b0 < n; b0 += blocksize, b++) {
        int64_t end = b0 + blocksize < n ? b0 + blocksize : n;
        float am = 0.0f;
        for (int64_t i = b0; i < end; i++) am = fmaxf(am, fabsf(x[i]));
        absmax[b] = am;
        if (am == 0.0f) { /* an all-zero block stores index 0 */
            for (int64_t i = b0; i < end; i++) q[i] = 0;
            continue;
        }
        float inv = 1.0f / am;
        for (int64_t i = b0; i < end; i++) q[i] = lut[lut_step(x[i] * inv)];
    }
    free(lut);
    return 0;
}

void an_dequantize_blockwise8(const uint8_t *q, const float *absmax, int64_t n, int blocksize,
                              const float code[256], float *out) {
    for (int64_t i = 0; i < n; i++) out[i] = code[q[i]] * absmax[i / blocksize];
}
