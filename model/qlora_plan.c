/* Memory of a training step from the config alone (model/qlora_plan.h). The activation buffers are
 * those of model/plan.c, listed in the same order with the same rounding. */
#include "model/qlora_plan.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/nf4.h"
#include "model/lora.h"
#include "model/model.h"

an_memory_opts an_memory_opts_default(void) {
    an_memory_opts o;
    memset(&o, 0, sizeof o);
    o.B = 1;
    o.T = 2048;
    o.method = AN_METHOD_QLORA;
    o.r = 64;
    o.other_bytes = 4;
    o.blocksize = 64;
    o.double_quant = 1;
    return o;
}

static size_t buf(size_t n, size_t elem) { return (n * elem + 63) / 64 * 64; }

/* An NF4 tensor's size fields without its arrays: what an_nf4_tensor_bytes and the workspace need. */
static an_nf4_tensor shape_only(int64_t rows, int64_t cols, int blocksize, int dq) {
    an_nf4_tensor t;
    memset(&t, 0, sizeof t);
    t.rows = rows;
    t.cols = cols;
    t.n = rows * cols;
    t.blocksize = blocksize;
    t.n_blocks = (t.n + blocksize - 1) / blocksize;
    t.double_quant = dq;
    t.blocksize2 = AN_NF4_NESTED_BLOCKSIZE;
    t.n_blocks2 = dq ? (t.n_blocks + t.blocksize2 - 1) / t.blocksize2 : 0;
    return t;
}

int an_memory_plan_compute(const an_model_config *cfg, const an_memory_opts *o, an_memory_plan *out, an_error *err) {
    memset(out, 0, sizeof *out);
    if (an_config_validate(cfg, "memory plan", err)) return -1;
    if (o->B < 1 || o->T < 1) return an_fail(err, "memory plan: batch %d x %d is out of range", o->B, o->T);
    int lora = o->method != AN_METHOD_FULL;
    if (lora && o->r < 1) return an_fail(err, "memory plan: LoRA rank %d must be at least 1", o->r);
    if (o->other_bytes != 4 && o->other_bytes != 2)
        return an_fail(err, "memory plan: non-quantized parameters take 4 (float32) or 2 (bf16) bytes, not %d", o->other_bytes);

    if (o->frozen_bf16 && o->method == AN_METHOD_FULL)
        return an_fail(err, "memory plan: bf16 storage is for a frozen embedding/head; full fine-tuning trains them");

    /* the tensor table of the real model (no parameter memory) */
    an_model m;
    memset(&m, 0, sizeof m);
    m.cfg = *cfg;
    int rc = -1, cap = cfg->n_layers * 8 + 1;
    an_linear_ref *refs = calloc((size_t)cap, sizeof *refs);
    if (!refs || an_model_build_table(&m, err)) {
        if (!refs) an_fail(err, "memory plan: out of memory");
        goto done;
    }
    int n_refs = an_model_linears(&m, refs, cap);
    /* the typed linear ops' workspace, as the CPU backend sizes it for the rows a plan runs and the
     * thread count of now (model/plan.c asks an_model_linear_work_bytes the same) */
    const an_ops *cpu = an_ops_cpu();
    int rows = o->B * o->T;
    size_t n_mods = 0, head_u = 0, linear_ws = 0;
    for (int i = 0; i < n_refs; i++) {
        const an_param *w = refs[i].w;
        int quantizable = !refs[i].is_head && w != m.tok_emb;
        an_nf4_tensor t = shape_only(w->shape[0], w->shape[1], o->blocksize, o->double_quant);
        an_weight wt = {AN_F32, w->shape[0], w->shape[1], NULL};
        if (quantizable) {
            out->n_linear += w->numel;
            if (o->method == AN_METHOD_QLORA) {
                out->base_linear += an_nf4_tensor_bytes(&t);
                wt.dtype = AN_NF4;
                wt.data = &t;
            }
        } else if (o->frozen_bf16) {
            wt.dtype = AN_BF16; /* the head (the embedding table when tied) */
        }
        size_t ws = cpu->linear_work_bytes(cpu, &wt, rows);
        if (ws > linear_ws) linear_ws = ws;
        if (lora && (quantizable || (refs[i].is_head && o->lora_head))) {
            an_weight a = {AN_F32, o->r, w->shape[1], NULL};
            ws = cpu->linear_work_bytes(cpu, &a, rows);
            if (ws > linear_ws) linear_ws = ws;
            out->n_adapter += (size_t)o->r * (size_t)(w->shape[0] + w->shape[1]);
            out->adapters += (buf((size_t)o->r * w->shape[1], 4) + buf((size_t)o->r * w->shape[0], 4));
            n_mods++;
            if (refs[i].is_head) head_u = 1;
        }
    }
    size_t total_params = 0;
    for (int i = 0; i < m.n_params; i++) total_params += m.params[i].numel;
    out->n_other = total_params - out->n_linear;
    if (o->method != AN_METHOD_QLORA) out->base_linear = out->n_linear * (size_t)o->other_bytes;
    out->base_other = out->n_other * (size_t)o->other_bytes;
    if (o->frozen_bf16) { /* the embedding, and the head unless tied, at 2 bytes */
        out->n_frozen_bf16 = m.tok_emb->numel + (m.lm_head ? m.lm_head->numel : 0);
        out->base_other -= out->n_frozen_bf16 * (size_t)(o->other_bytes - 2);
    }
    out->linear_bytes_per_param = out->n_linear ? (double)out->base_linear / (double)out->n_linear : 0;
    if (lora) {
        out->grads = out->adapters;
        out->optimizer = 2 * out->adapters;
    } else {
        out->grads = total_params * 4;
        out->optimizer = total_params * 8;
    }

    /* activations: model/plan.c's layout */
    size_t N = (size_t)o->B * o->T, C = (size_t)cfg->dim, F = (size_t)cfg->ffn_dim, V = (size_t)cfg->vocab_size;
    size_t qd = (size_t)cfg->n_heads * cfg->head_dim, kvd = (size_t)cfg->n_kv_heads * cfg->head_dim, qkvd = qd + 2 * kvd;
    int gpt2 = cfg->arch == AN_ARCH_GPT2, fused = cfg->arch != AN_ARCH_LLAMA;
    /* the blocks' scratch, which the head's chunk shares */
    size_t scratch = (fused ? buf(N * qkvd, 4) : 0) + buf(N * C, 4) + buf(N * qd, 4) + 2 * buf(N * kvd, 4) +
                     buf(N * qd, 4) + (fused ? buf(N * qkvd, 4) : 0) + buf(N * F, 4) + (gpt2 ? 0 : buf(N * F, 4)) +
                     buf(N * F, 4);
    size_t hr = (size_t)an_head_chunk_rows(N, V, C, scratch);
    size_t head = buf(hr * V, 4) + 2 * buf(hr * C, 4);
    size_t fixed = 6 * buf(N, 4) + (gpt2 ? 0 : buf((size_t)o->T * cfg->head_dim, 4)); /* batch, rope table */
    size_t res_in = buf(N * C, 4);
    size_t layer = buf(N * C, 4) + (gpt2 ? buf(N, 4) : 0) + buf(N, 4) + buf(N * qd, 4) + 2 * buf(N * kvd, 4) +
                   buf(N * qd, 4) + buf(N * (size_t)cfg->n_heads, 4) + 2 * buf(N * C, 4) + (gpt2 ? buf(N, 4) : 0) +
                   buf(N, 4) + buf(N * F, 4) + (gpt2 ? 0 : buf(N * F, 4)) + buf(N * F, 4);
    fixed += 2 * buf(N * C, 4) + (gpt2 ? buf(N, 4) : 0) + buf(N, 4); /* res_out, lnf, lnf stats */
    fixed += 2 * buf(N, 4) + 2 * buf(N * C, 4);                      /* losses, ce_lse, dres, dln */
    fixed += head > scratch ? head : scratch;                         /* the head's chunk or the scratch */
    size_t u_layers = 0, u_head = 0;
    if (lora) {
        u_head = head_u ? buf(hr * (size_t)o->r, 4) : 0;
        u_layers = (n_mods - head_u) * buf(N * (size_t)o->r, 4);
        fixed += buf(N * (size_t)o->r, 4) + u_head; /* du scratch; dropout needs no buffer (kernels/ops.h lora_*) */
    }
    size_t L = (size_t)cfg->n_layers;
    out->activations = fixed + L * (res_in + layer) + u_layers;
    /* recomputation: every layer's input kept, one layer's activations (and adapter u) live */
    out->activations_recompute = fixed + L * res_in + (L ? layer + u_layers / L : 0);
    /* the ops' scratch the plan carves: the linear ops', then the attention ops' (64-byte pieces) */
    out->workspace = buf(linear_ws, 1) + buf(cpu->attention_work_bytes(cpu, o->T, cfg->n_heads, cfg->head_dim), 1);
    size_t common = out->base_linear + out->base_other + out->adapters + out->grads + out->optimizer + out->workspace;
    out->total = common + out->activations;
    out->total_recompute = common + out->activations_recompute;
    rc = 0;
done:
    free(refs);
    free(m.params);
    free(m.layers);
    return rc;
}
