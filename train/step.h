#ifndef AN_TRAIN_STEP_H
#define AN_TRAIN_STEP_H
/* One full fine-tuning step: zero the gradients, forward with the loss, backward, clip the global
 * gradient norm, AdamW. Every tensor marked trainable is updated; the optimizer moments are allocated
 * once, at init, in one backend allocation laid out like the gradients. */
#include "core/error.h"
#include "model/model.h"

typedef struct an_adamw_config {
    float lr, beta1, beta2, eps, weight_decay; /* torch.optim.AdamW semantics (decoupled decay) */
    float max_grad_norm;                       /* clip the global L2 norm to this; <= 0: no clipping */
} an_adamw_config;

typedef struct an_full_trainer {
    an_model *model;
    float *moments;   /* backend: first moments then second moments, n floats each */
    size_t n;         /* = model->n_grad_floats */
    int step;         /* optimizer steps taken */
} an_full_trainer;

typedef struct an_step_stats {
    float loss;         /* mean loss over the batch's trained tokens, before the update */
    double grad_norm;   /* global L2 norm before clipping */
    int tokens;         /* trained tokens (targets != -100) */
    double t_forward, t_backward, t_optimizer; /* seconds; the LM head's backward runs inside forward */
} an_step_stats;

/* Allocates gradients (for the model's trainable tensors) and the AdamW moments. */
int an_full_trainer_init(an_full_trainer *t, an_model *model, an_error *err);
void an_full_trainer_free(an_full_trainer *t);
/* Bytes of optimizer state (for peak-memory reports). */
size_t an_full_trainer_bytes(const an_full_trainer *t);
/* One step on one batch (the model must have a plan that fits it). */
int an_train_step(an_full_trainer *t, const an_batch *b, const an_adamw_config *c, an_step_stats *s, an_error *err);

#endif
