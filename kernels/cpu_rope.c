/* Rotary position embedding, in place on x[N, nh, hd].
 *
 * Angles follow what PyTorch (Hugging Face LlamaRotaryEmbedding, Meta's precompute_freqs_cis) and
 * llama2.c compute in float32: inv_freq = 1 / theta^(float(2i) / hd) rounded to float, angle =
 * float(pos) * inv_freq rounded to float. At position 4000 that rounding moves the angle by up to
 * 2.4e-4, which the models were trained with, so we reproduce it; cos and sin of that float angle are
 * then taken in double, so the results match PyTorch to about 1 ulp at any position.
 *
 * Those cos and sin cost more than the rotation itself, and a training step rotates q and k of every
 * layer forward and back at the same few positions, so they come from a table made once per plan
 * (an_cpu_rope_table); a position past the table is computed on the spot, with the same arithmetic. */
#include <math.h>

#include "kernels/cpu.h"

enum { PAIRS = 64 }; /* frequencies handled per pass, so the buffers stay on the stack for any hd */

/* cos and sin of the angles of pairs i0 .. i0 + np - 1 at position pos, interleaved (cos, sin). */
static void rope_angles(float *cs, int32_t pos, int i0, int np, int hd, float theta) {
    for (int i = 0; i < np; i++) {
        float expo = (float)(2 * (i0 + i)) / (float)hd;
        float inv_freq = 1.0f / (float)pow((double)theta, (double)expo);
        float angle = (float)pos * inv_freq;
        cs[2 * i] = (float)cos((double)angle);
        cs[2 * i + 1] = (float)sin((double)angle);
    }
}

void an_cpu_rope_table(const an_ops *o, float *cos_sin, int n_pos, int hd, float theta) {
    (void)o;
    int half = hd / 2;
#pragma omp parallel for schedule(static)
    for (int p = 0; p < n_pos; p++) rope_angles(cos_sin + (size_t)p * hd, p, 0, half, hd, theta);
}

static void rope(float *x, const int32_t *pos, int N, int nh, int hd, an_rope r, float dir) {
    int half = hd / 2;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float own[2 * PAIRS];
        int tabled = r.cos_sin && pos[n] < r.n_pos;
        for (int i0 = 0; i0 < half; i0 += PAIRS) {
            int np = half - i0 < PAIRS ? half - i0 : PAIRS;
            const float *cs = own;
            if (tabled)
                cs = r.cos_sin + (size_t)pos[n] * hd + 2 * i0;
            else
                rope_angles(own, pos[n], i0, np, hd, r.theta);
            for (int h = 0; h < nh; h++) {
                float *xh = x + ((size_t)n * nh + h) * hd;
                if (r.interleaved) {
                    for (int i = 0; i < np; i++) {
                        float c = cs[2 * i], s = dir * cs[2 * i + 1];
                        float a = xh[2 * (i0 + i)], b = xh[2 * (i0 + i) + 1];
                        xh[2 * (i0 + i)] = a * c - b * s;
                        xh[2 * (i0 + i) + 1] = a * s + b * c;
                    }
                } else {
                    float *x1 = xh + i0, *x2 = xh + half + i0;
                    for (int i = 0; i < np; i++) {
                        float c = cs[2 * i], s = dir * cs[2 * i + 1];
                        float a = x1[i], b = x2[i];
                        x1[i] = a * c - b * s;
                        x2[i] = a * s + b * c;
                    }
                }
            }
        }
    }
}

void an_cpu_rope_forward(const an_ops *o, float *x, const int32_t *pos, int N, int nh, int hd, an_rope r) {
    (void)o;
    rope(x, pos, N, nh, hd, r, 1.0f);
}

/* The rotation is orthogonal, so its transpose (the backward) is the rotation by the opposite angle. */
void an_cpu_rope_backward(const an_ops *o, float *dx, const int32_t *pos, int N, int nh, int hd, an_rope r) {
    (void)o;
    rope(dx, pos, N, nh, hd, r, -1.0f);
}
