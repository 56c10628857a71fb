/* Internals of the CUDA backend (the .cu files of kernels/cuda/), shared by its files; model code uses kernels/ops.h.
 *
 * The backend's state (an_cuda_ctx) holds the op table itself, so opening the backend allocates one
 * object and the table's ctx points back at it: no global state. Every op runs on the context's one
 * stream, in order; the memory ops synchronise that stream, so data a download returns is final.
 *
 * Two precisions, two registry names. "cuda" is the float32 test mode: cuBLAS in CUBLAS_DEFAULT_MATH (no
 * TF32 tensor cores) and cuBLASLt with CUBLAS_COMPUTE_32F (not the _FAST_TF32 variant), so a GEMM is a
 * float32 GEMM with float32 accumulation and the backend-ops harness can hold it to float32's rounding
 * bounds. "cuda-bf16" multiplies as PyTorch's bf16 autocast does: each GEMM's two inputs rounded to
 * bf16 (into the context's scratch), tensor-core products accumulated and written in float32; weights,
 * activations, gradients and everything else stay float32 (an_ops.matmul_input_u says so to the
 * harness).
 * Reductions are written with a fixed order (fixed grids, tree reductions, one owner per output), never
 * float atomics: same inputs, same GPU, same bits. */
#ifndef AN_KERNELS_CUDA_H
#define AN_KERNELS_CUDA_H

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <pthread.h>
#include <stdint.h>

extern "C" {
#include "core/error.h"
#include "kernels/ops.h"
const an_ops *an_ops_cuda_open(an_error *err);      /* "cuda": float32 */
const an_ops *an_ops_cuda_open_bf16(an_error *err); /* "cuda-bf16": bf16 GEMM inputs */
void an_ops_cuda_close(const an_ops *o);
}

/* sum_squares' partial sums: a fixed grid, so the order of the sum never depends on the GPU */
#define AN_CUDA_SUMSQ_BLOCKS 256
#define AN_CUDA_THREADS 256

typedef struct an_cuda_live { /* one allocation of alloc (memory_counts) */
    void *p;
    size_t bytes;
} an_cuda_live;

typedef struct an_cuda_ctx {
    an_ops table; /* first: the table a caller holds is this context */
    int device;
    char description[400];
    cudaStream_t stream;
    cublasHandle_t blas;
    cublasLtHandle_t lt;
    void *lt_work; /* cuBLASLt's workspace, allocated once at open */
    size_t lt_work_bytes;
    double *partials; /* AN_CUDA_SUMSQ_BLOCKS + 1 doubles of device scratch for sum_squares */
    /* memory_counts: every live allocation of alloc (pointer, bytes), the bytes now and at the peak, and
     * the allocations since the last reset; under `lock`, since ops may be called from several threads.
     * The handles' own workspace (lt_work, partials) is the backend's, not counted. */
    pthread_mutex_t lock;
    an_cuda_live *live;
    size_t n_live, cap_live, now, peak, allocs;
    int bf16;          /* "cuda-bf16": GEMM inputs rounded to bf16 */
    /* device memory an op's kernels use between its launches (an_cuda_scratch_take): the bf16 GEMMs'
     * input copies, the embedding backward's sort keys, LoRA's dropped-out input, the column sums'
     * partials; grown to the largest asked for, then kept */
    void *scratch;
    size_t scratch_bytes;
    /* held from an op's take of the scratch to its release, after its last kernel is enqueued: two host
     * threads' ops then reach the stream one after the other, which runs them in that order, so neither
     * overwrites the other's data */
    pthread_mutex_t scratch_lock;
} an_cuda_ctx;

static inline an_cuda_ctx *an_cuda(const an_ops *o) { return (an_cuda_ctx *)o->ctx; }

/* Ops return nothing, so a failed launch or library call is reported on stderr (with the op's name)
 * and its outputs are left as they are; the next synchronising memory op reports it again. */
void an_cuda_report(const char *what, const char *detail);
static inline void an_cuda_check(cudaError_t e, const char *what) {
    if (e != cudaSuccess) an_cuda_report(what, cudaGetErrorString(e));
}
/* after a kernel launch: a bad configuration shows here, an error inside the kernel at the next sync */
#define AN_CUDA_LAUNCHED(what) an_cuda_check(cudaGetLastError(), what)

/* blocks for n elements at AN_CUDA_THREADS each, capped (the loops are grid-stride) */
static inline unsigned an_cuda_blocks(size_t n) {
    size_t b = (n + AN_CUDA_THREADS - 1) / AN_CUDA_THREADS;
    if (b < 1) b = 1;
    return b > 65535u ? 65535u : (unsigned)b;
}

/* Fills n floats with NaN: an op that cannot run (an unsupported dtype, too little workspace) makes its
 * output visibly wrong instead of silently stale, as the CPU backend does. */
void an_cuda_fill_nan(const an_ops *o, float *x, size_t n);

/* The context's scratch, at least `bytes` of it (256-byte aligned), locked for the calling op until
 * an_cuda_scratch_release, which the op calls once its kernels that use it are enqueued (also when
 * take returned NULL: the device had no memory for it). Grown through alloc (so counted) when an op
 * needs more than any before, the first step of a run. */
void *an_cuda_scratch_take(const an_ops *o, size_t bytes);
void an_cuda_scratch_release(const an_ops *o);

/* Column sums over a batch's rows in slices (colsum.cu): begin locks the scratch and cuts the N rows
 * into `slices` of `rows` (parts: slices x ld floats of the scratch; NULL with one slice of all N rows,
 * when N is small or no scratch can be had); the op's kernel, a grid of (column blocks, slices), hands
 * each thread's sum over its slice to an_cuda_colsum_put; add adds the slices' partials of columns
 * [off, off + C) into dst in slice order; end unlocks. */
typedef struct an_cuda_colsum {
    int rows, slices;
    float *parts;
    size_t ld;
} an_cuda_colsum;
an_cuda_colsum an_cuda_colsum_begin(const an_ops *o, int N, size_t ld);
void an_cuda_colsum_add(const an_ops *o, const an_cuda_colsum *cs, float *dst, size_t off, int C, const char *what);
void an_cuda_colsum_end(const an_ops *o);
/* column j's sum v over slice s: into the slice's partials (out = parts + offset), or added straight
 * into the gradient (out = dst) when there is one slice without partials (add = 1) */
__device__ static inline void an_cuda_colsum_put(float *out, size_t ld, int add, int s, int j, float v) {
    if (add)
        out[j] += v;
    else
        out[(size_t)s * ld + j] = v;
}

/* float32 to bf16, rounded to nearest even (a NaN stays a NaN) */
__host__ __device__ static inline uint16_t an_cuda_round_bf16(uint32_t u) {
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* Column-major C[m, n] = alpha op(A) op(B) + beta C (+ bias[m] broadcast over columns when bias is
 * non-NULL, beta must then be 0), float32 in and out with float32 accumulation, through cuBLASLt (bias
 * in its epilogue), falling back to cublasSgemm and a bias kernel when cuBLASLt offers no algorithm. */
void an_cuda_gemm(const an_ops *o, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc, const float *bias, const char *what);
/* The same product in float32 whatever the context's mode (the LoRA adapters' float32 masters, lora.cu),
 * without bias; it takes no scratch, so a caller may hold it (an_cuda_scratch_take). beta 0 or 1 when k = 0. */
void an_cuda_gemm_f32(const an_ops *o, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc, const char *what);

/* ---- the dropout mask, the CPU's function exactly (kernels/cpu.h an_cpu_mask_key / hash32 /
 * threshold): element c is kept when hash32((uint32)c, key(seed, c >> 32)) >= threshold(p). ---- */
__host__ __device__ static inline uint64_t an_cuda_mask_key(uint64_t seed, uint32_t hi) {
    uint64_t z = (seed ^ ((uint64_t)hi * 0xD1B54A32D192ED03ull)) + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
__host__ __device__ static inline uint32_t an_cuda_mask_hash32(uint32_t lo, uint64_t key) {
    uint32_t x = lo * ((uint32_t)key | 1u) + (uint32_t)(key >> 32);
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}
/* p * 2^32 rounded up (host: the CPU computes it in double the same way) */
static inline uint32_t an_cuda_mask_threshold(float p) {
    double t = (double)p * 4294967296.0;
    uint64_t k = (uint64_t)t;
    if ((double)k < t) k++;
    return k > 0xFFFFFFFFull ? 0xFFFFFFFFu : (uint32_t)k;
}
/* 1 when element c of the mask is kept */
__device__ static inline int an_cuda_mask_kept(uint64_t seed, uint64_t c, uint32_t thr) {
    return an_cuda_mask_hash32((uint32_t)c, an_cuda_mask_key(seed, (uint32_t)(c >> 32))) >= thr;
}

/* bf16 (the top half of a float32) widened: exact */
__device__ static inline float an_cuda_widen_bf16(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

/* the tile a typed weight (bf16, NF4, GGUF blocks) is widened into by the linear ops: 32 MiB of rows of
 * `cols` floats (twice the rows as bf16 in cuda-bf16). Device memory is plentiful next to the weights,
 * and a tile is one GEMM: the CPU's 4 MiB tile would cut a 7B model's 11008 x 4096 projection into 43
 * products, 2048-row tiles into 6 (3 in bf16). */
static inline size_t an_cuda_tile_work_floats(size_t cols) {
    size_t rows = (32u << 20) / sizeof(float) / (cols ? cols : 1);
    return (rows < 1 ? 1 : rows) * cols;
}

/* ---- typed weights (weights.cu) ---- */
/* 1 for the weight dtypes besides float32 the kernels read (bf16, NF4, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K). An
 * NF4 weight's data is its an_nf4_tensor, whose `device` copy (kernels/nf4.h) the kernels read. */
int an_cuda_weight_readable(an_dtype t);
/* tile[rows, cols] = rows r0 .. r0 + rows - 1 of w as float32, the CPU's dequantized values bit for bit;
 * -1 (nothing launched) when w cannot be read here */
int an_cuda_widen_rows(const an_ops *o, float *tile, const an_weight *w, int64_t r0, int rows, const char *what);
/* the same values rounded to bf16 (nearest even), as the bf16 GEMMs round their inputs */
int an_cuda_widen_rows_bf16(const an_ops *o, uint16_t *tile, const an_weight *w, int64_t r0, int rows, const char *what);
/* out[n, :] = row ids[n] of w as float32; -1 when w cannot be read here */
int an_cuda_lookup_rows(const an_ops *o, float *out, const int32_t *ids, const an_weight *w, int N);
/* Decoding's products: out[N, OC] = inp[N, C] w^T (+ bias) for N <= AN_CUDA_MATVEC_ROWS, each weight
 * element dequantized once in registers for all N rows (no tile, no GEMM); -1 when w cannot be read. */
enum { AN_CUDA_MATVEC_ROWS = 8 };
int an_cuda_typed_matvec(const an_ops *o, float *out, const float *inp, const an_weight *w, const float *bias, int N);

/* ---- the ops, one file per family in kernels/cuda/ ---- */
int an_cuda_supports(const an_ops *o, an_op_id op, an_dtype weight);
/* matmul.cu */
void an_cuda_matmul_forward(const an_ops *o, float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC);
void an_cuda_matmul_backward_gelu(const an_ops *o, float *dpre, float *dw, float *dbias, const float *dout, const float *h,
                                  const float *pre, const float *w, int N, int C, int OC);
void an_cuda_matmul_gelu_forward(const an_ops *o, float *out, float *pre, const float *inp, const float *w, const float *bias,
                                 int N, int C, int OC);
void an_cuda_matmul_backward(const an_ops *o, float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                             const float *w, int N, int C, int OC);
size_t an_cuda_linear_work_bytes(const an_ops *o, const an_weight *w, int N);
void an_cuda_linear_forward(const an_ops *o, float *out, const float *inp, const an_weight *w, const float *bias, int N,
                            void *work, size_t work_bytes, int mode);
void an_cuda_linear_backward_input(const an_ops *o, float *dinp, const float *dout, const an_weight *w, int N, void *work,
                                   size_t work_bytes);
/* embedding.cu */
void an_cuda_embedding_forward(const an_ops *o, float *out, const int32_t *ids, const float *table, int N, int C);
void an_cuda_embedding_backward(const an_ops *o, float *dtable, const float *dout, const int32_t *ids, int N, int C);
void an_cuda_embedding_lookup(const an_ops *o, float *out, const int32_t *ids, const an_weight *table, int N);
/* norm.cu */
void an_cuda_layernorm_forward(const an_ops *o, float *out, float *mean, float *rstd, const float *inp, const float *w,
                               const float *b, int N, int C, float eps);
void an_cuda_layernorm_backward(const an_ops *o, float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                const float *w, const float *mean, const float *rstd, int N, int C);
void an_cuda_rmsnorm_forward(const an_ops *o, float *out, float *rstd, const float *inp, const float *w, int N, int C, float eps);
void an_cuda_rmsnorm_backward(const an_ops *o, float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                              const float *rstd, int N, int C);
void an_cuda_add_layernorm_forward(const an_ops *o, float *res_out, float *out, float *mean, float *rstd, const float *res_in,
                                   const float *delta, const float *w, const float *b, int N, int C, float eps);
void an_cuda_add_rmsnorm_forward(const an_ops *o, float *res_out, float *out, float *rstd, const float *res_in,
                                 const float *delta, const float *w, int N, int C, float eps);
/* rope.cu */
void an_cuda_rope_table(const an_ops *o, float *cos_sin, int n_pos, int hd, float theta);
void an_cuda_rope_forward(const an_ops *o, float *x, const int32_t *pos, int N, int nh, int hd, an_rope rope);
void an_cuda_rope_backward(const an_ops *o, float *dx, const int32_t *pos, int N, int nh, int hd, an_rope rope);
/* attention.cu, decode.cu */
void an_cuda_attention_forward(const an_ops *o, float *out, float *lse, const float *q, const float *k, const float *v,
                               const int32_t *seg_start, int B, int T, int nh, int nkv, int hd, void *work, size_t work_bytes);
void an_cuda_attention_backward(const an_ops *o, float *dq, float *dk, float *dv, const float *dout, const float *q,
                                const float *k, const float *v, const float *out, const float *lse, const int32_t *seg_start,
                                int B, int T, int nh, int nkv, int hd, void *work, size_t work_bytes);
size_t an_cuda_attention_work_bytes(const an_ops *o, int T, int nh, int hd);
void an_cuda_attention_decode_forward(const an_ops *o, float *out, const float *q, const float *k_cache, const float *v_cache,
                                      const int32_t *slot, const int32_t *len, int B, int max_T, int nh, int nkv, int hd,
                                      void *work, size_t work_bytes);
/* pointwise.cu */
void an_cuda_gelu_forward(const an_ops *o, float *out, const float *inp, size_t n);
/* dx[i] *= gelu'(inp[i]): gelu_backward's slope (matmul_backward_gelu without the epilogue) */
void an_cuda_gelu_scale(const an_ops *o, float *dx, const float *inp, size_t n);
void an_cuda_gelu_backward(const an_ops *o, float *dinp, const float *inp, const float *dout, size_t n);
void an_cuda_swiglu_forward(const an_ops *o, float *out, const float *gate, const float *up, size_t n);
void an_cuda_swiglu_backward(const an_ops *o, float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                             size_t n);
void an_cuda_add(const an_ops *o, float *out, const float *a, const float *b, size_t n);
void an_cuda_axpy(const an_ops *o, float *dst, const float *src, float scale, size_t n);
void an_cuda_scale(const an_ops *o, float *x, float s, size_t n);
/* cross_entropy.cu */
void an_cuda_cross_entropy_forward(const an_ops *o, float *losses, float *lse, const float *logits, const int32_t *targets, int N,
                                   int V);
void an_cuda_cross_entropy_backward(const an_ops *o, float *dlogits, const float *logits, const float *lse,
                                    const int32_t *targets, int N, int V, float dloss);
/* sort.cu: each aligned segment of `segment` keys (a power of two dividing n) sorted ascending */
void an_cuda_sort_u64(const an_ops *o, uint64_t *keys, size_t n, size_t segment);

/* attention_mma.cu: the forward and backward on the tensor cores in cuda-bf16 (hd a multiple of 16, at
 * most 128); -1 (nothing launched) where they do not apply */
int an_cuda_attention_forward_mma(const an_ops *o, float *out, float *lse, const float *q, const float *k, const float *v,
                                  const int32_t *seg_start, int B, int T, int nh, int nkv, int hd);
int an_cuda_attention_backward_mma(const an_ops *o, float *dq, float *dk, float *dv, const float *dout, const float *q,
                                   const float *k, const float *v, const float *out, const float *lse,
                                   const int32_t *seg_start, int B, int T, int nh, int nkv, int hd);

/* sample.cu */
size_t an_cuda_sample_work_bytes(const an_ops *o, int B, int V);
void an_cuda_sample_tokens(const an_ops *o, int32_t *out, float *logits, int B, int V, const an_sample_row *rows,
                           const int32_t *ids, int promise, void *work, size_t work_bytes);

/* adamw.cu */
void an_cuda_adamw_update(const an_ops *o, const an_adamw_part *parts, int n_parts, size_t span, const float *grad,
                          float grad_scale, float *m, float *v, float lr, float beta1, float beta2, float eps,
                          float weight_decay, int step);
double an_cuda_sum_squares(const an_ops *o, const float *x, size_t n);
/* layout.cu, dropout.cu, lora.cu */
void an_cuda_gather_cols_forward(const an_ops *o, float *dst, const float *src, int N, const an_col_map *map);
void an_cuda_gather_cols_backward(const an_ops *o, float *dsrc, const float *ddst, int N, const an_col_map *map);
void an_cuda_dropout(const an_ops *o, float *out, const float *inp, size_t n, float p, uint64_t seed, uint64_t counter);
void an_cuda_lora_forward(const an_ops *o, float *out, float *u, const float *x, const float *a, const float *bt, int N, int C,
                          int OC, int r, float scaling, float p, uint64_t seed, uint64_t counter);
void an_cuda_lora_backward(const an_ops *o, float *dinp, float *da, float *dbt, float *du, const float *dout, const float *x,
                           const float *u, const float *a, const float *bt, int N, int C, int OC, int r, float scaling, float p,
                           uint64_t seed, uint64_t counter);
void an_cuda_lora_grouped_forward(const an_ops *o, float *out, float *u, const float *x, int C, int OC, const an_lora_seg *segs,
                                  int n_segs);

#endif
