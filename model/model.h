#ifndef AN_MODEL_H
#define AN_MODEL_H
/* A transformer as data: a config, its parameter tensors, and a memory plan.
 *
 * Three families share one code path (model/forward.c, model/backward.c):
 *   GPT-2      learned positions, LayerNorm, fused c_attn (q|k|v), GELU MLP, tied head
 *   Llama      RMSNorm, RoPE, separate q/k/v (optional bias: Qwen2), grouped-query heads, SwiGLU
 *   InternLM2  Llama-like with one fused wqkv whose rows are grouped per kv head
 *
 * Memory is planned, not scattered:
 *  - every float32 parameter lives in one allocation (whatever the dtype on disk); the frozen ones
 *    held in another type (an_param.dtype: a bf16 embedding/head, an NF4 base) in their own;
 *  - gradients exist only for trainable tensors, in one allocation (an_model_alloc_grads); a frozen
 *    tensor has grad == NULL and its matmul backward is given dw = NULL;
 *  - activations for one batch shape are allocated once (an_model_plan); forward and backward
 *    allocate nothing.
 * All numerical work goes through the an_ops table, so a CUDA backend runs the same code; the model
 * holds no scratch of its own (the plan and each inference state do), so inference states share it.
 * Linear weights are held as nn.Linear holds them, w[out, in]; GPT-2's Conv1D weights, stored [in, out]
 * on disk, are transposed at load and back at save. */
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "kernels/ops.h"
#include "model/io/config.h"

typedef struct an_param {
    char name[96];    /* the Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight" */
    int ndim;         /* 1 or 2 */
    int64_t shape[2]; /* as held in memory: linear weights [out, in] */
    size_t numel;
    an_dtype dtype;   /* how the values are held: AN_F32 in data; AN_BF16, AN_NF4 or a GGUF block type
                       * (AN_Q8_0 .. AN_Q4_1_X8) in packed, data NULL */
    float *data;      /* AN_F32: backend memory, inside an_model.param_mem */
    float *grad;      /* backend memory inside an_model.grad_mem; NULL when frozen */
    int trainable;
    int transposed;   /* stored [in, out] in Hugging Face files (GPT-2 Conv1D) */
    void *packed;     /* AN_BF16: frozen and stored as bf16 (an_model_store_frozen_bf16), backend memory
                       * inside an_model.bf16_mem; AN_NF4: QLoRA's frozen weight, an an_nf4_tensor owned
                       * by an_model.nf4 (model/nf4_weights.h, host memory, with a copy in a device
                       * backend's); a GGUF block type: ggml's blocks as the file holds them, inside
                       * an_model.ggml_mem (backend memory) */
} an_param;

/* The weight as the op table takes it (kernels/ops.h): dtype, [out, in], and where the values are. */
static inline an_weight an_param_weight(const an_param *p) {
    an_weight w = {p->dtype, p->shape[0], p->ndim == 2 ? p->shape[1] : 1,
                   p->dtype == AN_F32 ? (const void *)p->data : (const void *)p->packed};
    return w;
}
/* The packed values of a weight of that dtype, or NULL: for the code that reads and writes formats. */
static inline struct an_nf4_tensor *an_param_nf4(const an_param *p) { return p->dtype == AN_NF4 ? p->packed : NULL; }
static inline uint16_t *an_param_bf16(const an_param *p) { return p->dtype == AN_BF16 ? p->packed : NULL; }
static inline const uint8_t *an_param_ggml(const an_param *p) { return an_dtype_is_ggml(p->dtype) ? p->packed : NULL; }

/* How the output of a fused q/k/v projection is laid out (what an_model_split_qkv undoes). */
typedef enum an_qkv_layout {
    AN_QKV_SEPARATE = 0, /* three projections (Llama, Qwen2, Mistral) */
    AN_QKV_CONCAT,       /* [q (nh*hd) | k (nkv*hd) | v (nkv*hd)] per row (GPT-2 c_attn) */
    AN_QKV_GROUPED,      /* per kv group g: [G q heads, k head g, v head g] (InternLM2 wqkv) */
} an_qkv_layout;

/* Per-layer weights; a slot a family does not use is NULL. */
typedef struct an_layer {
    an_param *attn_norm_w, *attn_norm_b;
    an_param *wqkv, *bqkv;         /* fused projection (GPT-2, InternLM2) */
    an_param *wq, *wk, *wv;        /* separate projections (Llama) */
    an_param *bq, *bk, *bv;        /* Qwen2 */
    an_param *wo, *bo;
    an_param *ffn_norm_w, *ffn_norm_b;
    an_param *w_gate, *b_gate;     /* SwiGLU gate (gate_proj, w1) */
    an_param *w_up, *b_up;         /* up_proj, w3; GPT-2 c_fc */
    an_param *w_down, *b_down;     /* down_proj, w2; GPT-2 mlp.c_proj */
} an_layer;

/* The LM head and its cross-entropy run in row chunks so that a 92,544-token vocabulary never needs a
 * full N x V buffer of logits. A chunk that is not set (an_model.head_rows 0) gets at least this many
 * bytes, and more when the blocks' scratch, which it shares (model/plan.c), is larger: with a trained
 * head, chunks of a few hundred rows cost several percent of a step (the head's weight gradient is
 * read and written, and its weight packed, once per chunk). */
#define AN_HEAD_CHUNK_BYTES (128u << 20)

/* Activations for one batch shape (see model/plan.c for what each buffer holds). */
typedef struct an_layer_acts {
    float *res_in;                  /* [N, C] layer input (the residual stream) */
    float *ln1, *ln1_mean, *ln1_rstd;
    float *q, *k, *v;               /* after RoPE */
    float *att, *att_lse;
    float *res_mid;                 /* [N, C] after the attention residual */
    float *ln2, *ln2_mean, *ln2_rstd;
    float *ffn_a;                   /* SwiGLU gate, or GPT-2 pre-GELU c_fc output [N, F] */
    float *ffn_b;                   /* SwiGLU up [N, F] (NULL for GPT-2) */
    float *ffn_h;                   /* silu(gate) * up, or gelu(fc) [N, F] */
} an_layer_acts;

typedef struct an_plan {
    int B, T, N;                    /* N = B * T rows */
    int head_rows;                  /* rows of logits computed at a time in the LM head */
    void *block;                    /* the one backend allocation */
    size_t bytes;
    int32_t *ids, *pos, *seg, *targets; /* backend copies of the batch */
    float *rope_cos_sin;            /* [T, head_dim / 2, 2] (not GPT-2): rope's angles at 0 .. T - 1 */
    an_layer_acts *layers;          /* host array, n_layers */
    float *res_out;                 /* [N, C] output of the last layer */
    float *lnf, *lnf_mean, *lnf_rstd;
    float *logits;                  /* [head_rows, V] */
    float *losses, *ce_lse;         /* [N] (compacted to the trained rows in training) */
    int32_t *rows, *row_targets;    /* [N] trained rows (targets != -100) and their targets */
    float *head_x, *head_dx;        /* [head_rows, C] gathered final-norm rows and their gradient */
    /* scratch shared by all layers */
    float *qkv, *tmp, *dres, *dln, *dq, *dk, *dv, *datt, *dqkv, *dffn_a, *dffn_b, *dffn_h;
    /* host staging (plain malloc; the batch is uploaded from here) */
    int32_t *h_ids, *h_pos, *h_seg, *h_targets, *h_rows, *h_row_targets;
    float *h_losses, *h_row_losses;
    int last_B, last_T, last_with_grad; /* the shape of the last forward */
    int last_count;                 /* trained tokens (targets != -100) in the last forward */
    int recompute;                  /* planned for per-layer recomputation (an_model_set_recompute) */
    /* LoRA (model/lora.h): lora_u[i] is module i's [N, r] scaling * A dropout(x) of the last forward
     * (kept for backward); lora_du [N, r] is scratch shared by all adapted layers. lora_planned: the
     * plan was made with the current adapter. */
    float **lora_u;                 /* host array of n_mods pointers into the block */
    float *lora_du;
    int lora_planned;
    void *linear_work;              /* scratch of the linear ops (an_model_linear_work_bytes) */
    size_t linear_work_bytes;
    void *attn_work;                /* scratch of the attention ops (attention_work_bytes) */
    size_t attn_work_bytes;
} an_plan;

typedef struct an_model {
    an_model_config cfg;
    const an_ops *ops;
    an_qkv_layout qkv_layout;
    an_param *params;
    int n_params;
    float *param_mem;               /* one backend allocation */
    size_t n_param_floats;
    float *grad_mem;                /* one backend allocation for trainable tensors; NULL before alloc_grads */
    size_t n_grad_floats;
    an_param *tok_emb, *pos_emb;    /* pos_emb: GPT-2 only */
    an_param *final_norm_w, *final_norm_b;
    an_param *lm_head;              /* NULL when tied to tok_emb */
    an_layer *layers;
    an_plan plan;                   /* zeroed until an_model_plan */
    int head_rows;                  /* LM-head chunk rows to plan for; 0 = automatic */
    struct an_lora *lora;           /* LoRA adapters (model/lora.h); NULL without */
    struct an_nf4_weights *nf4;     /* NF4 linear weights (model/nf4_weights.h); NULL without */
    int recompute;                  /* gradient checkpointing per layer for the next an_model_plan */
    uint16_t *bf16_mem;             /* bf16 storage of frozen tensors (an_model_store_frozen_bf16); NULL without */
    size_t n_bf16;                  /* uint16 values in bf16_mem */
    uint8_t *ggml_mem;              /* GGUF-quantized frozen weights kept in their blocks (backend memory,
                                     * model/io/gguf_model.h); NULL without */
    size_t ggml_bytes;
} an_model;

/* A batch in host memory. targets[n] is the token that should follow token n (already shifted),
 * AN_IGNORE_INDEX where no loss is wanted; NULL for no loss. pos NULL means 0..T-1 in every row;
 * seg_start NULL means plain causal attention (see kernels/ops.h for packed rows). */
typedef struct an_batch {
    const int32_t *ids, *pos, *seg_start, *targets;
    int B, T;
} an_batch;

/* ---- building ---- */
/* A model with all parameters allocated (zeroed) and no gradients; cfg must pass an_config_validate. */
an_model *an_model_create(const an_model_config *cfg, const an_ops *ops, an_error *err);
/* Loads a Hugging Face folder (config.json + model.safetensors or a sharded index), a llama2.c .bin, or a
 * .gguf file of architecture llama, qwen2 or gpt2 (its Q8_0 / Q4_0 / Q4_1 / Q4_K / Q6_K weights kept in
 * their blocks, frozen, on the CPU backend; other types dequantized to float32: model/io/gguf_model.h).
 * A missing tensor, a wrong shape or an unexpected tensor is an error naming the file and tensor.
 * Linear weights saved in bitsandbytes' NF4 serialization load as NF4 (model/nf4_weights.h). */
an_model *an_model_load(const char *path, const an_ops *ops, an_error *err);
/* A .gguf file with its quantized weights kept (AN_GGUF_KEEP, what an_model_load does) or all of them
 * dequantized to float32 (AN_GGUF_DEQUANTIZE: for full fine-tuning, merging an adapter, NF4). */
typedef enum an_gguf_load { AN_GGUF_KEEP = 0, AN_GGUF_DEQUANTIZE = 1 } an_gguf_load;
an_model *an_model_load_gguf(const char *path, const an_ops *ops, an_gguf_load mode, an_error *err);
/* GPT-2 style init: N(0, 0.02) for embeddings and linear weights (the output projections of each block
 * scaled by 1/sqrt(2 * n_layers)), norm weights 1, biases 0. Repeatable for a seed. */
an_model *an_model_init_random(const an_model_config *cfg, const an_ops *ops, uint64_t seed, an_error *err);
void an_model_free(an_model *m);
/* Writes config.json + model.safetensors (float32, Hugging Face names and layouts) into dir. */
int an_model_save(const an_model *m, const char *dir, an_error *err);

/* ---- parameters ---- */
an_param *an_model_find(an_model *m, const char *name);
/* Marks every tensor trainable or frozen (before an_model_alloc_grads). */
void an_model_set_all_trainable(an_model *m, int trainable);
/* One allocation holding the gradients of the trainable tensors; call again after changing flags. */
int an_model_alloc_grads(an_model *m, an_error *err);
void an_model_zero_grad(an_model *m);
size_t an_model_param_count(const an_model *m, int trainable_only);
/* Copies a tensor of p's shape (p->data, p->grad, or optimizer state) to host memory in the
 * Hugging Face layout (transposing GPT-2 Conv1D weights back to [in, out]). tmp: p->numel floats of
 * host scratch, only used when transposing. An NF4 weight (src == p->data == NULL) gives its
 * dequantized values. */
void an_model_export(const an_model *m, const an_param *p, const float *src, float *host_out, float *tmp);

/* Stores the frozen embedding table and LM head (one tensor when tied) as bf16, rounded to nearest
 * even, and frees their float32 copies (docs/models.md): 2 bytes a parameter instead of 4. The
 * embedding lookup widens the gathered rows; the head's linear ops (forward and input gradient) widen
 * the weight a tile of rows at a time into the workspace of the plan or of the inference state (a
 * plan made before is made again). A trainable tensor is
 * refused (naming it): attach the adapter (which freezes the base) or freeze the model first. After
 * this the model cannot be quantized to NF4 (quantize first) and an adapter on the head cannot be
 * merged into it; saving writes the bf16 values widened to float32. Calling it again does nothing. */
int an_model_store_frozen_bf16(an_model *m, an_error *err);

/* ---- running ---- */
/* Gradient checkpointing per layer (docs/models.md): with on != 0 the next an_model_plan keeps only
 * every layer's input (the residual stream) and one layer's activations; forward stores the layer
 * inputs, backward recomputes each layer's forward from its input just before that layer's backward.
 * Losses and gradients are bit-identical to the plain path; a step costs one more forward of the
 * blocks. Takes effect at the next an_model_plan (same as setting m->recompute). */
void an_model_set_recompute(an_model *m, int on);
/* Allocates the activations for batches up to B rows of T tokens (and frees an earlier plan).
 * T must not exceed max_seq for GPT-2 (learned positions). */
int an_model_plan(an_model *m, int B, int T, an_error *err);
/* The bytes an_model_plan(m, B, T) would allocate, measured by the plan's own layout without
 * allocating it (the memory plan of model/qlora_plan.h runs it on a model that has only its tensor
 * table); 0 with err set on a bad shape. m's current plan is freed. */
size_t an_model_plan_bytes(an_model *m, int B, int T, an_error *err);
/* Rows per LM-head chunk for N rows, a V-token vocabulary and width C, when the blocks' scratch takes
 * scratch_bytes: as many as fit in the larger of AN_HEAD_CHUNK_BYTES and the scratch (logits and
 * the gathered rows with their gradient), at least 1, at most N. */
int an_head_chunk_rows(size_t N, size_t V, size_t C, size_t scratch_bytes);
/* Forward pass. With targets, *loss_out gets the mean loss over non-ignored tokens (0 when none).
 * with_grad: also runs the LM head's backward, chunk by chunk, while the logits of a chunk are live
 * (so no N x V logits buffer exists); the gradient of the mean loss is multiplied by grad_scale
 * (1 for a plain mean; 1/k to average k accumulation steps). Then call an_model_backward.
 * logits_out: NULL, or host memory for B*T*V floats that receives the full logits; when NULL, the
 * head runs only on the rows that have a target. */
int an_model_forward(an_model *m, const an_batch *b, int with_grad, float grad_scale, float *loss_out,
                     float *logits_out, an_error *err);
/* Backward through the blocks and embeddings after a forward with with_grad; gradients accumulate
 * into the trainable tensors' grad buffers. */
int an_model_backward(an_model *m, an_error *err);
/* Per-token losses of the last forward with targets, B*T floats in host memory (0 where ignored). */
const float *an_model_token_losses(const an_model *m);

/* ---- memory accounting (for peak-memory reports) ---- */
size_t an_model_bytes_params(const an_model *m);
size_t an_model_bytes_grads(const an_model *m);
size_t an_model_bytes_activations(const an_model *m);

/* Internal to model/: the family-specific pieces, shared by the files that implement the above. */
int an_model_build_params(an_model *m, an_error *err);
/* The two halves of an_model_build_params: the tensor table, then one allocation for every
 * parameter that is not NF4 (an_model_load_nf4 quantizes in between). */
int an_model_build_table(an_model *m, an_error *err);
int an_model_alloc_params(an_model *m, an_error *err);
void an_model_plan_free(an_model *m);
/* Bytes of workspace the linear ops of m's weights (and of the adapter lora's, or NULL) need for up
 * to `rows` rows: what a plan or an inference state holds for them (linear_work_bytes in
 * kernels/ops.h). */
size_t an_model_linear_work_bytes(const an_model *m, const struct an_lora *lora, int rows);
void an_model_split_qkv(const an_model *m, float *q, float *k, float *v, const float *qkv, int N);
/* The model's rope settings with a cos/sin table of positions 0 .. n_pos - 1 (rope_table). */
an_rope an_model_rope(const an_model *m, const float *cos_sin, int n_pos);
void an_model_split_qkv_backward(const an_model *m, float *dqkv, const float *dq, const float *dk,
                                 const float *dv, int N);

#endif
