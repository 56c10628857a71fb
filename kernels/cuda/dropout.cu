/* Inverted dropout on the GPU with the CPU's counter-based mask (kernels/cuda/cuda.h an_cuda_mask_*,
 * a copy of kernels/cpu.h's functions): element i is kept when element counter + i of the mask is, so
 * the GPU drops exactly the elements the CPU drops and a backward regenerates the mask. The keep
 * factor 1 / (1 - p) is formed in float on the host as the CPU forms it. */
#include "kernels/cuda/cuda.h"

__global__ static void dropout_k(float *out, const float *inp, size_t n, uint64_t seed, uint64_t counter, uint32_t thr,
                                 float keep) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __fmul_rn(inp[i], an_cuda_mask_kept(seed, counter + i, thr) ? keep : 0.0f);
}

void an_cuda_dropout(const an_ops *o, float *out, const float *inp, size_t n, float p, uint64_t seed, uint64_t counter) {
    if (!n) return;
    float keep = 1.0f / (1.0f - p);
    dropout_k<<<an_cuda_blocks(n), AN_CUDA_THREADS, 0, an_cuda(o)->stream>>>(out, inp, n, seed, counter,
                                                                            an_cuda_mask_threshold(p), keep);
    AN_CUDA_LAUNCHED("dropout");
}
