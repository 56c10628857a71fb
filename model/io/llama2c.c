/* llama2.c .bin checkpoints as a view with Hugging Face Llama tensor names.
 * Version 0 (legacy): int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative
 * vocab_size means the classifier is stored separately at the end. Version 1: uint32 magic "ak42", int32
 * version, the same 7 int32, a uint8 "classifier shared" flag, zero padding to 256 bytes. Both store fp32
 * tensors one kind at a time across all layers, in the orders listed below. */
#include "model/io/llama2c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AK42_MAGIC 0x616b3432u
#define V1_HEADER 256

typedef enum { EMB, ATT_NORM, WQ, WK, WV, WO, FFN_NORM, W1, W2, W3, FINAL_NORM, FREQS, CLS } part;

/* The storage order of each version (CLS only when the classifier is not shared). */
static const part order_v0[] = {EMB, ATT_NORM, WQ, WK, WV, WO, FFN_NORM, W1, W2, W3, FINAL_NORM, FREQS, CLS};
static const part order_v1[] = {ATT_NORM, FFN_NORM, FINAL_NORM, EMB, WQ, WK, WV, WO, W1, W2, W3, CLS};

typedef struct hp {
    int64_t dim, hidden, layers, heads, kv_heads, vocab, seq, kv_dim, head_size;
    int shared;
} hp;

/* Per-layer name (with %d) or global name, and [rows, cols] (cols 0 for a vector). */
static const char *part_name(part p) {
    switch (p) {
    case EMB: return "model.embed_tokens.weight";
    case ATT_NORM: return "model.layers.%d.input_layernorm.weight";
    case WQ: return "model.layers.%d.self_attn.q_proj.weight";
    case WK: return "model.layers.%d.self_attn.k_proj.weight";
    case WV: return "model.layers.%d.self_attn.v_proj.weight";
    case WO: return "model.layers.%d.self_attn.o_proj.weight";
    case FFN_NORM: return "model.layers.%d.post_attention_layernorm.weight";
    case W1: return "model.layers.%d.mlp.gate_proj.weight";
    case W2: return "model.layers.%d.mlp.down_proj.weight";
    case W3: return "model.layers.%d.mlp.up_proj.weight";
    case FINAL_NORM: return "model.norm.weight";
    case CLS: return "lm_head.weight";
    case FREQS: return NULL;
    }
    return NULL;
}

static void part_shape(const hp *h, part p, int64_t *rows, int64_t *cols) {
    *cols = 0;
    switch (p) {
    case EMB: case CLS: *rows = h->vocab; *cols = h->dim; break;
    case ATT_NORM: case FFN_NORM: case FINAL_NORM: *rows = h->dim; break;
    case WQ: case WO: *rows = h->dim; *cols = h->dim; break;
    case WK: case WV: *rows = h->kv_dim; *cols = h->dim; break;
    case W1: case W3: *rows = h->hidden; *cols = h->dim; break;
    case W2: *rows = h->dim; *cols = h->hidden; break;
    case FREQS: *rows = h->seq * h->head_size; break; /* cos and sin tables, seq * head_size / 2 each */
    }
}

static int per_layer(part p) { return p != EMB && p != FINAL_NORM && p != CLS && p != FREQS; }

static int check_header(const hp *h, const char *path, an_error *err) {
    const struct { const char *name; int64_t v, hi; } f[] = {
        {"dim", h->dim, 1 << 17},        {"hidden_dim", h->hidden, 1 << 20}, {"n_layers", h->layers, 1024},
        {"n_heads", h->heads, h->dim},   {"n_kv_heads", h->kv_heads, h->heads}, {"vocab_size", h->vocab, 10000000},
        {"seq_len", h->seq, 1 << 24},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].v <= 0 || f[i].v > f[i].hi)
            return an_fail(err, "%s: llama2.c header: %s = %lld is absurd (expected 1..%lld); not a llama2.c checkpoint?",
                           path, f[i].name, (long long)f[i].v, (long long)f[i].hi);
    if (h->dim % h->heads != 0)
        return an_fail(err, "%s: llama2.c header: n_heads %lld does not divide dim %lld", path, (long long)h->heads,
                       (long long)h->dim);
    if (h->heads % h->kv_heads != 0)
        return an_fail(err, "%s: llama2.c header: n_kv_heads %lld does not divide n_heads %lld", path,
                       (long long)h->kv_heads, (long long)h->heads);
    return 0;
}

static int32_t rd_i32(const unsigned char *p) {
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    int32_t v;
    memcpy(&v, &u, 4);
    return v;
}

static int tensor_name_cmp(const void *a, const void *b) {
    return strcmp(((const an_st_tensor *)a)->name, ((const an_st_tensor *)b)->name);
}

/* Walks the file in storage order, adding one tensor per (part, layer). */
static int build_view(an_safetensors *st, const hp *h, const part *order, size_t n_order, size_t offset,
                      const char *path, an_error *err) {
    const unsigned char *base = st->files[0].data;
    st->tensors = calloc((size_t)(9 * h->layers + 3), sizeof *st->tensors);
    if (!st->tensors) return an_fail(err, "%s: out of memory", path);
    for (size_t k = 0; k < n_order; k++) {
        part p = order[k];
        if (p == CLS && h->shared) continue;
        int64_t rows, cols;
        part_shape(h, p, &rows, &cols);
        size_t nbytes = (size_t)(rows * (cols ? cols : 1)) * 4;
        if (p == FREQS) {
            offset += nbytes;
            continue;
        }
        for (int64_t l = 0; l < (per_layer(p) ? h->layers : 1); l++) {
            an_st_tensor *t = &st->tensors[st->n_tensors];
            char name[96];
            snprintf(name, sizeof name, part_name(p), (int)l); /* global names have no %d: the argument is unused */
            size_t n = strlen(name) + 1;
            if (!(t->name = malloc(n))) return an_fail(err, "%s: out of memory", path);
            memcpy(t->name, name, n);
            st->n_tensors++;
            t->dtype = AN_F32;
            t->ndim = cols ? 2 : 1;
            t->shape[0] = rows;
            t->shape[1] = cols;
            t->data = base + offset;
            t->nbytes = nbytes;
            t->shard = 0;
            offset += nbytes;
        }
    }
    qsort(st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, tensor_name_cmp);
    return 0;
}

/* Bytes of tensor data the header promises (checked header values keep this far from overflow). */
static uint64_t payload_bytes(const hp *h, const part *order, size_t n_order) {
    uint64_t total = 0;
    for (size_t k = 0; k < n_order; k++) {
        if (order[k] == CLS && h->shared) continue;
        int64_t rows, cols;
        part_shape(h, order[k], &rows, &cols);
        total += (uint64_t)rows * (uint64_t)(cols ? cols : 1) * 4 * (uint64_t)(per_layer(order[k]) ? h->layers : 1);
    }
    return total;
}

static int open_mapped(an_model_config *c, an_safetensors *st, const char *path, an_error *err) {
    const unsigned char *d = st->files[0].data;
    uint64_t size = st->files[0].size;
    if (size < 28) return an_fail(err, "%s: %llu bytes, too short for a llama2.c header", path, (unsigned long long)size);
    hp h;
    memset(&h, 0, sizeof h);
    int version = 0;
    size_t header = 28;
    int32_t raw[7];
    if ((uint32_t)rd_i32(d) == AK42_MAGIC) {
        if (size < V1_HEADER) return an_fail(err, "%s: %llu bytes, too short for a llama2.c version-1 header", path,
                                             (unsigned long long)size);
        version = rd_i32(d + 4);
        if (version != 1)
            return an_fail(err, "%s: llama2.c format version %d is not supported (only the fp32 versions 0 and 1)", path,
                           version);
        for (int i = 0; i < 7; i++) raw[i] = rd_i32(d + 8 + 4 * i);
        if (d[36] > 1) return an_fail(err, "%s: llama2.c header: shared_classifier flag is %d", path, d[36]);
        h.shared = d[36];
        header = V1_HEADER;
    } else {
        for (int i = 0; i < 7; i++) raw[i] = rd_i32(d + 4 * i);
        /* version 0: a negative vocab_size says the classifier is stored (not shared) */
        h.shared = raw[5] > 0;
        if (raw[5] < 0 && raw[5] != INT32_MIN) raw[5] = -raw[5];
    }
    h.dim = raw[0];
    h.hidden = raw[1];
    h.layers = raw[2];
    h.heads = raw[3];
    h.kv_heads = raw[4];
    h.vocab = raw[5];
    h.seq = raw[6];
    if (check_header(&h, path, err) != 0) return -1;
    h.head_size = h.dim / h.heads;
    h.kv_dim = h.dim * h.kv_heads / h.heads;
    const part *order = version == 0 ? order_v0 : order_v1;
    size_t n_order = version == 0 ? sizeof order_v0 / sizeof order_v0[0] : sizeof order_v1 / sizeof order_v1[0];
    uint64_t want = header + payload_bytes(&h, order, n_order);
    if (size != want)
        return an_fail(err, "%s: file is %llu bytes but its llama2.c header (dim %lld, hidden_dim %lld, n_layers %lld, "
                            "n_heads %lld, n_kv_heads %lld, vocab_size %lld%s, seq_len %lld) needs %llu%s",
                       path, (unsigned long long)size, (long long)h.dim, (long long)h.hidden, (long long)h.layers,
                       (long long)h.heads, (long long)h.kv_heads, (long long)h.vocab, h.shared ? "" : ", own classifier",
                       (long long)h.seq, (unsigned long long)want, size < want ? " (truncated file?)" : "");
    if (build_view(st, &h, order, n_order, header, path, err) != 0) return -1;

    memset(c, 0, sizeof *c);
    c->arch = AN_ARCH_LLAMA;
    snprintf(c->architecture, sizeof c->architecture, "LlamaForCausalLM");
    snprintf(c->model_type, sizeof c->model_type, "llama");
    snprintf(c->torch_dtype, sizeof c->torch_dtype, "float32");
    c->vocab_size = (int)h.vocab;
    c->dim = (int)h.dim;
    c->n_layers = (int)h.layers;
    c->n_heads = (int)h.heads;
    c->n_kv_heads = (int)h.kv_heads;
    c->head_dim = (int)h.head_size;
    c->ffn_dim = (int)h.hidden;
    c->max_seq = (int)h.seq;
    c->norm_eps = 1e-5f;      /* llama2.c's model.py and run.c */
    c->rope_theta = 10000.0f; /* likewise */
    c->rope_interleaved = 1;
    c->tie_embeddings = h.shared;
    /* the llama2.c (sentencepiece) tokenizers: 0 <unk>, 1 BOS, 2 EOS */
    c->bos_id = h.vocab > 1 ? 1 : -1;
    c->eos_id = h.vocab > 2 ? 2 : -1;
    c->pad_id = -1;
    return an_config_validate(c, path, err);
}

int an_llama2c_open(an_model_config *c, an_safetensors *st, const char *path, an_error *err) {
    memset(st, 0, sizeof *st);
    if (an_st_add_file(st, path, err) != 0 || open_mapped(c, st, path, err) != 0) {
        an_st_close(st);
        return -1;
    }
    return 0;
}

void an_llama2c_permute_qk(float *dst, const float *src, int n_heads, int head_dim, int cols) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++)
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < half; i++) {
                /* new row j*half + i holds old row 2i + j: pair member j of rotation pair i */
                const float *s = src + ((size_t)h * head_dim + 2 * i + j) * cols;
                float *d = dst + ((size_t)h * head_dim + j * half + i) * cols;
                memcpy(d, s, (size_t)cols * sizeof *d);
            }
}
