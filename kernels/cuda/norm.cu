/* LayerNorm and RMSNorm over the last dimension on the GPU, forward (alone or after a residual add) and
 * backward side by side (kernels/cpu_norm.c's formulas). A block per row for the statistics and the input gradient (its
 * sums a fixed tree over the block's threads), column sums in slices of rows for the weight gradients
 * (colsum.cu): no atomics, the same bits run to run. The variance is the two-pass
 * one (sum of (x - mean)^2), which does not cancel when |mean| >> std. */
#include <math.h>

#include "kernels/cuda/cuda.h"

#define NT 256 /* threads per row */

/* the sum of v over the block, in every thread: a fixed tree in shared memory */
__device__ static float block_sum(float v, float *s) {
    s[threadIdx.x] = v;
    for (int stride = NT / 2; stride > 0; stride /= 2) {
        __syncthreads();
        if ((int)threadIdx.x < stride) s[threadIdx.x] += s[threadIdx.x + stride];
    }
    __syncthreads();
    float total = s[0];
    __syncthreads(); /* s is reused by the next sum */
    return total;
}

/* With delta, the row's input is first res_out = inp + delta, rounded once as add_k (pointwise.cu), so
 * the fused op gives the bits of add then the norm. Each thread reads back only the sums it wrote
 * itself, so res_out may be inp. */
__device__ static const float *row_input(float *res_out, const float *inp, const float *delta, size_t n, int C) {
    if (!delta) return inp + n * C;
    for (int j = threadIdx.x; j < C; j += NT) res_out[n * C + j] = __fadd_rn(inp[n * C + j], delta[n * C + j]);
    return res_out + n * C;
}

__global__ static void layernorm_fwd(float *out, float *mean, float *rstd, float *res_out, const float *inp,
                                     const float *delta, const float *w, const float *b, int C, float eps) {
    __shared__ float s[NT];
    size_t n = blockIdx.x;
    const float *x = row_input(res_out, inp, delta, n, C);
    float acc = 0.0f;
    for (int j = threadIdx.x; j < C; j += NT) acc += x[j];
    float m = block_sum(acc, s) / (float)C;
    acc = 0.0f;
    for (int j = threadIdx.x; j < C; j += NT) acc += (x[j] - m) * (x[j] - m);
    float var = block_sum(acc, s) / (float)C;
    float r = 1.0f / sqrtf(var + eps);
    for (int j = threadIdx.x; j < C; j += NT) out[n * C + j] = (x[j] - m) * r * w[j] + (b ? b[j] : 0.0f);
    if (threadIdx.x == 0) {
        if (mean) mean[n] = m;
        if (rstd) rstd[n] = r;
    }
}

/* dinp += rstd (dnorm - mean(dnorm) - norm mean(dnorm norm)), dnorm = dout w */
__global__ static void layernorm_bwd_inp(float *dinp, const float *dout, const float *inp, const float *w, const float *mean,
                                         const float *rstd, int C) {
    __shared__ float s[NT];
    size_t n = blockIdx.x;
    const float *x = inp + n * C, *g = dout + n * C;
    float m = mean[n], r = rstd[n], a1 = 0.0f, a2 = 0.0f;
    for (int j = threadIdx.x; j < C; j += NT) {
        float dn = g[j] * w[j];
        a1 += dn;
        a2 += dn * (x[j] - m) * r;
    }
    float mdn = block_sum(a1, s) / (float)C, mdnn = block_sum(a2, s) / (float)C;
    for (int j = threadIdx.x; j < C; j += NT) dinp[n * C + j] += r * (g[j] * w[j] - mdn - (x[j] - m) * r * mdnn);
}

/* column j's dw and db over the rows of slice blockIdx.y (rows R a slice), to an_cuda_colsum_put */
__global__ static void layernorm_bwd_w(float *ow, float *ob, size_t ld, int add, const float *dout, const float *inp,
                                       const float *mean, const float *rstd, int N, int C, int R) {
    int j = blockIdx.x * blockDim.x + threadIdx.x, s = blockIdx.y;
    if (j >= C) return;
    int n1 = (s + 1) * R < N ? (s + 1) * R : N;
    float aw = 0.0f, ab = 0.0f;
    for (int n = s * R; n < n1; n++) {
        float g = dout[(size_t)n * C + j];
        aw += g * (inp[(size_t)n * C + j] - mean[n]) * rstd[n];
        ab += g;
    }
    if (ow) an_cuda_colsum_put(ow, ld, add, s, j, aw);
    if (ob) an_cuda_colsum_put(ob, ld, add, s, j, ab);
}

__global__ static void rmsnorm_fwd(float *out, float *rstd, float *res_out, const float *inp, const float *delta,
                                   const float *w, int C, float eps) {
    __shared__ float s[NT];
    size_t n = blockIdx.x;
    const float *x = row_input(res_out, inp, delta, n, C);
    float acc = 0.0f;
    for (int j = threadIdx.x; j < C; j += NT) acc += x[j] * x[j];
    float r = 1.0f / sqrtf(block_sum(acc, s) / (float)C + eps);
    for (int j = threadIdx.x; j < C; j += NT) out[n * C + j] = x[j] * r * w[j];
    if (threadIdx.x == 0 && rstd) rstd[n] = r;
}

/* dinp += rstd (dnorm - x c), c = sum(dout w x) rstd^2 / C */
__global__ static void rmsnorm_bwd_inp(float *dinp, const float *dout, const float *inp, const float *w, const float *rstd, int C) {
    __shared__ float s[NT];
    size_t n = blockIdx.x;
    const float *x = inp + n * C, *g = dout + n * C;
    float r = rstd[n], acc = 0.0f;
    for (int j = threadIdx.x; j < C; j += NT) acc += g[j] * w[j] * x[j];
    float c = block_sum(acc, s) * r * r / (float)C;
    for (int j = threadIdx.x; j < C; j += NT) dinp[n * C + j] += r * (g[j] * w[j] - x[j] * c);
}

__global__ static void rmsnorm_bwd_w(float *ow, size_t ld, int add, const float *dout, const float *inp, const float *rstd,
                                     int N, int C, int R) {
    int j = blockIdx.x * blockDim.x + threadIdx.x, s = blockIdx.y;
    if (j >= C) return;
    int n1 = (s + 1) * R < N ? (s + 1) * R : N;
    float aw = 0.0f;
    for (int n = s * R; n < n1; n++) aw += dout[(size_t)n * C + j] * inp[(size_t)n * C + j] * rstd[n];
    an_cuda_colsum_put(ow, ld, add, s, j, aw);
}

static unsigned col_blocks(int C) { return (unsigned)((C + NT - 1) / NT); }

void an_cuda_layernorm_forward(const an_ops *o, float *out, float *mean, float *rstd, const float *inp, const float *w,
                               const float *b, int N, int C, float eps) {
    if (N <= 0 || C <= 0) return;
    layernorm_fwd<<<N, NT, 0, an_cuda(o)->stream>>>(out, mean, rstd, nullptr, inp, nullptr, w, b, C, eps);
    AN_CUDA_LAUNCHED("layernorm_forward");
}

void an_cuda_add_layernorm_forward(const an_ops *o, float *res_out, float *out, float *mean, float *rstd, const float *res_in,
                                   const float *delta, const float *w, const float *b, int N, int C, float eps) {
    if (N <= 0 || C <= 0) return;
    layernorm_fwd<<<N, NT, 0, an_cuda(o)->stream>>>(out, mean, rstd, res_out, res_in, delta, w, b, C, eps);
    AN_CUDA_LAUNCHED("add_layernorm_forward");
}

void an_cuda_layernorm_backward(const an_ops *o, float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                const float *w, const float *mean, const float *rstd, int N, int C) {
    if (N <= 0 || C <= 0) return;
    cudaStream_t st = an_cuda(o)->stream;
    if (dinp) {
        layernorm_bwd_inp<<<N, NT, 0, st>>>(dinp, dout, inp, w, mean, rstd, C);
        AN_CUDA_LAUNCHED("layernorm_backward (dinp)");
    }
    if (dw || db) { /* slices' partials: dw's in the first C of each slice's 2C, db's in the rest */
        an_cuda_colsum cs = an_cuda_colsum_begin(o, N, 2 * (size_t)C);
        dim3 grid(col_blocks(C), (unsigned)cs.slices);
        if (cs.parts)
            layernorm_bwd_w<<<grid, NT, 0, st>>>(dw ? cs.parts : NULL, db ? cs.parts + C : NULL, cs.ld, 0, dout, inp, mean,
                                                 rstd, N, C, cs.rows);
        else
            layernorm_bwd_w<<<grid, NT, 0, st>>>(dw, db, 0, 1, dout, inp, mean, rstd, N, C, cs.rows);
        AN_CUDA_LAUNCHED("layernorm_backward (dw, db)");
        an_cuda_colsum_add(o, &cs, dw, 0, C, "layernorm_backward (dw)");
        an_cuda_colsum_add(o, &cs, db, (size_t)C, C, "layernorm_backward (db)");
        an_cuda_colsum_end(o);
    }
}

void an_cuda_rmsnorm_forward(const an_ops *o, float *out, float *rstd, const float *inp, const float *w, int N, int C, float eps) {
    if (N <= 0 || C <= 0) return;
    rmsnorm_fwd<<<N, NT, 0, an_cuda(o)->stream>>>(out, rstd, nullptr, inp, nullptr, w, C, eps);
    AN_CUDA_LAUNCHED("rmsnorm_forward");
}

void an_cuda_add_rmsnorm_forward(const an_ops *o, float *res_out, float *out, float *rstd, const float *res_in,
                                 const float *delta, const float *w, int N, int C, float eps) {
    if (N <= 0 || C <= 0) return;
    rmsnorm_fwd<<<N, NT, 0, an_cuda(o)->stream>>>(out, rstd, res_out, res_in, delta, w, C, eps);
    AN_CUDA_LAUNCHED("add_rmsnorm_forward");
}

void an_cuda_rmsnorm_backward(const an_ops *o, float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                              const float *rstd, int N, int C) {
    if (N <= 0 || C <= 0) return;
    cudaStream_t st = an_cuda(o)->stream;
    if (dinp) {
        rmsnorm_bwd_inp<<<N, NT, 0, st>>>(dinp, dout, inp, w, rstd, C);
        AN_CUDA_LAUNCHED("rmsnorm_backward (dinp)");
    }
    if (dw) {
        an_cuda_colsum cs = an_cuda_colsum_begin(o, N, (size_t)C);
        dim3 grid(col_blocks(C), (unsigned)cs.slices);
        rmsnorm_bwd_w<<<grid, NT, 0, st>>>(cs.parts ? cs.parts : dw, cs.ld, !cs.parts, dout, inp, rstd, N, C, cs.rows);
        AN_CUDA_LAUNCHED("rmsnorm_backward (dw)");
        an_cuda_colsum_add(o, &cs, dw, 0, C, "rmsnorm_backward (dw)");
        an_cuda_colsum_end(o);
    }
}
