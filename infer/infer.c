/* The inference state: the KV cache and the scratch of one forward, carved from one allocation. */
#include <stdlib.h>
#include <string.h>

#include "core/carver.h"
#include "infer/infer.h"
#include "model/lora.h"

static void layout(an_infer *s, an_carver *c) {
    const an_model_config *cf = &s->m->cfg;
    size_t R = (size_t)s->max_rows, C = (size_t)cf->dim, F = (size_t)cf->ffn_dim;
    size_t qd = (size_t)cf->n_heads * cf->head_dim, kvd = (size_t)cf->n_kv_heads * cf->head_dim;
    const size_t f = sizeof(float), i32 = sizeof(int32_t);
    for (int l = 0; l < cf->n_layers; l++) {
        s->k[l] = an_carve(c, (size_t)s->slots * s->max_T * kvd, f);
        s->v[l] = an_carve(c, (size_t)s->slots * s->max_T * kvd, f);
    }
    s->x = an_carve(c, R * C, f);
    s->ln = an_carve(c, R * C, f);
    s->mean = an_carve(c, R, f);
    s->rstd = an_carve(c, R, f);
    s->qkv = s->m->qkv_layout != AN_QKV_SEPARATE ? an_carve(c, R * (qd + 2 * kvd), f) : NULL;
    s->q = an_carve(c, R * qd, f);
    s->kx = an_carve(c, R * kvd, f);
    s->vx = an_carve(c, R * kvd, f);
    s->att = an_carve(c, R * qd, f);
    s->lse = an_carve(c, R * (size_t)cf->n_heads, f);
    s->tmp = an_carve(c, R * C, f);
    s->ffn_a = an_carve(c, R * F, f);
    s->ffn_b = an_carve(c, R * F, f);
    s->ffn_h = an_carve(c, R * F, f);
    s->lora_u = s->max_rank > 0 ? an_carve(c, R * (size_t)s->max_rank, f) : NULL;
    s->logits = an_carve(c, (size_t)s->slots * cf->vocab_size, f);
    s->d_ids = an_carve(c, R, i32);
    s->d_pos = an_carve(c, R, i32);
    s->d_seg = an_carve(c, R, i32); /* stays zero: plain causal attention in prefill */
    s->d_slot = an_carve(c, R, i32);
    s->d_len = an_carve(c, R, i32);
    s->rope_cos_sin = cf->arch != AN_ARCH_GPT2 ? an_carve(c, (size_t)s->max_T * cf->head_dim, f) : NULL;
    s->linear_work = s->linear_work_bytes ? an_carve(c, s->linear_work_bytes, 1) : NULL;
    s->attn_work = an_carve(c, s->attn_work_bytes, 1);
}

static an_infer *create(const an_model *m, const an_lora *lora, int max_rank, int slots, int max_T,
                        int prefill_tokens, an_error *err) {
    const an_model_config *cf = &m->cfg;
    if (slots <= 0 || slots > 65536 || max_T <= 0 || max_T > (1 << 24)) {
        an_fail(err, "inference: %d sequences of %d positions is out of range", slots, max_T);
        return NULL;
    }
    if (max_T > cf->max_seq) {
        an_fail(err, "inference: a context of %d positions exceeds the model's %d", max_T, cf->max_seq);
        return NULL;
    }
    if (cf->sliding_window > 0 && max_T > cf->sliding_window) {
        an_fail(err, "inference: a context of %d positions exceeds the sliding window of %d, which is not supported",
                max_T, cf->sliding_window);
        return NULL;
    }
    if (prefill_tokens <= 0) prefill_tokens = max_T > 1024 ? max_T : 1024;
    if (prefill_tokens < max_T) prefill_tokens = max_T;
    an_infer *s = calloc(1, sizeof *s);
    if (!s) {
        an_fail(err, "inference: out of memory");
        return NULL;
    }
    s->m = m;
    s->lora = lora;
    s->max_rank = max_rank;
    s->slots = slots;
    s->max_T = max_T;
    s->max_rows = prefill_tokens > slots ? prefill_tokens : slots;
    s->len = calloc((size_t)slots, sizeof *s->len);
    s->k = calloc((size_t)cf->n_layers + 1, sizeof *s->k);
    s->v = calloc((size_t)cf->n_layers + 1, sizeof *s->v);
    size_t R = (size_t)s->max_rows;
    s->h_ids = malloc(R * sizeof(int32_t));
    s->h_pos = malloc(R * sizeof(int32_t));
    s->h_slot = malloc(R * sizeof(int32_t));
    s->h_len = malloc(R * sizeof(int32_t));
    s->h_lora = malloc(R * sizeof *s->h_lora);
    s->h_seq_lora = malloc(R * sizeof *s->h_seq_lora);
    s->segs = malloc(R * sizeof *s->segs);
    if (!s->len || !s->k || !s->v || !s->h_ids || !s->h_pos || !s->h_slot || !s->h_len || !s->h_lora ||
        !s->h_seq_lora || !s->segs) {
        an_infer_free(s);
        an_fail(err, "inference: out of memory");
        return NULL;
    }
    s->linear_work_bytes = an_model_linear_work_bytes(m, NULL, s->max_rows); /* adapters: lora_grouped_forward */
    s->attn_work_bytes = m->ops->attention_work_bytes(m->ops, max_T, cf->n_heads, cf->head_dim);
    an_carver c = {NULL, 0};
    layout(s, &c);
    s->bytes = c.off;
    s->block = m->ops->alloc(m->ops, c.off);
    if (!s->block) {
        an_fail(err, "inference: cannot allocate %.1f MiB for a KV cache of %d x %d positions", (double)c.off / 1048576,
                slots, max_T);
        an_infer_free(s);
        return NULL;
    }
    c = (an_carver){s->block, 0};
    layout(s, &c);
    if (s->rope_cos_sin) m->ops->rope_table(m->ops, s->rope_cos_sin, max_T, cf->head_dim, cf->rope_theta);
    return s;
}

an_infer *an_infer_create(const an_model *m, const an_lora *lora, int slots, int max_T, int prefill_tokens,
                          an_error *err) {
    return create(m, lora, lora ? lora->cfg.r : 0, slots, max_T, prefill_tokens, err);
}

an_infer *an_infer_create_multi(const an_model *m, int max_rank, int slots, int max_T, int prefill_tokens,
                                an_error *err) {
    if (max_rank < 0 || max_rank > 65536) {
        an_fail(err, "inference: an adapter rank of %d is out of range", max_rank);
        return NULL;
    }
    return create(m, NULL, max_rank, slots, max_T, prefill_tokens, err);
}

void an_infer_free(an_infer *s) {
    if (!s) return;
    if (s->block) s->m->ops->free(s->m->ops, s->block);
    if (s->sample_block) s->m->ops->free(s->m->ops, s->sample_block);
    free(s->len);
    free(s->k);
    free(s->v);
    free(s->h_ids);
    free(s->h_pos);
    free(s->h_slot);
    free(s->h_len);
    free(s->h_lora);
    free(s->h_seq_lora);
    free(s->segs);
    free(s);
}

size_t an_infer_bytes(const an_infer *s) { return s->bytes; }

void an_infer_reset_slot(an_infer *s, int slot) {
    if (slot >= 0 && slot < s->slots) s->len[slot] = 0;
}

size_t an_infer_kv_bytes(const an_infer *s, int n) {
    const an_model_config *cf = &s->m->cfg;
    return 2 * (size_t)cf->n_layers * (size_t)n * cf->n_kv_heads * cf->head_dim * sizeof(float);
}

/* Layer l's keys then values, n positions each, one layer after the other. */
static int kv_check(const an_infer *s, int slot, int n, const char *what, an_error *err) {
    if (slot < 0 || slot >= s->slots) return an_fail(err, "inference %s: slot %d is out of range", what, slot);
    if (n <= 0 || n > s->max_T)
        return an_fail(err, "inference %s: %d positions do not fit the context of %d", what, n, s->max_T);
    return 0;
}

int an_infer_kv_save(const an_infer *s, int slot, int n, void *dst, an_error *err) {
    if (kv_check(s, slot, n, "kv save", err)) return -1;
    if (n > s->len[slot])
        return an_fail(err, "inference kv save: slot %d holds %d positions, not %d", slot, s->len[slot], n);
    const an_ops *o = s->m->ops;
    size_t kvd = (size_t)s->m->cfg.n_kv_heads * s->m->cfg.head_dim, part = (size_t)n * kvd;
    float *d = dst;
    for (int l = 0; l < s->m->cfg.n_layers; l++) {
        size_t at = (size_t)slot * s->max_T * kvd;
        o->copy(o, d + 2 * l * part, s->k[l] + at, part * sizeof(float));
        o->copy(o, d + (2 * l + 1) * part, s->v[l] + at, part * sizeof(float));
    }
    return 0;
}

int an_infer_kv_load(an_infer *s, int slot, const void *src, int n, an_error *err) {
    if (kv_check(s, slot, n, "kv load", err)) return -1;
    const an_ops *o = s->m->ops;
    size_t kvd = (size_t)s->m->cfg.n_kv_heads * s->m->cfg.head_dim, part = (size_t)n * kvd;
    const float *d = src;
    for (int l = 0; l < s->m->cfg.n_layers; l++) {
        size_t at = (size_t)slot * s->max_T * kvd;
        o->copy(o, s->k[l] + at, d + 2 * l * part, part * sizeof(float));
        o->copy(o, s->v[l] + at, d + (2 * l + 1) * part, part * sizeof(float));
    }
    s->len[slot] = n;
    return 0;
}
