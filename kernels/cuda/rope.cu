/* Rotary position embedding on the GPU (kernels/cpu_rope.c): the same float32 angles (inv_freq =
 * 1 / theta^(float(2i) / hd) and angle = float(pos) * inv_freq, each rounded to float) with cos and
 * sin taken in double, from the table where it covers the position. One thread per rotated pair;
 * both pairings (rotate-half and interleaved); the backward rotates by the opposite angle. */
#include <math.h>

#include "kernels/cuda/cuda.h"

/* cos and sin of pair i's angle at position pos, as the CPU computes them */
__device__ static inline void rope_angle(int32_t pos, int i, int hd, float theta, float *c, float *s) {
    float expo = (float)(2 * i) / (float)hd;
    float inv_freq = 1.0f / (float)pow((double)theta, (double)expo);
    float angle = (float)pos * inv_freq;
    *c = (float)cos((double)angle);
    *s = (float)sin((double)angle);
}

__global__ static void rope_table_k(float *cos_sin, int n_pos, int hd, float theta) {
    int half = hd / 2;
    size_t total = (size_t)n_pos * half;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total; t += (size_t)gridDim.x * blockDim.x) {
        int p = (int)(t / half), i = (int)(t % half);
        rope_angle(p, i, hd, theta, &cos_sin[(size_t)p * hd + 2 * i], &cos_sin[(size_t)p * hd + 2 * i + 1]);
    }
}

__global__ static void rope_k(float *x, const int32_t *pos, int N, int nh, int hd, float theta, int interleaved,
                              const float *cos_sin, int n_pos, float dir) {
    int half = hd / 2;
    size_t total = (size_t)N * nh * half;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total; t += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(t % half);
        size_t nhh = t / half; /* n * nh + h */
        int n = (int)(nhh / nh);
        int32_t p = pos[n];
        float c, s;
        if (cos_sin && p >= 0 && p < n_pos) {
            c = cos_sin[(size_t)p * hd + 2 * i];
            s = cos_sin[(size_t)p * hd + 2 * i + 1];
        } else {
            rope_angle(p, i, hd, theta, &c, &s);
        }
        s *= dir;
        float *xh = x + nhh * hd;
        int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
        float a = xh[ia], b = xh[ib];
        /* two products and a sum each, unfused, as the CPU's C computes them */
        xh[ia] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        xh[ib] = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
    }
}

void an_cuda_rope_table(const an_ops *o, float *cos_sin, int n_pos, int hd, float theta) {
    size_t total = (size_t)n_pos * (hd / 2);
    if (!total) return;
    rope_table_k<<<an_cuda_blocks(total), AN_CUDA_THREADS, 0, an_cuda(o)->stream>>>(cos_sin, n_pos, hd, theta);
    AN_CUDA_LAUNCHED("rope_table");
}

static void rope(const an_ops *o, float *x, const int32_t *pos, int N, int nh, int hd, an_rope r, float dir, const char *what) {
    size_t total = (size_t)N * nh * (hd / 2);
    if (!total) return;
    rope_k<<<an_cuda_blocks(total), AN_CUDA_THREADS, 0, an_cuda(o)->stream>>>(x, pos, N, nh, hd, r.theta, r.interleaved,
                                                                             r.cos_sin, r.n_pos, dir);
    AN_CUDA_LAUNCHED(what);
}

void an_cuda_rope_forward(const an_ops *o, float *x, const int32_t *pos, int N, int nh, int hd, an_rope r) {
    rope(o, x, pos, N, nh, hd, r, 1.0f, "rope_forward");
}

/* the rotation is orthogonal: its transpose is the rotation by the opposite angle */
void an_cuda_rope_backward(const an_ops *o, float *dx, const int32_t *pos, int N, int nh, int hd, an_rope r) {
    rope(o, dx, pos, N, nh, hd, r, -1.0f, "rope_backward");
}
