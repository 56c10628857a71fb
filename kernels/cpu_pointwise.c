/* Elementwise ops: GELU (tanh approximation), SwiGLU, add, axpy, scale.
 * The transcendental parts use an_expf so the loops vectorise. */
#include "kernels/cpu.h"

/* Element loops are split into fixed chunks so short tensors do not pay for waking threads. */
#define PARALLEL_IF(n) if ((n) > 32768)

static const float GELU_K = 0.7978845608028654f; /* sqrt(2 / pi) */
static const float GELU_A = 0.044715f;

/* 0.5 (1 + tanh(u)) is the logistic sigmoid of 2u. Written that way the negative tail, where
 * 1 + tanh(u) cancels, keeps full relative accuracy: gelu(x) = x / (1 + exp(-2u)). */
void an_cpu_gelu_forward(const an_ops *o, float *out, const float *inp, size_t n) {
    (void)o;
#pragma omp parallel for schedule(static) PARALLEL_IF(n)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_K * (x + GELU_A * x * x * x);
        out[i] = x / (1.0f + an_expf(-2.0f * u));
    }
}

/* d/dx = s + x s (1 - s) 2 du/dx with s = sigmoid(2u) (the same as the tanh form's
 * 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx, since 1 - t^2 = 4 s (1 - s)) */
static inline float gelu_slope(float x) {
    float u = GELU_K * (x + GELU_A * x * x * x);
    float e = an_expf(-2.0f * u);
    float s = 1.0f / (1.0f + e), one_minus_s = e / (1.0f + e);
    float du = GELU_K * (1.0f + 3.0f * GELU_A * x * x);
    return s + 2.0f * x * s * one_minus_s * du;
}

void an_cpu_gelu_backward(const an_ops *o, float *dinp, const float *inp, const float *dout, size_t n) {
    (void)o;
#pragma omp parallel for schedule(static) PARALLEL_IF(n)
    for (size_t i = 0; i < n; i++) dinp[i] += dout[i] * gelu_slope(inp[i]);
}

void an_cpu_gelu_scale(float *dx, const float *inp, size_t n) {
#pragma omp parallel for schedule(static) PARALLEL_IF(n)
    for (size_t i = 0; i < n; i++) dx[i] *= gelu_slope(inp[i]);
}

/* d silu / dg = sig * (1 + g * (1 - sig)) */
static inline float silu_grad(float g) {
    float sig = 1.0f / (1.0f + an_expf(-g));
    return sig * (1.0f + g * (1.0f - sig));
}

static inline float silu(float g) { return g / (1.0f + an_expf(-g)); }

void an_cpu_swiglu_forward(const an_ops *o, float *out, const float *gate, const float *up, size_t n) {
    (void)o;
#pragma omp parallel for schedule(static) PARALLEL_IF(n)
    for (size_t i = 0; i < n; i++) {
        out[i] = silu(gate[i]) * up[i];
    }
}

void an_cpu_swiglu_backward(const an_ops *o, float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n) {
    (void)o;
    /* one loop per case, so no branch sits inside a loop that should vectorise */
    if (dgate && dup) {
#pragma omp parallel for schedule(static) PARALLEL_IF(n)
        for (size_t i = 0; i < n; i++) {
            dgate[i] += dout[i] * up[i] * silu_grad(gate[i]);
            dup[i] += dout[i] * silu(gate[i]);
        }
    } else if (dgate) {
#pragma omp parallel for schedule(static) PARALLEL_IF(n)
        for (size_t i = 0; i < n; i++) dgate[i] += dout[i] * up[i] * silu_grad(gate[i]);
    } else if (dup) {
#pragma omp parallel for schedule(static) PARALLEL_IF(n)
        for (size_t i = 0; i < n; i++) dup[i] += dout[i] * silu(gate[i]);
    }
}

void an_cpu_add(const an_ops *o, float *out, const float *a, const float *b, size_t n) {
    (void)o;
#pragma omp parallel for schedule(static) PARALLEL_IF(n)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void an_cpu_axpy(const an_ops *o, float *dst, const float *src, float scale, size_t n) {
    (void)o;
#pragma omp parallel for schedule(static) PARALLEL_IF(n)
    for (size_t i = 0; i < n; i++) dst[i] += scale * src[i];
}

void an_cpu_scale(const an_ops *o, float *x, float s, size_t n) {
    (void)o;
#pragma omp parallel for schedule(static) PARALLEL_IF(n)
    for (size_t i = 0; i < n; i++) x[i] *= s;
}
