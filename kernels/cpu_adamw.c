/* AdamW as torch.optim.AdamW computes it (single-tensor path, PyTorch 2.x), operation for operation:
 *   p *= 1 - lr * wd
 *   m  = lerp(m, g, 1 - beta1)            (m + (1 - beta1) * (g - m))
 *   v  = v * beta2 + (1 - beta2) * g * g
 *   p -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 * Scalars are formed in double, as Python does, and rounded to float once. */
#include <math.h>

#include "kernels/cpu.h"

void an_cpu_adamw_update(float *param, const float *grad, float *m, float *v, size_t n, float lr, float beta1,
                         float beta2, float eps, float weight_decay, int step) {
    float decay = (float)(1.0 - (double)lr * (double)weight_decay);
    float w1 = (float)(1.0 - (double)beta1);
    float w2 = (float)(1.0 - (double)beta2);
    float step_size = (float)((double)lr / (1.0 - pow((double)beta1, step)));
    float bc2_sqrt = (float)sqrt(1.0 - pow((double)beta2, step));
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        float p = param[i] * decay;
        float mi = m[i] + w1 * (g - m[i]);
        float vi = v[i] * beta2 + w2 * (g * g);
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        param[i] = p - step_size * (mi / denom);
        m[i] = mi;
        v[i] = vi;
    }
}

/* Fixed chunks, not per-thread partials: the sum is the same for any thread count. */
double an_cpu_sum_squares(const float *x, size_t n) {
    enum { CHUNKS = 64 };
    double part[CHUNKS];
    size_t per = (n + CHUNKS - 1) / CHUNKS;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int c = 0; c < CHUNKS; c++) {
        size_t i0 = (size_t)c * per, i1 = i0 + per < n ? i0 + per : n;
        double acc[4] = {0};
        size_t i = i0;
        for (; i + 4 <= i1; i += 4)
            for (int l = 0; l < 4; l++) acc[l] += (double)x[i + l] * (double)x[i + l];
        double s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
        for (; i < i1; i++) s += (double)x[i] * (double)x[i];
        part[c] = i0 < i1 ? s : 0.0;
    }
    double total = 0.0;
    for (int c = 0; c < CHUNKS; c++) total += part[c];
    return total;
}
