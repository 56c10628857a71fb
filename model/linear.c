/* Linear layers with an optional LoRA adapter (model/lora.h, model/linear.h).
 *
 * Forward:  out  = x W^T + b;  u = scaling * A xd  (xd = dropout(x) in training, else x);  out += u Bt
 * Backward: dBt += u^T dout;   du = scaling * dout Bt^T;   dA += du^T xd;   dx += dropout(du A) (+ dout W)
 * The base weight may be of any dtype the backend supports (float32, a bf16 head, an NF4 base): the
 * typed linear ops of kernels/ops.h dispatch on it. A trainable weight is float32 and gets its
 * gradient from matmul_backward; a frozen one of any dtype gives the input gradient only.
 * The adapter's part is one fused op each way (lora_forward / lora_backward in kernels/ops.h), which
 * regenerates the dropout mask as it goes; u is kept from forward in the plan ([N, r] per adapted
 * layer), du is the plan's [N, r] scratch. */
#include "model/linear.h"

#include "model/lora.h"

static const float *opt(const an_param *p) { return p ? p->data : NULL; }
static float *grad(const an_param *p) { return p ? p->grad : NULL; }

size_t an_model_linear_work_bytes(const an_model *m, const an_lora *lora, int rows) {
    const an_ops *o = m->ops;
    size_t need = 0;
    for (int i = 0; i < m->n_params; i++) {
        if (m->params[i].ndim != 2) continue;
        an_weight w = an_param_weight(&m->params[i]);
        size_t b = o->linear_work_bytes(o, &w, rows);
        if (b > need) need = b;
    }
    for (int i = 0; lora && i < lora->n_mods; i++) { /* inference runs A through linear_forward */
        an_weight a = an_param_weight(&lora->mods[i].a);
        size_t b = o->linear_work_bytes(o, &a, rows);
        if (b > need) need = b;
    }
    return need;
}

static void base_forward(const an_model *m, const an_param *w, const an_param *b, float *out, const float *inp, int N) {
    const an_ops *o = m->ops;
    an_weight wt = an_param_weight(w);
    o->linear_forward(o, out, inp, &wt, opt(b), N, m->plan.linear_work, m->plan.linear_work_bytes, AN_LINEAR_EXACT);
}

static void base_backward(an_model *m, const an_param *w, const an_param *b, float *dinp, const float *dout,
                          const float *inp, int N) {
    const an_ops *o = m->ops;
    int C = (int)w->shape[1], OC = (int)w->shape[0];
    if (w->grad) { /* trainable, so float32: weight, bias and input gradients in one op */
        o->matmul_backward(o, dinp, w->grad, grad(b), dout, inp, w->data, N, C, OC);
        return;
    }
    /* frozen, of any dtype: the input gradient only (its bias may still train) */
    an_weight wt = an_param_weight(w);
    if (dinp) o->linear_backward_input(o, dinp, dout, &wt, N, m->plan.linear_work, m->plan.linear_work_bytes);
    if (b && b->grad) o->matmul_backward(o, NULL, NULL, b->grad, dout, NULL, NULL, N, C, OC);
}

/* The per-module dropout seed: the forward's seed mixed with the module's index (splitmix64 finaliser). */
static uint64_t module_seed(const an_lora *l, const an_lora_module *mod) {
    uint64_t z = l->mask_seed + 0x9E3779B97F4A7C15ull * (uint64_t)(mod - l->mods + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int an_lora_rank(const an_model *m) { return m->lora ? m->lora->cfg.r : 0; }

void an_linear_forward(an_model *m, const an_param *w, const an_param *b, float *out, const float *inp, int N,
                   int train, uint64_t counter) {
    base_forward(m, w, b, out, inp, N);
    an_lora *l = m->lora;
    const an_lora_module *mod = l ? an_lora_find(l, w) : NULL;
    if (!mod) return;
    float p = train ? l->cfg.dropout : 0.0f;
    m->ops->lora_forward(m->ops, out, m->plan.lora_u[mod - l->mods], inp, mod->a.data, mod->bt.data, N, mod->in, mod->out, l->cfg.r,
                         l->scaling, p, p > 0 ? module_seed(l, mod) : 0, counter);
}

/* a float32 weight without an adapter: its layer is the bare product, which the GELU ops can take */
static int bare_f32(const an_model *m, const an_param *w) {
    return an_param_weight(w).dtype == AN_F32 && !(m->lora && an_lora_find(m->lora, w));
}

void an_linear_gelu_forward(an_model *m, const an_param *w, const an_param *b, float *out, float *pre, const float *inp,
                            int N, int train) {
    const an_ops *o = m->ops;
    if (bare_f32(m, w)) {
        o->matmul_gelu_forward(o, out, pre, inp, w->data, opt(b), N, (int)w->shape[1], (int)w->shape[0]);
        return;
    }
    an_linear_forward(m, w, b, pre, inp, N, train, 0); /* another dtype, or the adapter's term before the GELU */
    o->gelu_forward(o, out, pre, (size_t)N * w->shape[0]);
}

void an_linear_gelu_backward(an_model *m, const an_param *w, const an_param *b, float *dpre, float *dh, const float *dout,
                             const float *h, const float *pre, int N) {
    const an_ops *o = m->ops;
    size_t n = (size_t)N * w->shape[1];
    if (bare_f32(m, w)) {
        o->matmul_backward_gelu(o, dpre, w->grad, grad(b), dout, h, pre, w->data, N, (int)w->shape[1], (int)w->shape[0]);
        return;
    }
    o->zero(o, dh, n * sizeof(float)); /* dh = dout W (+ the adapter's path), then through the GELU */
    an_linear_backward(m, w, b, dh, dout, h, N, 0);
    o->zero(o, dpre, n * sizeof(float));
    o->gelu_backward(o, dpre, pre, dh, n);
}

void an_linear_backward(an_model *m, const an_param *w, const an_param *b, float *dinp, const float *dout,
                   const float *inp, int N, uint64_t counter) {
    base_backward(m, w, b, dinp, dout, inp, N);
    an_lora *l = m->lora;
    const an_lora_module *mod = l ? an_lora_find(l, w) : NULL;
    if (!mod) return;
    float p = l->cfg.dropout;
    m->ops->lora_backward(m->ops, dinp, mod->a.grad, mod->bt.grad, m->plan.lora_du, dout, inp, m->plan.lora_u[mod - l->mods], mod->a.data,
                          mod->bt.data, N, mod->in, mod->out, l->cfg.r, l->scaling, p,
                          p > 0 ? module_seed(l, mod) : 0, counter);
}
