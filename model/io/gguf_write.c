/* GGUF writer for llama-family models (see gguf_write.h). */
#include "model/io/gguf_write.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "model/io/gguf.h"
#include "model/io/gguf_writer.h"

int an_gguf_write_type(const char *name) {
    static const struct { const char *name; int type; } types[] = {
        {"f32", AN_GGML_F32}, {"f16", AN_GGML_F16}, {"q8_0", AN_GGML_Q8_0}, {"q4_0", AN_GGML_Q4_0}};
    for (size_t i = 0; name && i < sizeof types / sizeof types[0]; i++)
        if (strcasecmp(name, types[i].name) == 0) return types[i].type;
    return -1;
}

/* llama.cpp's LlamaFileType for general.file_type: ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q4_0 2, MOSTLY_Q8_0 7. */
static uint32_t file_type(uint32_t type) {
    switch (type) {
    case AN_GGML_F16: return 1;
    case AN_GGML_Q4_0: return 2;
    case AN_GGML_Q8_0: return 7;
    default: return 0;
    }
}

/* The keys copied from a source GGUF: its tokenizer and chat template. */
static int is_tokenizer_key(const char *k) { return strncmp(k, "tokenizer.", 10) == 0; }

/* ---- the tensors ---- */
typedef struct wtensor {
    an_gguf_wtensor info;
    const an_param *p;
    int rope;            /* attn_q / attn_k: rows permuted for ggml's rope */
} wtensor;

static void add(wtensor *t, int *n, const an_param *p, const char *name, int rope, uint32_t type) {
    wtensor *w = &t[(*n)++];
    memset(w, 0, sizeof *w);
    an_gguf_wtensor *e = &w->info;
    snprintf(e->name, sizeof e->name, "%s", name);
    w->p = p;
    w->rope = rope;
    e->n_dims = p->ndim;
    e->ne[0] = p->ndim == 2 ? p->shape[1] : p->shape[0];
    e->ne[1] = p->ndim == 2 ? p->shape[0] : 1;
    /* llama.cpp keeps 1-D tensors in F32; the converter falls back to F16 for a matrix whose rows are
     * not whole blocks (gguf's quantize raises QuantError there) */
    const an_ggml_type_info *ti = an_ggml_type_get(type);
    if (p->ndim == 1) e->type = AN_GGML_F32;
    else if (e->ne[0] % ti->block) e->type = AN_GGML_F16;
    else e->type = type;
    ti = an_ggml_type_get(e->type);
    e->nbytes = (size_t)(e->ne[0] * e->ne[1] / ti->block) * (size_t)ti->block_bytes;
}

void an_gguf_permute_rope_rows(float *dst, const float *src, int n_heads, int head_dim, int64_t cols) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++)
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < half; i++)
                memcpy(dst + ((size_t)h * head_dim + 2 * i + j) * (size_t)cols,
                       src + ((size_t)h * head_dim + j * half + i) * (size_t)cols, (size_t)cols * sizeof *dst);
}

int an_gguf_check_llama_family(const an_model *m, const char *path, an_error *err) {
    const an_model_config *c = &m->cfg;
    const char *fam = c->model_type[0] ? c->model_type : "this";
    if (c->arch != AN_ARCH_LLAMA || m->qkv_layout != AN_QKV_SEPARATE || m->pos_emb || m->final_norm_b)
        return an_fail(err, "%s: %s models cannot be written as GGUF yet (only the llama family: Llama, Mistral, "
                            "SmolLM2, TinyLlama)", path, fam);
    for (int l = 0; l < c->n_layers; l++) {
        const an_layer *L = &m->layers[l];
        if (L->bq || L->bk || L->bv || L->bo || L->b_gate || L->b_up || L->b_down || L->attn_norm_b || L->ffn_norm_b)
            return an_fail(err, "%s: %s models have biases, which a llama GGUF cannot hold (only the llama family "
                                "without biases can be written for now)", path, fam);
        if (!L->wq || !L->wk || !L->wv || !L->wo || !L->w_gate || !L->w_up || !L->w_down || !L->attn_norm_w || !L->ffn_norm_w)
            return an_fail(err, "%s: layer %d lacks a llama weight", path, l);
    }
    if (c->head_dim % 2) return an_fail(err, "%s: head size %d is odd (RoPE needs pairs)", path, c->head_dim);
    return 0;
}

int an_gguf_write_model(const an_model *m, const char *path, const an_gguf_write_opts *o, an_error *err) {
    const an_model_config *c = &m->cfg;
    if (an_gguf_check_llama_family(m, path, err)) return -1;
    if (m->lora) return an_fail(err, "%s: the model has a LoRA adapter attached; merge it first (an_lora_merge)", path);
    const an_ggml_type_info *ti = an_ggml_type_get(o->type);
    if (!ti || (o->type != AN_GGML_F32 && o->type != AN_GGML_F16 && o->type != AN_GGML_Q8_0 && o->type != AN_GGML_Q4_0))
        return an_fail(err, "%s: tensor type %s cannot be written (f32, f16, q8_0 and q4_0 can)", path,
                       ti ? ti->name : "(unknown)");

    int cap = 3 + 9 * c->n_layers, n = 0;
    wtensor *ts = calloc((size_t)cap, sizeof *ts);
    if (!ts) return an_fail(err, "%s: out of memory", path);
    add(ts, &n, m->tok_emb, "token_embd.weight", 0, o->type);
    for (int l = 0; l < c->n_layers; l++) {
        const an_layer *L = &m->layers[l];
        const struct { const an_param *p; const char *name; int rope; } map[] = {
            {L->attn_norm_w, "attn_norm", 0}, {L->wq, "attn_q", 1},      {L->wk, "attn_k", 1},
            {L->wv, "attn_v", 0},            {L->wo, "attn_output", 0}, {L->ffn_norm_w, "ffn_norm", 0},
            {L->w_gate, "ffn_gate", 0},      {L->w_up, "ffn_up", 0},    {L->w_down, "ffn_down", 0},
        };
        for (size_t k = 0; k < sizeof map / sizeof map[0]; k++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, map[k].name);
            add(ts, &n, map[k].p, name, map[k].rope, o->type);
        }
    }
    add(ts, &n, m->final_norm_w, "output_norm.weight", 0, o->type);
    if (m->lm_head && !c->tie_embeddings) add(ts, &n, m->lm_head, "output.weight", 0, o->type);
    size_t maxn = 1, maxbytes = 1;
    an_gguf_wtensor *infos = calloc((size_t)n, sizeof *infos);
    for (int i = 0; infos && i < n; i++) {
        infos[i] = ts[i].info;
        if (ts[i].p->numel > maxn) maxn = ts[i].p->numel;
        if (ts[i].info.nbytes > maxbytes) maxbytes = ts[i].info.nbytes;
    }
    an_gguf_layout(infos, n);

    an_gguf src;
    int have_src = 0, rc = -1, opened = 0;
    float *host = NULL, *tmp = NULL;
    unsigned char *bytes = NULL;
    an_gguf_out w;
    if (o->tokenizer) {
        if (an_gguf_open(&src, o->tokenizer, err)) goto done;
        have_src = 1;
    }
    host = malloc(maxn * sizeof(float));
    tmp = malloc(maxn * sizeof(float));
    bytes = malloc(maxbytes);
    if (!host || !tmp || !bytes || !infos) {
        an_fail(err, "%s: out of memory", path);
        goto done;
    }
    if (an_gguf_out_open(&w, path, err)) goto done;
    opened = 1;

    int64_t n_kv = 16 + (c->head_dim * c->n_heads != c->dim ? 2 : 0);
    if (have_src)
        for (int64_t i = 0; i < src.n_kv; i++) n_kv += is_tokenizer_key(src.kvs[i].key);
    an_gguf_put_header(&w, (uint64_t)n, (uint64_t)n_kv);
    /* the converter's order: general.*, the hyperparameters, file type, then the tokenizer */
    an_gguf_kv_str(&w, "general.architecture", "llama");
    an_gguf_kv_str(&w, "general.type", "model");
    an_gguf_kv_str(&w, "general.name", o->name ? o->name : "autoneg export");
    an_gguf_kv_u32(&w, "general.alignment", AN_GGUF_ALIGN);
    an_gguf_kv_u32(&w, "llama.block_count", (uint32_t)c->n_layers);
    an_gguf_kv_u32(&w, "llama.context_length", (uint32_t)c->max_seq);
    an_gguf_kv_u32(&w, "llama.embedding_length", (uint32_t)c->dim);
    an_gguf_kv_u32(&w, "llama.feed_forward_length", (uint32_t)c->ffn_dim);
    an_gguf_kv_u32(&w, "llama.attention.head_count", (uint32_t)c->n_heads);
    an_gguf_kv_u32(&w, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads);
    an_gguf_kv_f32(&w, "llama.rope.freq_base", c->rope_theta);
    an_gguf_kv_f32(&w, "llama.attention.layer_norm_rms_epsilon", c->norm_eps);
    if (c->head_dim * c->n_heads != c->dim) { /* the converter writes these where head_dim is explicit */
        an_gguf_kv_u32(&w, "llama.attention.key_length", (uint32_t)c->head_dim);
        an_gguf_kv_u32(&w, "llama.attention.value_length", (uint32_t)c->head_dim);
    }
    an_gguf_kv_u32(&w, "general.file_type", file_type(o->type));
    an_gguf_kv_u32(&w, "llama.vocab_size", (uint32_t)c->vocab_size);
    an_gguf_kv_u32(&w, "llama.rope.dimension_count", (uint32_t)c->head_dim);
    an_gguf_kv_u32(&w, "general.quantization_version", 2); /* GGML_QNT_VERSION, which the converter always writes */
    if (have_src)
        for (int64_t i = 0; i < src.n_kv; i++)
            if (is_tokenizer_key(src.kvs[i].key)) an_gguf_kv_copy(&w, &src.kvs[i]);
    an_gguf_put_tensor_infos(&w, infos, n);
    for (int i = 0; i < n && !w.failed; i++) {
        const wtensor *t = &ts[i];
        an_model_export(m, t->p, t->p->data, host, tmp); /* Hugging Face layout, float32, on the host */
        float *vals = host;
        if (t->rope) {
            an_gguf_permute_rope_rows(tmp, host, (int)(t->info.ne[1] / c->head_dim), c->head_dim, t->info.ne[0]);
            vals = tmp;
        }
        if (an_ggml_quantize(t->info.type, vals, bytes, (int64_t)t->p->numel, err)) goto done;
        an_gguf_put_tensor_data(&w, bytes, t->info.nbytes);
    }
    opened = 0;
    if (an_gguf_out_finish(&w, err)) goto done;
    rc = 0;
done:
    if (opened) an_gguf_out_abort(&w);
    if (have_src) an_gguf_close(&src);
    free(host);
    free(tmp);
    free(bytes);
    free(infos);
    free(ts);
    return rc;
}
