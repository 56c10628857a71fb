#ifndef AN_INFER_H
#define AN_INFER_H
/* Inference with a KV cache: a prompt is processed in one batched pass (prefill), then each new token
 * costs one decode step that reads every weight once.
 *
 * The cache has `slots` rows; each holds one sequence, left-aligned: its tokens sit at positions
 * 0 .. len-1 of the row (so positions, RoPE angles and GPT-2's learned positions are those of the
 * sequence alone), and a decode step appends at position len. Rows are independent, so prompts of
 * different lengths decode together, and a finished row can take a new prompt while the others go on
 * (continuous batching).
 *
 * Layers are those of model/forward.c, op for op; every linear layer goes through one function
 * (an_infer_linear), the place where an adapter is applied unmerged. Memory (cache and scratch) is
 * allocated once in an_infer_create; prefill and decode allocate nothing. */
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "model/model.h"

typedef struct an_infer {
    const an_model *m;      /* the base, read only: several states may share it, from several threads */
    const struct an_lora *lora; /* the adapter this state applies (unmerged), or NULL */
    int max_rank;           /* the largest adapter rank the scratch holds (lora's, or an_infer_create_multi's) */
    /* During a forward: each row's adapter (NULL entries: the base), or NULL: s->lora for every row.
     * an_infer_linear groups runs of rows with one adapter into segments of lora_grouped_forward. */
    const struct an_lora *const *row_lora;
    int slots, max_T;       /* cache rows and positions per row */
    int max_rows;           /* rows (tokens) one forward can hold: max(prefill tokens, slots) */
    int32_t *len;           /* host: tokens held by each slot */
    void *block;            /* the one backend allocation (cache + scratch) */
    size_t bytes;
    float **k, **v;         /* host arrays of n_layers backend pointers: [slots, max_T, nkv, hd] */
    /* scratch for max_rows rows */
    float *x, *ln, *mean, *rstd, *qkv, *q, *kx, *vx, *att, *lse, *tmp, *ffn_a, *ffn_b, *ffn_h;
    float *lora_u;          /* [max_rows, max_rank] the adapters' low-rank activations; NULL without one */
    float *logits;          /* [slots, V] */
    int32_t *d_ids, *d_pos, *d_seg, *d_slot, *d_len; /* backend int arrays [max_rows] */
    float *rope_cos_sin;                              /* [max_T, head_dim / 2, 2] (not GPT-2) */
    void *linear_work;                                /* the linear ops' scratch (typed weights) */
    size_t linear_work_bytes;
    void *attn_work;                                  /* the attention ops' scratch (prefill and decode) */
    size_t attn_work_bytes;
    int32_t *h_ids, *h_pos, *h_slot, *h_len;         /* host staging [max_rows] */
    const struct an_lora **h_lora;                    /* host [max_rows]: each row's adapter */
    const struct an_lora **h_seq_lora;                /* host [max(slots, 1)]: each sequence's, for the head */
    struct an_lora_seg *segs;                         /* host [max_rows]: lora_grouped_forward's segments */
    /* sampling on the backend (an_infer_enable_sampling): NULL until enabled */
    void *sample_block;
    an_sample_row *d_sample_rows;                     /* [slots] */
    int32_t *d_sample_ids, *d_picked;                 /* [sample_max_ids], [2 x slots] */
    void *sample_work;
    size_t sample_work_bytes;
    int sample_max_ids;
} an_infer;

/* A state for decoding with m and the adapter lora (NULL for none; an_lora_open, or the adapter
 * attached to m). Everything a forward writes (KV cache, activations, the adapter's scratch, the ops'
 * workspace) belongs to the state, so states on one model run concurrently from different threads.
 * slots: sequences held at once; max_T: positions per sequence (at most the model's max_seq for
 * GPT-2); prefill_tokens: rows one prefill may process (at least max_T; 0 picks max(max_T, 1024)). */
an_infer *an_infer_create(const an_model *m, const struct an_lora *lora, int slots, int max_T, int prefill_tokens,
                          an_error *err);
/* A state for serving many adapters over one base (infer/engine.h): no adapter of its own; each
 * sequence of a forward names its adapter (the _adapters calls below), of rank at most max_rank. */
an_infer *an_infer_create_multi(const an_model *m, int max_rank, int slots, int max_T, int prefill_tokens,
                                an_error *err);
void an_infer_free(an_infer *s);
size_t an_infer_bytes(const an_infer *s);

/* Every call below that takes logits_out copies the logits to it; with logits_out NULL they stay on the
 * backend, in s->logits (the n rows of the call), for an_infer_sample. */

/* Processes n prompts into the given slots (each starts empty: positions 0 .. lens[i]-1), padded to
 * the longest on the right and run as one [n, T] batch. logits_out: n * V floats (host), the logits
 * after each prompt's last token. */
int an_infer_prefill(an_infer *s, const int32_t *slots, const int32_t *const *ids, const int *lens, int n,
                     float *logits_out, an_error *err);
/* One token for each of n slots, at position len[slot]; logits_out: n * V floats (host). */
int an_infer_decode(an_infer *s, const int32_t *slots, const int32_t *ids, int n, float *logits_out, an_error *err);
/* The same with sequence i using the adapter loras[i] (NULL: the base) instead of s->lora; loras NULL:
 * s->lora for all. Sequences with the same adapter next to each other make one segment of the grouped
 * LoRA op; any order is correct. A row's result does not depend on the other rows' adapters. */
int an_infer_prefill_adapters(an_infer *s, const int32_t *slots, const int32_t *const *ids, const int *lens,
                              const struct an_lora *const *loras, int n, float *logits_out, an_error *err);
int an_infer_decode_adapters(an_infer *s, const int32_t *slots, const int32_t *ids, const struct an_lora *const *loras,
                             int n, float *logits_out, an_error *err);
/* Continues a slot at its current length with n more tokens (the rest of a prompt whose prefix was
 * loaded with an_infer_kv_load), adapter lora (NULL: the base); logits_out: V floats, the logits after
 * the last one. The n rows run as one forward, each attending over the cache (the decode attention),
 * so the logits agree with a whole-prompt prefill to float rounding, not bit for bit. */
int an_infer_extend(an_infer *s, int slot, const int32_t *ids, int n, const struct an_lora *lora, float *logits_out,
                    an_error *err);
/* Keys and values of the first n positions of a slot, every layer: an_infer_kv_bytes(s, n) bytes of
 * backend memory. save copies them out of the slot; load copies them in and sets the slot's length n
 * (a prefix cache: the KV of a shared prompt prefix computed once). */
size_t an_infer_kv_bytes(const an_infer *s, int n);
int an_infer_kv_save(const an_infer *s, int slot, int n, void *dst, an_error *err);
int an_infer_kv_load(an_infer *s, int slot, const void *src, int n, an_error *err);
/* Sampling on the backend, where it has sample_tokens (a GPU): allocates the sampler's buffers, for at
 * most max_ids ids (history and stop ids) in one call. 1: enabled; 0: the backend samples on the host
 * (the CPU); -1: no memory. */
int an_infer_enable_sampling(an_infer *s, int max_ids, an_error *err);
/* The next token of each of the first n rows of s->logits (a forward with logits_out NULL), drawn by
 * sample_tokens (kernels/ops.h) with rows[i]'s parameters, ids: the rows' lists. out[2i] the token (-1:
 * none can be drawn), out[2i + 1] how many were kept (rows[i].u was used when above 1). The logits
 * are spent. */
int an_infer_sample(an_infer *s, int n, const an_sample_row *rows, const int32_t *ids, int n_ids, int32_t *out,
                    an_error *err);
/* Forgets what a slot holds. */
void an_infer_reset_slot(an_infer *s, int slot);

/* The one function every linear layer of the inference path goes through: out[N, OC] = inp @ w^T + b
 * (+ the adapter), on a weight of any dtype the backend supports (the typed linear op picks the
 * matrix-vector kernel for the few rows of a decode step). */
void an_infer_linear(const an_infer *s, const an_param *w, const an_param *b, float *out, const float *inp, int N);

#endif
