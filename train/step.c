/* The full fine-tuning step (see train/step.h). */
#include "train/step.h"

#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int an_full_trainer_init(an_full_trainer *t, an_model *model, an_error *err) {
    memset(t, 0, sizeof *t);
    t->model = model;
    if (model->nf4) /* its NF4 linear weights are frozen: "full" would train only the rest */
        return an_fail(err, "trainer: full fine-tuning needs float weights, but this model's linear layers are NF4 "
                            "(train an adapter: --method qlora; or load the model without quantizing)");
    if (an_model_alloc_grads(model, err)) return -1;
    t->n = model->n_grad_floats;
    if (t->n) {
        t->moments = model->ops->alloc(model->ops, 2 * t->n * sizeof(float));
        if (!t->moments)
            return an_fail(err, "trainer: cannot allocate %.1f MiB of optimizer state", (double)t->n * 8 / 1048576);
    }
    return 0;
}

void an_full_trainer_free(an_full_trainer *t) {
    if (t->moments) t->model->ops->free(t->model->ops, t->moments);
    t->moments = NULL;
}

size_t an_full_trainer_bytes(const an_full_trainer *t) { return t->moments ? 2 * t->n * sizeof(float) : 0; }

int an_train_step(an_full_trainer *t, const an_batch *b, const an_adamw_config *c, an_step_stats *s, an_error *err) {
    an_model *m = t->model;
    const an_ops *o = m->ops;
    memset(s, 0, sizeof *s);
    double t0 = now();
    an_model_zero_grad(m);
    if (an_model_forward(m, b, 1, 1.0f, &s->loss, NULL, err)) return -1;
    double t1 = now();
    if (an_model_backward(m, err)) return -1;
    double t2 = now();
    /* the gradient buffer is one allocation whose alignment padding stays zero, so one call covers it */
    float *grads[1] = {m->grad_mem};
    size_t sizes[1] = {m->n_grad_floats};
    s->grad_norm = m->grad_mem ? an_grad_norm(o, grads, sizes, 1) : 0.0;
    float clip = an_clip_coef(s->grad_norm, c->max_grad_norm);
    t->step++;
    float *m1 = t->moments, *v1 = t->moments ? t->moments + t->n : NULL;
    for (int i = 0; i < m->n_params; i++) {
        an_param *p = &m->params[i];
        if (!p->grad) continue;
        size_t off = (size_t)(p->grad - m->grad_mem);
        o->adamw_update(o, p->data, p->grad, clip, m1 + off, v1 + off, p->numel, c->lr, c->beta1, c->beta2, c->eps,
                        c->weight_decay, t->step);
    }
    double t3 = now();
    s->tokens = m->plan.last_count;
    s->t_forward = t1 - t0;
    s->t_backward = t2 - t1;
    s->t_optimizer = t3 - t2;
    return 0;
}
