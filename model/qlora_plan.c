/* Memory of a training step from the config alone (model/qlora_plan.h). The activations are measured
 * by model/plan.c's own layout (an_model_plan_bytes) on the model's tensor table, so the two cannot
 * drift apart. */
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

    /* The tensor table of the real model, without parameter memory, its weights typed as the method
     * holds them (NF4 tensors with their sizes only; a bf16 head), and an adapter with its modules but
     * no memory: enough for the plan's own layout to measure the activations (an_model_plan_bytes). */
    an_model m;
    an_lora fake;
    memset(&m, 0, sizeof m);
    memset(&fake, 0, sizeof fake);
    m.cfg = *cfg;
    /* the workspace as the backend sizes it (the CPU: for the thread count of now) */
    m.ops = o->ops ? o->ops : an_ops_cpu();
    int on_device = m.ops->device != AN_DEVICE_CPU;
    int rc = -1, cap = cfg->n_layers * 8 + 1;
    an_linear_ref *refs = calloc((size_t)cap, sizeof *refs);
    an_nf4_tensor *shapes = calloc((size_t)cap, sizeof *shapes);
    if (!refs || !shapes || an_model_build_table(&m, err)) {
        if (!refs || !shapes) an_fail(err, "memory plan: out of memory");
        goto done;
    }
    int n_refs = an_model_linears(&m, refs, cap);
    fake.mods = calloc((size_t)n_refs, sizeof *fake.mods);
    if (!fake.mods) {
        an_fail(err, "memory plan: out of memory");
        goto done;
    }
    fake.cfg.r = o->r;
    for (int i = 0; i < n_refs; i++) {
        an_param *w = refs[i].w;
        int quantizable = !refs[i].is_head && w != m.tok_emb;
        if (quantizable) {
            out->n_linear += w->numel;
            if (o->method == AN_METHOD_QLORA) {
                shapes[i] = shape_only(w->shape[0], w->shape[1], o->blocksize, o->double_quant);
                /* a device backend holds the device copy (the host tensor stays in host memory) */
                out->base_linear += on_device ? an_nf4_device_layout_of(&shapes[i]).bytes : an_nf4_tensor_bytes(&shapes[i]);
                w->dtype = AN_NF4;
                w->packed = &shapes[i];
            }
        }
        if (lora && (quantizable || (refs[i].is_head && o->lora_head))) {
            an_lora_module *mod = &fake.mods[fake.n_mods++];
            mod->base = w;
            mod->in = (int)w->shape[1];
            mod->out = (int)w->shape[0];
            mod->a = (an_param){.ndim = 2, .shape = {o->r, w->shape[1]}, .numel = (size_t)o->r * w->shape[1], .dtype = AN_F32};
            out->n_adapter += (size_t)o->r * (size_t)(w->shape[0] + w->shape[1]);
            out->adapters += (buf((size_t)o->r * w->shape[1], 4) + buf((size_t)o->r * w->shape[0], 4));
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
        m.tok_emb->dtype = AN_BF16;
        if (m.lm_head) m.lm_head->dtype = AN_BF16;
    }
    out->linear_bytes_per_param = out->n_linear ? (double)out->base_linear / (double)out->n_linear : 0;
    if (lora) {
        out->grads = out->adapters;
        out->optimizer = 2 * out->adapters;
        m.lora = &fake;
    } else {
        out->grads = total_params * 4;
        out->optimizer = total_params * 8;
    }

    /* activations: the plan's own layout, measured, without and with recomputation; the ops'
     * workspace it carves is reported apart (the linear ops' and the attention ops', 64-byte pieces) */
    int N = o->B * o->T;
    size_t plain = an_model_plan_bytes(&m, o->B, o->T, err);
    m.recompute = 1;
    size_t recomputed = plain ? an_model_plan_bytes(&m, o->B, o->T, err) : 0;
    if (!plain || !recomputed) goto done;
    out->workspace = buf(an_model_linear_work_bytes(&m, m.lora, N), 1) +
                     buf(m.ops->attention_work_bytes(m.ops, o->T, cfg->n_heads, cfg->head_dim), 1);
    out->activations = plain - out->workspace;
    out->activations_recompute = recomputed - out->workspace;
    size_t common = out->base_linear + out->base_other + out->adapters + out->grads + out->optimizer + out->workspace;
    out->total = common + out->activations;
    out->total_recompute = common + out->activations_recompute;
    rc = 0;
done:
    m.lora = NULL;
    free(fake.mods);
    free(shapes);
    free(refs);
    free(m.params);
    free(m.layers);
    return rc;
}
