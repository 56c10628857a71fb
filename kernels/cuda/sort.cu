/* Sorting 64-bit keys on the GPU, ascending, in independent segments: a bitonic network, which needs no
 * atomics and whose result is the one sorted order (so the same on any GPU). Used by the embedding
 * backward (one segment: the tokens by id) and the sampler (a segment a row of logits).
 *
 * Stages whose pairs lie within a chunk of SORT_CHUNK keys run in shared memory, a chunk a block; the
 * others (pair distance SORT_CHUNK or more) one launch a stage: for a segment of 8192, 10 launches (the
 * chunks' sort, then for each of the 3 larger merges its wide stages and one chunk launch for the
 * rest). Segments are sorted side by side in the same launches: the network's direction is taken
 * from the index within the segment, so the last merge of every segment ascends. */
#include "kernels/cuda/cuda.h"

#define SORT_CHUNK ((size_t)1024) /* keys a block sorts in shared memory (8 KiB), two a thread */

/* the bitonic network's compare-and-swap of elements i and i + j (i with bit j clear) in the merge of
 * size k: ascending where bit k of g, i's index within its segment, is clear */
__device__ static inline void compare_swap(uint64_t *a, size_t i, size_t j, size_t g, size_t k) {
    uint64_t x = a[i], y = a[i + j];
    if ((x > y) == ((g & k) == 0)) {
        a[i] = y;
        a[i + j] = x;
    }
}

/* One stage with pairs SORT_CHUNK or more apart, over all n / 2 pairs. */
__global__ static void bitonic_stage(uint64_t *keys, size_t n, size_t seg_mask, size_t j, size_t k) {
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < n / 2; t += (size_t)gridDim.x * blockDim.x) {
        size_t i = 2 * t - (t & (j - 1));
        compare_swap(keys, i, j, i & seg_mask, k);
    }
}

/* Every stage of the merges of sizes k_first .. k_last (powers of two) whose pairs lie within one chunk
 * of 2 x blockDim.x keys (pair distances below the chunk), in shared memory, a chunk a block. */
__global__ static void bitonic_chunk(uint64_t *keys, size_t seg_mask, size_t k_first, size_t k_last) {
    __shared__ uint64_t s[SORT_CHUNK];
    size_t L = 2 * (size_t)blockDim.x, base = blockIdx.x * L, t = threadIdx.x;
    s[t] = keys[base + t];
    s[t + blockDim.x] = keys[base + t + blockDim.x];
    for (size_t k = k_first; k <= k_last; k *= 2)
        for (size_t j = (k < L ? k : L) / 2; j > 0; j /= 2) {
            __syncthreads();
            size_t i = 2 * t - (t & (j - 1));
            compare_swap(s, i, j, (base + i) & seg_mask, k);
        }
    __syncthreads();
    keys[base + t] = s[t];
    keys[base + t + blockDim.x] = s[t + blockDim.x];
}

void an_cuda_sort_u64(const an_ops *o, uint64_t *keys, size_t n, size_t segment) {
    if (segment < 2 || n < segment) return;
    cudaStream_t st = an_cuda(o)->stream;
    size_t L = segment < SORT_CHUNK ? segment : SORT_CHUNK, mask = segment - 1; /* a chunk a block */
    bitonic_chunk<<<(unsigned)(n / L), (unsigned)(L / 2), 0, st>>>(keys, mask, 2, L);
    for (size_t k = 2 * L; k <= segment; k *= 2) {
        for (size_t j = k / 2; j >= L; j /= 2)
            bitonic_stage<<<an_cuda_blocks(n / 2), AN_CUDA_THREADS, 0, st>>>(keys, n, mask, j, k);
        bitonic_chunk<<<(unsigned)(n / L), (unsigned)(L / 2), 0, st>>>(keys, mask, k, k);
    }
    AN_CUDA_LAUNCHED("sort");
}
