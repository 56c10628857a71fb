/* Frozen embedding table and LM head stored as bf16 (an_model_store_frozen_bf16, model/model.h).
 *
 * The float32 parameters that remain move into a new, smaller allocation (as NF4 quantization does),
 * so the float32 copies are really gone; the bf16 tensors share one allocation. The typed linear ops
 * run on them with the workspace of the plan or of the inference state. */
#include <string.h>

#include "model/model.h"
#include "model/io/safetensors.h"

#define AN_BF16_ALIGN 32              /* uint16 values: 64 bytes */

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

/* p's float32 values rounded to bf16 into dst (backend memory), through a small host buffer. */
static void convert(const an_model *m, const an_param *p, uint16_t *dst) {
    float f[1024];
    uint16_t h[1024];
    for (size_t i0 = 0; i0 < p->numel; i0 += 1024) {
        size_t n = p->numel - i0 < 1024 ? p->numel - i0 : 1024;
        m->ops->download(m->ops, f, p->data + i0, n * sizeof(float));
        an_f32_to_bf16_n(h, f, n);
        m->ops->upload(m->ops, dst + i0, h, n * sizeof(uint16_t));
    }
}

int an_model_store_frozen_bf16(an_model *m, an_error *err) {
    if (m->bf16_mem) return 0;
    const an_ops *o = m->ops;
    if (!o->supports(o, AN_OP_embedding_lookup, AN_BF16) || !o->supports(o, AN_OP_linear_forward, AN_BF16) ||
        !o->supports(o, AN_OP_linear_backward_input, AN_BF16))
        return an_fail(err, "model: the %s backend has no ops for bf16 weights", o->name);
    an_param *t[2] = {m->tok_emb, m->lm_head}; /* lm_head NULL when tied to the embedding */
    int n = m->lm_head ? 2 : 1;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (t[i]->trainable)
            return an_fail(err, "model: tensor %s is trainable; only frozen tensors can be stored in bf16 (attach an "
                                "adapter or freeze the model first)", t[i]->name);
        if (!t[i]->data) return an_fail(err, "model: tensor %s has no float32 values to store in bf16", t[i]->name);
        total += round_up(t[i]->numel, AN_BF16_ALIGN);
    }
    uint16_t *mem = o->alloc(o, total * sizeof(uint16_t));
    size_t keep = 0; /* float32 parameters that stay */
    for (int i = 0; i < m->n_params; i++) {
        const an_param *p = &m->params[i];
        if (!an_param_nf4(p) && !an_param_ggml(p) && p != t[0] && p != t[n - 1]) keep += round_up(p->numel, 16);
    }
    float *fmem = o->alloc(o, (keep ? keep : 1) * sizeof(float));
    if (!mem || !fmem) {
        if (mem) o->free(o, mem);
        if (fmem) o->free(o, fmem);
        return an_fail(err, "model: cannot allocate %.1f MiB for the bf16 embedding/head", (double)total * 2 / 1048576);
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        convert(m, t[i], mem + off);
        t[i]->dtype = AN_BF16;
        t[i]->packed = mem + off;
        off += round_up(t[i]->numel, AN_BF16_ALIGN);
    }
    off = 0;
    for (int i = 0; i < m->n_params; i++) {
        an_param *p = &m->params[i];
        if (an_param_nf4(p) || an_param_ggml(p)) continue;
        if (an_param_bf16(p)) {
            p->data = NULL;
            continue;
        }
        o->copy(o, fmem + off, p->data, p->numel * sizeof(float));
        p->data = fmem + off;
        off += round_up(p->numel, 16); /* model.c's 64-byte alignment */
    }
    if (m->param_mem) o->free(o, m->param_mem);
    m->param_mem = fmem;
    m->n_param_floats = keep;
    m->bf16_mem = mem;
    m->n_bf16 = total;
    /* a plan made before holds a workspace sized for float32 weights: make it again */
    return m->plan.block ? an_model_plan(m, m->plan.B, m->plan.T, err) : 0;
}
