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
    if (an_trainable_init(&t->ts, model, err)) return -1;
    return an_optim_init_params(&t->opt, model->ops, t->ts.p, t->ts.n, t->ts.grad_base, t->ts.n_floats, err);
}

void an_lora_trainer_free(an_lora_trainer *t) {
    an_optim_free(&t->opt);
    an_trainable_free(&t->ts);
}

size_t an_lora_trainer_bytes(const an_lora_trainer *t) { return an_optim_bytes(&t->opt); }

void an_lora_zero_grad(an_model *m) {
    if (m->lora) m->ops->zero(m->ops, m->lora->grad_mem, m->lora->n_floats * sizeof(float));
}

double an_lora_trainer_update(an_lora_trainer *t, const an_adamw_config *c) { return an_optim_step(&t->opt, c); }

int an_lora_train_step(an_lora_trainer *t, const an_batch *b, const an_adamw_config *c, an_step_stats *s,
                       an_error *err) {
    an_model *m = t->model;
    memset(s, 0, sizeof *s);
    if (!m->lora) return an_fail(err, "lora trainer: the model has no adapter");
    double t0 = now();
    an_optim_zero_grad(&t->opt);
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
