#ifndef AN_TRAIN_STEP_H
#define AN_TRAIN_STEP_H
/* One full fine-tuning step: zero the gradients, forward with the loss, backward, then the optimizer
 * (train/optim.h): clip the global gradient norm and AdamW, with weight decay on the matrices and
 * not on norm weights and biases. Every tensor marked trainable is updated; the optimizer moments are
 * allocated once, at init, in one backend allocation laid out like the gradients. */
#include "core/error.h"
#include "model/model.h"
#include "train/optim.h"
#include "train/trainable.h"

typedef struct an_full_trainer {
    an_model *model;
    an_trainable ts; /* the model's trainable tensors */
    an_optim opt;    /* AdamW over them */
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
