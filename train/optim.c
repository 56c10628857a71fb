/* The optimizer (see train/optim.h). The only file of train/ that calls the optimizer ops
 * (adamw_update, and sum_squares through an_grad_norm), so a change to the op table touches it alone. */
#include "train/optim.h"

#include <math.h>
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

/* 1 when q follows p directly in both buffers (its weights right after p's, its gradient right after
 * p's: no gap, so nothing else lies between) with the same decay. Addresses compared as integers:
 * the weights of different tensors may be different allocations. */
static int follows(const an_optim_tensor *p, const an_optim_tensor *q) {
    return p->decay == q->decay && q->grad == p->grad + p->numel &&
           (uintptr_t)q->param == (uintptr_t)p->param + p->numel * sizeof(float);
}

static int by_offset(const void *x, const void *y) {
    const an_adamw_part *a = x, *b = y;
    return (a->at > b->at) - (a->at < b->at);
}

/* The update's list of parts, built once (at init, and again when sharding changes the slice) and
 * uploaded, so a step is one call of adamw_update: tensors that follow one another with the same decay
 * become one part (a model's or an adapter's tensors, laid out in order, are a few parts instead of
 * hundreds), each clipped to this rank's slice, offsets relative to its start. */
static int build_parts(an_optim *o, an_error *err) {
    if (o->parts_dev) o->ops->free(o->ops, o->parts_dev);
    free(o->parts);
    o->parts = NULL, o->parts_dev = NULL, o->n_parts = 0;
    an_adamw_part *p = malloc((o->n ? (size_t)o->n : 1) * sizeof *p);
    if (!p) return an_fail(err, "optimizer: out of memory");
    size_t lo = o->slice_lo, len = o->slice_len;
    int n = 0;
    for (int k = 0, j; k < o->n; k = j) {
        for (j = k + 1; j < o->n && follows(&o->t[j - 1], &o->t[j]); j++) {}
        size_t off = an_optim_offset(o, k), end = an_optim_offset(o, j - 1) + o->t[j - 1].numel;
        size_t a = off > lo ? off : lo, b = end < lo + len ? end : lo + len;
        if (a >= b) continue; /* sharded: another rank's */
        p[n++] = (an_adamw_part){o->t[k].param + (a - off), a - lo, b - a, o->t[k].decay};
    }
    qsort(p, (size_t)n, sizeof *p, by_offset);
    o->parts = p, o->n_parts = n;
    if (!n) return 0;
    o->parts_dev = o->ops->alloc(o->ops, (size_t)n * sizeof *p);
    if (!o->parts_dev) return an_fail(err, "optimizer: cannot allocate the list of %d tensors to update", n);
    o->ops->upload(o->ops, o->parts_dev, p, (size_t)n * sizeof *p);
    return 0;
}


int an_optim_init(an_optim *o, const an_ops *ops, const an_optim_tensor *t, int n, float *grad_base, size_t n_floats,
                  an_error *err) {
    memset(o, 0, sizeof *o);
    o->ops = ops;
    o->grad_base = grad_base;
    o->n_floats = n_floats;
    o->slice_len = n_floats;
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
    if (build_parts(o, err)) {
        an_optim_free(o);
        return -1;
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
    if (o->parts_dev) o->ops->free(o->ops, o->parts_dev);
    free(o->parts);
    free(o->t);
    memset(o, 0, sizeof *o);
}

size_t an_optim_bytes(const an_optim *o) { return o->moments ? 2 * o->slice_len * sizeof(float) : 0; }

size_t an_optim_offset(const an_optim *o, int k) { return (size_t)(o->t[k].grad - o->grad_base); }

void an_optim_moments(const an_optim *o, int k, float **m, float **v) {
    size_t off = an_optim_offset(o, k);
    *m = o->moments + off;
    *v = o->moments + o->n_floats + off;
}

int an_optim_distribute(an_optim *o, an_comm *comm, int zero, an_error *err) {
    o->comm = comm;
    if (!zero || !comm || comm->size == 1 || !o->n_floats) return 0; /* one rank's slice is the whole buffer */
    size_t lo, len;
    an_comm_slice(o->n_floats, comm->size, comm->rank, &lo, &len);
    float *mom = len ? o->ops->alloc(o->ops, 2 * len * sizeof(float)) : NULL;
    if (len && !mom)
        return an_fail(err, "optimizer: cannot allocate %.1f MiB of AdamW state", (double)len * 8 / 1048576);
    if (o->moments) o->ops->free(o->ops, o->moments);
    o->moments = mom;
    o->sharded = 1;
    o->slice_lo = lo;
    o->slice_len = len;
    return build_parts(o, err);
}

/* Tensor k's part inside [lo, lo + len) of the buffer: [*a, *b) in buffer offsets; 0 when none. */
static int part_in(const an_optim *o, int k, size_t lo, size_t len, size_t *a, size_t *b) {
    size_t off = an_optim_offset(o, k), end = off + o->t[k].numel;
    *a = off > lo ? off : lo;
    *b = end < lo + len ? end : lo + len;
    return *a < *b;
}

/* Weights of tensors' parts inside [lo, lo + len) into the gradient buffer (to), or back (!to). */
static void pack(an_optim *o, size_t lo, size_t len, int to) {
    for (int k = 0; k < o->n; k++) {
        size_t a, b, off = an_optim_offset(o, k);
        if (!part_in(o, k, lo, len, &a, &b)) continue;
        float *w = o->t[k].param + (a - off), *g = o->grad_base + a;
        o->ops->copy(o->ops, to ? g : w, to ? w : g, (b - a) * sizeof(float));
    }
}

int an_optim_broadcast_params(an_optim *o, int root, an_error *err) {
    if (!an_comm_active(o->comm) || !o->grad_base) return 0;
    pack(o, 0, o->n_floats, 1);
    if (an_comm_bcast_f32(o->comm, o->grad_base, o->n_floats, root, err)) return -1;
    pack(o, 0, o->n_floats, 0);
    an_optim_zero_grad(o);
    return 0;
}

float *an_optim_full_moments(an_optim *o, int gather, an_error *err) {
    if (!o->sharded) return o->moments;
    size_t n = o->n_floats, lo = o->slice_lo, len = o->slice_len;
    float *full = o->ops->alloc(o->ops, 2 * n * sizeof(float));
    if (!full) return an_fail_null(err, "optimizer: cannot allocate %.1f MiB to gather the AdamW state", (double)n * 8 / 1048576);
    if (!gather) return full;
    if (len) {
        o->ops->copy(o->ops, full + lo, o->moments, len * sizeof(float));
        o->ops->copy(o->ops, full + n + lo, o->moments + len, len * sizeof(float));
    }
    if (an_comm_allgather_f32(o->comm, full, n, err) || an_comm_allgather_f32(o->comm, full + n, n, err)) {
        o->ops->free(o->ops, full);
        return NULL;
    }
    return full;
}

void an_optim_full_moments_done(an_optim *o, float *full, int keep) {
    if (!o->sharded || !full) return;
    size_t n = o->n_floats, lo = o->slice_lo, len = o->slice_len;
    if (keep && len) {
        o->ops->copy(o->ops, o->moments, full + lo, len * sizeof(float));
        o->ops->copy(o->ops, o->moments + len, full + n + lo, len * sizeof(float));
    }
    o->ops->free(o->ops, full);
}

void an_optim_zero_grad(an_optim *o) {
    if (o->grad_base) o->ops->zero(o->ops, o->grad_base, o->n_floats * sizeof(float));
}

/* ---- DATA PARALLEL: the one place where ranks meet. ----
 * Each rank scaled its loss by its share of the whole step's tokens (or of each micro-batch's, for a
 * mean of means), so the sum over ranks of o->grad_base[0 .. o->n_floats) is the step's gradient.
 * zero 0: an all-reduce, after which every rank holds it all, takes the same norm and applies the
 * same update. ZeRO-1: a reduce-scatter, each rank holding the sum of its slice; an_optim_grad_norm
 * then all-reduces the slices' sums of squares. */
int an_optim_reduce_grads(an_optim *o, an_error *err) {
    if (!an_comm_active(o->comm) || !o->grad_base) return 0;
    return o->sharded ? an_comm_reduce_scatter_f32(o->comm, o->grad_base, o->n_floats, err)
                      : an_comm_allreduce_f32(o->comm, o->grad_base, o->n_floats, err);
}

int an_optim_grad_norm_checked(an_optim *o, double *norm, an_error *err) {
    *norm = 0.0;
    if (an_optim_reduce_grads(o, err)) return -1;
    if (!o->grad_base) return 0;
    if (o->sharded) {
        double ss = o->slice_len ? o->ops->sum_squares(o->ops, o->grad_base + o->slice_lo, o->slice_len) : 0.0;
        if (an_comm_allreduce_f64(o->comm, &ss, 1, err)) return -1;
        *norm = sqrt(ss);
        return 0;
    }
    /* the gaps of the buffer stay zero, so one sum of squares over all of it is every tensor's */
    float *grads[1] = {o->grad_base};
    size_t sizes[1] = {o->n_floats};
    *norm = an_grad_norm(o->ops, grads, sizes, 1);
    return 0;
}

double an_optim_grad_norm(an_optim *o) {
    double norm;
    return an_optim_grad_norm_checked(o, &norm, NULL) ? NAN : norm;
}

int an_optim_apply_checked(an_optim *o, const an_adamw_config *c, double norm, an_error *err) {
    float clip = an_clip_coef(norm, c->max_grad_norm);
    o->step++;
    size_t lo = o->slice_lo, len = o->slice_len;
    /* the moments: the whole buffer's layout, or the slice's when sharded (the parts' offsets are the
     * slice's); torch.optim.AdamW with two parameter groups: weight_decay for the decayed, 0 for the rest */
    if (o->n_parts)
        o->ops->adamw_update(o->ops, o->parts_dev, o->n_parts, len, o->grad_base + lo, clip, o->moments, o->moments + len,
                             c->lr, c->beta1, c->beta2, c->eps, c->weight_decay, (int)o->step);
    if (!o->sharded) return 0;
    /* every rank's updated slice to every rank, through the gradient buffer (its sums are spent) */
    pack(o, lo, len, 1);
    if (an_comm_allgather_f32(o->comm, o->grad_base, o->n_floats, err)) return -1;
    pack(o, 0, o->n_floats, 0);
    return 0;
}

void an_optim_apply(an_optim *o, const an_adamw_config *c, double norm) { an_optim_apply_checked(o, c, norm, NULL); }

double an_optim_step(an_optim *o, const an_adamw_config *c) {
    double norm = an_optim_grad_norm(o);
    an_optim_apply(o, c, norm);
    return norm;
}
