/* Random GGUF-quantized weights (tests/quant_fixture.h). */
#include "tests/quant_fixture.h"

#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/io/gguf_quants.h"
#include "model/io/safetensors.h" /* an_f32_to_f16 */

size_t tq_bytes(an_dtype t, int64_t rows, int64_t cols) {
    return (size_t)(rows * (cols / an_dtype_block(t))) * (size_t)an_dtype_block_bytes(t);
}

static void put_f16(uint8_t *p, float v) {
    uint16_t h = an_f32_to_f16(v);
    p[0] = (uint8_t)(h & 0xff);
    p[1] = (uint8_t)(h >> 8);
}

/* a scale of about s (0.5 s .. 1.5 s), sign random when asked */
static float around(an_rng *r, float s, int signed_) {
    float v = s * (0.5f + an_rng_uniform(r));
    return signed_ && an_rng_uniform(r) < 0.5f ? -v : v;
}

void tq_random(an_dtype t, int64_t rows, int64_t cols, an_rng *r, uint8_t *dst, float *wide, float *mag) {
    size_t n = tq_bytes(t, rows, cols), bb = (size_t)an_dtype_block_bytes(t);
    for (size_t i = 0; i < n; i++) dst[i] = (uint8_t)(an_rng_u64(r) >> 56);
    for (size_t b = 0; b < n / bb; b++) {
        uint8_t *p = dst + b * bb;
        switch (t) {
        case AN_Q8_0: put_f16(p, around(r, 1.0f / 128, 1)); break;
        case AN_Q4_0: put_f16(p, around(r, 1.0f / 8, 1)); break;
        case AN_Q4_1:
            put_f16(p, around(r, 1.0f / 8, 0));
            put_f16(p + 2, around(r, 1.0f, 1));
            break;
        case AN_Q4_K: /* values (d sc) q - dmin mn with 6-bit sc, mn and 4-bit q */
            put_f16(p, around(r, 1.0f / (63 * 8), 0));
            put_f16(p + 2, around(r, 1.0f / 63, 0));
            break;
        case AN_Q6_K: put_f16(p + 208, around(r, 1.0f / (128 * 32), 1)); break; /* int8 scales, q - 32 */
        default: break;
        }
    }
    an_error err;
    if (wide && an_ggml_dequantize(an_dtype_ggml_type(t), dst, wide, rows * cols, &err)) {
        fprintf(stderr, "tq_random: %s\n", err.msg);
        abort();
    }
    if (mag) { /* every part positive: d, m >= 0 (Q4_1); d >= 0 and dmin <= 0, so - dmin mn >= 0 (Q4_K) */
        uint8_t *abs_blocks = malloc(n);
        if (!abs_blocks) abort();
        memcpy(abs_blocks, dst, n);
        for (size_t b = 0; b < n / bb; b++) {
            uint8_t *p = abs_blocks + b * bb;
            if (t == AN_Q4_1) p[1] &= 0x7f, p[3] &= 0x7f;
            if (t == AN_Q4_K) p[1] &= 0x7f, p[3] |= 0x80;
        }
        if (an_ggml_dequantize(an_dtype_ggml_type(t), abs_blocks, mag, rows * cols, &err)) abort();
        for (int64_t i = 0; i < rows * cols; i++) mag[i] = fabsf(mag[i]);
        free(abs_blocks);
    }
}

double tq_act_bound(an_dtype t, const float *wide, const float *mag, const float *x, int n) {
    const double u = 0x1p-24;
    int B = an_dtype_block(t), nb = n / B;
    double quant = 0, mags = 0;
    for (int b = 0; b < nb; b++) {
        double amax = 0;
        for (int i = b * B; i < (b + 1) * B; i++) amax = fmax(amax, fabs(x[i]));
        double d = amax / 127.0;
        for (int i = b * B; i < (b + 1) * B; i++) {
            quant += d * (0.5 + 300 * u) * fabs(wide[i]);
            mags += mag[i] * (fabs(x[i]) + d);
        }
    }
    return quant + (nb + 19) * u * mags * 1.01;
}
