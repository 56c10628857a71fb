#ifndef AN_CPU_H
#define AN_CPU_H
/* Internals of the CPU backend, shared by kernels/cpu_*.c; model code uses kernels/ops.h only.
 *
 * The inline helpers keep 8 (or 16) independent partial sums so gcc and clang vectorise them
 * without -ffast-math, and so results do not depend on the thread count. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/ops.h"

/* Up to this many rows a linear layer on float32 weights is a matrix-vector product (one pass over
 * the weights, bound by memory bandwidth); above it the GEMM, whose packing pays off once each weight
 * is reused enough. */
#define AN_CPU_MATVEC_MAX_ROWS 16

/* Row-major C[M, N] = alpha * op(A)[M, K] @ op(B)[K, N] + beta * C, op(X) = X or X^T.
 * OpenBLAS cblas_sgemm when built with AN_BLAS, the plain-C blocked GEMM otherwise. */
void an_cpu_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc);
/* The plain-C GEMM itself (always built, so it can be tested and measured beside OpenBLAS). */
void an_cpu_sgemm_fallback(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                           int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* 64-byte aligned (from 2 MiB up: on 2 MiB pages where Linux allows), zeroed; NULL on failure. Free
 * either with an_cpu_free (or free). */
void *an_cpu_alloc(size_t bytes);
/* The same, not zeroed: for buffers written whole before any read. */
void *an_cpu_alloc_uninit(size_t bytes);
void an_cpu_free(void *p);

void an_cpu_matmul_forward(const an_ops *o, float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC);
void an_cpu_matmul_backward_gelu(const an_ops *o, float *dpre, float *dw, float *dbias, const float *dout, const float *h,
                                 const float *pre, const float *w, int N, int C, int OC);
void an_cpu_matmul_gelu_forward(const an_ops *o, float *out, float *pre, const float *inp, const float *w, const float *bias,
                                int N, int C, int OC);
void an_cpu_matmul_backward(const an_ops *o, float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                            const float *w, int N, int C, int OC);
void an_cpu_embedding_forward(const an_ops *o, float *out, const int32_t *ids, const float *table, int N, int C);
void an_cpu_embedding_backward(const an_ops *o, float *dtable, const float *dout, const int32_t *ids, int N, int C);
void an_cpu_layernorm_forward(const an_ops *o, float *out, float *mean, float *rstd, const float *inp, const float *w,
                              const float *b, int N, int C, float eps);
void an_cpu_layernorm_backward(const an_ops *o, float *dinp, float *dw, float *db, const float *dout, const float *inp,
                               const float *w, const float *mean, const float *rstd, int N, int C);
void an_cpu_rmsnorm_forward(const an_ops *o, float *out, float *rstd, const float *inp, const float *w, int N, int C, float eps);
void an_cpu_rmsnorm_backward(const an_ops *o, float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                             const float *rstd, int N, int C);
void an_cpu_add_layernorm_forward(const an_ops *o, float *res_out, float *out, float *mean, float *rstd, const float *res_in,
                                  const float *delta, const float *w, const float *b, int N, int C, float eps);
void an_cpu_add_rmsnorm_forward(const an_ops *o, float *res_out, float *out, float *rstd, const float *res_in,
                                const float *delta, const float *w, int N, int C, float eps);
void an_cpu_rope_table(const an_ops *o, float *cos_sin, int n_pos, int hd, float theta);
void an_cpu_rope_forward(const an_ops *o, float *x, const int32_t *pos, int N, int nh, int hd, an_rope rope);
void an_cpu_rope_backward(const an_ops *o, float *dx, const int32_t *pos, int N, int nh, int hd, an_rope rope);
void an_cpu_attention_forward(const an_ops *o, float *out, float *lse, const float *q, const float *k, const float *v,
                              const int32_t *seg_start, int B, int T, int nh, int nkv, int hd, void *work,
                              size_t work_bytes);
void an_cpu_attention_backward(const an_ops *o, float *dq, float *dk, float *dv, const float *dout, const float *q,
                               const float *k, const float *v, const float *out, const float *lse,
                               const int32_t *seg_start, int B, int T, int nh, int nkv, int hd, void *work,
                               size_t work_bytes);
/* Scratch of the attention ops (cpu_attention.c, cpu_decode.c): per thread, a slice of the caller's
 * workspace; an op runs with as many threads as the workspace holds slices for. */
size_t an_cpu_attention_work_bytes(const an_ops *o, int T, int nh, int hd);
size_t an_cpu_decode_work_floats(int max_T, int nh);
int an_cpu_scratch_threads(void *work, size_t work_bytes, size_t per_thread, float **base);
void an_cpu_gelu_forward(const an_ops *o, float *out, const float *inp, size_t n);
/* dx[i] *= gelu'(inp[i]): gelu_backward's slope, for matmul_backward_gelu */
void an_cpu_gelu_scale(float *dx, const float *inp, size_t n);
void an_cpu_gelu_backward(const an_ops *o, float *dinp, const float *inp, const float *dout, size_t n);
void an_cpu_swiglu_forward(const an_ops *o, float *out, const float *gate, const float *up, size_t n);
void an_cpu_swiglu_backward(const an_ops *o, float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n);
void an_cpu_add(const an_ops *o, float *out, const float *a, const float *b, size_t n);
void an_cpu_axpy(const an_ops *o, float *dst, const float *src, float scale, size_t n);
void an_cpu_scale(const an_ops *o, float *x, float s, size_t n);
void an_cpu_cross_entropy_forward(const an_ops *o, float *losses, float *lse, const float *logits, const int32_t *targets, int N, int V);
void an_cpu_cross_entropy_backward(const an_ops *o, float *dlogits, const float *logits, const float *lse, const int32_t *targets,
                                   int N, int V, float dloss);
void an_cpu_adamw_update(const an_ops *o, const an_adamw_part *parts, int n_parts, size_t span, const float *grad,
                         float grad_scale, float *m, float *v, float lr, float beta1, float beta2, float eps,
                         float weight_decay, int step);
double an_cpu_sum_squares(const an_ops *o, const float *x, size_t n);

/* exp(x) for float, branch-free so loops over it vectorise: range reduction x = n ln2 + r, a degree-7
 * polynomial for exp(r) on |r| <= ln2/2, and 2^n built in the exponent bits. Relative error below
 * 2e-7 (about 2 ulp) for x in [-87.3, 88.3]; inputs below clamp to ~1e-38 (callers that need exact zeros,
 * such as masked attention scores, set them explicitly), above to 2.2e38; NaN stays NaN. */
static inline float an_expf(float x) {
    /* the clamp as bit selects: GCC (with its default -ftrapping-math) will not if-convert a float
     * ternary here and leaves the whole loop scalar */
    union { float f; uint32_t u; } xv = {x}, lo = {-87.3f}, hi = {88.3f};
    uint32_t below = 0u - (uint32_t)(x < -87.3f), above = 0u - (uint32_t)(x > 88.3f);
    xv.u = (xv.u & ~(below | above)) | (lo.u & below) | (hi.u & above);
    x = xv.f;
    /* round(x / ln2) with the 1.5 * 2^23 trick: the integer lands in the low mantissa bits */
    const float shifter = 12582912.0f;
    float t = x * 1.44269504088896341f + shifter;
    union { float f; uint32_t u; } tb = {t}, sb = {shifter};
    float n = t - shifter;
    float r = x - n * 0.693145751953125f; /* ln2 split into a high part exact in float ... */
    r = r - n * 1.428606765330187045e-06f; /* ... and the rest */
    /* exp(r) = 1 + r + r^2 P(r), P a minimax fit on |r| <= ln2/2 (the Cephes expf coefficients) */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { uint32_t u; float f; } scale = {(tb.u - sb.u + 127u) << 23};
    return p * scale.f;
}

/* max(a, b) as a bit select, for the same reason as the clamp in an_expf: loops over it vectorise.
 * Returns a when b is NaN and b when a is NaN (callers only take maxima of finite scores). */
static inline float an_maxf(float a, float b) {
    union { float f; uint32_t u; } av = {a}, bv = {b};
    uint32_t take_b = 0u - (uint32_t)(!(b <= a));
    av.u = (av.u & ~take_b) | (bv.u & take_b);
    return av.f;
}

/* Sums with 8 independent lanes (vectorised; fixed order, so deterministic). */
static inline float an_dot(const float *a, const float *b, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* max of a[0..n), n >= 1: 8 independent chains (GCC keeps them scalar, but 8 wide in flight) */
static inline float an_max(const float *a, int n) {
    float mx[8];
    for (int l = 0; l < 8; l++) mx[l] = a[0];
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) mx[l] = a[i + l] > mx[l] ? a[i + l] : mx[l];
    float m = mx[0];
    for (int l = 1; l < 8; l++) m = mx[l] > m ? mx[l] : m;
    for (; i < n; i++) m = a[i] > m ? a[i] : m;
    return m;
}

static inline float an_sum(const float *a, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[i + l];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i];
    return s;
}

/* The dropout mask (kernels/ops.h, "dropout"): element c (a 64-bit counter) is kept when
 * an_cpu_mask_hash32 of it is >= an_cpu_mask_threshold(p). The 32-bit hash vectorises (8 lanes of AVX2 32-bit
 * multiplies), so a mask costs a fraction of a nanosecond per element; the seed and the counter's top
 * 32 bits pick an odd multiplier and an offset (splitmix64 of both), the low 32 bits run through
 * Wellons' lowbias32 integer hash. Backends must implement exactly this function: backward
 * regenerates the mask instead of storing it. */
static inline uint64_t an_cpu_mask_key(uint64_t seed, uint32_t hi) {
    uint64_t z = (seed ^ ((uint64_t)hi * 0xD1B54A32D192ED03ull)) + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline uint32_t an_cpu_mask_hash32(uint32_t lo, uint64_t key) {
    uint32_t x = lo * ((uint32_t)key | 1u) + (uint32_t)(key >> 32);
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}
/* p * 2^32 rounded up, so "hash >= threshold" keeps with probability 1 - p (to 2^-32) */
static inline uint32_t an_cpu_mask_threshold(float p) {
    double t = (double)p * 4294967296.0;
    uint64_t k = (uint64_t)t;
    if ((double)k < t) k++;
    return k > 0xFFFFFFFFull ? 0xFFFFFFFFu : (uint32_t)k;
}
/* scale[i] = keep where element counter + i is kept, else 0, for i < len */
static inline void an_cpu_mask_row(float *scale, int len, uint64_t seed, uint64_t counter, uint32_t thr, float keep) {
    int i = 0;
    while (i < len) {
        uint64_t c = counter + (uint64_t)i;
        uint32_t lo = (uint32_t)c;
        uint64_t key = an_cpu_mask_key(seed, (uint32_t)(c >> 32));
        /* a run that stays below the next multiple of 2^32 shares the key */
        uint64_t room = 0x100000000ull - lo;
        int end = (uint64_t)(len - i) < room ? len : i + (int)room;
        for (int k = i; k < end; k++)
            scale[k] = an_cpu_mask_hash32(lo + (uint32_t)(k - i), key) >= thr ? keep : 0.0f;
        i = end;
    }
}

/* kernels/cpu_lora.c: a linear layer's LoRA adapter, fused (kernels/ops.h) */
void an_cpu_lora_forward(const an_ops *o, float *out, float *u, const float *inp, const float *a, const float *bt, int N, int C, int OC,
                         int r, float scaling, float p, uint64_t seed, uint64_t counter);
void an_cpu_lora_grouped_forward(const an_ops *o, float *out, float *u, const float *x, int C, int OC,
                                  const an_lora_seg *segs, int n_segs);
void an_cpu_lora_backward(const an_ops *o, float *dinp, float *da, float *dbt, float *du, const float *dout, const float *inp,
                          const float *u, const float *a, const float *bt, int N, int C, int OC, int r, float scaling,
                          float p, uint64_t seed, uint64_t counter);

/* kernels/cpu_matvec.c and cpu_decode.c (forward only) */
/* The product of matmul_forward for a few rows (decoding): one pass over w, each weight row used for
 * all N inputs while it is in cache. Row n of the result does not depend on the other rows or on N
 * (bit for bit). work: an_cpu_matvec_work_bytes(N, C) bytes to pack the inputs in (less: unpacked,
 * slower, the same bits). */
size_t an_cpu_matvec_work_bytes(int N, int C);
void an_cpu_matvec_forward(float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC,
                           void *work, size_t work_bytes);
void an_cpu_attention_decode_forward(const an_ops *o, float *out, const float *q, const float *k_cache, const float *v_cache,
                                     const int32_t *slot, const int32_t *len, int B, int max_T, int nh, int nkv,
                                     int hd, void *work, size_t work_bytes);

/* kernels/cpu_layout.c */
struct an_col_map;
void an_cpu_gather_cols_forward(const an_ops *o, float *dst, const float *src, int N, const struct an_col_map *map);
void an_cpu_gather_cols_backward(const an_ops *o, float *dsrc, const float *ddst, int N, const struct an_col_map *map);
void an_cpu_dropout(const an_ops *o, float *out, const float *inp, size_t n, float p, uint64_t seed, uint64_t counter);
/* Typed weights (kernels/cpu_linear.c): the table's linear ops and embedding lookup, and supports(). */
size_t an_cpu_linear_work_bytes(const an_ops *o, const an_weight *w, int N);
void an_cpu_linear_forward(const an_ops *o, float *out, const float *inp, const an_weight *w, const float *bias,
                           int N, void *work, size_t work_bytes, int mode);
void an_cpu_linear_backward_input(const an_ops *o, float *dinp, const float *dout, const an_weight *w, int N,
                                  void *work, size_t work_bytes);
void an_cpu_embedding_lookup(const an_ops *o, float *out, const int32_t *ids, const an_weight *table, int N);
int an_cpu_supports(const an_ops *o, an_op_id op, an_dtype weight);

/* bf16-stored frozen weights (kernels/cpu_bf16.c). The matmuls widen at most AN_BF16_TILE_BYTES of
 * weight rows at a time (256 rows of a 4096-wide head: the GEMMs stay large) into work. */
#define AN_BF16_TILE_BYTES (4u << 20)
/* Floats of the tile workspace for a weight whose rows have `cols` columns. */
static inline size_t an_bf16_work_floats(size_t cols) {
    size_t rows = AN_BF16_TILE_BYTES / sizeof(float) / (cols ? cols : 1);
    return (rows < 1 ? 1 : rows) * cols;
}
void an_cpu_embedding_forward_bf16(float *out, const int32_t *ids, const uint16_t *table, int N, int C);
void an_cpu_matmul_forward_bf16w(float *out, const float *inp, const uint16_t *w, const float *bias, int N, int C,
                                 int OC, float *work, size_t work_floats);
void an_cpu_matmul_backward_input_bf16w(float *dinp, const float *dout, const uint16_t *w, int N, int C, int OC,
                                        float *work, size_t work_floats);

/* GGUF-quantized frozen weights (kernels/cpu_quant.c, cpu_quant.h): the typed ops for AN_Q8_0 ..
 * AN_Q6_K. The workspace holds a tile of dequantized rows (AN_BF16_TILE_BYTES, as bf16's) and the
 * quantized activations of the matrix-vector path. */
size_t an_cpu_quant_work_bytes(const an_weight *w, int N);
void an_cpu_quant_forward(float *out, const float *inp, const an_weight *w, const float *bias, int N, void *work,
                          size_t work_bytes, int mode);
void an_cpu_quant_backward_input(float *dinp, const float *dout, const an_weight *w, int N, void *work,
                                 size_t work_bytes);
void an_cpu_quant_embedding(float *out, const int32_t *ids, const an_weight *table, int N);

#endif
