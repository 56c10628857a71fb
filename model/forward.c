/* The forward pass of all three families, and the LM head with its cross-entropy done in row chunks.
 * Everything numerical is an op from m->ops; this file only decides what runs on which buffer. */
#include <string.h>

#include "model/linear.h"
#include "model/lora.h"
#include "model/model.h"
#include "model/recompute.h"


/* The pre-norm that reads the residual stream at the input of layer l, and its outputs; l = n_layers
 * is the final norm. LayerNorm (GPT-2) or RMSNorm (the others). */
typedef struct pre_norm {
    float *out, *mean, *rstd;
    const an_param *w, *b;
} pre_norm;

static pre_norm input_norm(an_model *m, int l) {
    an_plan *p = &m->plan;
    if (l == m->cfg.n_layers) return (pre_norm){p->lnf, p->lnf_mean, p->lnf_rstd, m->final_norm_w, m->final_norm_b};
    an_layer_acts *a = &p->layers[l];
    return (pre_norm){a->ln1, a->ln1_mean, a->ln1_rstd, m->layers[l].attn_norm_w, m->layers[l].attn_norm_b};
}

static void norm_forward(const an_model *m, const pre_norm *n, const float *inp, int N) {
    if (m->cfg.arch == AN_ARCH_GPT2)
        m->ops->layernorm_forward(m->ops, n->out, n->mean, n->rstd, inp, n->w->data, n->b->data, N, m->cfg.dim,
                                  m->cfg.norm_eps);
    else
        m->ops->rmsnorm_forward(m->ops, n->out, n->rstd, inp, n->w->data, N, m->cfg.dim, m->cfg.norm_eps);
}

/* res_out = res_in + delta, then the norm of res_out: one pass over the rows (the same bits as the two
 * ops, kernels/ops.h) */
static void add_norm_forward(const an_model *m, const pre_norm *n, float *res_out, const float *res_in,
                             const float *delta, int N) {
    const an_ops *o = m->ops;
    if (m->cfg.arch == AN_ARCH_GPT2)
        o->add_layernorm_forward(o, res_out, n->out, n->mean, n->rstd, res_in, delta, n->w->data, n->b->data, N,
                                 m->cfg.dim, m->cfg.norm_eps);
    else
        o->add_rmsnorm_forward(o, res_out, n->out, n->rstd, res_in, delta, n->w->data, N, m->cfg.dim, m->cfg.norm_eps);
}

/* One block (model/recompute.h). Its first norm (ln1) was filled with its input by whoever wrote that
 * input, in the same pass (the embeddings or the block before); a recomputation (out == NULL) has to
 * fill it itself. Its output goes out with the next norm (the next block's ln1, or the final norm). */
void an_block_forward(an_model *m, int l, float *out, int B, int T, int train) {
    const an_ops *o = m->ops;
    const an_model_config *c = &m->cfg;
    const an_layer *L = &m->layers[l];
    an_plan *p = &m->plan;
    an_layer_acts *a = &p->layers[l];
    int N = B * T, F = c->ffn_dim, nh = c->n_heads, nkv = c->n_kv_heads, hd = c->head_dim;

    if (!out) {
        pre_norm n1 = input_norm(m, l);
        norm_forward(m, &n1, a->res_in, N);
    }
    if (L->wqkv) {
        an_linear_forward(m, L->wqkv, L->bqkv, p->qkv, a->ln1, N, train, 0);
        an_model_split_qkv(m, a->q, a->k, a->v, p->qkv, N);
    } else {
        an_linear_forward(m, L->wq, L->bq, a->q, a->ln1, N, train, 0);
        an_linear_forward(m, L->wk, L->bk, a->k, a->ln1, N, train, 0);
        an_linear_forward(m, L->wv, L->bv, a->v, a->ln1, N, train, 0);
    }
    if (c->arch != AN_ARCH_GPT2) {
        an_rope rope = an_model_rope(m, p->rope_cos_sin, p->T);
        o->rope_forward(o, a->q, p->pos, N, nh, hd, rope);
        o->rope_forward(o, a->k, p->pos, N, nkv, hd, rope);
    }
    o->attention_forward(o, a->att, a->att_lse, a->q, a->k, a->v, p->seg, B, T, nh, nkv, hd, p->attn_work,
                         p->attn_work_bytes);
    an_linear_forward(m, L->wo, L->bo, p->tmp, a->att, N, train, 0);
    pre_norm n2 = {a->ln2, a->ln2_mean, a->ln2_rstd, L->ffn_norm_w, L->ffn_norm_b};
    add_norm_forward(m, &n2, a->res_mid, a->res_in, p->tmp, N);

    if (L->w_gate) {
        an_linear_forward(m, L->w_gate, L->b_gate, a->ffn_a, a->ln2, N, train, 0);
        an_linear_forward(m, L->w_up, L->b_up, a->ffn_b, a->ln2, N, train, 0);
        o->swiglu_forward(o, a->ffn_h, a->ffn_a, a->ffn_b, (size_t)N * F);
    } else {
        an_linear_gelu_forward(m, L->w_up, L->b_up, a->ffn_h, a->ffn_a, a->ln2, N, train);
    }
    an_linear_forward(m, L->w_down, L->b_down, p->tmp, a->ffn_h, N, train, 0); /* also refills the adapter's u */
    if (!out) return; /* recomputing: the output (and the next norm) is not needed */
    /* (with recomputation the next block's ln1 is this block's, the shared set's: no longer read here) */
    pre_norm next = input_norm(m, l + 1);
    add_norm_forward(m, &next, out, a->res_mid, p->tmp, N);
}

/* Uploads the batch through the host staging buffers, filling in default positions and segments,
 * and lists the trained rows (targets != -100) with their targets. */
static int stage_batch(an_model *m, const an_batch *b, an_error *err) {
    an_plan *p = &m->plan;
    int N = b->B * b->T, V = m->cfg.vocab_size, count = 0;
    for (int n = 0; n < N; n++) {
        int32_t id = b->ids[n];
        if (id < 0 || id >= V) return an_fail(err, "model forward: token %d at %d is outside the vocabulary of %d", id, n, V);
        int32_t t = n % b->T;
        int32_t pos = b->pos ? b->pos[n] : t;
        int32_t seg = b->seg_start ? b->seg_start[n] : 0;
        if (pos < 0 || (m->cfg.arch == AN_ARCH_GPT2 && pos >= m->cfg.max_seq))
            return an_fail(err, "model forward: position %d at %d is out of range", pos, n);
        if (seg < 0 || seg > t) return an_fail(err, "model forward: segment start %d at token %d of its row", seg, t);
        p->h_ids[n] = id;
        p->h_pos[n] = pos;
        p->h_seg[n] = seg;
        int32_t tg = b->targets ? b->targets[n] : AN_IGNORE_INDEX;
        if (tg != AN_IGNORE_INDEX && (tg < 0 || tg >= V))
            return an_fail(err, "model forward: target %d at %d is outside the vocabulary of %d", tg, n, V);
        p->h_targets[n] = tg;
        if (tg != AN_IGNORE_INDEX) {
            p->h_rows[count] = n;
            p->h_row_targets[count++] = tg;
        }
    }
    size_t bytes = (size_t)N * sizeof(int32_t);
    m->ops->upload(m->ops, p->ids, p->h_ids, bytes);
    m->ops->upload(m->ops, p->pos, p->h_pos, bytes);
    m->ops->upload(m->ops, p->seg, p->h_seg, bytes);
    m->ops->upload(m->ops, p->targets, p->h_targets, bytes);
    if (count) {
        m->ops->upload(m->ops, p->rows, p->h_rows, (size_t)count * sizeof(int32_t));
        m->ops->upload(m->ops, p->row_targets, p->h_row_targets, (size_t)count * sizeof(int32_t));
    }
    p->last_count = count;
    return 0;
}

/* Rows of the head chunk that starts at r0 of total: as few chunks as head_rows allows, all of one
 * size, so that no chunk is a sliver that runs its GEMMs at a fraction of their rate. */
static int head_chunk(const an_plan *p, int total, int r0) {
    int chunks = (total + p->head_rows - 1) / p->head_rows;
    int rows = (total + chunks - 1) / chunks;
    return total - r0 < rows ? total - r0 : rows;
}

/* The LM head over every row (when the caller wants the logits): head_rows rows at a time, each
 * chunk's logits copied out, with targets their losses, and with grad the logits' gradient in place
 * and the head's matmul backward into p->dln. */
static void head_all_rows(an_model *m, int N, int with_loss, int with_grad, float dloss, float *logits_out) {
    const an_ops *o = m->ops;
    an_plan *p = &m->plan;
    int C = m->cfg.dim, V = m->cfg.vocab_size;
    const an_param *head = m->lm_head ? m->lm_head : m->tok_emb;
    for (int r0 = 0, n; r0 < N; r0 += n) {
        n = head_chunk(p, N, r0);
        const float *x = p->lnf + (size_t)r0 * C;
        an_linear_forward(m, head, NULL, p->logits, x, n, with_grad, (uint64_t)r0 * C);
        if (logits_out) o->download(o, logits_out + (size_t)r0 * V, p->logits, (size_t)n * V * sizeof(float));
        if (!with_loss) continue;
        o->cross_entropy_forward(o, p->losses + r0, p->ce_lse + r0, p->logits, p->targets + r0, n, V);
        if (!with_grad) continue;
        o->cross_entropy_backward(o, p->logits, p->logits, p->ce_lse + r0, p->targets + r0, n, V, dloss);
        an_linear_backward(m, head, NULL, p->dln + (size_t)r0 * C, p->logits, x, n, (uint64_t)r0 * C);
    }
}

/* The LM head and the loss in training: only the M rows with a target count, so their final-norm
 * outputs are gathered (embedding_forward with lnf as the table) head_rows at a time; a chunk's
 * logits, its cross-entropy, and with grad the logits' gradient in place and the head's matmul
 * backward, scattered back into p->dln (embedding_backward). Only [head_rows, V] logits ever exist,
 * and masked prompt tokens cost no head work. Losses come out compacted, losses[k] for row rows[k]. */
static void head_trained_rows(an_model *m, int M, int with_grad, float dloss) {
    const an_ops *o = m->ops;
    an_plan *p = &m->plan;
    int C = m->cfg.dim, V = m->cfg.vocab_size;
    const an_param *head = m->lm_head ? m->lm_head : m->tok_emb;
    for (int r0 = 0, n; r0 < M; r0 += n) {
        n = head_chunk(p, M, r0);
        o->embedding_forward(o, p->head_x, p->rows + r0, p->lnf, n, C);
        an_linear_forward(m, head, NULL, p->logits, p->head_x, n, with_grad, (uint64_t)r0 * C);
        o->cross_entropy_forward(o, p->losses + r0, p->ce_lse + r0, p->logits, p->row_targets + r0, n, V);
        if (!with_grad) continue;
        o->cross_entropy_backward(o, p->logits, p->logits, p->ce_lse + r0, p->row_targets + r0, n, V, dloss);
        o->zero(o, p->head_dx, (size_t)n * C * sizeof(float));
        an_linear_backward(m, head, NULL, p->head_dx, p->logits, p->head_x, n, (uint64_t)r0 * C);
        o->embedding_backward(o, p->dln, p->head_dx, p->rows + r0, n, C);
    }
}

int an_model_forward(an_model *m, const an_batch *b, int with_grad, float grad_scale, float *loss_out,
                     float *logits_out, an_error *err) {
    an_plan *p = &m->plan;
    const an_ops *o = m->ops;
    if (!p->block) return an_fail(err, "model forward: no plan (call an_model_plan first)");
    if (b->B <= 0 || b->T <= 0 || b->B > p->B || b->T > p->T)
        return an_fail(err, "model forward: batch %d x %d does not fit the plan %d x %d", b->B, b->T, p->B, p->T);
    if (with_grad && !b->targets) return an_fail(err, "model forward: gradients need targets");
    if (with_grad && !m->grad_mem && an_model_param_count(m, 1) > 0)
        return an_fail(err, "model forward: gradients requested but not allocated (an_model_alloc_grads)");
    if (p->linear_work_bytes < an_model_linear_work_bytes(m, m->lora, p->N > p->head_rows ? p->N : p->head_rows) ||
        p->attn_work_bytes < o->attention_work_bytes(o, p->T, m->cfg.n_heads, m->cfg.head_dim))
        return an_fail(err, "model forward: the plan's workspace is too small for the weights' types or the "
                            "thread count of now (quantized or stored in bf16 after planning: plan again)");
    if (m->lora && !p->lora_planned)
        return an_fail(err, "model forward: the plan was made before the LoRA adapter was attached (plan again)");
    if (stage_batch(m, b, err)) return -1;
    if (with_grad && m->lora) m->lora->mask_seed = an_lora_next_mask_seed(m->lora);
    int B = b->B, T = b->T, N = B * T, C = m->cfg.dim, L = m->cfg.n_layers;

    /* the embeddings, and with them the first norm (the first block's, or with no block the final one) */
    float *x0 = L > 0 ? p->layers[0].res_in : p->res_out;
    pre_norm n0 = input_norm(m, 0);
    an_weight emb = an_param_weight(m->tok_emb);
    o->embedding_lookup(o, x0, p->ids, &emb, N);
    if (m->pos_emb) {
        o->embedding_forward(o, p->tmp, p->pos, m->pos_emb->data, N, C);
        add_norm_forward(m, &n0, x0, x0, p->tmp, N);
    } else
        norm_forward(m, &n0, x0, N);
    for (int l = 0; l < L; l++)
        an_block_forward(m, l, l + 1 < L ? p->layers[l + 1].res_in : p->res_out, B, T, with_grad);

    int count = p->last_count;
    float dloss = count ? grad_scale / (float)count : 0.0f;
    if (with_grad) o->zero(o, p->dln, (size_t)N * C * sizeof(float));
    double sum = 0;
    if (logits_out || !b->targets) {
        head_all_rows(m, N, b->targets != NULL, with_grad, dloss, logits_out);
        if (b->targets) {
            o->download(o, p->h_losses, p->losses, (size_t)N * sizeof(float));
            for (int n = 0; n < N; n++) sum += p->h_losses[n];
        }
    } else {
        head_trained_rows(m, count, with_grad, dloss);
        memset(p->h_losses, 0, (size_t)N * sizeof(float));
        if (count) o->download(o, p->h_row_losses, p->losses, (size_t)count * sizeof(float));
        for (int k = 0; k < count; k++) {
            p->h_losses[p->h_rows[k]] = p->h_row_losses[k];
            sum += p->h_row_losses[k];
        }
    }
    if (loss_out) *loss_out = count ? (float)(sum / count) : 0.0f;
    p->last_B = B;
    p->last_T = T;
    p->last_with_grad = with_grad;
    return 0;
}

const float *an_model_token_losses(const an_model *m) { return m->plan.h_losses; }
