/* Token embeddings on the GPU: the lookup (float32 tables here, the typed ones in weights.cu) and its
 * deterministic backward.
 *
 * The backward adds rows of dout into the rows of dtable their ids name. Ids repeat, so two tokens may
 * add into one row, and the CPU (kernels/cpu_embedding.c) adds each row's tokens in token order. Here
 * the same sums run in the same order, so the result is the CPU's bit for bit, with no float atomics:
 *  1. keys (id << 32 | token) for the N tokens, padded with all-ones keys to a power of two P, are
 *     sorted (sort.cu; the keys are distinct, so any correct sort gives the one order: by id, then
 *     token).
 *  2. one block per sorted key; the block at the first key of an id's run walks the run for its
 *     columns: dtable[id, j] plus each token's dout[n, j], in token order. Every row has one owner.
 * The keys live in the context's scratch (an_cuda_scratch_take). The first version gave each of the C
 * columns one thread walking all N tokens in order: a few blocks in all, each thread thousands of
 * dependent steps (the LM head's input gradient is scattered back through this op in every training
 * step, LoRA included). */
#include "kernels/cuda/cuda.h"

__global__ static void lookup_f32(float *out, const int32_t *ids, const float *table, int N, int C) {
    size_t total = (size_t)N * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / (size_t)C, j = i % (size_t)C;
        out[i] = table[(size_t)ids[n] * C + j];
    }
}

/* the first version, kept for when the scratch cannot be had: thread j adds the tokens in order */
__global__ static void scatter_cols(float *dtable, const float *dout, const int32_t *ids, int N, int C) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= C) return;
    for (int n = 0; n < N; n++) dtable[(size_t)ids[n] * C + j] += dout[(size_t)n * C + j];
}

__global__ static void make_keys(uint64_t *keys, const int32_t *ids, int N, size_t P) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < P; i += (size_t)gridDim.x * blockDim.x)
        keys[i] = i < (size_t)N ? (uint64_t)(uint32_t)ids[i] << 32 | (uint64_t)i : ~(uint64_t)0;
}

/* Block i: if sorted key i starts its id's run, the run's tokens added in order into the id's row. */
__global__ static void add_runs(float *dtable, const float *dout, const uint64_t *keys, int N, int C) {
    size_t i = blockIdx.x;
    uint32_t id = (uint32_t)(keys[i] >> 32);
    if (i > 0 && (uint32_t)(keys[i - 1] >> 32) == id) return;
    float *row = dtable + (size_t)id * C;
    for (int j = threadIdx.x; j < C; j += blockDim.x) {
        float acc = row[j];
        for (size_t r = i; r < (size_t)N && (uint32_t)(keys[r] >> 32) == id; r++)
            acc = __fadd_rn(acc, dout[(keys[r] & 0xffffffffu) * C + j]);
        row[j] = acc;
    }
}

void an_cuda_embedding_forward(const an_ops *o, float *out, const int32_t *ids, const float *table, int N, int C) {
    size_t n = (size_t)N * C;
    if (!n) return;
    lookup_f32<<<an_cuda_blocks(n), AN_CUDA_THREADS, 0, an_cuda(o)->stream>>>(out, ids, table, N, C);
    AN_CUDA_LAUNCHED("embedding_forward");
}

void an_cuda_embedding_backward(const an_ops *o, float *dtable, const float *dout, const int32_t *ids, int N, int C) {
    if (N <= 0 || C <= 0) return;
    an_cuda_ctx *c = an_cuda(o);
    size_t P = 1;
    while (P < (size_t)N) P *= 2;
    uint64_t *keys = (uint64_t *)an_cuda_scratch_take(o, P * sizeof(uint64_t)); /* until add_runs is enqueued */
    if (!keys) {
        an_cuda_scratch_release(o);
        scatter_cols<<<(C + 63) / 64, 64, 0, c->stream>>>(dtable, dout, ids, N, C);
        AN_CUDA_LAUNCHED("embedding_backward");
        return;
    }
    make_keys<<<an_cuda_blocks(P), AN_CUDA_THREADS, 0, c->stream>>>(keys, ids, N, P);
    an_cuda_sort_u64(o, keys, P, P);
    int threads = C < 128 ? (C + 31) / 32 * 32 : 128;
    add_runs<<<(unsigned)N, (unsigned)threads, 0, c->stream>>>(dtable, dout, keys, N, C);
    an_cuda_scratch_release(o);
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
