/* QLoRA's frozen base: linear weights quantized to NF4 (model/lora.h, an_model_quantize_nf4). */
#include <stdlib.h>
#include <string.h>

#include "kernels/nf4.h"
#include "model/lora.h"

int an_model_is_quantized(const an_model *m) {
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].nf4) return 1;
    return 0;
}

/* Moves the float32 tensors that remain into a new, smaller allocation. */
static int repack(an_model *m, an_error *err) {
    size_t total = 0;
    for (int i = 0; i < m->n_params; i++)
        if (!m->params[i].nf4) total += (m->params[i].numel + 15) / 16 * 16;
    float *mem = m->ops->alloc(total * sizeof(float));
    if (!mem) return an_fail(err, "model: cannot allocate %.1f MiB for the parameters", (double)total * 4 / 1048576);
    size_t off = 0;
    for (int i = 0; i < m->n_params; i++) {
        an_param *p = &m->params[i];
        if (p->nf4) {
            p->data = NULL;
            continue;
        }
        m->ops->copy(mem + off, p->data, p->numel * sizeof(float));
        p->data = mem + off;
        off += (p->numel + 15) / 16 * 16;
    }
    m->ops->free(m->param_mem);
    m->param_mem = mem;
    m->n_param_floats = total;
    return 0;
}

int an_model_quantize_nf4(an_model *m, int double_quant, an_error *err) {
    if (an_model_is_quantized(m)) return an_fail(err, "quantize: the model is already quantized");
    int cap = m->cfg.n_layers * 8 + 1;
    an_linear_ref *refs = calloc((size_t)cap, sizeof *refs);
    if (!refs) return an_fail(err, "quantize: out of memory");
    int n = an_model_linears(m, refs, cap), rc = 0;
    size_t maxn = 0;
    for (int i = 0; i < n; i++)
        if (refs[i].w->numel > maxn) maxn = refs[i].w->numel;
    float *host = malloc(maxn * sizeof(float));
    if (!host) rc = an_fail(err, "quantize: out of memory");
    for (int i = 0; i < n && !rc; i++) {
        an_param *p = refs[i].w;
        if (refs[i].is_head) continue; /* the head stays float32, as bitsandbytes leaves lm_head */
        an_nf4_tensor *t = calloc(1, sizeof *t);
        m->ops->download(host, p->data, p->numel * sizeof(float));
        if (!t || an_nf4_tensor_quantize(t, host, p->shape[0], p->shape[1], AN_NF4_BLOCKSIZE, double_quant, err)) {
            free(t);
            rc = t ? an_fail_prefix(err, "quantize %s", p->name) : an_fail(err, "quantize: out of memory");
            break;
        }
        p->nf4 = t;
    }
    free(host);
    free(refs);
    if (rc) { /* undo: nothing half quantized */
        for (int i = 0; i < m->n_params; i++)
            if (m->params[i].nf4) {
                an_nf4_tensor_free(m->params[i].nf4);
                free(m->params[i].nf4);
                m->params[i].nf4 = NULL;
            }
        return -1;
    }
    an_model_set_all_trainable(m, 0);
    if (an_model_alloc_grads(m, err)) return -1;
    m->plan.lora_planned = 0; /* the plan must reserve the NF4 workspace */
    return repack(m, err);
}
