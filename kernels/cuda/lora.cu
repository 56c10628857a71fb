/* A linear layer's LoRA adapter on the GPU, fused with its dropout (kernels/ops.h lora_forward /
 * lora_backward): the mask of input element (n, k) is element counter + n C + k of the dropout op's
 * mask, the CPU's function, so the GPU drops what the CPU drops.
 *
 * Row-major, xd = x with the mask applied (x itself without dropout):
 *   forward:  u = scaling xd A^T [N, r];          out += u Bt
 *   backward: du = scaling dout Bt^T [N, r];      dBt += u^T dout;   dA += du^T xd;   dinp += mask * (du A)
 * Every product is a float32 cuBLAS GEMM (an_cuda_gemm_f32, in either precision mode: the adapter's
 * masters are float32), as PEFT's are. With dropout, xd is written into the context's scratch (one
 * hash per element, not one per element and rank) and the input gradient's mask is applied by a kernel
 * of its own. The first version used one thread per output element: the sums over the N tokens (dBt,
 * dA) then ran as r x C threads of N steps each, a few dozen blocks on a GPU of a hundred SMs.
 * lora_grouped_forward (serving: each segment of rows its own adapter) is the forward, p = 0, once per
 * segment on its rows, u packed segment after segment as on the CPU; a row's result depends on its
 * row alone. */
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

__global__ static void masked_copy(float *xd, const float *x, int N, int C, mask_args m) {
    FOR_EACH(i, (size_t)N * C) xd[i] = x[i] * mask_of(m, (int)(i / C), (int)(i % C), C);
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

/* The input the products read: x itself, or with dropout x with the mask applied, in the context's
 * scratch, taken until done_with_input (after the products that read it are enqueued). NULL (reported)
 * when the device has no memory for it. */
static const float *masked_input(const an_ops *o, const float *x, int N, int C, const mask_args &m, const char *what) {
    if (!m.drop) return x;
    size_t n = (size_t)N * C;
    float *xd = (float *)an_cuda_scratch_take(o, n * sizeof(float));
    if (!xd) {
        an_cuda_report(what, "no device memory for the dropped-out input");
        return NULL;
    }
    masked_copy<<<an_cuda_blocks(n), AN_CUDA_THREADS, 0, an_cuda(o)->stream>>>(xd, x, N, C, m);
    AN_CUDA_LAUNCHED(what);
    return xd;
}

static void done_with_input(const an_ops *o, const mask_args &m) {
    if (m.drop) an_cuda_scratch_release(o);
}

/* The GEMMs below, row-major in the comments, are column-major in cuBLAS: a row-major [R, K] matrix is
 * its column-major transpose [K, R] with leading dimension K. */

void an_cuda_lora_forward(const an_ops *o, float *out, float *u, const float *x, const float *a, const float *bt, int N, int C,
                          int OC, int r, float scaling, float p, uint64_t seed, uint64_t counter) {
    if (N <= 0 || r <= 0) return;
    mask_args m = make_mask(p, seed, counter);
    const float *xs = masked_input(o, x, N, C, m, "lora_forward");
    if (xs) {
        an_cuda_gemm_f32(o, 1, 0, r, N, C, scaling, a, C, xs, C, 0.0f, u, r, "lora_forward (u)"); /* u = s xd A^T */
        an_cuda_gemm_f32(o, 0, 0, OC, N, r, 1.0f, bt, OC, u, r, 1.0f, out, OC, "lora_forward (out)"); /* out += u Bt */
    }
    done_with_input(o, m);
    if (!xs) an_cuda_fill_nan(o, out, (size_t)N * OC);
}

void an_cuda_lora_backward(const an_ops *o, float *dinp, float *da, float *dbt, float *du, const float *dout, const float *x,
                           const float *u, const float *a, const float *bt, int N, int C, int OC, int r, float scaling, float p,
                           uint64_t seed, uint64_t counter) {
    if (N <= 0 || r <= 0) return;
    an_cuda_ctx *c = an_cuda(o);
    mask_args m = make_mask(p, seed, counter);
    if (da || dinp) /* du = s dout Bt^T */
        an_cuda_gemm_f32(o, 1, 0, r, N, OC, scaling, bt, OC, dout, OC, 0.0f, du, r, "lora_backward (du)");
    if (dbt) /* dBt += u^T dout */
        an_cuda_gemm_f32(o, 0, 1, OC, r, N, 1.0f, dout, OC, u, r, 1.0f, dbt, OC, "lora_backward (dbt)");
    if (da) { /* dA += du^T xd */
        const float *xs = masked_input(o, x, N, C, m, "lora_backward");
        if (xs) an_cuda_gemm_f32(o, 0, 1, C, r, N, 1.0f, xs, C, du, r, 1.0f, da, C, "lora_backward (da)");
        done_with_input(o, m);
        if (!xs) an_cuda_fill_nan(o, da, (size_t)r * C);
    }
    if (dinp) {
        if (m.drop) { /* dinp += mask * (du A): the mask element by element, in a kernel */
            size_t n = (size_t)N * C;
            lora_dinp<<<an_cuda_blocks(n), AN_CUDA_THREADS, 0, c->stream>>>(dinp, du, a, N, C, r, m);
            AN_CUDA_LAUNCHED("lora_backward (dinp)");
        } else { /* dinp += du A */
            an_cuda_gemm_f32(o, 0, 0, C, N, r, 1.0f, a, C, du, r, 1.0f, dinp, C, "lora_backward (dinp)");
        }
    }
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
