/* Elementwise ops on the GPU: GELU (tanh approximation), SwiGLU, add, axpy, scale; forward and backward
 * side by side, the CPU's formulas (kernels/cpu_pointwise.c) with expf in place of its an_expf.
 * add, axpy and scale are one rounding per operation, written with _rn intrinsics so nvcc does not
 * fuse a multiply-add: the same bits as the CPU (tests/test_backend_ops.c requires it). */
#include "kernels/cuda/cuda.h"

#define GRID_STRIDE(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)
#define LAUNCH(kernel, n, o, ...)                                                                         \
    do {                                                                                                  \
        if ((n) == 0) break;                                                                              \
        kernel<<<an_cuda_blocks(n), AN_CUDA_THREADS, 0, an_cuda(o)->stream>>>(__VA_ARGS__);              \
        AN_CUDA_LAUNCHED(#kernel);                                                                        \
    } while (0)

#define GELU_K 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_A 0.044715f

/* 0.5 (1 + tanh(u)) is the logistic sigmoid of 2u: gelu(x) = x / (1 + exp(-2u)), accurate in the tail */
__global__ static void gelu_fwd(float *out, const float *inp, size_t n) {
    GRID_STRIDE(i, n) {
        float x = inp[i];
        float u = GELU_K * (x + GELU_A * x * x * x);
        out[i] = x / (1.0f + expf(-2.0f * u));
    }
}

/* d/dx = s + 2 x s (1 - s) du/dx with s = sigmoid(2u) */
__device__ static inline float gelu_slope(float x) {
    float u = GELU_K * (x + GELU_A * x * x * x);
    float e = expf(-2.0f * u);
    float s = 1.0f / (1.0f + e), one_minus_s = e / (1.0f + e);
    float du = GELU_K * (1.0f + 3.0f * GELU_A * x * x);
    return s + 2.0f * x * s * one_minus_s * du;
}

__global__ static void gelu_bwd(float *dinp, const float *inp, const float *dout, size_t n) {
    GRID_STRIDE(i, n) dinp[i] += dout[i] * gelu_slope(inp[i]);
}

__global__ static void gelu_scale(float *dx, const float *inp, size_t n) {
    GRID_STRIDE(i, n) dx[i] *= gelu_slope(inp[i]);
}

__device__ static inline float silu(float g) { return g / (1.0f + expf(-g)); }
__device__ static inline float silu_grad(float g) {
    float sig = 1.0f / (1.0f + expf(-g));
    return sig * (1.0f + g * (1.0f - sig));
}

__global__ static void swiglu_fwd(float *out, const float *gate, const float *up, size_t n) {
    GRID_STRIDE(i, n) out[i] = silu(gate[i]) * up[i];
}

__global__ static void swiglu_bwd(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n) {
    GRID_STRIDE(i, n) {
        if (dgate) dgate[i] += dout[i] * up[i] * silu_grad(gate[i]);
        if (dup) dup[i] += dout[i] * silu(gate[i]);
    }
}

__global__ static void add_k(float *out, const float *a, const float *b, size_t n) {
    GRID_STRIDE(i, n) out[i] = __fadd_rn(a[i], b[i]);
}
__global__ static void axpy_k(float *dst, const float *src, float s, size_t n) {
    GRID_STRIDE(i, n) dst[i] = __fadd_rn(dst[i], __fmul_rn(s, src[i]));
}
__global__ static void scale_k(float *x, float s, size_t n) {
    GRID_STRIDE(i, n) x[i] = __fmul_rn(x[i], s);
}

void an_cuda_gelu_forward(const an_ops *o, float *out, const float *inp, size_t n) { LAUNCH(gelu_fwd, n, o, out, inp, n); }
void an_cuda_gelu_backward(const an_ops *o, float *dinp, const float *inp, const float *dout, size_t n) {
    LAUNCH(gelu_bwd, n, o, dinp, inp, dout, n);
}
void an_cuda_gelu_scale(const an_ops *o, float *dx, const float *inp, size_t n) { LAUNCH(gelu_scale, n, o, dx, inp, n); }
void an_cuda_swiglu_forward(const an_ops *o, float *out, const float *gate, const float *up, size_t n) {
    LAUNCH(swiglu_fwd, n, o, out, gate, up, n);
}
void an_cuda_swiglu_backward(const an_ops *o, float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                             size_t n) {
    if (dgate || dup) LAUNCH(swiglu_bwd, n, o, dgate, dup, dout, gate, up, n);
}
void an_cuda_add(const an_ops *o, float *out, const float *a, const float *b, size_t n) { LAUNCH(add_k, n, o, out, a, b, n); }
void an_cuda_axpy(const an_ops *o, float *dst, const float *src, float scale, size_t n) {
    LAUNCH(axpy_k, n, o, dst, src, scale, n);
}
void an_cuda_scale(const an_ops *o, float *x, float s, size_t n) { LAUNCH(scale_k, n, o, x, s, n); }
