/* Block-column gathers on the GPU (kernels/ops.h gather_cols): one thread per copied element. The
 * backward assumes what a fused-projection split is, a map that sends each source column to at most
 * one destination column, so every thread owns the element it adds into (no atomics). */
#include "kernels/cuda/cuda.h"

struct col_map {
    int nblk, len, dst_ld, dst_off, dst_step, src_ld, src_off, src_step;
};

__device__ static inline void map_index(const col_map &m, size_t i, size_t *d, size_t *s) {
    size_t per_row = (size_t)m.nblk * m.len;
    size_t n = i / per_row, r = i % per_row, j = r / (size_t)m.len, k = r % (size_t)m.len;
    *d = n * m.dst_ld + m.dst_off + j * m.dst_step + k;
    *s = n * m.src_ld + m.src_off + j * m.src_step + k;
}

__global__ static void gather_fwd(float *dst, const float *src, size_t total, col_map m) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t d, s;
        map_index(m, i, &d, &s);
        dst[d] = src[s];
    }
}

__global__ static void gather_bwd(float *dsrc, const float *ddst, size_t total, col_map m) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t d, s;
        map_index(m, i, &d, &s);
        dsrc[s] = __fadd_rn(dsrc[s], ddst[d]);
    }
}

static col_map to_device(const an_col_map *m) {
    col_map c = {m->nblk, m->len, m->dst_ld, m->dst_off, m->dst_step, m->src_ld, m->src_off, m->src_step};
    return c;
}

void an_cuda_gather_cols_forward(const an_ops *o, float *dst, const float *src, int N, const an_col_map *map) {
    size_t total = (size_t)N * map->nblk * map->len;
    if (!total) return;
    gather_fwd<<<an_cuda_blocks(total), AN_CUDA_THREADS, 0, an_cuda(o)->stream>>>(dst, src, total, to_device(map));
    AN_CUDA_LAUNCHED("gather_cols_forward");
}

void an_cuda_gather_cols_backward(const an_ops *o, float *dsrc, const float *ddst, int N, const an_col_map *map) {
    size_t total = (size_t)N * map->nblk * map->len;
    if (!total) return;
    gather_bwd<<<an_cuda_blocks(total), AN_CUDA_THREADS, 0, an_cuda(o)->stream>>>(dsrc, ddst, total, to_device(map));
    AN_CUDA_LAUNCHED("gather_cols_backward");
}
