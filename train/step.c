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
    if (model->lora)
        return an_fail(err, "trainer: the model carries a LoRA adapter; train it with an_lora_trainer_init");
    if (an_model_alloc_grads(model, err) || an_trainable_init(&t->ts, model, err)) return -1;
    return an_optim_init_params(&t->opt, model->ops, t->ts.p, t->ts.n, t->ts.grad_base, t->ts.n_floats, err);
}

void an_full_trainer_free(an_full_trainer *t) {
    an_optim_free(&t->opt);
    an_trainable_free(&t->ts);
}

size_t an_full_trainer_bytes(const an_full_trainer *t) { return an_optim_bytes(&t->opt); }

int an_train_step(an_full_trainer *t, const an_batch *b, const an_adamw_config *c, an_step_stats *s, an_error *err) {
    an_model *m = t->model;
    memset(s, 0, sizeof *s);
    double t0 = now();
    an_optim_zero_grad(&t->opt);
    if (an_model_forward(m, b, 1, 1.0f, &s->loss, NULL, err)) return -1;
    double t1 = now();
    if (an_model_backward(m, err)) return -1;
    double t2 = now();
    s->grad_norm = an_optim_step(&t->opt, c);
    double t3 = now();
    s->tokens = m->plan.last_count;
    s->t_forward = t1 - t0;
    s->t_backward = t2 - t1;
    s->t_optimizer = t3 - t2;
    return 0;
}
