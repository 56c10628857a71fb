/* Token embeddings on the GPU: the lookup (float32 tables here, the typed ones in weights.cu) and its
 * deterministic backward.
 *
 * The backward adds rows of dout into the rows of dtable their ids name; ids repeat, so threads own
 * columns, not tokens: the thread of column j walks the tokens in order and adds dout[n, j] into
 * dtable[ids[n], j]. No float atomics, and each sum runs in the CPU's order (kernels/cpu_embedding.c),
 * so the result is the CPU's bit for bit. Parallel over C columns only (a grid of C threads), which is
 * slow for large N; a sort-by-id scheme is the faster deterministic alternative, not written yet. */
#include "kernels/cuda/cuda.h"

__global__ static void lookup_f32(float *out, const int32_t *ids, const float *table, int N, int C) {
    size_t total = (size_t)N * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / (size_t)C, j = i % (size_t)C;
        out[i] = table[(size_t)ids[n] * C + j];
    }
}

__global__ static void scatter_cols(float *dtable, const float *dout, const int32_t *ids, int N, int C) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= C) return;
    for (int n = 0; n < N; n++) dtable[(size_t)ids[n] * C + j] += dout[(size_t)n * C + j];
}

void an_cuda_embedding_forward(const an_ops *o, float *out, const int32_t *ids, const float *table, int N, int C) {
    size_t n = (size_t)N * C;
    if (!n) return;
    lookup_f32<<<an_cuda_blocks(n), AN_CUDA_THREADS, 0, an_cuda(o)->stream>>>(out, ids, table, N, C);
    AN_CUDA_LAUNCHED("embedding_forward");
}

void an_cuda_embedding_backward(const an_ops *o, float *dtable, const float *dout, const int32_t *ids, int N, int C) {
    if (N <= 0 || C <= 0) return;
    scatter_cols<<<(C + 63) / 64, 64, 0, an_cuda(o)->stream>>>(dtable, dout, ids, N, C);
    AN_CUDA_LAUNCHED("embedding_backward");
}

void an_cuda_embedding_lookup(const an_ops *o, float *out, const int32_t *ids, const an_weight *table, int N) {
    int C = (int)table->cols;
    size_t n = (size_t)N * C;
    if (!n) return;
    if (table->dtype == AN_F32) {
        an_cuda_embedding_forward(o, out, ids, (const float *)table->data, N, C);
    } else if (an_cuda_lookup_rows(o, out, ids, table, N)) {
        an_cuda_fill_nan(o, out, n); /* supports() said no */
    }
}
