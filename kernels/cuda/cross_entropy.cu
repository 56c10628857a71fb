/* Softmax cross-entropy over a vocabulary on the GPU, fused (kernels/ops.h): never a normalised row.
 *
 * Forward: a block per row; each thread keeps an online (max, sum of exp(x - max)) over its strided
 * share of the row, then the block merges the pairs in a fixed tree; lse = max + log(sum). Backward:
 * one thread per logit, dlogits = dloss (exp(x - lse) - [j == target]), read and written by the same
 * thread, so dlogits may alias logits. Ignored rows give loss 0 and a zero gradient; a target outside
 * the vocabulary gives NaN (never an out-of-bounds read), as on the CPU. */
#include <math.h>

#include "kernels/cuda/cuda.h"

#define NT 256

__device__ static inline void merge(float *m, float *s, float m2, float s2) {
    if (m2 == -INFINITY) return;
    if (*m == -INFINITY) {
        *m = m2, *s = s2;
    } else if (m2 > *m) {
        *s = *s * expf(*m - m2) + s2;
        *m = m2;
    } else {
        *s += s2 * expf(m2 - *m);
    }
}

__global__ static void ce_fwd(float *losses, float *lse, const float *logits, const int32_t *targets, int V) {
    __shared__ float sm[NT], ss[NT];
    size_t n = blockIdx.x;
    int t = targets[n];
    if (t == AN_IGNORE_INDEX || t < 0 || t >= V) { /* the whole block agrees: t is one value */
        if (threadIdx.x == 0) {
            float v = t == AN_IGNORE_INDEX ? 0.0f : __int_as_float(0x7fc00000);
            losses[n] = v;
            if (lse) lse[n] = v;
        }
        return;
    }
    const float *x = logits + n * V;
    float m = -INFINITY, s = 0.0f;
    for (int j = threadIdx.x; j < V; j += NT) {
        float v = x[j];
        if (v > m) {
            s = (m == -INFINITY ? 0.0f : s * expf(m - v)) + 1.0f;
            m = v;
        } else {
            s += expf(v - m);
        }
    }
    sm[threadIdx.x] = m, ss[threadIdx.x] = s;
    for (int stride = NT / 2; stride > 0; stride /= 2) {
        __syncthreads();
        if ((int)threadIdx.x < stride) merge(&sm[threadIdx.x], &ss[threadIdx.x], sm[threadIdx.x + stride], ss[threadIdx.x + stride]);
    }
    if (threadIdx.x == 0) {
        float l = sm[0] + logf(ss[0]);
        if (lse) lse[n] = l;
        losses[n] = l - x[t];
    }
}

__global__ static void ce_bwd(float *dlogits, const float *logits, const float *lse, const int32_t *targets, int N, int V,
                              float dloss) {
    size_t total = (size_t)N * V;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / (size_t)V;
        int j = (int)(i % (size_t)V), t = targets[n];
        if (t == AN_IGNORE_INDEX) {
            dlogits[i] = 0.0f;
            continue;
        }
        float l = t >= 0 && t < V ? lse[n] : __int_as_float(0x7fc00000);
        float d = dloss * expf(logits[i] - l);
        if (j == t) d -= dloss;
        dlogits[i] = d;
    }
}

void an_cuda_cross_entropy_forward(const an_ops *o, float *losses, float *lse, const float *logits, const int32_t *targets, int N,
                                   int V) {
    if (N <= 0) return;
    ce_fwd<<<N, NT, 0, an_cuda(o)->stream>>>(losses, lse, logits, targets, V);
    AN_CUDA_LAUNCHED("cross_entropy_forward");
}

void an_cuda_cross_entropy_backward(const an_ops *o, float *dlogits, const float *logits, const float *lse,
                                    const int32_t *targets, int N, int V, float dloss) {
    size_t total = (size_t)N * V;
    if (!total) return;
    ce_bwd<<<an_cuda_blocks(total), AN_CUDA_THREADS, 0, an_cuda(o)->stream>>>(dlogits, logits, lse, targets, N, V, dloss);
    AN_CUDA_LAUNCHED("cross_entropy_backward");
}
