/* A linear layer's LoRA adapter on the GPU, fused with its dropout (kernels/ops.h lora_forward /
 * lora_backward): the mask of input element (n, k) is element counter + n C + k of the dropout op's
 * mask, regenerated where it is used (never stored), so the GPU drops what the CPU drops.
 *
 * Simple kernels, one thread per output element, each summing in a fixed order (no atomics):
 *   forward:  u[n, j] = scaling * sum_k xd[n, k] a[j, k];   out[n, o] += sum_j u[n, j] bt[j, o]
 *   backward: du[n, j] = scaling * sum_o dout[n, o] bt[j, o];  dbt[j, o] += sum_n u[n, j] dout[n, o]
 *             da[j, k] += sum_n du[n, j] xd[n, k];            dinp[n, k] += mask(n, k) sum_j du[n, j] a[j, k]
 * lora_grouped_forward (serving: each segment of rows its own adapter) is the forward, p = 0, once per
 * segment on its rows, u packed segment after segment as on the CPU; a row's result depends on its
 * row alone. The rank is small (8..64), so these are skinny products; a cuBLAS version with a masked copy of x is
 * the faster alternative, not written yet. */
#include "kernels/cuda/cuda.h"

struct mask_args {
    int drop;
    uint64_t seed, counter;
    uint32_t thr;
    float keep;
};

/* the dropout factor of input element (n, k): keep or 0; 1 without dropout */
__device__ static inline float mask_of(const mask_args &m, int n, int k, int C) {
    if (!m.drop) return 1.0f;
    return an_cuda_mask_kept(m.seed, m.counter + (uint64_t)n * (uint64_t)C + (uint64_t)k, m.thr) ? m.keep : 0.0f;
}

#define FOR_EACH(i, total) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (total); i += (size_t)gridDim.x * blockDim.x)

__global__ static void lora_u(float *u, const float *x, const float *a, int N, int C, int r, float scaling, mask_args m) {
    FOR_EACH(i, (size_t)N * r) {
        int n = (int)(i / r), j = (int)(i % r);
        const float *xr = x + (size_t)n * C, *ar = a + (size_t)j * C;
        float s = 0.0f;
        for (int k = 0; k < C; k++) s += xr[k] * mask_of(m, n, k, C) * ar[k];
        u[i] = scaling * s;
    }
}

__global__ static void lora_out(float *out, const float *u, const float *bt, int N, int OC, int r) {
    FOR_EACH(i, (size_t)N * OC) {
        int n = (int)(i / OC), o = (int)(i % OC);
        float s = out[i];
        for (int j = 0; j < r; j++) s += u[(size_t)n * r + j] * bt[(size_t)j * OC + o];
        out[i] = s;
    }
}

__global__ static void lora_du(float *du, const float *dout, const float *bt, int N, int OC, int r, float scaling) {
    FOR_EACH(i, (size_t)N * r) {
        int n = (int)(i / r), j = (int)(i % r);
        const float *d = dout + (size_t)n * OC, *b = bt + (size_t)j * OC;
        float s = 0.0f;
        for (int o = 0; o < OC; o++) s += d[o] * b[o];
        du[i] = scaling * s;
    }
}

__global__ static void lora_dbt(float *dbt, const float *u, const float *dout, int N, int OC, int r) {
    FOR_EACH(i, (size_t)r * OC) {
        int j = (int)(i / OC), o = (int)(i % OC);
        float s = 0.0f;
        for (int n = 0; n < N; n++) s += u[(size_t)n * r + j] * dout[(size_t)n * OC + o];
        dbt[i] += s;
    }
}

__global__ static void lora_da(float *da, const float *du, const float *x, int N, int C, int r, mask_args m) {
    FOR_EACH(i, (size_t)r * C) {
        int j = (int)(i / C), k = (int)(i % C);
        float s = 0.0f;
        for (int n = 0; n < N; n++) s += du[(size_t)n * r + j] * (x[(size_t)n * C + k] * mask_of(m, n, k, C));
        da[i] += s;
    }
}

__global__ static void lora_dinp(float *dinp, const float *du, const float *a, int N, int C, int r, mask_args m) {
    FOR_EACH(i, (size_t)N * C) {
        int n = (int)(i / C), k = (int)(i % C);
        float s = 0.0f;
        for (int j = 0; j < r; j++) s += du[(size_t)n * r + j] * a[(size_t)j * C + k];
        dinp[i] += s * mask_of(m, n, k, C);
    }
}

static mask_args make_mask(float p, uint64_t seed, uint64_t counter) {
    mask_args m;
    m.drop = p > 0.0f;
    m.seed = seed;
    m.counter = counter;
    m.thr = an_cuda_mask_threshold(p);
    m.keep = m.drop ? 1.0f / (1.0f - p) : 1.0f;
    return m;
}

#define LAUNCH(kernel, total, o, ...)                                                                 \
    do {                                                                                              \
        if ((total) == 0) break;                                                                      \
        kernel<<<an_cuda_blocks(total), AN_CUDA_THREADS, 0, an_cuda(o)->stream>>>(__VA_ARGS__);      \
        AN_CUDA_LAUNCHED("lora (" #kernel ")");                                                        \
    } while (0)

void an_cuda_lora_forward(const an_ops *o, float *out, float *u, const float *x, const float *a, const float *bt, int N, int C,
                          int OC, int r, float scaling, float p, uint64_t seed, uint64_t counter) {
    if (N <= 0 || r <= 0) return;
    mask_args m = make_mask(p, seed, counter);
    LAUNCH(lora_u, (size_t)N * r, o, u, x, a, N, C, r, scaling, m);
    LAUNCH(lora_out, (size_t)N * OC, o, out, u, bt, N, OC, r);
}

void an_cuda_lora_backward(const an_ops *o, float *dinp, float *da, float *dbt, float *du, const float *dout, const float *x,
                           const float *u, const float *a, const float *bt, int N, int C, int OC, int r, float scaling, float p,
                           uint64_t seed, uint64_t counter) {
    if (N <= 0 || r <= 0) return;
    mask_args m = make_mask(p, seed, counter);
    if (da || dinp) LAUNCH(lora_du, (size_t)N * r, o, du, dout, bt, N, OC, r, scaling);
    if (dbt) LAUNCH(lora_dbt, (size_t)r * OC, o, dbt, u, dout, N, OC, r);
    if (da) LAUNCH(lora_da, (size_t)r * C, o, da, du, x, N, C, r, m);
    if (dinp) LAUNCH(lora_dinp, (size_t)N * C, o, dinp, du, a, N, C, r, m);
}

void an_cuda_lora_grouped_forward(const an_ops *o, float *out, float *u, const float *x, int C, int OC, const an_lora_seg *segs,
                                  int n_segs) {
    size_t off = 0;
    for (int s = 0; s < n_segs; s++) {
        const an_lora_seg *g = &segs[s];
        an_cuda_lora_forward(o, out + (size_t)g->row0 * OC, u + off, x + (size_t)g->row0 * C, g->a, g->bt, g->n, C, OC, g->r,
                             g->scaling, 0.0f, 0, 0);
        off += (size_t)g->n * g->r;
    }
}
