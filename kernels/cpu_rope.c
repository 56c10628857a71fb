/* Rotary position embedding, in place on x[N, nh, hd].
 *
 * Angles follow what PyTorch (Hugging Face LlamaRotaryEmbedding, Meta's precompute_freqs_cis) and
 * llama2.c compute in float32: inv_freq = 1 / theta^(float(2i) / hd) rounded to float, angle =
 * float(pos) * inv_freq rounded to float. At position 4000 that rounding moves the angle by up to
 * 2.4e-4, which the models were trained with, so we reproduce it; cos and sin of that float angle are
 * then taken in double, so the results match PyTorch to about 1 ulp at any position. */
#include <math.h>

#include "kernels/cpu.h"

enum { PAIRS = 64 }; /* frequencies handled per pass, so the tables stay on the stack for any hd */

static void rope(float *x, const int32_t *pos, int N, int nh, int hd, float theta, int interleaved, float dir) {
    int half = hd / 2;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float c[PAIRS], s[PAIRS];
        for (int i0 = 0; i0 < half; i0 += PAIRS) {
            int np = half - i0 < PAIRS ? half - i0 : PAIRS;
            for (int i = 0; i < np; i++) {
                float expo = (float)(2 * (i0 + i)) / (float)hd;
                float inv_freq = 1.0f / (float)pow((double)theta, (double)expo);
                float angle = (float)pos[n] * inv_freq;
                c[i] = (float)cos((double)angle);
                s[i] = dir * (float)sin((double)angle);
            }
            for (int h = 0; h < nh; h++) {
                float *xh = x + ((size_t)n * nh + h) * hd;
                if (interleaved) {
                    for (int i = 0; i < np; i++) {
                        float a = xh[2 * (i0 + i)], b = xh[2 * (i0 + i) + 1];
                        xh[2 * (i0 + i)] = a * c[i] - b * s[i];
                        xh[2 * (i0 + i) + 1] = a * s[i] + b * c[i];
                    }
                } else {
                    float *x1 = xh + i0, *x2 = xh + half + i0;
                    for (int i = 0; i < np; i++) {
                        float a = x1[i], b = x2[i];
                        x1[i] = a * c[i] - b * s[i];
                        x2[i] = a * s[i] + b * c[i];
                    }
                }
            }
        }
    }
}

void an_cpu_rope_forward(float *x, const int32_t *pos, int N, int nh, int hd, float theta, int interleaved) {
    rope(x, pos, N, nh, hd, theta, interleaved, 1.0f);
}

/* The rotation is orthogonal, so its transpose (the backward) is the rotation by the opposite angle. */
void an_cpu_rope_backward(float *dx, const int32_t *pos, int N, int nh, int hd, float theta, int interleaved) {
    rope(dx, pos, N, nh, hd, theta, interleaved, -1.0f);
}
