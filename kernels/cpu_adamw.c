/* AdamW as torch.optim.AdamW computes it (single-tensor path, PyTorch 2.x), operation for operation:
 *   p *= 1 - lr * wd
 *   m  = lerp(m, g, 1 - beta1)            (m + (1 - beta1) * (g - m))
 *   v  = v * beta2 + (1 - beta2) * g * g
 *   p -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 * Scalars are formed in double from the hyperparameters as typed, as Python does, and rounded to float
 * once; the elementwise part is float32 in PyTorch's order. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/cpu.h"

/* The shortest decimal that rounds to x, as a double: 0.999f -> 0.999. PyTorch forms 1 - beta2 from
 * the Python double 0.999 (giving 0.001f); from the float it would be 1 - 0.999f = 0.00099998713, a
 * 1.3e-5 relative difference in v. Hyperparameters are typed as short decimals, so recovering the
 * decimal reproduces PyTorch's scalars bit for bit. */
static double typed_decimal(float x) {
    char buf[32];
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)x);
        double d = strtod(buf, NULL);
        if ((float)d == x) return d;
    }
    return (double)x;
}

/* The scalars of one step, formed once for every part (their bits do not depend on the part). */
typedef struct adamw_scalars {
    float decay, w1, w2, step_size, bc2_sqrt;
} adamw_scalars;

static void update_part(float *param, const float *grad, float grad_scale, float *m, float *v, size_t n, float decay,
                        const adamw_scalars *s, float beta2, float eps) {
    float w1 = s->w1, w2 = s->w2, step_size = s->step_size, bc2_sqrt = s->bc2_sqrt;
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] * grad_scale; /* what torch's clip_grad_norm_ leaves in the gradient */
        float p = param[i] * decay;
        float mi = m[i] + w1 * (g - m[i]);
        float vi = v[i] * beta2 + w2 * (g * g);
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        param[i] = p - step_size * (mi / denom);
        m[i] = mi;
        v[i] = vi;
    }
}

void an_cpu_adamw_update(const an_ops *o, const an_adamw_part *parts, int n_parts, size_t span, const float *grad,
                         float grad_scale, float *m, float *v, float lr, float beta1, float beta2, float eps,
                         float weight_decay, int step) {
    (void)o, (void)span;
    double lr_d = typed_decimal(lr), b1 = typed_decimal(beta1), b2 = typed_decimal(beta2);
    adamw_scalars s = {(float)(1.0 - lr_d * typed_decimal(weight_decay)), (float)(1.0 - b1), (float)(1.0 - b2),
                       (float)(lr_d / (1.0 - pow(b1, step))), (float)sqrt(1.0 - pow(b2, step))};
    /* a part without decay multiplies by 1.0f: (float)(1 - lr * 0), exactly what a separate
     * parameter group with weight_decay 0 gives */
    for (int k = 0; k < n_parts; k++) {
        const an_adamw_part *t = &parts[k];
        update_part(t->param, grad + t->at, grad_scale, m + t->at, v + t->at, t->n, t->decay ? s.decay : 1.0f, &s, beta2,
                    eps);
    }
}

/* Fixed chunks, not per-thread partials: the sum is the same for any thread count. */
double an_cpu_sum_squares(const an_ops *o, const float *x, size_t n) {
    (void)o;
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
