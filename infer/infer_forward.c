/* Prefill and decode: the blocks of model/forward.c, op for op, with the keys and values of every
 * position kept in the cache. Prefill runs the prompts as one right-padded [n, T] batch through the
 * tiled attention op (pads come after the real tokens, so causal attention never lets a real token
 * see one) and copies each prompt's keys and values into its slot; decode appends one position per
 * slot and attends over the cache with per-slot lengths. */
#include <string.h>

#include "infer/infer.h"
#include "model/lora.h"

static const float *opt(const an_param *p) { return p ? p->data : NULL; }

/* The adapter segments of this linear layer: runs of rows with one adapter that targets w. */
static int lora_segments(const an_infer *s, const an_param *w, int N) {
    int ns = 0;
    for (int i = 0; i < N;) {
        const an_lora *l = s->row_lora ? s->row_lora[i] : s->lora;
        int j = i + 1;
        if (s->row_lora)
            while (j < N && s->row_lora[j] == l) j++;
        else
            j = N;
        const an_lora_module *mod = l ? an_lora_find(l, w) : NULL;
        if (mod) s->segs[ns++] = (an_lora_seg){i, j - i, l->cfg.r, l->scaling, mod->a.data, mod->bt.data};
        i = j;
    }
    return ns;
}

void an_infer_linear(const an_infer *s, const an_param *w, const an_param *b, float *out, const float *inp, int N) {
    const an_model *m = s->m;
    const an_ops *o = m->ops;
    an_weight wt = an_param_weight(w);
    o->linear_forward(o, out, inp, &wt, opt(b), N, s->linear_work, s->linear_work_bytes, AN_LINEAR_INFER);
    /* the adapters, unmerged: out += scaling * (inp A^T) B^T per row's adapter, B held transposed
     * (model/lora.h); one grouped op for every adapter of the batch */
    int ns = lora_segments(s, w, N), C = (int)w->shape[1], OC = (int)w->shape[0];
    if (ns && o->lora_grouped_forward) {
        o->lora_grouped_forward(o, out, s->lora_u, inp, C, OC, s->segs, ns);
        return;
    }
    /* a backend without the grouped op: one lora_forward per segment (the same per-row results) */
    for (int i = 0; i < ns; i++) {
        const an_lora_seg *g = &s->segs[i];
        o->lora_forward(o, out + (size_t)g->row0 * OC, s->lora_u, inp + (size_t)g->row0 * C, g->a, g->bt, g->n, C, OC,
                        g->r, g->scaling, 0.0f, 0, 0);
    }
}

/* The pre-norm at the input of layer l into s->ln (l = n_layers: the final norm). */
static void norm_weights(const an_model *m, int l, const an_param **w, const an_param **b) {
    *w = l < m->cfg.n_layers ? m->layers[l].attn_norm_w : m->final_norm_w;
    *b = l < m->cfg.n_layers ? m->layers[l].attn_norm_b : m->final_norm_b;
}

/* s->ln = the norm of inp, or with delta: inp += delta first, in the same pass (kernels/ops.h) */
static void norm(const an_infer *s, float *inp, const float *delta, const an_param *w, const an_param *b, int N) {
    const an_model *m = s->m;
    const an_ops *o = m->ops;
    int C = m->cfg.dim;
    float eps = m->cfg.norm_eps;
    if (m->cfg.arch == AN_ARCH_GPT2) {
        if (delta)
            o->add_layernorm_forward(o, inp, s->ln, s->mean, s->rstd, inp, delta, w->data, b->data, N, C, eps);
        else
            o->layernorm_forward(o, s->ln, s->mean, s->rstd, inp, w->data, b->data, N, C, eps);
    } else if (delta)
        o->add_rmsnorm_forward(o, inp, s->ln, s->rstd, inp, delta, w->data, N, C, eps);
    else
        o->rmsnorm_forward(o, s->ln, s->rstd, inp, w->data, N, C, eps);
}

/* What a forward needs besides the rows: prefill (n prompts of T rows each, lens) or decode. */
typedef struct pass {
    int decode;               /* 1: each row attends over its slot's cache (decode, extend) */
    int extend;               /* decode rows of one slot; logits of the last row only */
    int n, T;                 /* rows = n * T (T = 1 in decode) */
    const int32_t *slots;     /* host, n */
    const int *lens;          /* prefill: each prompt's length */
} pass;

/* Keys and values of this pass into the cache. */
static void store_kv(an_infer *s, int l, const pass *p) {
    const an_ops *o = s->m->ops;
    size_t kvd = (size_t)s->m->cfg.n_kv_heads * s->m->cfg.head_dim, row = (size_t)s->max_T * kvd;
    for (int i = 0; i < p->n; i++) {
        size_t dst = (size_t)p->slots[i] * row + (p->decode ? (size_t)s->h_pos[i] * kvd : 0);
        size_t src = (size_t)i * p->T * kvd, count = (p->decode ? 1 : (size_t)p->lens[i]) * kvd;
        o->copy(o, s->k[l] + dst, s->kx + src, count * sizeof(float));
        o->copy(o, s->v[l] + dst, s->vx + src, count * sizeof(float));
    }
}

/* The rows whose logits are wanted (each prompt's last token; extend: the last row), moved to the
 * front of buf (width floats a row) in order. A row's source is at or after its place, and after every
 * earlier row's, so moving them front to back overwrites nothing still to be read. Returns their count. */
static int gather_head_rows(const an_infer *s, const pass *p, float *buf, int width) {
    const an_ops *o = s->m->ops;
    int n = p->extend ? 1 : p->n;
    for (int i = 0; i < n; i++) {
        size_t src = p->extend ? (size_t)p->n - 1 : (size_t)i * p->T + (size_t)p->lens[i] - 1;
        if (src != (size_t)i)
            o->copy(o, buf + (size_t)i * width, buf + src * width, (size_t)width * sizeof(float));
    }
    return n;
}

static void block(an_infer *s, int l, const pass *p) {
    const an_model *m = s->m;
    const an_ops *o = m->ops;
    const an_model_config *c = &m->cfg;
    const an_layer *L = &m->layers[l];
    int N = p->n * p->T, C = c->dim, F = c->ffn_dim, nh = c->n_heads, nkv = c->n_kv_heads, hd = c->head_dim;

    /* s->ln holds this layer's first norm, made with its input (run() or the block before) */
    if (L->wqkv) {
        an_infer_linear(s, L->wqkv, L->bqkv, s->qkv, s->ln, N);
        an_model_split_qkv(m, s->q, s->kx, s->vx, s->qkv, N);
    } else {
        an_infer_linear(s, L->wq, L->bq, s->q, s->ln, N);
        an_infer_linear(s, L->wk, L->bk, s->kx, s->ln, N);
        an_infer_linear(s, L->wv, L->bv, s->vx, s->ln, N);
    }
    if (c->arch != AN_ARCH_GPT2) {
        an_rope rope = an_model_rope(m, s->rope_cos_sin, s->max_T);
        o->rope_forward(o, s->q, s->d_pos, N, nh, hd, rope);
        o->rope_forward(o, s->kx, s->d_pos, N, nkv, hd, rope);
    }
    store_kv(s, l, p);
    if (p->decode)
        o->attention_decode_forward(o, s->att, s->q, s->k[l], s->v[l], s->d_slot, s->d_len, p->n, s->max_T, nh, nkv, hd,
                                    s->attn_work, s->attn_work_bytes);
    else
        o->attention_forward(o, s->att, s->lse, s->q, s->kx, s->vx, s->d_seg, p->n, p->T, nh, nkv, hd, s->attn_work,
                             s->attn_work_bytes);
    /* Past the last layer's attention only the rows with logits matter (their keys and values are in
     * the cache): the rest of the layer runs on those rows alone, as llama.cpp does. A prompt of 512
     * tokens skips 511 rows of the output projection and the MLP, 2.8 % of SmolLM2's products. The
     * kept rows' results are the same up to rounding: the ops are row by row, but a linear op's
     * kernel may depend on the row count (OpenBLAS; the k-quants' 8-bit activations up to 32 rows). */
    if (l == c->n_layers - 1 && (!p->decode || p->extend)) {
        int kept = gather_head_rows(s, p, s->att, nh * hd);
        if (kept < N) {
            gather_head_rows(s, p, s->x, C);
            if (s->row_lora) s->row_lora = s->h_seq_lora; /* the kept rows are sequences */
            N = kept;
        }
    }
    an_infer_linear(s, L->wo, L->bo, s->tmp, s->att, N);
    norm(s, s->x, s->tmp, L->ffn_norm_w, L->ffn_norm_b, N);
    if (L->w_gate) {
        an_infer_linear(s, L->w_gate, L->b_gate, s->ffn_a, s->ln, N);
        an_infer_linear(s, L->w_up, L->b_up, s->ffn_b, s->ln, N);
        o->swiglu_forward(o, s->ffn_h, s->ffn_a, s->ffn_b, (size_t)N * F);
    } else {
        an_infer_linear(s, L->w_up, L->b_up, s->ffn_a, s->ln, N);
        o->gelu_forward(o, s->ffn_h, s->ffn_a, (size_t)N * F);
    }
    an_infer_linear(s, L->w_down, L->b_down, s->tmp, s->ffn_h, N);
    /* the residual and the next norm: after the last layer N is the rows with logits (see above) */
    const an_param *nw, *nb;
    norm_weights(m, l + 1, &nw, &nb);
    norm(s, s->x, s->tmp, nw, nb, N);
}

/* Embeddings, blocks, the final norm of the rows with logits (into s->ln) and their logits into logits_out. */
static void run(an_infer *s, const pass *p, float *logits_out) {
    const an_model *m = s->m;
    const an_ops *o = m->ops;
    int N = p->n * p->T, C = m->cfg.dim, V = m->cfg.vocab_size;
    size_t bytes = (size_t)N * sizeof(int32_t);
    o->upload(o, s->d_ids, s->h_ids, bytes);
    o->upload(o, s->d_pos, s->h_pos, bytes);
    if (p->decode) {
        o->upload(o, s->d_slot, s->h_slot, (size_t)N * sizeof(int32_t));
        o->upload(o, s->d_len, s->h_len, (size_t)N * sizeof(int32_t));
    }
    /* the rows with logits: every decode row, or those the last layer moves to the front of s->x */
    int heads = p->extend ? 1 : p->n;
    an_weight emb = an_param_weight(m->tok_emb);
    o->embedding_lookup(o, s->x, s->d_ids, &emb, N);
    float *pos = NULL;
    if (m->pos_emb) {
        o->embedding_forward(o, s->tmp, s->d_pos, m->pos_emb->data, N, C);
        pos = s->tmp;
    }
    /* the embeddings and the first norm (with no layer the final one, on the rows with logits) */
    const an_param *nw, *nb;
    norm_weights(m, 0, &nw, &nb);
    if (m->cfg.n_layers == 0 && heads < N) {
        if (pos) o->add(o, s->x, s->x, pos, (size_t)N * C);
        gather_head_rows(s, p, s->x, C);
        norm(s, s->x, NULL, nw, nb, heads);
    } else
        norm(s, s->x, pos, nw, nb, N);
    for (int l = 0; l < m->cfg.n_layers; l++) block(s, l, p);
    if (s->row_lora) s->row_lora = s->h_seq_lora; /* the head's rows are sequences */
    const an_param *head = m->lm_head ? m->lm_head : m->tok_emb;
    an_infer_linear(s, head, NULL, s->logits, s->ln, heads);
    if (logits_out) o->download(o, logits_out, s->logits, (size_t)heads * V * sizeof(float));
}

static int check_slots(const an_infer *s, const int32_t *slots, int n, const char *what, an_error *err) {
    if (n <= 0 || n > s->slots) return an_fail(err, "inference %s: %d sequences for %d slots", what, n, s->slots);
    for (int i = 0; i < n; i++) {
        if (slots[i] < 0 || slots[i] >= s->slots)
            return an_fail(err, "inference %s: slot %d is out of range (%d slots)", what, slots[i], s->slots);
        for (int j = 0; j < i; j++)
            if (slots[j] == slots[i]) return an_fail(err, "inference %s: slot %d given twice", what, slots[i]);
    }
    return 0;
}

static int check_id(const an_infer *s, int32_t id, const char *what, an_error *err) {
    if (id < 0 || id >= s->m->cfg.vocab_size)
        return an_fail(err, "inference %s: token %d is outside the vocabulary of %d", what, id, s->m->cfg.vocab_size);
    return 0;
}

/* Each sequence's adapter into h_seq_lora and each row's into h_lora (rows_per_seq rows each), and
 * row_lora pointed at them; NULL loras: s->lora for every row. The adapters' ranks must fit the
 * scratch. */
static int set_adapters(an_infer *s, const an_lora *const *loras, int n, int rows_per_seq, an_error *err) {
    s->row_lora = NULL;
    if (!loras) return 0;
    for (int i = 0; i < n; i++) {
        if (loras[i] && loras[i]->cfg.r > s->max_rank)
            return an_fail(err, "inference: an adapter of rank %d exceeds the %d this state was made for",
                           loras[i]->cfg.r, s->max_rank);
        s->h_seq_lora[i] = loras[i];
        for (int t = 0; t < rows_per_seq; t++) s->h_lora[(size_t)i * rows_per_seq + t] = loras[i];
    }
    s->row_lora = s->h_lora;
    return 0;
}

int an_infer_prefill_adapters(an_infer *s, const int32_t *slots, const int32_t *const *ids, const int *lens,
                              const an_lora *const *loras, int n, float *logits_out, an_error *err) {
    if (check_slots(s, slots, n, "prefill", err)) return -1;
    int T = 0;
    for (int i = 0; i < n; i++) {
        if (lens[i] <= 0 || lens[i] > s->max_T)
            return an_fail(err, "inference prefill: a prompt of %d tokens does not fit the context of %d", lens[i],
                           s->max_T);
        if (lens[i] > T) T = lens[i];
    }
    if ((long long)n * T > s->max_rows)
        return an_fail(err, "inference prefill: %d prompts of up to %d tokens exceed the %d rows planned", n, T,
                       s->max_rows);
    for (int i = 0; i < n; i++)
        for (int t = 0; t < T; t++) {
            int32_t id = t < lens[i] ? ids[i][t] : ids[i][0]; /* padding: any valid id, never attended to */
            if (check_id(s, id, "prefill", err)) return -1;
            s->h_ids[(size_t)i * T + t] = id;
            s->h_pos[(size_t)i * T + t] = t;
        }
    if (set_adapters(s, loras, n, T, err)) return -1;
    pass p = {0, 0, n, T, slots, lens};
    run(s, &p, logits_out);
    s->row_lora = NULL;
    for (int i = 0; i < n; i++) s->len[slots[i]] = lens[i];
    return 0;
}

int an_infer_prefill(an_infer *s, const int32_t *slots, const int32_t *const *ids, const int *lens, int n,
                     float *logits_out, an_error *err) {
    return an_infer_prefill_adapters(s, slots, ids, lens, NULL, n, logits_out, err);
}

int an_infer_decode_adapters(an_infer *s, const int32_t *slots, const int32_t *ids, const an_lora *const *loras,
                             int n, float *logits_out, an_error *err) {
    if (check_slots(s, slots, n, "decode", err)) return -1;
    for (int i = 0; i < n; i++) {
        if (check_id(s, ids[i], "decode", err)) return -1;
        int at = s->len[slots[i]];
        if (at >= s->max_T) return an_fail(err, "inference decode: slot %d is full (%d positions)", slots[i], s->max_T);
        s->h_ids[i] = ids[i];
        s->h_pos[i] = at;
        s->h_slot[i] = slots[i];
        s->h_len[i] = at + 1;
    }
    if (set_adapters(s, loras, n, 1, err)) return -1;
    pass p = {1, 0, n, 1, slots, NULL};
    run(s, &p, logits_out);
    s->row_lora = NULL;
    for (int i = 0; i < n; i++) s->len[slots[i]]++;
    return 0;
}

int an_infer_decode(an_infer *s, const int32_t *slots, const int32_t *ids, int n, float *logits_out, an_error *err) {
    return an_infer_decode_adapters(s, slots, ids, NULL, n, logits_out, err);
}

int an_infer_extend(an_infer *s, int slot, const int32_t *ids, int n, const an_lora *lora, float *logits_out,
                    an_error *err) {
    if (slot < 0 || slot >= s->slots) return an_fail(err, "inference extend: slot %d is out of range", slot);
    int at = s->len[slot];
    if (n <= 0 || n > s->max_rows || at + n > s->max_T)
        return an_fail(err, "inference extend: %d tokens after %d do not fit the context of %d (%d rows planned)", n,
                       at, s->max_T, s->max_rows);
    for (int i = 0; i < n; i++) {
        if (check_id(s, ids[i], "extend", err)) return -1;
        s->h_ids[i] = ids[i];
        s->h_pos[i] = at + i;
        s->h_slot[i] = slot;
        s->h_len[i] = at + i + 1; /* causal: row i sees positions 0 .. at + i */
    }
    if (set_adapters(s, &lora, 1, n, err)) return -1;
    pass p = {1, 1, n, 1, s->h_slot, NULL};
    run(s, &p, logits_out);
    s->row_lora = NULL;
    s->len[slot] = at + n;
    return 0;
}
