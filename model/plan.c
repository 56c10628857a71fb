/* The activation plan: every buffer forward and backward need for one batch shape, carved out of one
 * backend allocation. Per layer it keeps what backward reads (the layer input, norm outputs and
 * statistics, q/k/v after RoPE, the attention output and its log-sum-exp, the MLP intermediates);
 * the gradients flowing backward use scratch buffers shared by all layers. With recomputation
 * (an_model_set_recompute) only the layer inputs are per layer: the other activations, and the LoRA
 * u of each kind of adapted linear, are one set that backward refills layer by layer. */
#include <stdlib.h>
#include <string.h>

#include "core/carver.h"
#include "kernels/nf4.h"
#include "model/lora.h"
#include "model/model.h"

/* Which linear of its layer w is (0 .. AN_LAYER_SLOTS-1), or -1 when it is in no layer (the head). */
#define AN_LAYER_SLOTS 8
static int layer_slot(const an_model *m, const an_param *w) {
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const an_layer *L = &m->layers[l];
        const an_param *slots[AN_LAYER_SLOTS] = {L->wqkv, L->wq, L->wk, L->wv, L->wo, L->w_gate, L->w_up, L->w_down};
        for (int s = 0; s < AN_LAYER_SLOTS; s++)
            if (slots[s] == w) return s;
    }
    return -1;
}

/* The blocks' scratch, shared by all layers: forward's fused qkv and residual branch, and the
 * gradients flowing backward through a block. */
static void carve_block_scratch(an_model *m, an_carver *c) {
    an_plan *p = &m->plan;
    const an_model_config *cf = &m->cfg;
    size_t N = (size_t)p->N, C = (size_t)cf->dim, F = (size_t)cf->ffn_dim;
    size_t qd = (size_t)cf->n_heads * cf->head_dim, kvd = (size_t)cf->n_kv_heads * cf->head_dim;
    size_t qkvd = qd + 2 * kvd;
    int gpt2 = cf->arch == AN_ARCH_GPT2, fused = m->qkv_layout != AN_QKV_SEPARATE;
    const size_t f = sizeof(float);
    p->qkv = fused ? an_carve(c, N * qkvd, f) : NULL;
    p->tmp = an_carve(c, N * C, f);
    p->dq = an_carve(c, N * qd, f);
    p->dk = an_carve(c, N * kvd, f);
    p->dv = an_carve(c, N * kvd, f);
    p->datt = an_carve(c, N * qd, f);
    p->dqkv = fused ? an_carve(c, N * qkvd, f) : NULL;
    p->dffn_a = an_carve(c, N * F, f);
    p->dffn_b = gpt2 ? NULL : an_carve(c, N * F, f);
    p->dffn_h = an_carve(c, N * F, f);
}

int an_head_chunk_rows(size_t N, size_t V, size_t C, size_t scratch_bytes) {
    size_t bytes = scratch_bytes > AN_HEAD_CHUNK_BYTES ? scratch_bytes : AN_HEAD_CHUNK_BYTES;
    size_t rows = bytes / ((V + 2 * C) * sizeof(float));
    /* A second chunk re-reads the head's weight and re-writes its gradient, which costs more than
     * the memory of a few more rows: a batch up to 1/8 over the chunk runs in one chunk. */
    if (rows < N && N <= rows + rows / 8) rows = N;
    return rows < 1 ? 1 : (int)(rows > N ? N : rows);
}

static void layout(an_model *m, an_carver *c) {
    an_plan *p = &m->plan;
    const an_model_config *cf = &m->cfg;
    size_t N = (size_t)p->N, C = (size_t)cf->dim, F = (size_t)cf->ffn_dim;
    size_t qd = (size_t)cf->n_heads * cf->head_dim, kvd = (size_t)cf->n_kv_heads * cf->head_dim;
    int gpt2 = cf->arch == AN_ARCH_GPT2;
    const size_t f = sizeof(float);

    p->ids = an_carve(c, N, sizeof(int32_t));
    p->pos = an_carve(c, N, sizeof(int32_t));
    p->seg = an_carve(c, N, sizeof(int32_t));
    p->targets = an_carve(c, N, sizeof(int32_t));
    p->rows = an_carve(c, N, sizeof(int32_t));
    p->row_targets = an_carve(c, N, sizeof(int32_t));
    p->rope_cos_sin = gpt2 ? NULL : an_carve(c, (size_t)p->T * cf->head_dim, f);
    /* Without recomputation every layer keeps its own activations; with it only the layer inputs are
     * per layer and one set of activations serves whichever layer is being run (recomputed). */
    int per_layer = !p->recompute;
    for (int l = 0; l < cf->n_layers; l++) p->layers[l].res_in = an_carve(c, N * C, f);
    for (int l = 0; l < (per_layer ? cf->n_layers : (cf->n_layers > 0)); l++) {
        an_layer_acts *a = &p->layers[l];
        a->ln1 = an_carve(c, N * C, f);
        a->ln1_mean = gpt2 ? an_carve(c, N, f) : NULL;
        a->ln1_rstd = an_carve(c, N, f);
        a->q = an_carve(c, N * qd, f);
        a->k = an_carve(c, N * kvd, f);
        a->v = an_carve(c, N * kvd, f);
        a->att = an_carve(c, N * qd, f);
        a->att_lse = an_carve(c, N * (size_t)cf->n_heads, f);
        a->res_mid = an_carve(c, N * C, f);
        a->ln2 = an_carve(c, N * C, f);
        a->ln2_mean = gpt2 ? an_carve(c, N, f) : NULL;
        a->ln2_rstd = an_carve(c, N, f);
        a->ffn_a = an_carve(c, N * F, f);
        a->ffn_b = gpt2 ? NULL : an_carve(c, N * F, f);
        a->ffn_h = an_carve(c, N * F, f);
    }
    for (int l = 1; !per_layer && l < cf->n_layers; l++) { /* the shared set */
        float *res_in = p->layers[l].res_in;
        p->layers[l] = p->layers[0];
        p->layers[l].res_in = res_in;
    }
    p->res_out = an_carve(c, N * C, f);
    p->lnf = an_carve(c, N * C, f);
    p->lnf_mean = gpt2 ? an_carve(c, N, f) : NULL;
    p->lnf_rstd = an_carve(c, N, f);
    p->losses = an_carve(c, N, f);
    p->ce_lse = an_carve(c, N, f);
    p->dres = an_carve(c, N * C, f);
    p->dln = an_carve(c, N * C, f);
    /* The LM head runs after the last block's forward and before the first block's backward, so its
     * chunk buffers and the blocks' scratch share one region (an_head_chunk_rows sizes the chunk to
     * use all of it). */
    size_t region = c->off;
    carve_block_scratch(m, c);
    size_t scratch_end = c->off;
    c->off = region;
    p->logits = an_carve(c, (size_t)p->head_rows * cf->vocab_size, f);
    p->head_x = an_carve(c, (size_t)p->head_rows * C, f);
    p->head_dx = an_carve(c, (size_t)p->head_rows * C, f);
    if (c->off < scratch_end) c->off = scratch_end;
    if (m->lora) { /* each adapter's u, rows as its layer runs them (the head in chunks); with
                    * recomputation the adapters of one slot (q_proj, ...) share one u across layers */
        an_lora *l = m->lora;
        const an_param *head = m->lm_head ? m->lm_head : m->tok_emb;
        size_t r = (size_t)l->cfg.r;
        float *slot_u[AN_LAYER_SLOTS] = {0};
        int slot_used[AN_LAYER_SLOTS] = {0};
        for (int i = 0; i < l->n_mods; i++) {
            an_lora_module *mod = &l->mods[i];
            int s = mod->base == head ? -1 : layer_slot(m, mod->base);
            float *u;
            if (s < 0 || per_layer) {
                u = an_carve(c, (mod->base == head ? (size_t)p->head_rows : N) * r, f);
            } else {
                if (!slot_used[s]) slot_u[s] = an_carve(c, N * r, f);
                slot_used[s] = 1;
                u = slot_u[s];
            }
            if (p->lora_u) p->lora_u[i] = u;
        }
        p->lora_du = an_carve(c, N * r, f);
        p->lora_planned = 1;
    }
    /* one workspace for every linear op on a typed weight (bf16 head, NF4 base), sized for the most
     * rows a linear runs here and the threads of now */
    size_t work = an_model_linear_work_bytes(m, m->lora, p->N > p->head_rows ? p->N : p->head_rows);
    p->linear_work = work ? an_carve(c, work, 1) : NULL;
    p->linear_work_bytes = work;
    work = m->ops->attention_work_bytes(m->ops, p->T, cf->n_heads, cf->head_dim);
    p->attn_work = an_carve(c, work, 1);
    p->attn_work_bytes = work;
}

void an_model_plan_free(an_model *m) {
    an_plan *p = &m->plan;
    if (p->block) m->ops->free(m->ops, p->block);
    free(p->layers);
    free(p->lora_u);
    free(p->h_ids);
    free(p->h_pos);
    free(p->h_seg);
    free(p->h_targets);
    free(p->h_rows);
    free(p->h_row_targets);
    free(p->h_losses);
    free(p->h_row_losses);
    memset(p, 0, sizeof *p);
}

/* The plan's shape: batch, head chunk, and the host arrays (layers, LoRA u pointers, batch staging). */
static int plan_shape(an_model *m, int B, int T, an_error *err) {
    an_plan *p = &m->plan;
    an_model_plan_free(m);
    if (B <= 0 || T <= 0 || (long long)B * T > (1 << 30))
        return an_fail(err, "model plan: batch shape %d x %d is out of range", B, T);
    if (m->cfg.arch == AN_ARCH_GPT2 && T > m->cfg.max_seq)
        return an_fail(err, "model plan: %d tokens per row exceed the %d learned positions", T, m->cfg.max_seq);
    if (m->cfg.sliding_window > 0 && T > m->cfg.sliding_window)
        return an_fail(err, "model plan: %d tokens per row exceed the sliding window of %d, which is not supported",
                       T, m->cfg.sliding_window);
    p->B = B;
    p->T = T;
    p->N = B * T;
    p->recompute = m->recompute != 0;
    int rows = m->head_rows;
    if (rows <= 0) {
        an_carver probe = {NULL, 0};
        carve_block_scratch(m, &probe);
        rows = an_head_chunk_rows((size_t)p->N, (size_t)m->cfg.vocab_size, (size_t)m->cfg.dim, probe.off);
    }
    p->head_rows = rows > p->N ? p->N : rows;
    p->layers = calloc((size_t)m->cfg.n_layers, sizeof *p->layers);
    p->lora_u = m->lora ? calloc((size_t)m->lora->n_mods + 1, sizeof *p->lora_u) : NULL;
    size_t N = (size_t)p->N;
    p->h_ids = malloc(N * sizeof(int32_t));
    p->h_pos = malloc(N * sizeof(int32_t));
    p->h_seg = malloc(N * sizeof(int32_t));
    p->h_targets = malloc(N * sizeof(int32_t));
    p->h_rows = malloc(N * sizeof(int32_t));
    p->h_row_targets = malloc(N * sizeof(int32_t));
    p->h_losses = calloc(N, sizeof(float));
    p->h_row_losses = calloc(N, sizeof(float));
    if (m->lora && !p->lora_u) return an_fail(err, "model plan: out of host memory");
    if (!p->layers || !p->h_ids || !p->h_pos || !p->h_seg || !p->h_targets || !p->h_rows || !p->h_row_targets ||
        !p->h_losses || !p->h_row_losses)
        return an_fail(err, "model plan: out of host memory");
    return 0;
}

size_t an_model_plan_bytes(an_model *m, int B, int T, an_error *err) {
    if (plan_shape(m, B, T, err)) {
        an_model_plan_free(m);
        return 0;
    }
    an_carver c = {NULL, 0};
    layout(m, &c); /* the measuring pass: no memory behind it */
    an_model_plan_free(m);
    return c.off;
}

int an_model_plan(an_model *m, int B, int T, an_error *err) {
    an_plan *p = &m->plan;
    if (plan_shape(m, B, T, err)) return -1;
    an_carver c = {NULL, 0};
    layout(m, &c);
    p->bytes = c.off;
    p->block = m->ops->alloc(m->ops, c.off);
    if (!p->block)
        return an_fail(err, "model plan: cannot allocate %.1f MiB of activations for %d x %d tokens",
                       (double)c.off / 1048576, B, T);
    c = (an_carver){p->block, 0};
    layout(m, &c);
    if (p->rope_cos_sin) m->ops->rope_table(m->ops, p->rope_cos_sin, T, m->cfg.head_dim, m->cfg.rope_theta);
    return 0;
}

void an_model_set_recompute(an_model *m, int on) { m->recompute = on != 0; }
