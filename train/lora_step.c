/* The LoRA training step (train/lora_step.h). */
#include "train/lora_step.h"

#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int an_lora_trainer_init(an_lora_trainer *t, an_model *model, an_error *err) {
    memset(t, 0, sizeof *t);
    t->model = model;
    if (!model->lora) return an_fail(err, "lora trainer: the model has no adapter (an_lora_attach or an_lora_load)");
    t->n = model->lora->n_floats;
    t->moments = model->ops->alloc(model->ops, 2 * t->n * sizeof(float));
    if (!t->moments)
        return an_fail(err, "lora trainer: cannot allocate %.1f MiB of optimizer state", (double)t->n * 8 / 1048576);
    return 0;
}

void an_lora_trainer_free(an_lora_trainer *t) {
    if (t->moments) t->model->ops->free(t->model->ops, t->moments);
    t->moments = NULL;
}

size_t an_lora_trainer_bytes(const an_lora_trainer *t) { return t->moments ? 2 * t->n * sizeof(float) : 0; }

void an_lora_zero_grad(an_model *m) {
    if (m->lora) m->ops->zero(m->ops, m->lora->grad_mem, m->lora->n_floats * sizeof(float));
}

double an_lora_trainer_update(an_lora_trainer *t, const an_adamw_config *c) {
    an_model *m = t->model;
    an_lora *l = m->lora;
    const an_ops *o = m->ops;
    /* one buffer whose alignment padding stays zero, so one call covers every adapter */
    float *grads[1] = {l->grad_mem};
    size_t sizes[1] = {l->n_floats};
    double norm = an_grad_norm(o, grads, sizes, 1);
    float clip = an_clip_coef(norm, c->max_grad_norm);
    t->step++;
    float *m1 = t->moments, *v1 = t->moments + t->n;
    for (int i = 0; i < l->n_mods; i++) {
        an_param *ps[2] = {&l->mods[i].a, &l->mods[i].bt};
        for (int k = 0; k < 2; k++) {
            an_param *p = ps[k];
            size_t off = (size_t)(p->grad - l->grad_mem);
            o->adamw_update(o, p->data, p->grad, clip, m1 + off, v1 + off, p->numel, c->lr, c->beta1, c->beta2, c->eps,
                            c->weight_decay, t->step);
        }
    }
    return norm;
}

int an_lora_train_step(an_lora_trainer *t, const an_batch *b, const an_adamw_config *c, an_step_stats *s,
                       an_error *err) {
    an_model *m = t->model;
    memset(s, 0, sizeof *s);
    if (!m->lora) return an_fail(err, "lora trainer: the model has no adapter");
    double t0 = now();
    an_lora_zero_grad(m);
    if (an_model_forward(m, b, 1, 1.0f, &s->loss, NULL, err)) return -1;
    double t1 = now();
    if (an_model_backward(m, err)) return -1;
    double t2 = now();
    s->grad_norm = an_lora_trainer_update(t, c);
    double t3 = now();
    s->tokens = m->plan.last_count;
    s->t_forward = t1 - t0;
    s->t_backward = t2 - t1;
    s->t_optimizer = t3 - t2;
    return 0;
}
