/* The list of trainable tensors (see train/trainable.h). */
#include "train/trainable.h"

#include <stdlib.h>
#include <string.h>

#include "model/lora.h"

int an_trainable_init(an_trainable *t, an_model *m, an_error *err) {
    memset(t, 0, sizeof *t);
    int cap = m->lora ? 2 * m->lora->n_mods : m->n_params;
    t->p = calloc((size_t)cap + 1, sizeof *t->p);
    if (!t->p) return an_fail(err, "trainer: out of memory");
    if (m->lora) {
        for (int i = 0; i < m->lora->n_mods; i++) {
            t->p[t->n++] = &m->lora->mods[i].a;
            t->p[t->n++] = &m->lora->mods[i].bt;
        }
        t->grad_base = m->lora->grad_mem;
        t->n_floats = m->lora->n_floats;
    } else {
        for (int i = 0; i < m->n_params; i++)
            if (m->params[i].grad) t->p[t->n++] = &m->params[i];
        t->grad_base = m->grad_mem;
        t->n_floats = m->n_grad_floats;
    }
    return 0;
}

void an_trainable_free(an_trainable *t) {
    free(t->p);
    memset(t, 0, sizeof *t);
}
