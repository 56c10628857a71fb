#ifndef AN_OPS_H
#define AN_OPS_H
/* The op table: every numerical operation the models use, forward and backward side by side.
 *
 * Model code never loops over tensor data itself; it calls through an an_ops table. The CPU backend
 * (kernels/cpu_*.c) is the reference; a CUDA backend fills the same table with device pointers, so
 * model code does not change. All pointers are backend memory (host memory for the CPU backend).
 *
 * Conventions
 *  - float32 activations and gradients; row-major; N is a number of rows (tokens, B*T).
 *  - Linear weights are stored as PyTorch nn.Linear stores them: w[OC, C] (out, in).
 *  - Gradient outputs ACCUMULATE (+=) into what the caller passes, so the caller zeroes them once
 *    per step and gradient accumulation and residual branches come for free. Any gradient output
 *    may be NULL when it is not wanted (a frozen weight gets no dw, the first layer needs no dinp).
 *    Exceptions, which overwrite, are marked "overwrites".
 *  - Attention layout: q[B, T, nh, hd], k and v [B, T, nkv, hd]; nh % nkv == 0 (grouped-query).
 *  - seg_start[B*T]: for each token, the index (within its row, 0..T-1) of the first token of the
 *    sample it belongs to. A token attends to [seg_start, t]. All zeros = plain causal attention;
 *    packed samples get a block-diagonal causal mask.
 */
#include <stddef.h>
#include <stdint.h>

#include "kernels/dtype.h"

#define AN_IGNORE_INDEX (-100)

/* How rope rotates: the base theta, the pairing, and the cos/sin table of positions 0 .. n_pos - 1
 * that rope_table made (NULL, 0 for none: every angle is computed on the spot). */
typedef struct an_rope {
    float theta;
    int interleaved;
    const float *cos_sin;
    int n_pos;
} an_rope;

/* A block-column map for gather_cols (see there). */
typedef struct an_col_map {
    int nblk, len;
    int dst_ld, dst_off, dst_step;
    int src_ld, src_off, src_step;
} an_col_map;

/* A weight as a backend holds it: its dtype, its shape [rows, cols] (a linear layer's [out, in], an
 * embedding's [vocab, dim]) and its data: AN_F32 float[rows * cols]; AN_BF16 the top 16 bits of each
 * float32 (backend memory); AN_NF4 an an_nf4_tensor (kernels/nf4.h; host memory, CPU backend). */
typedef struct an_weight {
    an_dtype dtype;
    int64_t rows, cols;
    const void *data;
} an_weight;

/* One segment of lora_grouped_forward: rows row0 .. row0 + n - 1 of the batch use the adapter module
 * (a [r, C] lora_A, bt [r, OC] lora_B transposed, scaling). a, bt: backend memory; the segment list
 * itself is host memory. */
typedef struct an_lora_seg {
    int row0, n;
    int r;
    float scaling;
    const float *a, *bt;
} an_lora_seg;

/* One tensor (or run of tensors) of an AdamW update (adamw_update below): its weights, and where its
 * gradient and moments start in the gradient and moment buffers. */
typedef struct an_adamw_part {
    float *param;
    size_t at, n;
    int decay; /* 1: weight_decay applies; 0: none (norms, biases) */
} an_adamw_part;

/* One row of a batch that sample_tokens draws from, with infer/sampler.h's parameters. */
typedef struct an_sample_row {
    float temperature, top_p, min_p, repeat_penalty;
    int32_t top_k;
    float u;          /* the uniform draw in [0, 1), used only when more than one token is kept */
    int32_t ids_at;   /* this row's ids in the op's list: */
    int32_t n_penalised; /* ids[ids_at ..] take the repetition penalty, each once (distinct ids), */
    int32_t n_masked;    /* then the next n_masked become -inf (stop ids before min_tokens) */
} an_sample_row;

/* How many of a row's best candidates the host sampler orders: 1 greedy, top-k's k (at most V), the whole
 * vocabulary for top-p alone, 0 where it draws in id order (min-p or no filter). A macro so that device
 * code (kernels/cuda/sample.cu) and the host working out its promise (infer/infer_sample.c) share it. */
#define AN_SAMPLE_ORDERED(r, V)                                                                                        \
    ((r)->temperature == 0.0f ? 1                                                                                      \
     : (r)->top_k > 0         ? ((r)->top_k < (V) ? (int)(r)->top_k : (int)(V))                                        \
     : (r)->top_p < 1.0f      ? (int)(V)                                                                               \
                              : 0)

/* What a caller of sample_tokens promises of every row of a batch (the rows live in backend memory, so
 * the backend cannot read them before it chooses its launches): nothing; that each orders at most
 * AN_SAMPLE_TOP_MAX candidates (a backend may select those instead of sorting the vocabulary); that each
 * is greedy (it may take the best alone). A row the promise does not hold for draws no token (-1). */
enum { AN_SAMPLE_ANY, AN_SAMPLE_TOP, AN_SAMPLE_GREEDY };
#define AN_SAMPLE_TOP_MAX 256

/* Every op of the table by id, for supports() and for the backend-ops test harness
 * (tests/test_backend_ops.c), which enumerates them. Keep in the order of the table below. */
#define AN_OP_LIST(X)                                                                                                  \
    X(matmul_forward) X(matmul_backward) X(matmul_gelu_forward) X(matmul_backward_gelu) X(embedding_forward)          \
    X(embedding_backward) X(layernorm_forward) X(layernorm_backward) X(rmsnorm_forward) X(rmsnorm_backward)           \
    X(add_layernorm_forward) X(add_rmsnorm_forward) X(rope_table) X(rope_forward) X(rope_backward)                    \
    X(attention_forward) X(attention_backward) X(gelu_forward) X(gelu_backward) X(swiglu_forward) X(swiglu_backward)  \
    X(add) X(axpy) X(scale) X(cross_entropy_forward) X(cross_entropy_backward) X(adamw_update) X(sum_squares)         \
    X(gather_cols_forward) X(gather_cols_backward) X(attention_decode_forward) X(dropout)                             \
    X(lora_forward) X(lora_backward) X(linear_forward) X(linear_backward_input) X(embedding_lookup)              \
    X(lora_grouped_forward) X(sample_tokens)

/* Ops a backend offers only to save a copy to the host, which the CPU backend does not need: the CPU
 * leaves them out (supports() says no) and its callers take the host path (sample_tokens: the host
 * sampler, infer/sampler.h, reads the logits where they are). */
#define AN_OP_DEVICE_ONLY(op) ((op) == AN_OP_sample_tokens)

/* How much a linear op may round, its last argument. */
typedef enum an_linear_mode {
    /* the products of the weight's float32 values with the float32 activations, to float rounding: the
     * function training differentiates (its backward is the same weights' product) */
    AN_LINEAR_EXACT = 0,
    /* inference: a backend may also round the activations, as ggml does; the CPU quantizes them to 8
     * bits per block for the GGUF block types, up to AN_QUANT_MATVEC_MAX_ROWS rows (prompts and decode
     * steps), with a per-row result either way */
    AN_LINEAR_INFER = 1
} an_linear_mode;

typedef enum an_op_id {
#define AN_OP_ENUM(name) AN_OP_##name,
    AN_OP_LIST(AN_OP_ENUM)
#undef AN_OP_ENUM
    AN_OP_COUNT
} an_op_id;

/* "matmul_forward" for AN_OP_matmul_forward; NULL outside the range. */
const char *an_op_name(an_op_id op);

/* Where a backend's memory lives. */
typedef enum an_device { AN_DEVICE_CPU = 0, AN_DEVICE_CUDA = 1 } an_device;

/* A backend is its op table: a name, a device, its own state (ctx: streams, library handles; NULL for
 * the CPU), the ops, and what it supports. Every op takes the table itself first, so a backend reaches
 * its context without global state. Ask supports() before relying on an op, never compare table
 * pointers: a wrapped table (a timing layer, a test's counting layer) supports what it wraps. */
typedef struct an_ops {
    const char *name;        /* the registry name: "cpu", "cuda" */
    const char *description; /* for logs: "cpu (OpenBLAS)" */
    /* The unit roundoff of the values a matrix product multiplies: 0 where they are the float32 inputs
     * themselves, 2^-8 where each is first rounded to bf16 ("cuda-bf16"); sums are float32 either way.
     * The backend-ops harness widens its bounds by it. */
    double matmul_input_u;
    an_device device;
    void *ctx;
    /* 1 when op runs on this backend; for the ops that take a weight, with a weight of that dtype
     * (AN_F32 for every other op). */
    int (*supports)(const struct an_ops *o, an_op_id op, an_dtype weight);

    /* ---- memory ---- */
    void *(*alloc)(const struct an_ops *o, size_t bytes); /* zeroed, aligned; NULL on failure */
    void (*free)(const struct an_ops *o, void *p);
    void (*upload)(const struct an_ops *o, void *dst, const void *host_src, size_t bytes);
    void (*download)(const struct an_ops *o, void *host_dst, const void *src, size_t bytes);
    void (*copy)(const struct an_ops *o, void *dst, const void *src, size_t bytes);
    void (*zero)(const struct an_ops *o, void *p, size_t bytes);
    /* The backend's own count of the memory alloc gave and free has not taken back: bytes now, the most
     * at once since the last reset, and the allocations made since it; reset 1 first starts a new count
     * (peak = now, allocations 0). NULL where the backend keeps no count (the CPU: the process's
     * resident set is its memory). */
    void (*memory_counts)(const struct an_ops *o, int reset, size_t *now, size_t *peak, size_t *allocs);

    /* ---- matmul: out[N, OC] = inp[N, C] @ w[OC, C]^T + bias[OC] (bias may be NULL) ---- */
    void (*matmul_forward)(const struct an_ops *o, float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC);
    /* dinp[N, C] += dout @ w;  dw[OC, C] += dout^T @ inp;  dbias[OC] += column sums of dout */
    void (*matmul_backward)(const struct an_ops *o, float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                            const float *w, int N, int C, int OC);
    /* the MLP's first product and its GELU (GPT-2): pre[N, OC] = inp @ w^T + bias (matmul_forward's
     * product, to its bounds), and out = gelu(pre) as gelu_forward (both overwrite). A backend may compute the GELU in the product's
     * epilogue with its own arithmetic (cuBLASLt's in "cuda-bf16"), so out is gelu(pre) to the
     * pointwise op's tolerance, not its bits; the same call gives the same bits again (recomputation). */
    void (*matmul_gelu_forward)(const struct an_ops *o, float *out, float *pre, const float *inp, const float *w,
                                const float *bias, int N, int C, int OC);
    /* the backward of the MLP's second product through the GELU before it: w[OC, C] takes h = gelu(pre)
     * ([N, C]); dpre = (dout @ w) * gelu'(pre) (overwrites), dw and dbias as matmul_backward's (NULL: not
     * wanted). A backend may apply the slope in the product's epilogue (cuBLASLt's DGELU in "cuda-bf16"). */
    void (*matmul_backward_gelu)(const struct an_ops *o, float *dpre, float *dw, float *dbias, const float *dout,
                                 const float *h, const float *pre, const float *w, int N, int C, int OC);

    /* ---- embedding: out[N, C] = table[ids[n], :] (overwrites) ---- */
    void (*embedding_forward)(const struct an_ops *o, float *out, const int32_t *ids, const float *table, int N, int C);
    void (*embedding_backward)(const struct an_ops *o, float *dtable, const float *dout, const int32_t *ids, int N, int C);

    /* ---- layernorm over the last dim C; mean[N], rstd[N] saved for backward; b may be NULL (no bias) ---- */
    void (*layernorm_forward)(const struct an_ops *o, float *out, float *mean, float *rstd, const float *inp, const float *w,
                              const float *b, int N, int C, float eps);
    void (*layernorm_backward)(const struct an_ops *o, float *dinp, float *dw, float *db, const float *dout, const float *inp,
                               const float *w, const float *mean, const float *rstd, int N, int C);

    /* ---- rmsnorm: out = inp * rstd * w, rstd = 1/sqrt(mean(inp^2) + eps) ---- */
    void (*rmsnorm_forward)(const struct an_ops *o, float *out, float *rstd, const float *inp, const float *w, int N, int C, float eps);
    void (*rmsnorm_backward)(const struct an_ops *o, float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                             const float *rstd, int N, int C);

    /* ---- a residual add and the norm after it in one pass over each row: res_out = res_in + delta (as
     * add: one rounding), then out = the norm of res_out (as layernorm_forward / rmsnorm_forward, the
     * same statistics). The same bits as add then the norm on the same backend, so a recomputed block
     * that runs them apart gets the forward's values. res_out may be res_in (in place). The backward
     * needs no fused op: the norm's dinp already accumulates into the residual's gradient. ---- */
    void (*add_layernorm_forward)(const struct an_ops *o, float *res_out, float *out, float *mean, float *rstd,
                                  const float *res_in, const float *delta, const float *w, const float *b, int N, int C,
                                  float eps);
    void (*add_rmsnorm_forward)(const struct an_ops *o, float *res_out, float *out, float *rstd, const float *res_in,
                                const float *delta, const float *w, int N, int C, float eps);

    /* ---- rope, in place on x[N, nh, hd] at positions pos[N].
     * interleaved = 0: Hugging Face rotate-half (pairs i, i + hd/2);
     * interleaved = 1: llama2.c / Meta (pairs 2i, 2i+1). Frequencies theta^(-2i/hd).
     * Backward rotates dx by the opposite angle (in place, overwrites). rope_table fills
     * cos_sin[n_pos, hd/2, 2] (overwrites) with the cos and sin of each position's angles. ---- */
    void (*rope_table)(const struct an_ops *o, float *cos_sin, int n_pos, int hd, float theta);
    void (*rope_forward)(const struct an_ops *o, float *x, const int32_t *pos, int N, int nh, int hd, an_rope rope);
    void (*rope_backward)(const struct an_ops *o, float *dx, const int32_t *pos, int N, int nh, int hd, an_rope rope);

    /* ---- causal attention with grouped-query heads, tiled (never a T x T matrix per head).
     * out[B, T, nh, hd] (overwrites); lse[B, nh, T] = log-sum-exp of the scaled scores, saved for
     * backward. Scale is 1/sqrt(hd). ---- */
    void (*attention_forward)(const struct an_ops *o, float *out, float *lse, const float *q, const float *k, const float *v,
                              const int32_t *seg_start, int B, int T, int nh, int nkv, int hd, void *work,
                              size_t work_bytes);
    void (*attention_backward)(const struct an_ops *o, float *dq, float *dk, float *dv, const float *dout, const float *q,
                               const float *k, const float *v, const float *out, const float *lse,
                               const int32_t *seg_start, int B, int T, int nh, int nkv, int hd, void *work,
                               size_t work_bytes);
    /* The scratch the attention ops need (forward and backward for rows of up to T positions, decode
     * over a cache of T positions), for the thread count of now: the ops take it as (work,
     * work_bytes) from the plan or the inference state and allocate nothing. With less, an op runs
     * on fewer threads; with none, its output is NaN. */
    size_t (*attention_work_bytes)(const struct an_ops *o, int T, int nh, int hd);

    /* ---- pointwise ---- */
    /* GELU, tanh approximation (GPT-2's gelu_new) */
    void (*gelu_forward)(const struct an_ops *o, float *out, const float *inp, size_t n);
    void (*gelu_backward)(const struct an_ops *o, float *dinp, const float *inp, const float *dout, size_t n);
    /* out = silu(gate) * up */
    void (*swiglu_forward)(const struct an_ops *o, float *out, const float *gate, const float *up, size_t n);
    void (*swiglu_backward)(const struct an_ops *o, float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n);
    /* out = a + b (out may alias a or b). Its backward is accumulate(da, dout), accumulate(db, dout). */
    void (*add)(const struct an_ops *o, float *out, const float *a, const float *b, size_t n);
    /* dst += scale * src */
    void (*axpy)(const struct an_ops *o, float *dst, const float *src, float scale, size_t n);
    /* x *= s */
    void (*scale)(const struct an_ops *o, float *x, float s, size_t n);

    /* ---- softmax cross-entropy with ignore index, fused and chunked over the vocabulary.
     * losses[N] (overwrites) = logsumexp(logits[n]) - logits[n, targets[n]], 0 where targets[n] ==
     * AN_IGNORE_INDEX; lse[N] saved for backward. Never copies a row of logits. ---- */
    void (*cross_entropy_forward)(const struct an_ops *o, float *losses, float *lse, const float *logits, const int32_t *targets, int N, int V);
    /* dlogits = dloss * (softmax(logits) - onehot(target)), 0 for ignored rows. Overwrites; dlogits may
     * alias logits, so a vocabulary of 92,544 needs no second N x V buffer. dloss is the weight of each
     * row's loss in the total, e.g. 1 / (number of trained tokens) for a mean. */
    void (*cross_entropy_backward)(const struct an_ops *o, float *dlogits, const float *logits, const float *lse, const int32_t *targets,
                                   int N, int V, float dloss);

    /* ---- optimizer ---- */
    /* AdamW, decoupled weight decay and bias correction; step counts from 1, over every part of a
     * list in one call (one launch on a device, however many tensors a model has): part k updates
     * parts[k].param[0 .. n) with grad, m and v at [at, at + n), with weight_decay when its decay
     * flag is set and none otherwise. parts is backend memory (the optimizer uploads its list once),
     * sorted by at, the parts disjoint, all inside [0, span). Each gradient is read as
     * grad[i] * grad_scale (the clipping factor, 1 for none), so clipping costs no pass of its own. */
    void (*adamw_update)(const struct an_ops *o, const an_adamw_part *parts, int n_parts, size_t span, const float *grad,
                         float grad_scale, float *m, float *v, float lr, float beta1, float beta2, float eps,
                         float weight_decay, int step);
    /* sum of squares, accumulated in double, returned to the host (for the global gradient norm) */
    double (*sum_squares)(const struct an_ops *o, const float *x, size_t n);

    /* ---- layout: copy blocks of columns between row-major matrices, to split the output of a fused
     * projection (GPT-2 c_attn, InternLM2 wqkv) into q, k, v. For row n < N, block j < map->nblk and
     * i < map->len:
     *   dst[n*dst_ld + dst_off + j*dst_step + i] = src[n*src_ld + src_off + j*src_step + i]  (overwrites)
     * Backward runs the same map the other way and accumulates: dsrc[...] += ddst[...]. ---- */
    void (*gather_cols_forward)(const struct an_ops *o, float *dst, const float *src, int N, const struct an_col_map *map);
    void (*gather_cols_backward)(const struct an_ops *o, float *dsrc, const float *ddst, int N, const struct an_col_map *map);

    /* ---- inference (forward only; infer/ uses these for decoding with a KV cache) ---- */
    /* One query per row against a KV cache: q[B, nh, hd], caches [rows, max_T, nkv, hd]; query row b
     * reads cache row slot[b] (slot NULL: row b) and attends to its keys 0 .. len[b]-1.
     * out[B, nh, hd] (overwrites). Scale 1/sqrt(hd), grouped-query heads as attention_forward. */
    void (*attention_decode_forward)(const struct an_ops *o, float *out, const float *q, const float *k_cache, const float *v_cache,
                                     const int32_t *slot, const int32_t *len, int B, int max_T, int nh, int nkv,
                                     int hd, void *work,
                                     size_t work_bytes);

    /* ---- inverted dropout with a counter-based mask (added for LoRA): out[i] = inp[i] / (1 - p) when
     * element counter + i is kept, else 0. Element c is kept when a 32-bit hash of (seed, c) is at
     * least p * 2^32 rounded up (the function is an_cpu_mask_hash32 in kernels/cpu.h; every backend
     * computes the same bits). Overwrites; out may alias inp. The backward is the same call on dout
     * with the same seed and counter: the mask is regenerated, never stored. ---- */
    void (*dropout)(const struct an_ops *o, float *out, const float *inp, size_t n, float p, uint64_t seed, uint64_t counter);

    /* ---- a linear layer's LoRA adapter, fused (added for LoRA speed). x[N, C] is the layer's input,
     * a[r, C] is lora_A, bt[r, OC] is lora_B transposed, xd = dropout(x) with the mask of the dropout
     * op above, element (n, k) numbered counter + n * C + k (p = 0: xd = x, no mask).
     *   forward:  u[N, r] = scaling * xd a^T (overwrites; kept for backward);  out[N, OC] += u bt
     *   backward: dbt += u^T dout;  du[N, r] = scaling * dout bt^T (overwrites: scratch);
     *             da += du^T xd;  dinp += dropout(du a) (the same mask)
     * No [N, C] or [N, OC] temporary; dinp, da, dbt may be NULL. ---- */
    void (*lora_forward)(const struct an_ops *o, float *out, float *u, const float *x, const float *a, const float *bt, int N, int C, int OC,
                         int r, float scaling, float p, uint64_t seed, uint64_t counter);
    void (*lora_backward)(const struct an_ops *o, float *dinp, float *da, float *dbt, float *du, const float *dout, const float *x,
                          const float *u, const float *a, const float *bt, int N, int C, int OC, int r, float scaling,
                          float p, uint64_t seed, uint64_t counter);

    /* ---- typed weights: linear layers and embedding lookups on weights of any dtype the backend
     * supports (supports(o, op, w->dtype)): AN_F32, AN_BF16 (frozen embedding / head), AN_NF4 (QLoRA's
     * frozen base). The backend dispatches on the dtype; model code never does.
     * Scratch: the linear ops take a workspace of at least linear_work_bytes(o, w, N) bytes of backend
     * memory, which the caller's plan or inference state holds: the ops allocate nothing. The size
     * never shrinks as N grows, so a caller sizes it once for the most rows it runs; it may depend
     * on the thread count when it is asked. With less, an op takes a slower kernel or writes NaN
     * (never a silently wrong result), and never allocates memory of its own. ---- */
    size_t (*linear_work_bytes)(const struct an_ops *o, const an_weight *w, int N);
    /* out[N, OC] = inp[N, C] @ W^T + bias[OC] (overwrites; bias may be NULL), W = w [OC, C]. For a few
     * rows (decoding) a backend may take a matrix-vector kernel: row n of the result then does not
     * depend on the other rows. mode (an_linear_mode): AN_LINEAR_EXACT for training, AN_LINEAR_INFER
     * lets the backend round the activations too. */
    void (*linear_forward)(const struct an_ops *o, float *out, const float *inp, const an_weight *w,
                           const float *bias, int N, void *work, size_t work_bytes, int mode);
    /* dinp[N, C] += dout[N, OC] @ W: the input gradient only (a weight of a typed op is frozen; a
     * trainable float32 weight gets its gradient from matmul_backward). */
    void (*linear_backward_input)(const struct an_ops *o, float *dinp, const float *dout, const an_weight *w, int N,
                                  void *work, size_t work_bytes);
    /* out[N, C] = table[ids[n], :] widened to float32 (overwrites), C = table->cols: bit-identical to
     * the float32 values of the table. */
    void (*embedding_lookup)(const struct an_ops *o, float *out, const int32_t *ids, const an_weight *table, int N);

    /* ---- many adapters in one batch (added for serving, infer/engine.h; the idea of Punica's SGMV):
     * for each segment s (rows row0 .. row0+n-1 of x[N, C] and out[N, OC], its own adapter),
     *   out[rows] += scaling_s * (x[rows] a_s^T) bt_s
     * Rows in no segment are left alone; segments must not overlap. u: scratch of at least the sum
     * of n * r over the segments floats (overwritten). Forward only (inference, no dropout). Each row's
     * result is that of lora_forward (p = 0) on that row alone, bit for bit on the CPU: a sequence
     * decodes to the same bits whatever adapters share its batch. ---- */
    void (*lora_grouped_forward)(const struct an_ops *o, float *out, float *u, const float *x, int C, int OC,
                                 const an_lora_seg *segs, int n_segs);

    /* ---- sampling on the device (added for decoding; AN_OP_DEVICE_ONLY). For each row b of
     * logits[B, V], the token infer/sampler.h's an_sampler_sample draws with rows[b]'s parameters and
     * uniform u (the stop ids masked first, as an_gen_pick masks them): out[2b] its id, -1 when no token
     * can be drawn, and out[2b + 1] the number of tokens kept (u is used only when that is above 1,
     * so the caller knows whether its generator advanced). rows, ids and out are backend memory; the
     * logits are overwritten (scratch). work: sample_work_bytes(o, B, V) bytes. The probabilities
     * are summed in another order than the host's, so a draw can differ where u lies within rounding
     * (~1e-15) of the boundary between two tokens. promise: AN_SAMPLE_ANY, _TOP or _GREEDY (above), what
     * the caller knows of every row; a row it does not hold for draws no token (-1), never a wrong one. ---- */
    size_t (*sample_work_bytes)(const struct an_ops *o, int B, int V);
    void (*sample_tokens)(const struct an_ops *o, int32_t *out, float *logits, int B, int V, const an_sample_row *rows,
                          const int32_t *ids, int promise, void *work, size_t work_bytes);
} an_ops;

/* The CPU backend: OpenBLAS sgemm and OpenMP (or the plain-C GEMM when built with BLAS=0). */
const an_ops *an_ops_cpu(void);

/* Global gradient 2-norm over a list of buffers (all of them together, as torch's clip_grad_norm_). */
double an_grad_norm(const an_ops *ops, float **grads, const size_t *sizes, int count);
/* torch's clipping factor for that norm: max_norm / (norm + 1e-6) capped at 1; 1 when max_norm <= 0.
 * It is handed to adamw_update as grad_scale rather than applied to the gradients. */
float an_clip_coef(double norm, double max_norm);

#endif
