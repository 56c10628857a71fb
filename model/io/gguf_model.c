/* GGUF files as models (see gguf_model.h). */
#include "model/io/gguf_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu.h"
#include "kernels/f32x32.h"
#include "kernels/quant_x8.h"
#include "model/io/llama2c.h"

/* "<arch>.<name>" as an integer in lo..hi; def when absent and def >= 0 (else the key is required). */
static int get_int(const an_gguf *g, const char *arch, const char *name, int64_t def, int64_t lo, int64_t hi, int *out,
                   an_error *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, name);
    int64_t v = def;
    if ((def < 0 || an_gguf_find_key(g, key)) && an_gguf_get_int(g, key, &v, err)) return -1;
    if (v < lo || v > hi)
        return an_fail(err, "%s: key \"%s\" = %lld is out of range (expected %lld..%lld)", g->path, key, (long long)v,
                       (long long)lo, (long long)hi);
    *out = (int)v;
    return 0;
}

static int get_float(const an_gguf *g, const char *arch, const char *name, double def, double *out, an_error *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, name);
    *out = def;
    if (an_gguf_find_key(g, key) && an_gguf_get_float(g, key, out, err)) return -1;
    if (!(*out > 0) || !isfinite(*out)) return an_fail(err, "%s: key \"%s\" = %g must be a positive number", g->path, key, *out);
    return 0;
}

/* A token id key (tokenizer.ggml.*_token_id), -1 when absent or not an id of the vocabulary. */
static int token_id(const an_gguf *g, const char *key, int vocab) {
    int64_t v;
    an_error ignored;
    if (!an_gguf_find_key(g, key) || an_gguf_get_int(g, key, &v, &ignored)) return -1;
    return v >= 0 && v < vocab ? (int)v : -1;
}

/* The Llama-style keys (llama, qwen2): grouped heads, RoPE, RMSNorm. */
static int rope_config(const an_gguf *g, const char *arch, an_model_config *c, an_error *err) {
    if (get_int(g, arch, "attention.head_count_kv", c->n_heads, 1, c->n_heads, &c->n_kv_heads, err)) return -1;
    if (c->n_heads % c->n_kv_heads != 0)
        return an_fail(err, "%s: %s.attention.head_count_kv (%d) does not divide head_count (%d)", g->path, arch,
                       c->n_kv_heads, c->n_heads);
    /* key_length is Hugging Face's head_dim where it differs from dim / heads */
    if (get_int(g, arch, "attention.key_length", c->dim / c->n_heads, 1, 65536, &c->head_dim, err)) return -1;
    int vlen = 0, rope_dims = 0, experts = 0;
    if (get_int(g, arch, "attention.value_length", c->head_dim, 1, 65536, &vlen, err) ||
        get_int(g, arch, "rope.dimension_count", c->head_dim, 1, 65536, &rope_dims, err) ||
        get_int(g, arch, "expert_count", 0, 0, 1 << 16, &experts, err))
        return -1;
    if (vlen != c->head_dim)
        return an_fail(err, "%s: %s.attention.value_length %d differs from key_length %d (not supported)", g->path, arch,
                       vlen, c->head_dim);
    if (rope_dims != c->head_dim)
        return an_fail(err, "%s: %s.rope.dimension_count %d is not the head size %d (partial RoPE is not supported)",
                       g->path, arch, rope_dims, c->head_dim);
    if (experts > 0)
        return an_fail(err, "%s: %s.expert_count is %d: mixture-of-experts models are not supported", g->path, arch,
                       experts);
    char key[128];
    const char *s;
    uint64_t len;
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    if (an_gguf_find_key(g, key)) { /* linear / yarn scaling would silently change every position */
        if (an_gguf_get_str(g, key, &s, &len, err)) return -1;
        if (!(len == 4 && memcmp(s, "none", 4) == 0))
            return an_fail(err, "%s: RoPE scaling \"%.*s\" is not supported", g->path, (int)(len < 32 ? len : 32), s);
    }
    double theta, eps;
    if (get_float(g, arch, "rope.freq_base", 10000.0, &theta, err) ||
        get_float(g, arch, "attention.layer_norm_rms_epsilon", 1e-5, &eps, err))
        return -1;
    c->rope_theta = (float)theta;
    c->norm_eps = (float)eps;
    /* llama's q/k rows are un-permuted while loading; qwen2's were never permuted (gguf_model.h) */
    c->rope_interleaved = 0;
    return 0;
}

/* The GGUF architectures that load, and what each is in Hugging Face's terms. The tensor names are
 * llama.cpp's standard ones for all three (gguf-py's TENSOR_NAMES); which of them a file has follows
 * from the model's parameters (a Qwen2 has q/k/v biases, a GPT-2 a fused attn_qkv and every bias). */
static const struct gguf_arch {
    const char *name; /* general.architecture */
    an_arch arch;
    const char *architecture, *model_type;
    int qkv_bias;
} ARCHS[] = {
    {"llama", AN_ARCH_LLAMA, "LlamaForCausalLM", "llama", 0}, /* attention_bias Llamas are not converted to GGUF */
    {"qwen2", AN_ARCH_LLAMA, "Qwen2ForCausalLM", "qwen2", 1}, /* q/k/v biases, none elsewhere */
    {"gpt2", AN_ARCH_GPT2, "GPT2LMHeadModel", "gpt2", 1},     /* every linear has a bias */
};

/* GPT-2's keys: no RoPE, no grouped heads, LayerNorm's epsilon. */
static int gpt2_config(const an_gguf *g, an_model_config *c, an_error *err) {
    double eps;
    if (get_float(g, "gpt2", "attention.layer_norm_epsilon", 1e-5, &eps, err)) return -1;
    c->norm_eps = (float)eps;
    c->n_kv_heads = c->n_heads;
    c->head_dim = c->dim / c->n_heads; /* an_config_validate rejects heads that do not divide dim */
    c->tie_embeddings = 1; /* output.weight, the converter's copy of token_embd, is checked while reading */
    c->o_bias = c->mlp_bias = c->proj_bias = 1;
    return 0;
}

int an_gguf_model_config(const an_gguf *g, an_model_config *c, an_error *err) {
    memset(c, 0, sizeof *c);
    const char *s;
    uint64_t len;
    if (an_gguf_get_str(g, "general.architecture", &s, &len, err)) return -1;
    char arch[64];
    snprintf(arch, sizeof arch, "%.*s", (int)(len < 63 ? len : 63), s);
    const struct gguf_arch *a = NULL;
    for (size_t i = 0; i < sizeof ARCHS / sizeof ARCHS[0]; i++)
        if (strlen(ARCHS[i].name) == len && memcmp(s, ARCHS[i].name, len) == 0) a = &ARCHS[i];
    if (!a)
        return an_fail(err, "%s: GGUF architecture \"%s\" is not supported (\"llama\", \"qwen2\" and \"gpt2\" load)",
                       g->path, arch);
    c->arch = a->arch;
    snprintf(c->architecture, sizeof c->architecture, "%s", a->architecture);
    snprintf(c->model_type, sizeof c->model_type, "%s", a->model_type);
    /* the same bounds as an_config_validate's, which runs after this; these only keep the ints exact */
    if (get_int(g, arch, "block_count", -1, 1, 4096, &c->n_layers, err) ||
        get_int(g, arch, "embedding_length", -1, 1, 1 << 20, &c->dim, err) ||
        get_int(g, arch, "feed_forward_length", -1, 1, 1 << 22, &c->ffn_dim, err) ||
        get_int(g, arch, "attention.head_count", -1, 1, 65536, &c->n_heads, err) ||
        get_int(g, arch, "context_length", 2048, 1, 1 << 24, &c->max_seq, err))
        return -1;
    if (c->arch == AN_ARCH_GPT2) {
        if (gpt2_config(g, c, err)) return -1;
    } else if (rope_config(g, arch, c, err))
        return -1;
    c->qkv_bias = a->qkv_bias;

    /* The vocabulary is token_embd's row count: the token list may be shorter (padded embeddings), never
     * longer, since a token without a row could not be run. */
    const an_gguf_tensor *emb = an_gguf_find_tensor(g, "token_embd.weight");
    if (!emb) return an_fail(err, "%s: tensor \"token_embd.weight\" is missing", g->path);
    if (emb->n_dims != 2 || emb->ne[0] != c->dim || emb->ne[1] < 1 || emb->ne[1] > 10000000)
        return an_fail(err, "%s: tensor \"token_embd.weight\" has ne [%lld, %lld], expected [%d, vocab]", g->path,
                       (long long)emb->ne[0], (long long)emb->ne[1], c->dim);
    c->vocab_size = (int)emb->ne[1];
    const an_gguf_kv *toks = an_gguf_find_key(g, "tokenizer.ggml.tokens");
    if (toks && toks->value.type == AN_GGUF_ARRAY && toks->value.v.arr.n > (uint64_t)c->vocab_size)
        return an_fail(err, "%s: the token list has %llu tokens but token_embd.weight only %d rows", g->path,
                       (unsigned long long)toks->value.v.arr.n, c->vocab_size);
    if (c->arch != AN_ARCH_GPT2) c->tie_embeddings = an_gguf_find_tensor(g, "output.weight") == NULL;
    c->bos_id = token_id(g, "tokenizer.ggml.bos_token_id", c->vocab_size);
    c->eos_id = token_id(g, "tokenizer.ggml.eos_token_id", c->vocab_size);
    c->pad_id = token_id(g, "tokenizer.ggml.padding_token_id", c->vocab_size);
    return 0;
}

/* llama.cpp's name for parameter p of m; rope: 1 for a llama file's attn_q / attn_k (rows to un-permute:
 * only the converter's LlamaModel permutes them; qwen2 runs ggml's NEOX rope on Hugging Face's rows). */
static int gguf_name(const an_model *m, const an_param *p, char *out, size_t n, int *rope) {
    *rope = 0;
    const struct { const an_param *p; const char *name; } global[] = {
        {m->tok_emb, "token_embd.weight"},       {m->pos_emb, "position_embd.weight"},
        {m->final_norm_w, "output_norm.weight"}, {m->final_norm_b, "output_norm.bias"},
        {m->lm_head, "output.weight"},
    };
    for (size_t k = 0; k < sizeof global / sizeof global[0]; k++)
        if (global[k].p == p) {
            snprintf(out, n, "%s", global[k].name);
            return 0;
        }
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const an_layer *L = &m->layers[l];
        const struct { const an_param *p; const char *name; } map[] = {
            {L->attn_norm_w, "attn_norm.weight"}, {L->attn_norm_b, "attn_norm.bias"},
            {L->wqkv, "attn_qkv.weight"},         {L->bqkv, "attn_qkv.bias"},
            {L->wq, "attn_q.weight"},             {L->bq, "attn_q.bias"},
            {L->wk, "attn_k.weight"},             {L->bk, "attn_k.bias"},
            {L->wv, "attn_v.weight"},             {L->bv, "attn_v.bias"},
            {L->wo, "attn_output.weight"},        {L->bo, "attn_output.bias"},
            {L->ffn_norm_w, "ffn_norm.weight"},   {L->ffn_norm_b, "ffn_norm.bias"},
            {L->w_gate, "ffn_gate.weight"},       {L->b_gate, "ffn_gate.bias"},
            {L->w_up, "ffn_up.weight"},           {L->b_up, "ffn_up.bias"},
            {L->w_down, "ffn_down.weight"},       {L->b_down, "ffn_down.bias"},
        };
        for (size_t k = 0; k < sizeof map / sizeof map[0]; k++)
            if (map[k].p && map[k].p == p) {
                *rope = (p == L->wq || p == L->wk) && strcmp(m->cfg.model_type, "llama") == 0;
                snprintf(out, n, "blk.%d.%s", l, map[k].name);
                return 0;
            }
    }
    return -1; /* a parameter GGUF files do not have */
}

/* A GPT-2 file's output.weight: convert_hf_to_gguf.py writes a copy of token_embd there (ggml's gpt2
 * graph reads output), and autoneg's GPT-2 has a tied head, so it must be that copy. buf, tmp: room for
 * token_embd. */
static int check_gpt2_output(const an_gguf *g, const an_gguf_tensor *out, float *buf, float *tmp, an_error *err) {
    const an_gguf_tensor *emb = an_gguf_find_tensor(g, "token_embd.weight");
    if (out->n_dims != 2 || out->ne[0] != emb->ne[0] || out->ne[1] != emb->ne[1])
        return an_fail(err, "%s: tensor \"output.weight\" has %d dims, ne [%lld, %lld], expected ne [%lld, %lld] (token_embd's)",
                       g->path, out->n_dims, (long long)out->ne[0], (long long)out->ne[1], (long long)emb->ne[0],
                       (long long)emb->ne[1]);
    if (an_gguf_tensor_to_f32(g, emb, buf, err) || an_gguf_tensor_to_f32(g, out, tmp, err)) return -1;
    size_t n = (size_t)emb->ne[0] * (size_t)emb->ne[1];
    if (memcmp(buf, tmp, n * sizeof(float)) != 0)
        return an_fail(err, "%s: tensor \"output.weight\" differs from token_embd.weight: a GPT-2 with an untied "
                            "output head is not supported", g->path);
    return 0;
}

/* The GGUF tensor of parameter p when its shape is p's (NULL otherwise: read_weights says why). */
static const an_gguf_tensor *tensor_of(const an_model *m, const an_gguf *g, const an_param *p, int *rope) {
    char name[96];
    if (gguf_name(m, p, name, sizeof name, rope)) return NULL;
    const an_gguf_tensor *t = an_gguf_find_tensor(g, name);
    if (!t || p->ndim != 2 || t->n_dims != 2 || t->ne[0] != p->shape[1] || t->ne[1] != p->shape[0]) return NULL;
    return t;
}

/* Whether m's backend runs weights of dtype t (its typed linear ops and lookup). */
static int backend_runs(const an_model *m, an_dtype t) {
    const an_ops *o = m->ops;
    return o->supports(o, AN_OP_linear_forward, t) && o->supports(o, AN_OP_linear_backward_input, t) &&
           o->supports(o, AN_OP_embedding_lookup, t);
}

/* The kept weights, built in host memory (stage, total bytes), moved to the memory of m's device
 * backend: one allocation, each parameter's blocks at the same offset. */
static int stage_to_device(an_model *m, uint8_t *stage, size_t total, const char *path, an_error *err) {
    const an_ops *o = m->ops;
    uint8_t *dev = o->alloc(o, total);
    if (!dev)
        return an_fail(err, "%s: cannot allocate %.1f MiB on %s for the quantized weights", path,
                       (double)total / 1048576, o->name);
    o->upload(o, dev, stage, total);
    for (int i = 0; i < m->n_params; i++)
        if (an_param_ggml(&m->params[i])) m->params[i].packed = dev + (an_param_ggml(&m->params[i]) - stage);
    m->ggml_mem = dev;
    m->ggml_bytes = total;
    return 0;
}

/* How parameter p keeps GGUF tensor t: its block type (interleaved below where the CPU has a layout
 * for it), AN_F32_X32 for a float32 matrix of whole 32-row panels, or 0 (read as float32). Only the
 * weights the typed ops read (linear layers, the token embedding) are kept; GPT-2's position table is
 * read as plain floats. */
static an_dtype kept_dtype(const an_model *m, const an_gguf_tensor *t, const an_param *p) {
    if (p == m->pos_emb) return (an_dtype)0;
    if (t->type == AN_GGML_F32) return p->shape[0] % AN_X32_ROWS == 0 ? AN_F32_X32 : (an_dtype)0;
    return an_ggml_type_dtype(t->type);
}

/* each kept tensor starts on a cache line of ggml_mem (and so a float32 panel on a float) */
static size_t kept_bytes(const an_gguf_tensor *t) { return (t->nbytes + 63) & ~(size_t)63; }

int an_gguf_model_keep_quantized(an_model *m, const an_gguf *g, an_error *err) {
    const an_gguf_tensor **src = calloc((size_t)m->n_params + 1, sizeof *src);
    int *rope = calloc((size_t)m->n_params + 1, sizeof *rope);
    float *row = NULL;
    uint8_t *stage = NULL;
    int on_cpu = m->ops->device == AN_DEVICE_CPU;
    size_t total = 0, maxcols = 1;
    int rc = -1;
    if (!src || !rope) {
        an_fail(err, "%s: out of memory while loading", g->path);
        goto done;
    }
    for (int i = 0; i < m->n_params; i++) {
        an_param *p = &m->params[i];
        const an_gguf_tensor *t = p->dtype == AN_F32 ? tensor_of(m, g, p, &rope[i]) : NULL;
        an_dtype dt = t ? kept_dtype(m, t, p) : (an_dtype)0;
        if (!dt || p->shape[1] % an_dtype_block(dt) || !backend_runs(m, dt)) continue;
        /* a GPT-2 file's output.weight copy is checked against token_embd by read_weights */
        src[i] = t;
        total += kept_bytes(t);
        if ((size_t)p->shape[1] > maxcols) maxcols = (size_t)p->shape[1];
    }
    if (!total) {
        rc = 0;
        goto done;
    }
    /* the CPU reads the blocks where they are built (2 MiB pages: decoding streams them every token); a
     * device backend gets them uploaded at the end */
    stage = an_cpu_alloc_uninit(total);
    if (on_cpu) {
        m->ggml_mem = stage;
        m->ggml_bytes = stage ? total : 0;
    }
    row = malloc(maxcols * sizeof(float));
    if (!stage || !row) {
        an_fail(err, "%s: cannot allocate %.1f MiB for the quantized weights", g->path, (double)total / 1048576);
        goto done;
    }
    size_t off = 0;
    for (int i = 0; i < m->n_params; i++) {
        if (!src[i]) continue;
        an_param *p = &m->params[i];
        const an_gguf_tensor *t = src[i];
        an_dtype dt = kept_dtype(m, t, p);
        int64_t rows = p->shape[0], cols = p->shape[1];
        size_t rb = t->nbytes / (size_t)rows;
        uint8_t *dst = stage + off;
        for (int64_t r = 0; r < rows; r++) {
            /* llama.cpp's q/k row permutation undone on whole rows of blocks (as an_llama2c_permute_qk
             * does on floats): row h*hd + j*hd/2 + k holds the file's row h*hd + 2k + j */
            int64_t from = r;
            if (rope[i]) {
                int hd = m->cfg.head_dim, half = hd / 2;
                int64_t h = r / hd, j = (r % hd) / half, k = r % half;
                from = h * hd + 2 * k + j;
            }
            const uint8_t *s = (const uint8_t *)t->data + (size_t)from * rb;
            /* the values must be finite, as read_weights requires of every tensor */
            if (an_ggml_dequantize(t->type, s, row, cols, err)) goto done;
            for (int64_t c = 0; c < cols; c++)
                if (!isfinite(row[c])) {
                    an_fail(err, "%s: tensor \"%s\" holds a NaN or infinite value (first at element %lld)", g->path,
                            t->name, (long long)(from * cols + c));
                    goto done;
                }
            if (dt == AN_F32_X32) an_f32x32_put_row((float *)(void *)dst, cols, r, row);
            else memcpy(dst + (size_t)r * rb, s, rb);
        }
        p->dtype = dt;
        if (on_cpu && an_dtype_x8_of(p->dtype) && rows % 8 == 0) {
            /* eight rows interleaved: the layout the CPU's decoding kernels read fastest (cpu_quant.h) */
            uint8_t *group = malloc(8 * rb);
            if (!group) {
                an_fail(err, "%s: out of memory while loading", g->path);
                goto done;
            }
            for (int64_t r = 0; r < rows; r += 8) {
                memcpy(group, dst + (size_t)r * rb, 8 * rb);
                an_q_x8_repack(p->dtype, group, (int)(cols / 32), dst + (size_t)r * rb);
            }
            free(group);
            p->dtype = an_dtype_x8_of(p->dtype);
        }
        p->packed = dst;
        p->data = NULL;
        p->trainable = 0;
        off += kept_bytes(t);
    }
    if (!on_cpu && stage_to_device(m, stage, total, g->path, err)) goto done;
    rc = 0;
done:
    free(src);
    free(rope);
    if (!on_cpu) an_cpu_free(stage);
    free(row);
    return rc;
}

int an_gguf_model_read_weights(an_model *m, const an_gguf *g, an_error *err) {
    size_t maxn = 1;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].numel > maxn) maxn = m->params[i].numel;
    float *buf = malloc(maxn * sizeof(float)), *tmp = malloc(maxn * sizeof(float));
    char *used = calloc((size_t)g->n_tensors + 1, 1);
    int rc = -1;
    if (!buf || !tmp || !used) {
        an_fail(err, "%s: out of memory while loading", g->path);
        goto done;
    }
    for (int i = 0; i < m->n_params; i++) {
        an_param *p = &m->params[i];
        char name[96];
        int rope;
        if (gguf_name(m, p, name, sizeof name, &rope)) {
            an_fail(err, "%s: the model needs %s, which has no GGUF name in a %s file", g->path, p->name,
                    m->cfg.model_type);
            goto done;
        }
        const an_gguf_tensor *t = an_gguf_find_tensor(g, name);
        if (!t) {
            an_fail(err, "%s: tensor \"%s\" is missing", g->path, name);
            goto done;
        }
        used[t - g->tensors] = 1;
        if (an_param_ggml(p)) continue; /* kept in its blocks by an_gguf_model_keep_quantized */
        /* ggml order: ne[0] is the row length */
        int64_t rows = p->shape[0], cols = p->ndim == 2 ? p->shape[1] : 1;
        int ok = p->ndim == 2 ? t->n_dims == 2 && t->ne[0] == cols && t->ne[1] == rows : t->n_dims == 1 && t->ne[0] == rows;
        if (!ok) {
            if (p->ndim == 2)
                an_fail(err, "%s: tensor \"%s\" has %d dims, ne [%lld, %lld], expected ne [%lld, %lld]", g->path, name,
                        t->n_dims, (long long)t->ne[0], (long long)t->ne[1], (long long)cols, (long long)rows);
            else
                an_fail(err, "%s: tensor \"%s\" has %d dims, ne[0] %lld, expected a vector of %lld", g->path, name,
                        t->n_dims, (long long)t->ne[0], (long long)rows);
            goto done;
        }
        float *dst = rope ? tmp : buf;
        if (an_gguf_tensor_to_f32(g, t, dst, err)) goto done;
        for (size_t k = 0; k < p->numel; k++)
            if (!isfinite(dst[k])) {
                an_fail(err, "%s: tensor \"%s\" holds a NaN or infinite value (first at element %zu)", g->path, name, k);
                goto done;
            }
        /* llama.cpp's permute took Hugging Face's rotate-half rows (i, i + d/2) of each head to adjacent
         * pairs (2i, 2i+1), the layout llama2.c uses too: the same inverse brings them back */
        if (rope) an_llama2c_permute_qk(buf, tmp, (int)(rows / m->cfg.head_dim), m->cfg.head_dim, (int)cols);
        m->ops->upload(m->ops, p->data, buf, p->numel * sizeof(float));
    }
    const an_gguf_tensor *out = an_gguf_find_tensor(g, "output.weight");
    if (m->cfg.arch == AN_ARCH_GPT2 && out) {
        if (check_gpt2_output(g, out, buf, tmp, err)) goto done;
        used[out - g->tensors] = 1;
    }
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (!used[i]) {
            an_fail(err, "%s: unexpected tensor \"%s\" (not part of a %s model with this config)", g->path,
                    g->tensors[i].name, m->cfg.model_type);
            goto done;
        }
    rc = 0;
done:
    free(buf);
    free(tmp);
    free(used);
    return rc;
}
