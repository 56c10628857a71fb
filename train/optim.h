#ifndef AN_TRAIN_OPTIM_H
#define AN_TRAIN_OPTIM_H
/* The optimizer: AdamW with global-norm clipping, one object for full fine-tuning, LoRA and QLoRA.
 * It is handed a list of tensors (param, grad, numel, decay) and does not care whether they are model
 * weights or adapters; an_train_step, an_lora_trainer_update and `autoneg train` all step through it.
 *
 * What one step does (an_optim_step, or an_optim_grad_norm then an_optim_apply):
 *   1. an_optim_reduce_grads: the one place where data-parallel training reduces the gradients over
 *      the ranks of its communicator (train/comm.h; a no-op for one process): an all-reduce of the
 *      whole buffer, or with ZeRO-1 a reduce-scatter, each rank keeping the sum of its slice;
 *   2. the global L2 norm of every gradient together, as torch.nn.utils.clip_grad_norm_ computes it;
 *   3. the clip factor max_grad_norm / (norm + 1e-6), capped at 1 (1 when max_grad_norm <= 0), which
 *      AdamW multiplies each gradient by as it reads it (no pass of its own);
 *   4. AdamW exactly as torch.optim.AdamW (decoupled decay, bias correction counted from step 1) on
 *      every tensor, with weight decay only on the tensors whose decay flag is set.
 *
 * The decay rule (an_optim_decays): weight decay applies to tensors with 2 or more dimensions
 * (embeddings, linear weights, the head, LoRA A and B) and not to 1-D tensors (norm weights, biases).
 * It is what Hugging Face Trainer gives PEFT and full fine-tuning users (its get_decay_parameter_names
 * leaves out biases and LayerNorm/RMSNorm weights), i.e. torch.optim.AdamW with two parameter groups:
 * the matrices with weight_decay, the vectors with 0.
 *
 * Memory: the moments are one backend allocation of 2 x n_floats floats (m, then v) laid out like the
 * gradient buffer, so tensor k's moments sit at its gradient's offset in that buffer. Every gradient
 * must lie inside one buffer [grad_base, grad_base + n_floats) whose gaps (alignment padding) stay
 * zero: then one sum of squares covers every tensor, and one all-reduce does.
 *
 * Data parallelism (an_optim_distribute): every rank computes gradients on its share of the step's
 * tokens, already scaled so that their sum over ranks is the step's gradient; the optimizer sums them.
 *   zero 0: all-reduce of the buffer; every rank takes the same norm and applies the same update.
 *   zero 1 (ZeRO stage 1): the buffer is cut into one contiguous slice per rank (an_comm_slice);
 *     a reduce-scatter leaves each rank the summed gradients of its slice, the norm is the square
 *     root of the all-reduced sums of squares of the slices, each rank updates the weights of its
 *     slice with the AdamW moments of that slice alone (2 x slice floats instead of 2 x n_floats),
 *     packs them into its slice of the gradient buffer (no longer needed) and an all-gather hands
 *     every rank every updated weight. The packing costs one copy of the weights per step and no
 *     memory. Checkpoints see full-size moments through an_optim_full_moments. */
#include <stddef.h>

#include "core/error.h"
#include "kernels/ops.h"
#include "train/comm.h"
#include "model/model.h"

typedef struct an_adamw_config {
    float lr, beta1, beta2, eps, weight_decay; /* torch.optim.AdamW semantics (decoupled decay) */
    float max_grad_norm;                       /* clip the global L2 norm to this; <= 0: no clipping */
} an_adamw_config;

typedef struct an_optim_tensor {
    float *param; /* backend memory, updated in place */
    float *grad;  /* backend memory inside the optimizer's gradient buffer */
    size_t numel;
    int decay;    /* 1: weight decay applies (see an_optim_decays) */
} an_optim_tensor;

typedef struct an_optim {
    const an_ops *ops;
    an_optim_tensor *t; /* the tensors, in the order given at init (host memory, owned) */
    int n;
    float *grad_base;   /* the gradient buffer every t[k].grad lies in */
    size_t n_floats;
    float *moments;     /* backend: m then v, n_floats each (sharded: slice_len each); NULL when empty */
    long step;          /* optimizer steps taken (AdamW's bias correction); restore it when resuming */
    an_comm *comm;      /* the ranks (NULL: one process) */
    int sharded;        /* ZeRO-1 over more than one rank: moments and updates of the slice alone */
    size_t slice_lo, slice_len; /* this rank's slice of the buffer ([0, n_floats) when not sharded) */
    an_adamw_part *parts;       /* what one step updates (host copy), offsets relative to the slice */
    an_adamw_part *parts_dev;   /* the same list in backend memory, handed to adamw_update */
    int n_parts;
} an_optim;

/* The decay rule: 1 when a tensor of ndim dimensions gets weight decay (ndim >= 2). */
int an_optim_decays(int ndim);
/* A model or adapter tensor as the optimizer sees it, the decay flag set by the rule. */
an_optim_tensor an_optim_tensor_of(const an_param *p);

/* Takes the tensors (copied) and allocates zeroed moments. Errors: a tensor whose gradient lies
 * outside [grad_base, grad_base + n_floats), or no memory for the moments. */
int an_optim_init(an_optim *o, const an_ops *ops, const an_optim_tensor *t, int n, float *grad_base, size_t n_floats,
                  an_error *err);
/* The same for model or adapter tensors, each with an_optim_tensor_of. */
int an_optim_init_params(an_optim *o, const an_ops *ops, an_param *const *p, int n, float *grad_base,
                         size_t n_floats, an_error *err);
void an_optim_free(an_optim *o);
/* Bytes of optimizer state on the backend (for memory reports). */
size_t an_optim_bytes(const an_optim *o);
/* Tensor k's moments (backend memory, numel floats each), not sharded only (tests). */
void an_optim_moments(const an_optim *o, int k, float **m, float **v);
/* Tensor k's offset in the gradient buffer (and in full-size moments). */
size_t an_optim_offset(const an_optim *o, int k);

/* Data parallelism over comm (NULL: one process) with ZeRO stage zero (0 or 1); right after init,
 * before any step (the moments are zero). Sharding gives back the full moments and keeps the slice's. */
int an_optim_distribute(an_optim *o, an_comm *comm, int zero, an_error *err);
/* Every rank gets root's weights (a fresh run: whatever each rank initialised, rank 0's win).
 * Goes through the gradient buffer, which it leaves zeroed. */
int an_optim_broadcast_params(an_optim *o, int root, an_error *err);
/* Full-size moments for checkpoints: m then v, n_floats each, laid out like the gradient buffer.
 * Not sharded: the optimizer's own. Sharded: a new backend buffer, every rank's slices gathered into
 * it when gather is 1 (a collective: every rank calls it). Hand it back to an_optim_full_moments_done;
 * keep 1 first takes this rank's slice out of it (restoring from a checkpoint). NULL on error. */
float *an_optim_full_moments(an_optim *o, int gather, an_error *err);
void an_optim_full_moments_done(an_optim *o, float *full, int keep);

/* Zeroes the whole gradient buffer (before the first backward of a step). */
void an_optim_zero_grad(an_optim *o);
/* THE data-parallel point: where gradients that each rank computed on its own micro-batches become
 * the gradients of the whole step: an all-reduce of [grad_base, grad_base + n_floats), or with ZeRO-1
 * a reduce-scatter (the sum of squares is then all-reduced in an_optim_grad_norm, which calls this
 * first). A no-op for one process. */
int an_optim_reduce_grads(an_optim *o, an_error *err);
/* Reduces the gradients (an_optim_reduce_grads) and returns their global L2 norm (before clipping). */
double an_optim_grad_norm(an_optim *o);
/* The same, reporting a failed collective: 0, or -1 with err. */
int an_optim_grad_norm_checked(an_optim *o, double *norm, an_error *err);
/* One AdamW update of every tensor with the gradients clipped by norm (what an_optim_grad_norm
 * returned) to c->max_grad_norm; counts the step. */
void an_optim_apply(an_optim *o, const an_adamw_config *c, double norm);
/* The same, reporting a failed all-gather (ZeRO-1): 0, or -1 with err. */
int an_optim_apply_checked(an_optim *o, const an_adamw_config *c, double norm, an_error *err);
/* an_optim_grad_norm then an_optim_apply; returns the norm before clipping. */
double an_optim_step(an_optim *o, const an_adamw_config *c);

#endif
