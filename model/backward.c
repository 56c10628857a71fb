/* The backward pass, mirroring model/forward.c block by block.
 *
 * p->dres carries d(residual stream) from the top down. Inside a block, d(res_mid) is dres itself (the
 * residual passes it through) plus what the MLP's norm sends back, which the norm's backward adds into
 * dres; likewise for the attention half. Gradient outputs of the ops accumulate, so each scratch buffer
 * is zeroed right before the op that fills it, and frozen tensors pass dw = NULL. */
#include "model/linear.h"
#include "model/model.h"
#include "model/recompute.h"


static void norm_backward(const an_model *m, float *dinp, const float *dout, const float *inp, const an_param *w,
                          const an_param *b, const float *mean, const float *rstd, int N) {
    if (m->cfg.arch == AN_ARCH_GPT2)
        m->ops->layernorm_backward(m->ops, dinp, w->grad, b->grad, dout, inp, w->data, mean, rstd, N, m->cfg.dim);
    else
        m->ops->rmsnorm_backward(m->ops, dinp, w->grad, dout, inp, w->data, rstd, N, m->cfg.dim);
}

static void block_backward(an_model *m, int l, int B, int T) {
    const an_ops *o = m->ops;
    const an_model_config *c = &m->cfg;
    const an_layer *L = &m->layers[l];
    an_plan *p = &m->plan;
    const an_layer_acts *a = &p->layers[l];
    int N = B * T, C = c->dim, F = c->ffn_dim, nh = c->n_heads, nkv = c->n_kv_heads, hd = c->head_dim;
    int qd = nh * hd, kvd = nkv * hd, qkvd = qd + 2 * kvd;
    const size_t f = sizeof(float);

    /* MLP: out = res_mid + down(h) */
    o->zero(o, p->dln, (size_t)N * C * f);
    if (L->w_gate) {
        o->zero(o, p->dffn_h, (size_t)N * F * f);
        an_linear_backward(m, L->w_down, L->b_down, p->dffn_h, p->dres, a->ffn_h, N, 0);
        o->zero(o, p->dffn_a, (size_t)N * F * f);
        o->zero(o, p->dffn_b, (size_t)N * F * f);
        o->swiglu_backward(o, p->dffn_a, p->dffn_b, p->dffn_h, a->ffn_a, a->ffn_b, (size_t)N * F);
        an_linear_backward(m, L->w_gate, L->b_gate, p->dln, p->dffn_a, a->ln2, N, 0);
        an_linear_backward(m, L->w_up, L->b_up, p->dln, p->dffn_b, a->ln2, N, 0);
    } else { /* h = gelu(ffn_a): d(ffn_a) straight from the down-projection's backward */
        an_linear_gelu_backward(m, L->w_down, L->b_down, p->dffn_a, p->dffn_h, p->dres, a->ffn_h, a->ffn_a, N);
        an_linear_backward(m, L->w_up, L->b_up, p->dln, p->dffn_a, a->ln2, N, 0);
    }
    norm_backward(m, p->dres, p->dln, a->res_mid, L->ffn_norm_w, L->ffn_norm_b, a->ln2_mean, a->ln2_rstd, N);

    /* attention: res_mid = res_in + wo(att) */
    o->zero(o, p->datt, (size_t)N * qd * f);
    an_linear_backward(m, L->wo, L->bo, p->datt, p->dres, a->att, N, 0);
    o->zero(o, p->dq, (size_t)N * qd * f);
    o->zero(o, p->dk, (size_t)N * kvd * f);
    o->zero(o, p->dv, (size_t)N * kvd * f);
    o->attention_backward(o, p->dq, p->dk, p->dv, p->datt, a->q, a->k, a->v, a->att, a->att_lse, p->seg, B, T, nh,
                          nkv, hd, p->attn_work,
                          p->attn_work_bytes);
    if (c->arch != AN_ARCH_GPT2) {
        an_rope rope = an_model_rope(m, p->rope_cos_sin, p->T);
        o->rope_backward(o, p->dq, p->pos, N, nh, hd, rope);
        o->rope_backward(o, p->dk, p->pos, N, nkv, hd, rope);
    }
    o->zero(o, p->dln, (size_t)N * C * f);
    if (L->wqkv) {
        o->zero(o, p->dqkv, (size_t)N * qkvd * f);
        an_model_split_qkv_backward(m, p->dqkv, p->dq, p->dk, p->dv, N);
        an_linear_backward(m, L->wqkv, L->bqkv, p->dln, p->dqkv, a->ln1, N, 0);
    } else {
        an_linear_backward(m, L->wq, L->bq, p->dln, p->dq, a->ln1, N, 0);
        an_linear_backward(m, L->wk, L->bk, p->dln, p->dk, a->ln1, N, 0);
        an_linear_backward(m, L->wv, L->bv, p->dln, p->dv, a->ln1, N, 0);
    }
    norm_backward(m, p->dres, p->dln, a->res_in, L->attn_norm_w, L->attn_norm_b, a->ln1_mean, a->ln1_rstd, N);
}

int an_model_backward(an_model *m, an_error *err) {
    an_plan *p = &m->plan;
    const an_ops *o = m->ops;
    if (!p->block || !p->last_with_grad)
        return an_fail(err, "model backward: no forward with gradients to go back through");
    int B = p->last_B, T = p->last_T, N = B * T, C = m->cfg.dim;
    /* p->dln holds d(final norm output), filled by the LM head during forward */
    o->zero(o, p->dres, (size_t)N * C * sizeof(float));
    norm_backward(m, p->dres, p->dln, p->res_out, m->final_norm_w, m->final_norm_b, p->lnf_mean, p->lnf_rstd, N);
    for (int l = m->cfg.n_layers - 1; l >= 0; l--) {
        if (p->recompute) an_block_forward(m, l, NULL, B, T, 1); /* refill layer l's activations */
        block_backward(m, l, B, T);
    }
    if (m->tok_emb->grad) o->embedding_backward(o, m->tok_emb->grad, p->dres, p->ids, N, C);
    if (m->pos_emb && m->pos_emb->grad) o->embedding_backward(o, m->pos_emb->grad, p->dres, p->pos, N, C);
    p->last_with_grad = 0;
    return 0;
}
