/* AdamW and the sum of squares (for the global gradient norm) on the GPU.
 *
 * AdamW updates every part of the optimizer's list in one launch and follows kernels/cpu_adamw.c
 * operation for operation: the scalars formed on the host in double from the hyperparameters as typed
 * (the same code), then float32 per element in PyTorch's order, with _rn intrinsics so nvcc fuses no
 * multiply-add (sqrtf and the division are IEEE-rounded without --use_fast_math): the same bits as
 * the CPU backend.
 * The sum of squares is a fixed tree: AN_CUDA_SUMSQ_BLOCKS blocks of AN_CUDA_THREADS threads, each
 * thread a strided sum in double, each block a tree, then one block adds the partials in order. The
 * grid never depends on the GPU, so neither does the result. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/cuda/cuda.h"

/* the shortest decimal that rounds to x (kernels/cpu_adamw.c: PyTorch forms its scalars from the
 * Python doubles the user typed) */
static double typed_decimal(float x) {
    char buf[32];
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)x);
        double d = strtod(buf, NULL);
        if ((float)d == x) return d;
    }
    return (double)x;
}

/* Every part in one launch: the blocks stride over [0, span) of the gradient and moment buffers, a
 * block's AN_CUDA_THREADS consecutive offsets at a time (coalesced). Thread 0 finds the first part
 * that ends past the block's first offset (a binary search: ends increase, the parts being sorted
 * and disjoint); each thread walks on from there to its own offset's part, a step or two at most
 * unless the block spans many tiny parts. Offsets in no part (the buffer's gaps) are skipped. */
__global__ static void adamw_k(const an_adamw_part *parts, int n_parts, size_t span, const float *grad, float grad_scale,
                               float *m, float *v, float beta2, float eps, float decay, float w1, float w2,
                               float step_size, float bc2_sqrt) {
    __shared__ int first;
    for (size_t base = blockIdx.x * (size_t)AN_CUDA_THREADS; base < span; base += (size_t)gridDim.x * AN_CUDA_THREADS) {
        if (threadIdx.x == 0) {
            int lo = 0, hi = n_parts; /* the first part whose end is past base: in [lo, hi] */
            while (lo < hi) {
                int mid = (lo + hi) / 2;
                if (parts[mid].at + parts[mid].n <= base) lo = mid + 1;
                else hi = mid;
            }
            first = lo;
        }
        __syncthreads();
        size_t i = base + threadIdx.x;
        int k = first;
        while (k < n_parts && parts[k].at + parts[k].n <= i) k++;
        if (i < span && k < n_parts && parts[k].at <= i) {
            float *param = parts[k].param + (i - parts[k].at);
            float d = parts[k].decay ? decay : 1.0f; /* (float)(1 - lr * 0) for a part without decay */
            float g = __fmul_rn(grad[i], grad_scale);
            float p = __fmul_rn(*param, d);
            float mi = __fadd_rn(m[i], __fmul_rn(w1, __fsub_rn(g, m[i])));
            float vi = __fadd_rn(__fmul_rn(v[i], beta2), __fmul_rn(w2, __fmul_rn(g, g)));
            float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
            *param = __fsub_rn(p, __fmul_rn(step_size, __fdiv_rn(mi, denom)));
            m[i] = mi;
            v[i] = vi;
        }
        __syncthreads(); /* every thread has read first before thread 0 writes the next */
    }
}

void an_cuda_adamw_update(const an_ops *o, const an_adamw_part *parts, int n_parts, size_t span, const float *grad,
                          float grad_scale, float *m, float *v, float lr, float beta1, float beta2, float eps,
                          float weight_decay, int step) {
    if (n_parts <= 0 || !span) return;
    double lr_d = typed_decimal(lr), b1 = typed_decimal(beta1), b2 = typed_decimal(beta2);
    float decay = (float)(1.0 - lr_d * typed_decimal(weight_decay));
    float w1 = (float)(1.0 - b1), w2 = (float)(1.0 - b2);
    float step_size = (float)(lr_d / (1.0 - pow(b1, step)));
    float bc2_sqrt = (float)sqrt(1.0 - pow(b2, step));
    adamw_k<<<an_cuda_blocks(span), AN_CUDA_THREADS, 0, an_cuda(o)->stream>>>(parts, n_parts, span, grad, grad_scale, m, v,
                                                                             beta2, eps, decay, w1, w2, step_size,
                                                                             bc2_sqrt);
    AN_CUDA_LAUNCHED("adamw_update");
}

/* sum of s[0 .. AN_CUDA_THREADS) into s[0], a fixed tree */
__device__ static void block_tree(double *s) {
    for (int stride = AN_CUDA_THREADS / 2; stride > 0; stride /= 2) {
        __syncthreads();
        if ((int)threadIdx.x < stride) s[threadIdx.x] += s[threadIdx.x + stride];
    }
    __syncthreads();
}

__global__ static void sumsq_partials(double *partials, const float *x, size_t n) {
    __shared__ double s[AN_CUDA_THREADS];
    double acc = 0.0;
    for (size_t i = blockIdx.x * (size_t)AN_CUDA_THREADS + threadIdx.x; i < n; i += (size_t)AN_CUDA_SUMSQ_BLOCKS * AN_CUDA_THREADS)
        acc += (double)x[i] * (double)x[i];
    s[threadIdx.x] = acc;
    block_tree(s);
    if (threadIdx.x == 0) partials[blockIdx.x] = s[0];
}

__global__ static void sumsq_total(double *partials) {
    if (threadIdx.x != 0) return;
    double t = 0.0;
    for (int b = 0; b < AN_CUDA_SUMSQ_BLOCKS; b++) t += partials[b];
    partials[AN_CUDA_SUMSQ_BLOCKS] = t;
}

double an_cuda_sum_squares(const an_ops *o, const float *x, size_t n) {
    an_cuda_ctx *c = an_cuda(o);
    if (!n) return 0.0;
    sumsq_partials<<<AN_CUDA_SUMSQ_BLOCKS, AN_CUDA_THREADS, 0, c->stream>>>(c->partials, x, n);
    AN_CUDA_LAUNCHED("sum_squares");
    sumsq_total<<<1, 32, 0, c->stream>>>(c->partials);
    AN_CUDA_LAUNCHED("sum_squares");
    double total = NAN;
    an_cuda_check(cudaMemcpyAsync(&total, c->partials + AN_CUDA_SUMSQ_BLOCKS, sizeof total, cudaMemcpyDeviceToHost, c->stream),
                  "sum_squares");
    an_cuda_check(cudaStreamSynchronize(c->stream), "sum_squares");
    return total;
}
