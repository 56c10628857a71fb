#ifndef AN_TRAIN_LORA_STEP_H
#define AN_TRAIN_LORA_STEP_H
/* Training a LoRA adapter (model/lora.h): the base model is frozen, so gradients, the gradient norm,
 * clipping and AdamW (the optimizer of train/optim.h) cover the adapters' A and B only. The moments
 * are allocated once at init, laid out like the adapters' memory (lora->mem / lora->grad_mem).
 *
 *   an_lora_attach(m, &cfg, &err);           (or an_lora_load)
 *   an_model_plan(m, B, T, &err);
 *   an_lora_trainer_init(&t, m, &err);
 *   an_lora_train_step(&t, &batch, &adamw, &stats, &err);      one batch, one update
 * With gradient accumulation: an_lora_zero_grad(m), then per micro-batch an_model_forward(m, b, 1,
 * 1/k, ...) + an_model_backward(m), then an_lora_trainer_update(&t, &adamw). */
#include "core/error.h"
#include "model/lora.h"
#include "model/model.h"
#include "train/optim.h"
#include "train/step.h"
#include "train/trainable.h"

typedef struct an_lora_trainer {
    an_model *model;
    an_trainable ts; /* the adapters' A and B */
    an_optim opt;    /* AdamW over them; opt.step: restore it when resuming */
} an_lora_trainer;

/* The model must carry an adapter. */
int an_lora_trainer_init(an_lora_trainer *t, an_model *model, an_error *err);
void an_lora_trainer_free(an_lora_trainer *t);
size_t an_lora_trainer_bytes(const an_lora_trainer *t); /* optimizer state */
void an_lora_zero_grad(an_model *m);
/* Clips the adapters' global gradient norm to c->max_grad_norm (off when <= 0), then one AdamW update
 * (weight decay on A and B: they are matrices, see an_optim_decays). Returns the norm before
 * clipping. */
double an_lora_trainer_update(an_lora_trainer *t, const an_adamw_config *c);
/* zero grads, forward + backward on one batch, update; fills s as an_train_step does */
int an_lora_train_step(an_lora_trainer *t, const an_batch *b, const an_adamw_config *c, an_step_stats *s,
                       an_error *err);

#endif
