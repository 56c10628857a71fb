/* GGUF writer for llama-family models (see gguf_write.h). */
#include "model/io/gguf_write.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "model/io/gguf.h"

#define ALIGN 32 /* GGUF's default alignment; written as general.alignment too */

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

/* ---- little-endian output; the first write error sticks in w->failed (checked once at the end) ---- */
typedef struct wr {
    FILE *f;
    uint64_t pos;
    int failed;
} wr;

static void put(wr *w, const void *p, size_t n) {
    if (w->failed || !n) return;
    if (fwrite(p, 1, n, w->f) != n) w->failed = errno ? errno : EIO;
    w->pos += n;
}

static void put_le(wr *w, uint64_t v, int bytes) {
    unsigned char b[8];
    for (int i = 0; i < bytes; i++) b[i] = (unsigned char)(v >> (8 * i));
    put(w, b, (size_t)bytes);
}

static void put_str(wr *w, const char *s, uint64_t len) {
    put_le(w, len, 8);
    put(w, s, (size_t)len);
}

static void put_key(wr *w, const char *key, an_gguf_type t) {
    put_str(w, key, strlen(key));
    put_le(w, (uint32_t)t, 4);
}

static void kv_u32(wr *w, const char *key, uint32_t v) {
    put_key(w, key, AN_GGUF_U32);
    put_le(w, v, 4);
}

static void kv_f32(wr *w, const char *key, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    put_key(w, key, AN_GGUF_F32);
    put_le(w, u, 4);
}

static void kv_str(wr *w, const char *key, const char *s) {
    put_key(w, key, AN_GGUF_STRING);
    put_str(w, s, strlen(s));
}

static int scalar_bytes(an_gguf_type t) {
    switch (t) {
    case AN_GGUF_U8: case AN_GGUF_I8: case AN_GGUF_BOOL: return 1;
    case AN_GGUF_U16: case AN_GGUF_I16: return 2;
    case AN_GGUF_U32: case AN_GGUF_I32: case AN_GGUF_F32: return 4;
    case AN_GGUF_U64: case AN_GGUF_I64: case AN_GGUF_F64: return 8;
    default: return 0;
    }
}

/* A value's payload (without its type), re-encoded from the reader's decoded form, so what is copied is
 * exactly what the reader checked. */
static void put_value(wr *w, const an_gguf_value *v) {
    int nb = scalar_bytes(v->type);
    if (v->type == AN_GGUF_F32) {
        float f = (float)v->v.f; /* widened exactly when read */
        uint32_t u;
        memcpy(&u, &f, 4);
        put_le(w, u, 4);
    } else if (v->type == AN_GGUF_F64) {
        uint64_t u;
        memcpy(&u, &v->v.f, 8);
        put_le(w, u, 8);
    } else if (v->type == AN_GGUF_I8 || v->type == AN_GGUF_I16 || v->type == AN_GGUF_I32 || v->type == AN_GGUF_I64) {
        put_le(w, (uint64_t)v->v.i, nb);
    } else if (nb) {
        put_le(w, v->v.u, nb);
    } else if (v->type == AN_GGUF_STRING) {
        put_str(w, v->v.str.ptr, v->v.str.len);
    } else if (v->type == AN_GGUF_ARRAY) {
        put_le(w, (uint32_t)v->v.arr.elem, 4);
        put_le(w, v->v.arr.n, 8);
        for (uint64_t i = 0; i < v->v.arr.n; i++) {
            an_gguf_value e;
            if (an_gguf_array_get(v, i, &e)) {
                w->failed = EINVAL;
                return;
            }
            put_value(w, &e);
        }
    }
}

/* The keys copied from a source GGUF: its tokenizer and chat template. */
static int is_tokenizer_key(const char *k) { return strncmp(k, "tokenizer.", 10) == 0; }

/* ---- the tensors ---- */
typedef struct wtensor {
    char name[64];
    const an_param *p;
    int rope;            /* attn_q / attn_k: rows permuted for ggml's rope */
    int n_dims;
    int64_t ne[2];       /* ggml order: ne[0] is the row length */
    uint32_t type;
    uint64_t offset;     /* in the data section */
    size_t nbytes;
} wtensor;

static void add(wtensor *t, int *n, const an_param *p, const char *name, int rope, uint32_t type) {
    wtensor *e = &t[(*n)++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->p = p;
    e->rope = rope;
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

/* Hugging Face rotate-half rows -> ggml's adjacent pairs: row (h, j * half + i) goes to row (h, 2i + j)
 * (convert_hf_to_gguf.py's LlamaModel.permute; the inverse of an_llama2c_permute_qk). */
static void permute_for_gguf(float *dst, const float *src, int n_heads, int head_dim, int64_t cols) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++)
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < half; i++)
                memcpy(dst + ((size_t)h * head_dim + 2 * i + j) * (size_t)cols,
                       src + ((size_t)h * head_dim + j * half + i) * (size_t)cols, (size_t)cols * sizeof *dst);
}

/* Refuses what this writer cannot express as a llama GGUF, naming the family. */
static int check_family(const an_model *m, const char *path, an_error *err) {
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
    if (m->lora) return an_fail(err, "%s: the model has a LoRA adapter attached; merge it first (an_lora_merge)", path);
    if (c->head_dim % 2) return an_fail(err, "%s: head size %d is odd (RoPE needs pairs)", path, c->head_dim);
    return 0;
}

int an_gguf_write_model(const an_model *m, const char *path, const an_gguf_write_opts *o, an_error *err) {
    const an_model_config *c = &m->cfg;
    if (check_family(m, path, err)) return -1;
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
    uint64_t off = 0;
    size_t maxn = 1, maxbytes = 1;
    for (int i = 0; i < n; i++) {
        ts[i].offset = off;
        off += (ts[i].nbytes + ALIGN - 1) / ALIGN * ALIGN;
        if (ts[i].p->numel > maxn) maxn = ts[i].p->numel;
        if (ts[i].nbytes > maxbytes) maxbytes = ts[i].nbytes;
    }

    an_gguf src;
    int have_src = 0, rc = -1;
    float *host = NULL, *tmp = NULL;
    unsigned char *bytes = NULL;
    FILE *f = NULL;
    char tmp_path[4096];
    if (o->tokenizer) {
        if (an_gguf_open(&src, o->tokenizer, err)) goto done;
        have_src = 1;
    }
    host = malloc(maxn * sizeof(float));
    tmp = malloc(maxn * sizeof(float));
    bytes = malloc(maxbytes);
    if (!host || !tmp || !bytes) {
        an_fail(err, "%s: out of memory", path);
        goto done;
    }
    if (snprintf(tmp_path, sizeof tmp_path, "%s.tmp", path) >= (int)sizeof tmp_path) {
        an_fail(err, "%s: path too long", path);
        goto done;
    }
    if (!(f = fopen(tmp_path, "wb"))) {
        an_fail(err, "%s: cannot create %s: %s", path, tmp_path, strerror(errno));
        goto done;
    }
    wr w = {f, 0, 0};

    int64_t n_kv = 16 + (c->head_dim * c->n_heads != c->dim ? 2 : 0);
    if (have_src)
        for (int64_t i = 0; i < src.n_kv; i++) n_kv += is_tokenizer_key(src.kvs[i].key);
    put(&w, "GGUF", 4);
    put_le(&w, 3, 4);
    put_le(&w, (uint64_t)n, 8);
    put_le(&w, (uint64_t)n_kv, 8);
    /* the converter's order: general.*, the hyperparameters, file type, then the tokenizer */
    kv_str(&w, "general.architecture", "llama");
    kv_str(&w, "general.type", "model");
    kv_str(&w, "general.name", o->name ? o->name : "autoneg export");
    kv_u32(&w, "general.alignment", ALIGN);
    kv_u32(&w, "llama.block_count", (uint32_t)c->n_layers);
    kv_u32(&w, "llama.context_length", (uint32_t)c->max_seq);
    kv_u32(&w, "llama.embedding_length", (uint32_t)c->dim);
    kv_u32(&w, "llama.feed_forward_length", (uint32_t)c->ffn_dim);
    kv_u32(&w, "llama.attention.head_count", (uint32_t)c->n_heads);
    kv_u32(&w, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads);
    kv_f32(&w, "llama.rope.freq_base", c->rope_theta);
    kv_f32(&w, "llama.attention.layer_norm_rms_epsilon", c->norm_eps);
    if (c->head_dim * c->n_heads != c->dim) { /* the converter writes these where head_dim is explicit */
        kv_u32(&w, "llama.attention.key_length", (uint32_t)c->head_dim);
        kv_u32(&w, "llama.attention.value_length", (uint32_t)c->head_dim);
    }
    kv_u32(&w, "general.file_type", file_type(o->type));
    kv_u32(&w, "llama.vocab_size", (uint32_t)c->vocab_size);
    kv_u32(&w, "llama.rope.dimension_count", (uint32_t)c->head_dim);
    kv_u32(&w, "general.quantization_version", 2); /* GGML_QNT_VERSION, which the converter always writes */
    if (have_src)
        for (int64_t i = 0; i < src.n_kv; i++)
            if (is_tokenizer_key(src.kvs[i].key)) {
                put_key(&w, src.kvs[i].key, src.kvs[i].value.type);
                put_value(&w, &src.kvs[i].value);
            }
    for (int i = 0; i < n; i++) {
        put_str(&w, ts[i].name, strlen(ts[i].name));
        put_le(&w, (uint32_t)ts[i].n_dims, 4);
        for (int d = 0; d < ts[i].n_dims; d++) put_le(&w, (uint64_t)ts[i].ne[d], 8);
        put_le(&w, ts[i].type, 4);
        put_le(&w, ts[i].offset, 8);
    }
    static const unsigned char zeros[ALIGN];
    put(&w, zeros, (size_t)((ALIGN - w.pos % ALIGN) % ALIGN));
    for (int i = 0; i < n && !w.failed; i++) {
        const wtensor *t = &ts[i];
        an_model_export(m, t->p, t->p->data, host, tmp); /* Hugging Face layout, float32, on the host */
        float *vals = host;
        if (t->rope) {
            permute_for_gguf(tmp, host, (int)(t->ne[1] / c->head_dim), c->head_dim, t->ne[0]);
            vals = tmp;
        }
        if (an_ggml_quantize(t->type, vals, bytes, (int64_t)t->p->numel, err)) goto done;
        put(&w, bytes, t->nbytes);
        put(&w, zeros, (size_t)((ALIGN - t->nbytes % ALIGN) % ALIGN));
    }
    if (!w.failed && fflush(f) != 0) w.failed = errno ? errno : EIO;
    if (!w.failed && fsync(fileno(f)) != 0) w.failed = errno ? errno : EIO;
    if (fclose(f) != 0 && !w.failed) w.failed = errno ? errno : EIO;
    f = NULL;
    if (w.failed) {
        an_fail(err, "%s: write failed: %s", path, w.failed == EINVAL ? "a tokenizer value could not be read"
                                                                       : strerror(w.failed));
        unlink(tmp_path);
        goto done;
    }
    if (rename(tmp_path, path) != 0) {
        an_fail(err, "%s: cannot rename %s into place: %s", path, tmp_path, strerror(errno));
        unlink(tmp_path);
        goto done;
    }
    rc = 0;
done:
    if (f) {
        fclose(f);
        unlink(tmp_path);
    }
    if (have_src) an_gguf_close(&src);
    free(host);
    free(tmp);
    free(bytes);
    free(ts);
    return rc;
}
