/* LoRA adapters: which modules they sit on, their memory, initialisation and merging (model/lora.h).
 * Reading and writing PEFT folders is model/io/lora_io.c; running them is model/linear.c. */
#include "model/lora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "model/nf4_weights.h"

#define AN_LORA_ALIGN 16 /* floats: 64-byte aligned tensors, as the model's own */

static size_t align_floats(size_t n) { return (n + AN_LORA_ALIGN - 1) / AN_LORA_ALIGN * AN_LORA_ALIGN; }

an_lora_config an_lora_config_default(void) {
    an_lora_config c;
    memset(&c, 0, sizeof c);
    c.r = 8;
    c.alpha = 8.0f;
    c.seed = 0;
    return c;
}

int an_lora_config_add_target(an_lora_config *c, const char *name, an_error *err) {
    if (c->n_targets >= AN_LORA_MAX_TARGETS)
        return an_fail(err, "lora: more than %d target modules", AN_LORA_MAX_TARGETS);
    if (!name[0] || strlen(name) >= sizeof c->targets[0])
        return an_fail(err, "lora: target module name '%s' is empty or longer than %zu characters", name,
                       sizeof c->targets[0] - 1);
    snprintf(c->targets[c->n_targets++], sizeof c->targets[0], "%s", name);
    return 0;
}

/* The module name of a weight: its Hugging Face name without ".weight". */
static void module_name(char *out, size_t cap, const char *weight_name) {
    snprintf(out, cap, "%s", weight_name);
    size_t n = strlen(out);
    if (n > 7 && strcmp(out + n - 7, ".weight") == 0) out[n - 7] = 0;
}

int an_model_linears(an_model *m, an_linear_ref *out, int cap) {
    int n = 0;
#define PUSH(W, B)                                                                                                     \
    do {                                                                                                           \
        if (W) {                                                                                                   \
            if (n < cap) {                                                                                         \
                out[n].w = (W);                                                                                    \
                out[n].b = (B);                                                                                    \
                out[n].is_head = 0;                                                                                \
                module_name(out[n].name, sizeof out[n].name, (W)->name);                                           \
            }                                                                                                      \
            n++;                                                                                                   \
        }                                                                                                          \
    } while (0)
    for (int l = 0; l < m->cfg.n_layers; l++) {
        an_layer *L = &m->layers[l];
        PUSH(L->wqkv, L->bqkv);
        PUSH(L->wq, L->bq);
        PUSH(L->wk, L->bk);
        PUSH(L->wv, L->bv);
        PUSH(L->wo, L->bo);
        PUSH(L->w_gate, L->b_gate);
        PUSH(L->w_up, L->b_up);
        PUSH(L->w_down, L->b_down);
    }
#undef PUSH
    /* The head: a module of its own in every family, even when its weight is the embedding's. */
    if (n < cap) {
        out[n].w = m->lm_head ? m->lm_head : m->tok_emb;
        out[n].b = NULL;
        out[n].is_head = 1;
        if (m->lm_head) module_name(out[n].name, sizeof out[n].name, m->lm_head->name);
        else snprintf(out[n].name, sizeof out[n].name, "%s", m->cfg.arch == AN_ARCH_INTERNLM2 ? "output" : "lm_head");
    }
    return n + 1;
}

/* PEFT's rule for a list entry: the full module name, or a suffix starting at a '.' boundary. */
static int target_matches(const char *module, const char *target) {
    size_t lm = strlen(module), lt = strlen(target);
    if (lm == lt) return strcmp(module, target) == 0;
    return lm > lt && module[lm - lt - 1] == '.' && strcmp(module + lm - lt, target) == 0;
}

static int selected(const an_lora_config *c, const an_linear_ref *ref, int *hits) {
    int any = 0;
    for (int t = 0; t < c->n_targets; t++) {
        int hit = strcmp(c->targets[t], "all-linear") == 0 ? !ref->is_head : target_matches(ref->name, c->targets[t]);
        if (hit) hits[t]++, any = 1;
    }
    return any;
}

/* p->name is the module-relative key, "<module>.lora_A.weight"; PEFT files prefix "base_model.model.". */
static int set_param(an_param *p, const char *module, const char *which, int64_t d0, int64_t d1, int transposed) {
    int n = snprintf(p->name, sizeof p->name, "%s.%s.weight", module, which);
    p->ndim = 2;
    p->shape[0] = d0;
    p->shape[1] = d1;
    p->numel = (size_t)d0 * (size_t)d1;
    p->dtype = AN_F32;
    p->trainable = 1;
    p->transposed = transposed;
    return n < (int)sizeof p->name ? 0 : -1;
}

an_lora *an_lora_new_zeroed(an_model *m, const an_lora_config *cfg, an_error *err) {
    if (cfg->r < 1 || cfg->r > 65536) return an_fail_null(err, "lora: rank r must be in [1, 65536], got %d", cfg->r);
    if (!(cfg->dropout >= 0.0f && cfg->dropout < 1.0f))
        return an_fail_null(err, "lora: dropout must be in [0, 1), got %g", (double)cfg->dropout);
    if (!isfinite(cfg->alpha)) return an_fail_null(err, "lora: lora_alpha is not a finite number");
    if (cfg->n_targets < 1) return an_fail_null(err, "lora: no target modules given");

    int cap = m->cfg.n_layers * 8 + 1;
    an_linear_ref *refs = calloc((size_t)cap, sizeof *refs);
    int hits[AN_LORA_MAX_TARGETS] = {0};
    an_lora *l = calloc(1, sizeof *l);
    if (!refs || !l) {
        free(refs);
        free(l);
        return an_fail_null(err, "lora: out of memory");
    }
    l->mem_owner = m->ops;
    int n_refs = an_model_linears(m, refs, cap);
    l->mods = calloc((size_t)n_refs, sizeof *l->mods);
    if (!l->mods) {
        free(refs);
        an_lora_free(l);
        return an_fail_null(err, "lora: out of memory");
    }
    for (int i = 0; i < n_refs; i++) {
        if (!selected(cfg, &refs[i], hits)) continue;
        an_lora_module *mod = &l->mods[l->n_mods++];
        snprintf(mod->name, sizeof mod->name, "%s", refs[i].name);
        mod->base = refs[i].w;
        mod->out = (int)refs[i].w->shape[0];
        mod->in = (int)refs[i].w->shape[1];
    }
    free(refs);
    for (int t = 0; t < cfg->n_targets; t++) {
        if (hits[t]) continue;
        const char *example = m->cfg.arch == AN_ARCH_GPT2 ? "c_attn, c_proj, c_fc, lm_head"
                              : m->cfg.arch == AN_ARCH_INTERNLM2 ? "wqkv, wo, w1, w2, w3, output"
                                                                 : "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head";
        an_fail(err, "lora: target module '%s' matches no linear layer of this %s model (its modules: %s)",
                cfg->targets[t], m->cfg.architecture[0] ? m->cfg.architecture : m->cfg.model_type, example);
        an_lora_free(l);
        return NULL;
    }
    l->cfg = *cfg;
    l->scaling = cfg->use_rslora ? cfg->alpha / sqrtf((float)cfg->r) : cfg->alpha / (float)cfg->r;

    size_t total = 0;
    for (int i = 0; i < l->n_mods; i++) {
        an_lora_module *mod = &l->mods[i];
        if (set_param(&mod->a, mod->name, "lora_A", cfg->r, mod->in, 0) ||
            set_param(&mod->bt, mod->name, "lora_B", cfg->r, mod->out, 1)) {
            an_fail(err, "lora: module name %s is too long", mod->name);
            an_lora_free(l);
            return NULL;
        }
        total += align_floats(mod->a.numel) + align_floats(mod->bt.numel);
    }
    l->n_floats = total;
    l->mem = m->ops->alloc(m->ops, total * sizeof(float));
    if (!l->mem) {
        an_fail(err, "lora: cannot allocate %.1f MiB for the adapters", (double)total * 4 / 1048576);
        an_lora_free(l);
        return NULL;
    }
    size_t off = 0;
    for (int i = 0; i < l->n_mods; i++) {
        an_lora_module *mod = &l->mods[i];
        mod->a.data = l->mem + off;
        off += align_floats(mod->a.numel);
        mod->bt.data = l->mem + off;
        off += align_floats(mod->bt.numel);
    }
    snprintf(l->base_model, sizeof l->base_model, "%s", m->cfg.model_type);
    return l;
}

an_lora *an_lora_create(an_model *m, const an_lora_config *cfg, an_error *err) {
    an_lora *l = an_lora_new_zeroed(m, cfg, err);
    if (!l) return NULL;
    size_t max_a = 0;
    for (int i = 0; i < l->n_mods; i++)
        if (l->mods[i].a.numel > max_a) max_a = l->mods[i].a.numel;
    /* A ~ U(-1/sqrt(in), 1/sqrt(in)): kaiming_uniform_(a = sqrt(5)) gives bound
     * sqrt(6 / ((1 + 5) * fan_in)) = 1 / sqrt(fan_in). B stays zero (alloc zeroes). */
    float *host = malloc((max_a ? max_a : 1) * sizeof(float));
    if (!host) {
        an_lora_free(l);
        return an_fail_null(err, "lora: out of memory");
    }
    an_rng rng;
    an_rng_seed(&rng, cfg->seed);
    for (int i = 0; i < l->n_mods; i++) {
        an_lora_module *mod = &l->mods[i];
        float bound = 1.0f / sqrtf((float)mod->in);
        for (size_t k = 0; k < mod->a.numel; k++) host[k] = (2.0f * an_rng_uniform(&rng) - 1.0f) * bound;
        m->ops->upload(m->ops, mod->a.data, host, mod->a.numel * sizeof(float));
    }
    free(host);
    return l;
}

int an_lora_adopt(an_model *m, an_lora *l, an_error *err) {
    if (m->lora) return an_fail(err, "lora: the model already has an adapter");
    if (l->n_mods > 0 && l->mods[0].base != an_model_find(m, l->mods[0].base->name))
        return an_fail(err, "lora: the adapter was made for another model");
    if (!l->grad_mem) {
        l->grad_mem = l->mem_owner->alloc(l->mem_owner, l->n_floats * sizeof(float));
        if (!l->grad_mem)
            return an_fail(err, "lora: cannot allocate %.1f MiB for the adapters' gradients",
                           (double)l->n_floats * 4 / 1048576);
        for (int i = 0; i < l->n_mods; i++) { /* laid out like mem */
            an_lora_module *mod = &l->mods[i];
            mod->a.grad = l->grad_mem + (mod->a.data - l->mem);
            mod->bt.grad = l->grad_mem + (mod->bt.data - l->mem);
        }
    }
    /* the base is frozen: no gradients, so the backward computes input gradients only */
    an_model_set_all_trainable(m, 0);
    if (an_model_alloc_grads(m, err)) return -1;
    m->lora = l;
    m->plan.lora_planned = 0;
    return 0;
}

int an_lora_attach(an_model *m, const an_lora_config *cfg, an_error *err) {
    if (m->lora) return an_fail(err, "lora: the model already has an adapter");
    an_lora *l = an_lora_create(m, cfg, err);
    if (!l) return -1;
    if (an_lora_adopt(m, l, err)) {
        an_lora_free(l);
        return -1;
    }
    return 0;
}

void an_lora_free(an_lora *l) {
    if (!l) return;
    if (l->mem_owner) {
        if (l->mem) l->mem_owner->free(l->mem_owner, l->mem);
        if (l->grad_mem) l->mem_owner->free(l->mem_owner, l->grad_mem);
    }
    free(l->mods);
    free(l);
}

void an_lora_detach(an_model *m) {
    an_lora_free(m->lora);
    m->lora = NULL;
    m->plan.lora_planned = 0;
}

an_lora_module *an_lora_find(const an_lora *l, const an_param *w) {
    for (int i = 0; i < l->n_mods; i++)
        if (l->mods[i].base == w) return &l->mods[i];
    return NULL;
}

size_t an_lora_param_count(const an_lora *l) {
    size_t n = 0;
    for (int i = 0; l && i < l->n_mods; i++) n += l->mods[i].a.numel + l->mods[i].bt.numel;
    return n;
}

size_t an_lora_bytes_params(const an_lora *l) { return l ? l->n_floats * sizeof(float) : 0; }

uint64_t an_lora_next_mask_seed(an_lora *l) {
    uint64_t z = l->cfg.seed ^ (0xD1B54A32D192ED03ull * ++l->forwards);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int an_lora_merge(an_model *m, an_error *err) {
    an_lora *l = m->lora;
    if (!l) return an_fail(err, "lora merge: the model has no adapter");
    /* Merging into a head tied to the token embedding would change the embedding too (PEFT warns and
     * does it anyway); the merged model would not give the adapter's outputs. */
    if (!m->lm_head && an_lora_find(l, m->tok_emb))
        return an_fail(err, "lora merge: the adapter targets the output head, which shares its weight with the token "
                            "embedding (tie_word_embeddings); merging would change the embedding as well. Use the "
                            "adapter unmerged, or train it without the head");
    for (int i = 0; i < l->n_mods; i++)
        if (an_param_ggml(l->mods[i].base))
            return an_fail(err, "lora merge: %s is kept as the GGUF holds it (%s); merge into the model loaded dequantized",
                           l->mods[i].base->name, an_dtype_name(l->mods[i].base->dtype));
    for (int i = 0; i < l->n_mods; i++)
        if (an_param_bf16(l->mods[i].base))
            return an_fail(err, "lora merge: %s is stored in bf16 (an_model_store_frozen_bf16); merge into a model "
                                "loaded in float32", l->mods[i].base->name);
    size_t max_a = 0;
    for (int i = 0; i < l->n_mods; i++)
        if (l->mods[i].a.numel > max_a) max_a = l->mods[i].a.numel;
    float *as = m->ops->alloc(m->ops, max_a * sizeof(float));
    if (!as) return an_fail(err, "lora merge: out of memory");
    for (int i = 0; i < l->n_mods; i++) {
        an_lora_module *mod = &l->mods[i];
        if (an_param_nf4(mod->base)) { /* as PEFT merges into a 4-bit base: dequantize, add, quantize again */
            if (an_nf4_merge_delta(m, mod->base, mod->a.data, mod->bt.data, l->cfg.r, l->scaling, err)) {
                m->ops->free(m->ops, as);
                return -1;
            }
            continue;
        }
        /* W[out, in] += Bt^T (scaling A): the weight-gradient half of matmul_backward, with Bt as "dout" */
        m->ops->copy(m->ops, as, mod->a.data, mod->a.numel * sizeof(float));
        m->ops->scale(m->ops, as, l->scaling, mod->a.numel);
        m->ops->matmul_backward(m->ops, NULL, mod->base->data, NULL, mod->bt.data, as, mod->base->data, l->cfg.r, mod->in,
                                mod->out);
    }
    m->ops->free(m->ops, as);
    an_lora_detach(m);
    return 0;
}
