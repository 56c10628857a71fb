/* Linear layers with an optional LoRA adapter (model/lora.h, model/linear.h).
 *
 * Forward:  out  = x W^T + b;  u = scaling * A xd  (xd = dropout(x) in training, else x);  out += u Bt
 * Backward: dBt += u^T dout;   du = scaling * dout Bt^T;   dA += du^T xd;   dx += dropout(du A) (+ dout W)
 * Bt is B transposed ([r, out]), so "out += u Bt" is the accumulating half of matmul_backward and no
 * [N, out] scratch exists; u is kept from forward in the plan ([N, r] per adapted layer). */
#include "model/linear.h"

#include <math.h>

#include "kernels/nf4.h"
#include "model/lora.h"
#include "model/nf4_weights.h"

static const float *opt(const an_param *p) { return p ? p->data : NULL; }
static float *grad(const an_param *p) { return p ? p->grad : NULL; }

/* The NF4 kernels' scratch: the plan's, or without a plan (inference) the one sized with the weights. */
static void *nf4_work(const an_model *m, size_t *bytes) {
    if (m->plan.nf4_work || !m->nf4) {
        *bytes = m->plan.nf4_work_bytes;
        return m->plan.nf4_work;
    }
    *bytes = m->nf4->work_bytes;
    return m->nf4->work;
}

/* out = inp W^T + b for a float32 or NF4 weight. The NF4 kernels fail only when they cannot get
 * scratch memory (never with the plan's workspace); then out is NaN rather than silently wrong. */
static void base_forward(const an_model *m, const an_param *w, const an_param *b, float *out, const float *inp, int N) {
    if (w->bf16) { /* frozen bf16 head (an_model_store_frozen_bf16): widened a tile at a time */
        m->ops->matmul_forward_bf16w(out, inp, w->bf16, opt(b), N, (int)w->shape[1], (int)w->shape[0], m->bf16_work,
                                     m->bf16_work_floats);
        return;
    }
    if (!w->nf4) {
        m->ops->matmul_forward(out, inp, w->data, opt(b), N, (int)w->shape[1], (int)w->shape[0]);
        return;
    }
    size_t wb;
    void *work = nf4_work(m, &wb);
    if (an_nf4_matmul_forward(out, inp, w->nf4, opt(b), N, work, wb, NULL))
        for (size_t i = 0; i < (size_t)N * w->shape[0]; i++) out[i] = NAN;
}

static void base_backward(an_model *m, const an_param *w, const an_param *b, float *dinp, const float *dout,
                          const float *inp, int N) {
    if (w->bf16) { /* frozen: the input gradient only */
        if (dinp)
            m->ops->matmul_backward_input_bf16w(dinp, dout, w->bf16, N, (int)w->shape[1], (int)w->shape[0], m->bf16_work,
                                                m->bf16_work_floats);
        if (b && b->grad) m->ops->matmul_backward(NULL, NULL, b->grad, dout, NULL, NULL, N, (int)w->shape[1], (int)w->shape[0]);
        return;
    }
    if (!w->nf4) {
        m->ops->matmul_backward(dinp, grad(w), grad(b), dout, inp, w->data, N, (int)w->shape[1], (int)w->shape[0]);
        return;
    }
    size_t wb;
    void *work = nf4_work(m, &wb);
    /* frozen: the input gradient only (a bias of an NF4 layer is frozen with it) */
    if (an_nf4_matmul_backward_input(dinp, dout, w->nf4, N, work, wb, NULL))
        for (size_t i = 0; i < (size_t)N * w->shape[1]; i++) dinp[i] = NAN;
    if (b && b->grad) m->ops->matmul_backward(NULL, NULL, b->grad, dout, NULL, NULL, N, (int)w->shape[1], (int)w->shape[0]);
}

/* The per-module dropout seed: the forward's seed mixed with the module's index (splitmix64 finaliser). */
static uint64_t module_seed(const an_lora *l, const an_lora_module *mod) {
    uint64_t z = l->mask_seed + 0x9E3779B97F4A7C15ull * (uint64_t)(mod - l->mods + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void lora_forward(const an_model *m, const an_lora_module *mod, float *out, const float *xd, int N, float *u) {
    const an_ops *o = m->ops;
    int r = m->lora->cfg.r;
    o->matmul_forward(u, xd, mod->a.data, NULL, N, mod->in, r);
    o->scale(u, m->lora->scaling, (size_t)N * r);
    o->matmul_backward(out, NULL, NULL, u, NULL, mod->bt.data, N, mod->out, r);
}

void an_linear_forward(const an_model *m, const an_param *w, const an_param *b, float *out, const float *inp,
                       int N, float *u) {
    base_forward(m, w, b, out, inp, N);
    const an_lora_module *mod = m->lora ? an_lora_find(m->lora, w) : NULL;
    if (mod) lora_forward(m, mod, out, inp, N, u);
}

int an_lora_rank(const an_model *m) { return m->lora ? m->lora->cfg.r : 0; }

void an_linear_fwd(an_model *m, const an_param *w, const an_param *b, float *out, const float *inp, int N,
                   int train, uint64_t counter) {
    int in = (int)w->shape[1];
    const an_ops *o = m->ops;
    base_forward(m, w, b, out, inp, N);
    an_lora *l = m->lora;
    const an_lora_module *mod = l ? an_lora_find(l, w) : NULL;
    if (!mod) return;
    const float *xd = inp;
    if (train && l->cfg.dropout > 0) {
        o->dropout(m->plan.lora_xd, inp, (size_t)N * in, l->cfg.dropout, module_seed(l, mod), counter);
        xd = m->plan.lora_xd;
    }
    lora_forward(m, mod, out, xd, N, mod->u);
}

void an_linear_bwd(an_model *m, const an_param *w, const an_param *b, float *dinp, const float *dout,
                   const float *inp, int N, uint64_t counter) {
    int in = (int)w->shape[1], outd = (int)w->shape[0];
    const an_ops *o = m->ops;
    an_plan *p = &m->plan;
    base_backward(m, w, b, dinp, dout, inp, N);
    an_lora *l = m->lora;
    const an_lora_module *mod = l ? an_lora_find(l, w) : NULL;
    if (!mod) return;
    int r = l->cfg.r, drop = l->cfg.dropout > 0;
    uint64_t seed = drop ? module_seed(l, mod) : 0;
    const float *xd = inp;
    if (drop) {
        o->dropout(p->lora_xd, inp, (size_t)N * in, l->cfg.dropout, seed, counter);
        xd = p->lora_xd;
    }
    o->matmul_backward(NULL, mod->bt.grad, NULL, mod->u, dout, mod->bt.data, N, outd, r);
    o->matmul_forward(p->lora_du, dout, mod->bt.data, NULL, N, outd, r);
    o->scale(p->lora_du, l->scaling, (size_t)N * r);
    if (!drop) {
        o->matmul_backward(dinp, mod->a.grad, NULL, p->lora_du, xd, mod->a.data, N, in, r);
        return;
    }
    /* d(xd) is masked by the same dropout before it joins dinp */
    o->zero(p->lora_dxd, (size_t)N * in * sizeof(float));
    o->matmul_backward(p->lora_dxd, mod->a.grad, NULL, p->lora_du, xd, mod->a.data, N, in, r);
    o->dropout(p->lora_dxd, p->lora_dxd, (size_t)N * in, l->cfg.dropout, seed, counter);
    o->add(dinp, dinp, p->lora_dxd, (size_t)N * in);
}
