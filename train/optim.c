/* The optimizer (see train/optim.h). The only file of train/ that calls the optimizer ops
 * (adamw_update, and sum_squares through an_grad_norm), so a change to the op table touches it alone. */
#include "train/optim.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int an_optim_decays(int ndim) { return ndim >= 2; }

an_optim_tensor an_optim_tensor_of(const an_param *p) {
    an_optim_tensor t = {p->data, p->grad, p->numel, an_optim_decays(p->ndim)};
    return t;
}

/* 1 when t's weights and gradient exist and the gradient lies inside the buffer (compared as
 * addresses: pointers into different allocations cannot be subtracted) */
static int inside(const an_optim_tensor *t, const float *base, size_t n_floats) {
    uintptr_t g = (uintptr_t)t->grad, lo = (uintptr_t)base, hi = lo + n_floats * sizeof(float);
    return t->param && t->grad && g >= lo && g <= hi && (g - lo) % sizeof(float) == 0 &&
           t->numel <= (hi - g) / sizeof(float);
}

int an_optim_init(an_optim *o, const an_ops *ops, const an_optim_tensor *t, int n, float *grad_base, size_t n_floats,
                  an_error *err) {
    memset(o, 0, sizeof *o);
    o->ops = ops;
    o->grad_base = grad_base;
    o->n_floats = n_floats;
    for (int k = 0; k < n; k++)
        if (!inside(&t[k], grad_base, n_floats))
            return an_fail(err, "optimizer: tensor %d (%zu values) has no gradient inside the gradient buffer", k,
                           t[k].numel);
    o->t = malloc((n ? (size_t)n : 1) * sizeof *o->t);
    if (!o->t) return an_fail(err, "optimizer: out of memory");
    if (n) memcpy(o->t, t, (size_t)n * sizeof *t);
    o->n = n;
    if (n_floats) {
        o->moments = ops->alloc(ops, 2 * n_floats * sizeof(float));
        if (!o->moments) {
            an_optim_free(o);
            return an_fail(err, "optimizer: cannot allocate %.1f MiB of AdamW state", (double)n_floats * 8 / 1048576);
        }
    }
    return 0;
}

int an_optim_init_params(an_optim *o, const an_ops *ops, an_param *const *p, int n, float *grad_base,
                         size_t n_floats, an_error *err) {
    an_optim_tensor *t = malloc((n ? (size_t)n : 1) * sizeof *t);
    if (!t) {
        memset(o, 0, sizeof *o);
        return an_fail(err, "optimizer: out of memory");
    }
    int rc = 0;
    for (int k = 0; k < n && !rc; k++) {
        t[k] = an_optim_tensor_of(p[k]);
        if (!inside(&t[k], grad_base, n_floats))
            rc = an_fail(err, "optimizer: %s is not trainable (no gradient in the gradient buffer)", p[k]->name);
    }
    if (rc)
        memset(o, 0, sizeof *o);
    else
        rc = an_optim_init(o, ops, t, n, grad_base, n_floats, err);
    free(t);
    return rc;
}

void an_optim_free(an_optim *o) {
    if (o->moments) o->ops->free(o->ops, o->moments);
    free(o->t);
    memset(o, 0, sizeof *o);
}

size_t an_optim_bytes(const an_optim *o) { return o->moments ? 2 * o->n_floats * sizeof(float) : 0; }

void an_optim_moments(const an_optim *o, int k, float **m, float **v) {
    size_t off = (size_t)(o->t[k].grad - o->grad_base);
    *m = o->moments + off;
    *v = o->moments + o->n_floats + off;
}

void an_optim_zero_grad(an_optim *o) {
    if (o->grad_base) o->ops->zero(o->ops, o->grad_base, o->n_floats * sizeof(float));
}

/* ---- DATA PARALLEL: the one place where ranks meet. ----
 * The all-reduce of o->grad_base[0 .. o->n_floats), one contiguous buffer, goes here (a sum, each rank
 * having scaled its loss by its share of the whole step's tokens, or a mean of per-rank means).
 * Every rank then holds the step's gradients, takes the same norm in an_optim_grad_norm and applies
 * the same update, so the norm needs no reduction of its own; only a sharded variant (reduce-scatter,
 * each rank updating a slice) would also all-reduce the sum of squares, right after this call. */
void an_optim_reduce_grads(an_optim *o) { (void)o; }

double an_optim_grad_norm(an_optim *o) {
    an_optim_reduce_grads(o);
    if (!o->grad_base) return 0.0;
    /* the gaps of the buffer stay zero, so one sum of squares over all of it is every tensor's */
    float *grads[1] = {o->grad_base};
    size_t sizes[1] = {o->n_floats};
    return an_grad_norm(o->ops, grads, sizes, 1);
}

void an_optim_apply(an_optim *o, const an_adamw_config *c, double norm) {
    float clip = an_clip_coef(norm, c->max_grad_norm);
    o->step++;
    for (int k = 0; k < o->n; k++) {
        const an_optim_tensor *t = &o->t[k];
        float *m, *v;
        an_optim_moments(o, k, &m, &v);
        /* torch.optim.AdamW with two parameter groups: weight_decay for the decayed, 0 for the rest */
        float wd = t->decay ? c->weight_decay : 0.0f;
        o->ops->adamw_update(o->ops, t->param, t->grad, clip, m, v, t->numel, c->lr, c->beta1, c->beta2, c->eps, wd,
                             (int)o->step);
    }
}

double an_optim_step(an_optim *o, const an_adamw_config *c) {
    double norm = an_optim_grad_norm(o);
    an_optim_apply(o, c, norm);
    return norm;
}
