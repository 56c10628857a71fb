#ifndef AN_TRAIN_OPTIM_H
#define AN_TRAIN_OPTIM_H
/* The optimizer: AdamW with global-norm clipping, one object for full fine-tuning, LoRA and QLoRA.
 * It is handed a list of tensors (param, grad, numel, decay) and does not care whether they are model
 * weights or adapters; an_train_step, an_lora_trainer_update and `autoneg train` all step through it.
 *
 * What one step does (an_optim_step, or an_optim_grad_norm then an_optim_apply):
 *   1. an_optim_reduce_grads: the one place where data-parallel training will all-reduce the gradients
 *      (a no-op today: one process holds them all);
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
 * zero: then one sum of squares covers every tensor, and one all-reduce will. */
#include <stddef.h>

#include "core/error.h"
#include "kernels/ops.h"
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
    float *moments;     /* backend: m then v, n_floats each; NULL when n_floats is 0 */
    long step;          /* optimizer steps taken (AdamW's bias correction); restore it when resuming */
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
/* Tensor k's moments (backend memory, numel floats each): for checkpoints. */
void an_optim_moments(const an_optim *o, int k, float **m, float **v);

/* Zeroes the whole gradient buffer (before the first backward of a step). */
void an_optim_zero_grad(an_optim *o);
/* THE data-parallel point: where gradients that each rank computed on its own micro-batches become
 * the gradients of the whole step. A no-op today. Data parallelism puts one all-reduce of
 * [grad_base, grad_base + n_floats) here, before the norm, so every rank computes the same norm and
 * applies the same update; a variant that shards the gradients (reduce-scatter) must also all-reduce
 * the sum of squares in an_optim_grad_norm, which calls this first. */
void an_optim_reduce_grads(an_optim *o);
/* Reduces the gradients (an_optim_reduce_grads) and returns their global L2 norm (before clipping). */
double an_optim_grad_norm(an_optim *o);
/* One AdamW update of every tensor with the gradients clipped by norm (what an_optim_grad_norm
 * returned) to c->max_grad_norm; counts the step. */
void an_optim_apply(an_optim *o, const an_adamw_config *c, double norm);
/* an_optim_grad_norm then an_optim_apply; returns the norm before clipping. */
double an_optim_step(an_optim *o, const an_adamw_config *c);

#endif
