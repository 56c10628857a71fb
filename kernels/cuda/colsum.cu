/* Column sums over a batch's rows on the GPU: the weight gradients of the norms and of a bias
 * (norm.cu, matmul.cu), deterministic and parallel over the rows.
 *
 * The first version gave each column one thread walking the N rows in order, as the CPU does: C / 256
 * blocks in all (3 for GPT-2's width), each thread N dependent steps. Now the rows are cut into
 * slices of an_cuda_colsum_begin's `rows` (64, or more when N would need over 65535 slices): the op's
 * kernel runs a grid of (column blocks, slices), each thread summing its column over its slice's rows
 * in order into the slice's partial sums, and an_cuda_colsum_add adds slice 0, 1, 2, ... into the
 * gradient, in that order. The slicing depends on N alone, so the bits do not depend on the GPU. The
 * partials live in the context's scratch; without it, one slice of all N rows adds straight into the
 * gradient (the first version's order). */
#include "kernels/cuda/cuda.h"

an_cuda_colsum an_cuda_colsum_begin(const an_ops *o, int N, size_t ld) {
    an_cuda_colsum cs = {N, 1, NULL, ld};
    int rows = 64;
    while ((N + rows - 1) / rows > 65535) rows *= 2; /* a grid's y extent */
    int slices = (N + rows - 1) / rows;
    float *parts = (float *)an_cuda_scratch_take(o, slices > 1 ? (size_t)slices * ld * sizeof(float) : 0);
    if (slices > 1 && parts) cs.rows = rows, cs.slices = slices, cs.parts = parts;
    return cs;
}

/* dst[j] += sum over s of parts[s ld + j], s in order */
__global__ static void add_parts(float *dst, const float *parts, int slices, int C, size_t ld) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= C) return;
    float acc = 0.0f;
    for (int s = 0; s < slices; s++) acc += parts[(size_t)s * ld + j];
    dst[j] += acc;
}

void an_cuda_colsum_add(const an_ops *o, const an_cuda_colsum *cs, float *dst, size_t off, int C, const char *what) {
    if (!cs->parts || !dst || C <= 0) return;
    add_parts<<<(C + AN_CUDA_THREADS - 1) / AN_CUDA_THREADS, AN_CUDA_THREADS, 0, an_cuda(o)->stream>>>(dst, cs->parts + off,
                                                                                                    cs->slices, C, cs->ld);
    AN_CUDA_LAUNCHED(what);
}

void an_cuda_colsum_end(const an_ops *o) { an_cuda_scratch_release(o); }
