#ifndef AN_TRAIN_TRAINABLE_H
#define AN_TRAIN_TRAINABLE_H
/* The tensors a model trains, in one fixed order (the optimizer's and the checkpoint's): its LoRA
 * adapters' A and B, module by module, when it carries an adapter; otherwise each of its own tensors
 * that has a gradient, in the model's order. Their gradients all lie in one buffer, grad_base (the
 * adapter's grad_mem or the model's grad_mem), whose alignment gaps stay zero. */
#include "core/error.h"
#include "model/model.h"

typedef struct an_trainable {
    an_param **p;
    int n;
    float *grad_base;
    size_t n_floats;
} an_trainable;

/* Lists m's trainable tensors (m->lora set: the adapters'; else those with a gradient, so allocate
 * the model's gradients first). */
int an_trainable_init(an_trainable *t, an_model *m, an_error *err);
void an_trainable_free(an_trainable *t);

#endif
