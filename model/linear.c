/* Linear layers with an optional LoRA adapter (model/lora.h, model/linear.h).
 *
 * Forward:  out  = x W^T + b;  u = scaling * A xd  (xd = dropout(x) in training, else x);  out += u Bt
 * Backward: dBt += u^T dout;   du = scaling * dout Bt^T;   dA += du^T xd;   dx += dropout(du A) (+ dout W)
 * The adapter's part is one fused op each way (lora_forward / lora_backward in kernels/ops.h), which
 * regenerates the dropout mask as it goes; u is kept from forward in the plan ([N, r] per adapted
 * layer), du is the plan's [N, r] scratch. */
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
        m->ops->matmul_forward_bf16w(m->ops, out, inp, w->bf16, opt(b), N, (int)w->shape[1], (int)w->shape[0], m->bf16_work,
                                     m->bf16_work_floats);
        return;
    }
    if (!w->nf4) {
        m->ops->matmul_forward(m->ops, out, inp, w->data, opt(b), N, (int)w->shape[1], (int)w->shape[0]);
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
            m->ops->matmul_backward_input_bf16w(m->ops, dinp, dout, w->bf16, N, (int)w->shape[1], (int)w->shape[0], m->bf16_work,
                                                m->bf16_work_floats);
        if (b && b->grad) m->ops->matmul_backward(m->ops, NULL, NULL, b->grad, dout, NULL, NULL, N, (int)w->shape[1], (int)w->shape[0]);
        return;
    }
    if (!w->nf4) {
        m->ops->matmul_backward(m->ops, dinp, grad(w), grad(b), dout, inp, w->data, N, (int)w->shape[1], (int)w->shape[0]);
        return;
    }
    size_t wb;
    void *work = nf4_work(m, &wb);
    /* frozen: the input gradient only (a bias of an NF4 layer is frozen with it) */
    if (an_nf4_matmul_backward_input(dinp, dout, w->nf4, N, work, wb, NULL))
        for (size_t i = 0; i < (size_t)N * w->shape[1]; i++) dinp[i] = NAN;
    if (b && b->grad) m->ops->matmul_backward(m->ops, NULL, NULL, b->grad, dout, NULL, NULL, N, (int)w->shape[1], (int)w->shape[0]);
}

/* The per-module dropout seed: the forward's seed mixed with the module's index (splitmix64 finaliser). */
static uint64_t module_seed(const an_lora *l, const an_lora_module *mod) {
    uint64_t z = l->mask_seed + 0x9E3779B97F4A7C15ull * (uint64_t)(mod - l->mods + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void an_linear_forward(const an_model *m, const an_param *w, const an_param *b, float *out, const float *inp,
                       int N, float *u) {
    base_forward(m, w, b, out, inp, N);
    const an_lora_module *mod = m->lora ? an_lora_find(m->lora, w) : NULL;
    if (mod)
        m->ops->lora_forward(m->ops, out, u, inp, mod->a.data, mod->bt.data, N, mod->in, mod->out, m->lora->cfg.r,
                             m->lora->scaling, 0.0f, 0, 0);
}

int an_lora_rank(const an_model *m) { return m->lora ? m->lora->cfg.r : 0; }

void an_linear_fwd(an_model *m, const an_param *w, const an_param *b, float *out, const float *inp, int N,
                   int train, uint64_t counter) {
    base_forward(m, w, b, out, inp, N);
    an_lora *l = m->lora;
    const an_lora_module *mod = l ? an_lora_find(l, w) : NULL;
    if (!mod) return;
    float p = train ? l->cfg.dropout : 0.0f;
    m->ops->lora_forward(m->ops, out, mod->u, inp, mod->a.data, mod->bt.data, N, mod->in, mod->out, l->cfg.r, l->scaling, p,
                         p > 0 ? module_seed(l, mod) : 0, counter);
}

void an_linear_bwd(an_model *m, const an_param *w, const an_param *b, float *dinp, const float *dout,
                   const float *inp, int N, uint64_t counter) {
    base_backward(m, w, b, dinp, dout, inp, N);
    an_lora *l = m->lora;
    const an_lora_module *mod = l ? an_lora_find(l, w) : NULL;
    if (!mod) return;
    float p = l->cfg.dropout;
    m->ops->lora_backward(m->ops, dinp, mod->a.grad, mod->bt.grad, m->plan.lora_du, dout, inp, mod->u, mod->a.data,
                          mod->bt.data, N, mod->in, mod->out, l->cfg.r, l->scaling, p, p > 0 ? module_seed(l, mod) : 0,
                          counter);
}
