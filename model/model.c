/* The model as data: which tensors each family has, their names and shapes, and the one allocation
 * that holds them (and the one that holds the gradients of the trainable ones). */
#include "model/model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/f32x32.h"
#include "kernels/nf4.h"
#include "kernels/quant_x8.h"
#include "model/io/llama2c.h"
#include "model/lora.h"
#include "model/nf4_weights.h"
#include "model/io/gguf_quants.h"
#include "model/io/safetensors.h"

/* Tensors start on 64-byte boundaries so vector loads never straddle two tensors. */
#define AN_PARAM_ALIGN 16

static size_t align_floats(size_t n) { return (n + AN_PARAM_ALIGN - 1) / AN_PARAM_ALIGN * AN_PARAM_ALIGN; }

typedef struct builder {
    an_model *m;
    int cap;
} builder;

static an_param *add(builder *b, int64_t d0, int64_t d1, int transposed, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static an_param *add(builder *b, int64_t d0, int64_t d1, int transposed, const char *fmt, ...) {
    an_param *p = &b->m->params[b->m->n_params++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->name, sizeof p->name, fmt, ap);
    va_end(ap);
    p->ndim = d1 > 0 ? 2 : 1;
    p->shape[0] = d0;
    p->shape[1] = d1 > 0 ? d1 : 0;
    p->numel = (size_t)d0 * (size_t)(d1 > 0 ? d1 : 1);
    p->dtype = AN_F32;
    p->transposed = transposed;
    p->trainable = 1;
    return p;
}

static void build_gpt2(builder *b) {
    an_model *m = b->m;
    const an_model_config *c = &m->cfg;
    int C = c->dim, qkvd = (c->n_heads + 2 * c->n_kv_heads) * c->head_dim, qd = c->n_heads * c->head_dim;
    m->tok_emb = add(b, c->vocab_size, C, 0, "transformer.wte.weight");
    m->pos_emb = add(b, c->max_seq, C, 0, "transformer.wpe.weight");
    for (int l = 0; l < c->n_layers; l++) {
        an_layer *L = &m->layers[l];
        L->attn_norm_w = add(b, C, 0, 0, "transformer.h.%d.ln_1.weight", l);
        L->attn_norm_b = add(b, C, 0, 0, "transformer.h.%d.ln_1.bias", l);
        L->wqkv = add(b, qkvd, C, 1, "transformer.h.%d.attn.c_attn.weight", l);
        L->bqkv = add(b, qkvd, 0, 0, "transformer.h.%d.attn.c_attn.bias", l);
        L->wo = add(b, C, qd, 1, "transformer.h.%d.attn.c_proj.weight", l);
        L->bo = add(b, C, 0, 0, "transformer.h.%d.attn.c_proj.bias", l);
        L->ffn_norm_w = add(b, C, 0, 0, "transformer.h.%d.ln_2.weight", l);
        L->ffn_norm_b = add(b, C, 0, 0, "transformer.h.%d.ln_2.bias", l);
        L->w_up = add(b, c->ffn_dim, C, 1, "transformer.h.%d.mlp.c_fc.weight", l);
        L->b_up = add(b, c->ffn_dim, 0, 0, "transformer.h.%d.mlp.c_fc.bias", l);
        L->w_down = add(b, C, c->ffn_dim, 1, "transformer.h.%d.mlp.c_proj.weight", l);
        L->b_down = add(b, C, 0, 0, "transformer.h.%d.mlp.c_proj.bias", l);
    }
    m->final_norm_w = add(b, C, 0, 0, "transformer.ln_f.weight");
    m->final_norm_b = add(b, C, 0, 0, "transformer.ln_f.bias");
    m->qkv_layout = AN_QKV_CONCAT;
}

static void build_llama(builder *b) {
    an_model *m = b->m;
    const an_model_config *c = &m->cfg;
    int C = c->dim, qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    m->tok_emb = add(b, c->vocab_size, C, 0, "model.embed_tokens.weight");
    for (int l = 0; l < c->n_layers; l++) {
        an_layer *L = &m->layers[l];
        L->attn_norm_w = add(b, C, 0, 0, "model.layers.%d.input_layernorm.weight", l);
        L->wq = add(b, qd, C, 0, "model.layers.%d.self_attn.q_proj.weight", l);
        L->wk = add(b, kvd, C, 0, "model.layers.%d.self_attn.k_proj.weight", l);
        L->wv = add(b, kvd, C, 0, "model.layers.%d.self_attn.v_proj.weight", l);
        if (c->qkv_bias) {
            L->bq = add(b, qd, 0, 0, "model.layers.%d.self_attn.q_proj.bias", l);
            L->bk = add(b, kvd, 0, 0, "model.layers.%d.self_attn.k_proj.bias", l);
            L->bv = add(b, kvd, 0, 0, "model.layers.%d.self_attn.v_proj.bias", l);
        }
        L->wo = add(b, C, qd, 0, "model.layers.%d.self_attn.o_proj.weight", l);
        if (c->o_bias) L->bo = add(b, C, 0, 0, "model.layers.%d.self_attn.o_proj.bias", l);
        L->ffn_norm_w = add(b, C, 0, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        L->w_gate = add(b, c->ffn_dim, C, 0, "model.layers.%d.mlp.gate_proj.weight", l);
        if (c->mlp_bias) L->b_gate = add(b, c->ffn_dim, 0, 0, "model.layers.%d.mlp.gate_proj.bias", l);
        L->w_up = add(b, c->ffn_dim, C, 0, "model.layers.%d.mlp.up_proj.weight", l);
        if (c->mlp_bias) L->b_up = add(b, c->ffn_dim, 0, 0, "model.layers.%d.mlp.up_proj.bias", l);
        L->w_down = add(b, C, c->ffn_dim, 0, "model.layers.%d.mlp.down_proj.weight", l);
        if (c->mlp_bias) L->b_down = add(b, C, 0, 0, "model.layers.%d.mlp.down_proj.bias", l);
    }
    m->final_norm_w = add(b, C, 0, 0, "model.norm.weight");
    if (!c->tie_embeddings) m->lm_head = add(b, c->vocab_size, C, 0, "lm_head.weight");
    m->qkv_layout = AN_QKV_SEPARATE;
}

static void build_internlm2(builder *b) {
    an_model *m = b->m;
    const an_model_config *c = &m->cfg;
    int C = c->dim, qd = c->n_heads * c->head_dim, qkvd = (c->n_heads + 2 * c->n_kv_heads) * c->head_dim;
    m->tok_emb = add(b, c->vocab_size, C, 0, "model.tok_embeddings.weight");
    for (int l = 0; l < c->n_layers; l++) {
        an_layer *L = &m->layers[l];
        L->attn_norm_w = add(b, C, 0, 0, "model.layers.%d.attention_norm.weight", l);
        L->wqkv = add(b, qkvd, C, 0, "model.layers.%d.attention.wqkv.weight", l);
        if (c->qkv_bias) L->bqkv = add(b, qkvd, 0, 0, "model.layers.%d.attention.wqkv.bias", l);
        L->wo = add(b, C, qd, 0, "model.layers.%d.attention.wo.weight", l);
        if (c->o_bias) L->bo = add(b, C, 0, 0, "model.layers.%d.attention.wo.bias", l);
        L->ffn_norm_w = add(b, C, 0, 0, "model.layers.%d.ffn_norm.weight", l);
        L->w_gate = add(b, c->ffn_dim, C, 0, "model.layers.%d.feed_forward.w1.weight", l);
        L->w_up = add(b, c->ffn_dim, C, 0, "model.layers.%d.feed_forward.w3.weight", l);
        L->w_down = add(b, C, c->ffn_dim, 0, "model.layers.%d.feed_forward.w2.weight", l);
    }
    m->final_norm_w = add(b, C, 0, 0, "model.norm.weight");
    if (!c->tie_embeddings) m->lm_head = add(b, c->vocab_size, C, 0, "output.weight");
    m->qkv_layout = AN_QKV_GROUPED;
}

int an_model_build_params(an_model *m, an_error *err) {
    if (an_model_build_table(m, err)) return -1;
    return an_model_alloc_params(m, err);
}

int an_model_build_table(an_model *m, an_error *err) {
    builder b = {m, m->cfg.n_layers * 20 + 8};
    m->params = calloc((size_t)b.cap, sizeof *m->params);
    m->layers = calloc((size_t)m->cfg.n_layers, sizeof *m->layers);
    if (!m->params || !m->layers) return an_fail(err, "model: out of memory for the tensor table");
    switch (m->cfg.arch) {
    case AN_ARCH_GPT2: build_gpt2(&b); break;
    case AN_ARCH_LLAMA: build_llama(&b); break;
    case AN_ARCH_INTERNLM2: build_internlm2(&b); break;
    default: return an_fail(err, "model: unknown architecture %d", (int)m->cfg.arch);
    }
    return 0;
}

int an_model_alloc_params(an_model *m, an_error *err) {
    size_t total = 0;
    for (int i = 0; i < m->n_params; i++)
        if (!an_param_nf4(&m->params[i]) && !an_param_ggml(&m->params[i])) total += align_floats(m->params[i].numel);
    m->n_param_floats = total;
    m->param_mem = m->ops->alloc(m->ops, total * sizeof(float));
    if (!m->param_mem)
        return an_fail(err, "model: cannot allocate %.1f MiB for the parameters", (double)total * 4 / 1048576);
    size_t off = 0;
    for (int i = 0; i < m->n_params; i++) {
        if (an_param_nf4(&m->params[i]) || an_param_ggml(&m->params[i])) continue;
        m->params[i].data = m->param_mem + off;
        off += align_floats(m->params[i].numel);
    }
    return 0;
}

an_model *an_model_create(const an_model_config *cfg, const an_ops *ops, an_error *err) {
    if (an_config_validate(cfg, "model config", err)) return NULL;
    an_model *m = calloc(1, sizeof *m);
    if (!m) {
        an_fail(err, "model: out of memory");
        return NULL;
    }
    m->cfg = *cfg;
    m->ops = ops;
    if (an_model_build_params(m, err)) {
        an_model_free(m);
        return NULL;
    }
    return m;
}

void an_model_free(an_model *m) {
    if (!m) return;
    an_model_plan_free(m);
    an_lora_free(m->lora);
    an_nf4_weights_free(m->nf4, m->ops);
    if (m->bf16_mem) m->ops->free(m->ops, m->bf16_mem);
    if (m->param_mem) m->ops->free(m->ops, m->param_mem);
    if (m->grad_mem) m->ops->free(m->ops, m->grad_mem);
    if (m->ggml_mem) m->ops->free(m->ops, m->ggml_mem); /* the CPU's free, or the device's */
    free(m->params);
    free(m->layers);
    free(m);
}

an_param *an_model_find(an_model *m, const char *name) {
    for (int i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i].name, name) == 0) return &m->params[i];
    return NULL;
}

void an_model_set_all_trainable(an_model *m, int trainable) {
    for (int i = 0; i < m->n_params; i++)
        m->params[i].trainable = trainable && m->params[i].dtype == AN_F32;
}

int an_model_alloc_grads(an_model *m, an_error *err) {
    if (m->grad_mem) m->ops->free(m->ops, m->grad_mem);
    m->grad_mem = NULL;
    size_t total = 0;
    for (int i = 0; i < m->n_params; i++) {
        if (m->params[i].trainable && an_param_nf4(&m->params[i]))
            return an_fail(err, "model: tensor %s is NF4-quantized and cannot be trained (train an adapter on it: "
                                "--method qlora)", m->params[i].name);
        if (m->params[i].trainable && an_param_ggml(&m->params[i]))
            return an_fail(err, "model: tensor %s is kept as the GGUF holds it (%s) and cannot be trained (train an "
                                "adapter on it, or load the GGUF dequantized for full fine-tuning)", m->params[i].name,
                           an_dtype_name(m->params[i].dtype));
        if (m->params[i].trainable && an_param_bf16(&m->params[i]))
            return an_fail(err, "model: tensor %s is stored in bf16 for a frozen model and cannot be trained",
                           m->params[i].name);
        if (m->params[i].trainable) total += align_floats(m->params[i].numel);
    }
    m->n_grad_floats = total;
    if (total) {
        m->grad_mem = m->ops->alloc(m->ops, total * sizeof(float));
        if (!m->grad_mem)
            return an_fail(err, "model: cannot allocate %.1f MiB for the gradients", (double)total * 4 / 1048576);
    }
    size_t off = 0;
    for (int i = 0; i < m->n_params; i++) {
        an_param *p = &m->params[i];
        p->grad = p->trainable ? m->grad_mem + off : NULL;
        if (p->trainable) off += align_floats(p->numel);
    }
    return 0;
}

void an_model_zero_grad(an_model *m) {
    if (m->grad_mem) m->ops->zero(m->ops, m->grad_mem, m->n_grad_floats * sizeof(float));
}

size_t an_model_param_count(const an_model *m, int trainable_only) {
    size_t n = 0;
    for (int i = 0; i < m->n_params; i++)
        if (!trainable_only || m->params[i].trainable) n += m->params[i].numel;
    return n;
}

size_t an_model_bytes_params(const an_model *m) {
    size_t n = m->n_param_floats * sizeof(float) + m->n_bf16 * sizeof(uint16_t) + m->ggml_bytes;
    for (int i = 0; i < m->n_params; i++)
        if (an_param_nf4(&m->params[i])) n += an_nf4_tensor_bytes(an_param_nf4(&m->params[i]));
    return n;
}
size_t an_model_bytes_grads(const an_model *m) { return m->grad_mem ? m->n_grad_floats * sizeof(float) : 0; }
size_t an_model_bytes_activations(const an_model *m) { return m->plan.bytes; }

/* A llama2.c checkpoint's q and k rows pair dimensions (2i, 2i+1) for RoPE; exporting reorders them
 * to Hugging Face's rotate-half order (an_llama2c_permute_qk), so a saved llama2.c model loads in HF. */
static int is_rope_projection(const an_model *m, const an_param *p) {
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const an_layer *L = &m->layers[l];
        if (p == L->wq || p == L->wk || p == L->bq || p == L->bk) return 1;
    }
    return 0;
}

void an_model_export(const an_model *m, const an_param *p, const float *src, float *host_out, float *tmp) {
    int rows = (int)p->shape[0], cols = p->ndim == 2 ? (int)p->shape[1] : 1;
    int permute = m->cfg.rope_interleaved && is_rope_projection(m, p);
    if (an_param_bf16(p) && !src) { /* bf16 widened (the embedding and the head are never transposed nor permuted) */
        uint16_t h[1024];
        for (size_t i0 = 0; i0 < p->numel; i0 += 1024) {
            size_t n = p->numel - i0 < 1024 ? p->numel - i0 : 1024;
            m->ops->download(m->ops, h, an_param_bf16(p) + i0, n * sizeof(uint16_t));
            an_bf16_to_f32_n(host_out + i0, h, n);
        }
        return;
    }
    if ((an_param_nf4(p) || an_param_ggml(p)) && !src) { /* the values a quantized weight stands for */
        float *dst = p->transposed || permute ? tmp : host_out;
        if (an_param_nf4(p)) an_nf4_tensor_dequantize(an_param_nf4(p), dst);
        else {
            an_error ignored; /* the blocks were checked when they were loaded */
            an_dtype base = an_dtype_x8_base(p->dtype);
            if (p->dtype == AN_F32_X32) { /* float32 panels: row by row out of them */
                int64_t rows = p->shape[0], cols = (int64_t)p->numel / rows;
                const float *x32 = (const float *)(const void *)an_param_ggml(p);
                for (int64_t r = 0; r < rows; r++) an_f32x32_row(x32, cols, r, dst + r * cols);
            } else if (base == p->dtype) {
                /* on a device backend, its blocks are downloaded first */
                const uint8_t *src = an_param_ggml(p);
                uint8_t *blocks = NULL;
                if (m->ops->device != AN_DEVICE_CPU) {
                    size_t nb = p->numel / (size_t)an_dtype_block(base) * (size_t)an_dtype_block_bytes(base);
                    if ((blocks = malloc(nb))) m->ops->download(m->ops, blocks, src, nb);
                    src = blocks;
                }
                if (src) an_ggml_dequantize(an_dtype_ggml_type(base), src, dst, (int64_t)p->numel, &ignored);
                else /* no host memory for them: NaN, never wrong numbers */
                    for (size_t i = 0; i < p->numel; i++) dst[i] = NAN;
                free(blocks);
            } else { /* eight rows interleaved: row by row through ggml's blocks */
                int64_t rows = p->shape[0], cols = (int64_t)p->numel / rows;
                int nb = (int)(cols / an_dtype_block(base));
                uint8_t *blocks = malloc((size_t)nb * (size_t)an_dtype_block_bytes(base));
                for (int64_t r = 0; blocks && r < rows; r++) {
                    an_q_x8_row_blocks(base, an_param_ggml(p), r, nb, blocks);
                    an_ggml_dequantize(an_dtype_ggml_type(base), blocks, dst + r * cols, cols, &ignored);
                }
                if (!blocks) /* no memory for one row's blocks: NaN, never wrong numbers */
                    for (size_t i = 0; i < p->numel; i++) dst[i] = NAN;
                free(blocks);
            }
        }
        if (!p->transposed && !permute) return;
        src = tmp;
    } else if (!p->transposed && !permute) {
        m->ops->download(m->ops, host_out, src, p->numel * sizeof(float));
        return;
    }
    if (src != tmp) m->ops->download(m->ops, tmp, src, p->numel * sizeof(float));
    if (permute) {
        an_llama2c_permute_qk(host_out, tmp, rows / m->cfg.head_dim, m->cfg.head_dim, cols);
        return;
    }
    for (int r = 0; r < rows; r++) /* Conv1D: [out, in] -> [in, out] */
        for (int c = 0; c < cols; c++) host_out[(size_t)c * rows + r] = tmp[(size_t)r * cols + c];
}

/* ---- q/k/v layouts ---- */

static void qkv_maps(const an_model *m, an_col_map maps[3]) {
    const an_model_config *c = &m->cfg;
    int hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads;
    int qd = nh * hd, kvd = nkv * hd, ld = qd + 2 * kvd;
    if (m->qkv_layout == AN_QKV_CONCAT) {
        maps[0] = (an_col_map){1, qd, qd, 0, 0, ld, 0, 0};
        maps[1] = (an_col_map){1, kvd, kvd, 0, 0, ld, qd, 0};
        maps[2] = (an_col_map){1, kvd, kvd, 0, 0, ld, qd + kvd, 0};
    } else {
        int G = nh / nkv, group = (G + 2) * hd;
        maps[0] = (an_col_map){nkv, G * hd, qd, 0, G * hd, ld, 0, group};
        maps[1] = (an_col_map){nkv, hd, kvd, 0, hd, ld, G * hd, group};
        maps[2] = (an_col_map){nkv, hd, kvd, 0, hd, ld, (G + 1) * hd, group};
    }
}

an_rope an_model_rope(const an_model *m, const float *cos_sin, int n_pos) {
    return (an_rope){.theta = m->cfg.rope_theta, .interleaved = m->cfg.rope_interleaved, .cos_sin = cos_sin,
                     .n_pos = cos_sin ? n_pos : 0};
}

void an_model_split_qkv(const an_model *m, float *q, float *k, float *v, const float *qkv, int N) {
    an_col_map maps[3];
    qkv_maps(m, maps);
    m->ops->gather_cols_forward(m->ops, q, qkv, N, &maps[0]);
    m->ops->gather_cols_forward(m->ops, k, qkv, N, &maps[1]);
    m->ops->gather_cols_forward(m->ops, v, qkv, N, &maps[2]);
}

void an_model_split_qkv_backward(const an_model *m, float *dqkv, const float *dq, const float *dk,
                                 const float *dv, int N) {
    an_col_map maps[3];
    qkv_maps(m, maps);
    m->ops->gather_cols_backward(m->ops, dqkv, dq, N, &maps[0]);
    m->ops->gather_cols_backward(m->ops, dqkv, dk, N, &maps[1]);
    m->ops->gather_cols_backward(m->ops, dqkv, dv, N, &maps[2]);
}
