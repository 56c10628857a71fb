/* NF4 linear weights of a model (model/nf4_weights.h): quantizing them, freeing their float copies,
 * reading and writing bitsandbytes' serialization, and the linear layers that run on them. */
#include "model/nf4_weights.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "model/io/nf4_bnb.h"
#include "model/lora.h"

#define AN_NF4_ALIGN 16 /* floats, as model.c aligns parameters */

/* the device copy of t (kernels/nf4.h), when it has one, given back to backend o */
static void free_device_copy(an_nf4_tensor *t, const an_ops *o) {
    if (t->device && o) o->free(o, t->device);
    t->device = NULL;
}

/* Gives t a copy in the memory of m's backend, where that is not the CPU's (whose kernels read t
 * itself): the host tensor stays what saving, merging and exporting read. */
static int to_device(an_model *m, an_nf4_tensor *t, const char *name, an_error *err) {
    const an_ops *o = m->ops;
    if (o->device == AN_DEVICE_CPU || t->device) return 0;
    an_nf4_device_layout l = an_nf4_device_layout_of(t);
    void *img = malloc(l.bytes);
    t->device = img ? o->alloc(o, l.bytes) : NULL;
    if (!t->device) {
        free(img);
        return an_fail(err, "model: cannot allocate %.1f MiB on %s for the NF4 weight %s", (double)l.bytes / 1048576,
                       o->name, name);
    }
    an_nf4_device_image(t, img);
    o->upload(o, t->device, img, l.bytes);
    free(img);
    return 0;
}

void an_nf4_weights_free(an_nf4_weights *w, const an_ops *o) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free_device_copy(&w->tensors[i], o);
        an_nf4_tensor_free(&w->tensors[i]);
    }
    free(w->tensors);
    free(w);
}

an_nf4_tensor *an_nf4_weights_slot(an_model *m, an_param *p, an_error *err) {
    if (!m->nf4) {
        m->nf4 = calloc(1, sizeof *m->nf4);
        if (m->nf4) m->nf4->tensors = calloc((size_t)m->n_params, sizeof *m->nf4->tensors);
        if (!m->nf4 || !m->nf4->tensors) {
            an_nf4_weights_free(m->nf4, m->ops);
            m->nf4 = NULL;
            an_fail(err, "model: out of memory for the NF4 weights");
            return NULL;
        }
        m->nf4->cap = m->n_params; /* fixed: an_param.packed points into the array */
    }
    if (m->nf4->n >= m->nf4->cap) {
        an_fail(err, "model: more NF4 weights than parameters");
        return NULL;
    }
    an_nf4_tensor *t = &m->nf4->tensors[m->nf4->n++];
    p->dtype = AN_NF4;
    p->packed = t;
    p->trainable = 0;
    p->grad = NULL;
    return t;
}

/* The weights that become NF4: every linear but the head (and never the token embedding, which a
 * tied head shares). */
static int quantizable(const an_model *m, const an_linear_ref *r) {
    return !r->is_head && r->w != m->tok_emb && r->w->ndim == 2;
}

int an_nf4_weights_finish(an_model *m, an_error *err) {
    if (!m->nf4) return 0;
    if (m->param_mem) { /* move the float32 tensors that remain into a smaller allocation */
        size_t total = 0;
        for (int i = 0; i < m->n_params; i++)
            if (!an_param_nf4(&m->params[i])) total += (m->params[i].numel + AN_NF4_ALIGN - 1) / AN_NF4_ALIGN * AN_NF4_ALIGN;
        float *mem = m->ops->alloc(m->ops, (total ? total : 1) * sizeof(float));
        if (!mem) return an_fail(err, "model: cannot allocate %.1f MiB for the parameters", (double)total * 4 / 1048576);
        size_t off = 0;
        for (int i = 0; i < m->n_params; i++) {
            an_param *p = &m->params[i];
            if (an_param_nf4(p)) {
                p->data = NULL;
                continue;
            }
            m->ops->copy(m->ops, mem + off, p->data, p->numel * sizeof(float));
            p->data = mem + off;
            off += (p->numel + AN_NF4_ALIGN - 1) / AN_NF4_ALIGN * AN_NF4_ALIGN;
        }
        m->ops->free(m->ops, m->param_mem);
        m->param_mem = mem;
        m->n_param_floats = total;
    }
    for (int i = 0; i < m->n_params; i++) {
        an_nf4_tensor *t = an_param_nf4(&m->params[i]);
        if (t && to_device(m, t, m->params[i].name, err)) return -1;
    }
    return 0;
}

static int supported(const an_model *m, const char *what, an_error *err) {
    const an_ops *o = m->ops;
    if (!o->supports(o, AN_OP_linear_forward, AN_NF4) || !o->supports(o, AN_OP_linear_backward_input, AN_NF4))
        return an_fail(err, "%s: the %s backend has no ops for NF4 weights", what, o->name);
    return 0;
}

static int check_args(int blocksize, const char *what, an_error *err) {
    if (blocksize < 32 || blocksize > 4096 || (blocksize & (blocksize - 1)))
        return an_fail(err, "%s: NF4 blocksize %d is not a power of two in 32..4096", what, blocksize);
    return 0;
}

int an_model_quantize_nf4(an_model *m, int blocksize, int double_quant, an_error *err) {
    if (check_args(blocksize, "quantize", err) || supported(m, "quantize", err)) return -1;
    if (an_model_is_quantized(m)) return an_fail(err, "quantize: the model is already quantized");
    if (m->bf16_mem) return an_fail(err, "quantize: the embedding/head are stored in bf16 already (quantize first)");
    if (m->ggml_mem)
        return an_fail(err, "quantize: the model holds GGUF-quantized weights; load the GGUF dequantized to convert it "
                            "to NF4 (quant.gguf \"nf4\")");
    int cap = m->cfg.n_layers * 8 + 1;
    an_linear_ref *refs = calloc((size_t)cap, sizeof *refs);
    if (!refs) return an_fail(err, "quantize: out of memory");
    int n = an_model_linears(m, refs, cap), rc = -1;
    size_t maxn = 0;
    for (int i = 0; i < n; i++)
        if (quantizable(m, &refs[i]) && !an_param_nf4(refs[i].w) && refs[i].w->numel > maxn) maxn = refs[i].w->numel;
    float *host = malloc((maxn ? maxn : 1) * sizeof(float));
    if (!host) {
        an_fail(err, "quantize: out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        an_param *p = refs[i].w;
        if (!quantizable(m, &refs[i]) || an_param_nf4(p)) continue;
        m->ops->download(m->ops, host, p->data, p->numel * sizeof(float));
        an_nf4_tensor *t = an_nf4_weights_slot(m, p, err);
        if (!t) goto done;
        if (an_nf4_tensor_quantize(t, host, p->shape[0], p->shape[1], blocksize, double_quant, err)) {
            /* give the slot back: p keeps its float data, the model stays usable */
            p->dtype = AN_F32;
            p->packed = NULL;
            m->nf4->n--;
            an_fail_prefix(err, "quantize: %s", p->name);
            goto done;
        }
    }
    if (m->nf4) {
        m->nf4->blocksize = blocksize;
        m->nf4->double_quant = double_quant;
    }
    rc = an_nf4_weights_finish(m, err);
    /* gradients laid out for the old trainable set are stale: the NF4 weights are frozen now */
    if (!rc && m->grad_mem) rc = an_model_alloc_grads(m, err);
    /* a plan made before holds a workspace sized for float32 weights: make it again */
    if (!rc && m->plan.block) rc = an_model_plan(m, m->plan.B, m->plan.T, err);
done:
    if (rc && m->nf4) { /* what was quantized before the failure still gets its memory back */
        an_error ignored;
        (void)an_nf4_weights_finish(m, &ignored);
    }
    free(host);
    free(refs);
    return rc;
}

int an_model_is_quantized(const an_model *m) {
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].dtype == AN_NF4) return 1;
    return 0;
}

size_t an_model_nf4_param_count(const an_model *m) {
    size_t n = 0;
    for (int i = 0; m->nf4 && i < m->nf4->n; i++) n += (size_t)m->nf4->tensors[i].n;
    return n;
}

size_t an_model_nf4_bytes(const an_model *m) {
    size_t n = 0;
    for (int i = 0; m->nf4 && i < m->nf4->n; i++) n += an_nf4_tensor_bytes(&m->nf4->tensors[i]);
    return n;
}

/* ---- reading ---- */

/* A float array of st as float32 (malloc'd; converted from any float dtype), its count in *count. */
static float *read_floats(const an_st_tensor *t, int64_t *count, an_error *err) {
    int64_t k = an_st_numel(t);
    float *f = malloc((size_t)(k > 0 ? k : 1) * sizeof(float));
    if (!f) {
        an_fail(err, "out of memory");
        return NULL;
    }
    if (an_st_to_f32(t, f, err)) {
        free(f);
        return NULL;
    }
    *count = k;
    return f;
}

static const an_st_tensor *mark(const an_safetensors *st, char *used, const char *name, const char *suffix) {
    char key[256];
    snprintf(key, sizeof key, "%s%s", name, suffix);
    const an_st_tensor *t = an_st_find(st, key);
    if (t && used) used[t - st->tensors] = 1;
    return t;
}

/* p from bitsandbytes' arrays in st (the packed-weight key is p->name itself). */
static int read_bnb(an_model *m, an_param *p, const an_safetensors *st, const char *file, char *used, an_error *err) {
    const an_st_tensor *w = mark(st, used, p->name, "");
    const an_st_tensor *qs = mark(st, used, p->name, ".quant_state.bitsandbytes__nf4");
    const an_st_tensor *am = mark(st, used, p->name, ".absmax");
    const an_st_tensor *qm = mark(st, used, p->name, ".quant_map");
    const an_st_tensor *na = mark(st, used, p->name, ".nested_absmax");
    const an_st_tensor *nq = mark(st, used, p->name, ".nested_quant_map");
    if (!w || !am || !qm)
        return an_fail(err, "%s: NF4 tensor %s: %s is missing", file, p->name, !w ? "the packed weight" : !am ? "absmax" : "quant_map");
    if (qs->dtype != AN_U8)
        return an_fail(err, "%s: NF4 tensor %s: quant_state.bitsandbytes__nf4 is %s, not U8", file, p->name,
                       an_dtype_name(qs->dtype));
    an_nf4_bnb_arrays a;
    memset(&a, 0, sizeof a);
    a.name = p->name;
    a.weight = w->data;
    a.weight_bytes = (int64_t)w->nbytes;
    a.quant_state_json = qs->data;
    a.quant_state_len = qs->nbytes;
    float *f_am = NULL, *f_qm = NULL, *f_na = NULL, *f_nq = NULL;
    int rc = -1;
    if (am->dtype == AN_U8) {
        a.absmax_u8 = am->data;
        a.absmax_count = an_st_numel(am);
    } else if (!(f_am = read_floats(am, &a.absmax_count, err))) {
        goto done;
    }
    a.absmax_f32 = f_am;
    if (!(f_qm = read_floats(qm, &a.quant_map_count, err))) goto done;
    a.quant_map = f_qm;
    if (na && !(f_na = read_floats(na, &a.nested_absmax_count, err))) goto done;
    if (nq && !(f_nq = read_floats(nq, &a.nested_quant_map_count, err))) goto done;
    a.nested_absmax = f_na;
    a.nested_quant_map = f_nq;
    an_nf4_tensor *t = an_nf4_weights_slot(m, p, err);
    if (!t) goto done;
    if (an_nf4_from_bnb(t, &a, err)) goto done;
    if (t->rows != p->shape[0] || t->cols != p->shape[1]) {
        an_fail(err, "%s: NF4 tensor %s: quant_state shape [%lld, %lld], but the config implies [%lld, %lld]", file,
                p->name, (long long)t->rows, (long long)t->cols, (long long)p->shape[0], (long long)p->shape[1]);
        goto done;
    }
    rc = 0;
done:
    if (rc && !strstr(err->msg, file)) an_fail_prefix(err, "%s", file);
    free(f_am);
    free(f_qm);
    free(f_na);
    free(f_nq);
    return rc;
}

int an_nf4_weights_read(an_model *m, const an_safetensors *st, const char *file, int quant_blocksize,
                        int double_quant, char *used, an_error *err) {
    int cap = m->cfg.n_layers * 8 + 1;
    an_linear_ref *refs = calloc((size_t)cap, sizeof *refs);
    float *host = NULL;
    if (!refs) return an_fail(err, "%s: out of memory", file);
    int n = an_model_linears(m, refs, cap), rc = -1, any_bnb = 0;
    for (int i = 0; i < n; i++) {
        an_param *p = refs[i].w;
        char key[256];
        snprintf(key, sizeof key, "%s.quant_state.bitsandbytes__nf4", p->name);
        if (!an_st_find(st, key)) continue;
        if (!quantizable(m, &refs[i])) {
            an_fail(err, "%s: tensor %s is NF4, but autoneg keeps the %s in float precision", file, p->name,
                    refs[i].is_head ? "output head" : "embedding");
            goto done;
        }
        if (read_bnb(m, p, st, file, used, err)) goto done;
        any_bnb = 1;
    }
    if (any_bnb && m->nf4) {
        m->nf4->blocksize = m->nf4->tensors[0].blocksize;
        m->nf4->double_quant = m->nf4->tensors[0].double_quant;
    }
    if (quant_blocksize > 0) {
        size_t maxn = 0;
        for (int i = 0; i < n; i++)
            if (quantizable(m, &refs[i]) && refs[i].w->numel > maxn) maxn = refs[i].w->numel;
        host = malloc((maxn ? maxn : 1) * sizeof(float));
        if (!host) {
            an_fail(err, "%s: out of memory", file);
            goto done;
        }
        for (int i = 0; i < n; i++) {
            an_param *p = refs[i].w;
            if (!quantizable(m, &refs[i]) || an_param_nf4(p)) continue;
            const an_st_tensor *t = an_st_find(st, p->name);
            if (!t) continue; /* load_tensors reports it */
            if (p->transposed || t->ndim != 2 || t->shape[0] != p->shape[0] || t->shape[1] != p->shape[1]) {
                if (p->transposed) an_fail(err, "%s: tensor %s: quantizing Conv1D (GPT-2) weights while loading is not "
                                                "supported; load the model, then an_model_quantize_nf4", file, p->name);
                else an_fail(err, "%s: tensor %s does not have the shape [%lld, %lld] the config implies", file, p->name,
                              (long long)p->shape[0], (long long)p->shape[1]);
                goto done;
            }
            if (an_st_to_f32(t, host, err)) {
                an_fail_prefix(err, "%s: tensor %s", file, p->name);
                goto done;
            }
            if (an_st_check_finite(t, host, file, err)) goto done;
            an_nf4_tensor *q = an_nf4_weights_slot(m, p, err);
            if (!q) goto done;
            if (an_nf4_tensor_quantize(q, host, p->shape[0], p->shape[1], quant_blocksize, double_quant, err)) {
                an_fail_prefix(err, "%s: tensor %s", file, p->name);
                goto done;
            }
            used[t - st->tensors] = 1;
        }
        if (m->nf4 && !any_bnb) {
            m->nf4->blocksize = quant_blocksize;
            m->nf4->double_quant = double_quant;
        }
    }
    rc = 0;
done:
    free(host);
    free(refs);
    return rc;
}

/* ---- writing ---- */

/* A double as Python's repr writes it (shortest round-trip digits, ".0" on whole numbers), so the
 * packed JSON is byte for byte what bitsandbytes writes. */
static void py_float_repr(char *out, size_t cap, double v) {
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, cap, "%.*g", prec, v);
        if (strtod(out, NULL) == v) break;
    }
    if (!strpbrk(out, ".eni")) strncat(out, ".0", cap - strlen(out) - 1);
}

int an_nf4_weights_add(an_st_writer *w, const an_param *p, char *json, size_t json_cap, an_error *err) {
    const an_nf4_tensor *t = an_param_nf4(p);
    int n;
    if (t->double_quant) {
        char off[40];
        py_float_repr(off, sizeof off, (double)t->offset);
        n = snprintf(json, json_cap,
                     "{\"quant_type\": \"nf4\", \"blocksize\": %d, \"dtype\": \"float32\", \"shape\": [%lld, %lld], "
                     "\"nested_blocksize\": %d, \"nested_dtype\": \"float32\", \"nested_offset\": %s}",
                     t->blocksize, (long long)t->rows, (long long)t->cols, t->blocksize2, off);
    } else {
        n = snprintf(json, json_cap, "{\"quant_type\": \"nf4\", \"blocksize\": %d, \"dtype\": \"float32\", \"shape\": [%lld, %lld]}",
                     t->blocksize, (long long)t->rows, (long long)t->cols);
    }
    if (n < 0 || (size_t)n >= json_cap) return an_fail(err, "%s: quant_state JSON too long", p->name);
    char key[256];
    int64_t s_w[2] = {(t->n + 1) / 2, 1}, s_b[1] = {t->n_blocks}, s_16[1] = {16}, s_b2[1] = {t->n_blocks2},
            s_256[1] = {256}, s_js[1] = {n};
#define ADD(SUFFIX, DT, ND, SHAPE, DATA)                                                                               \
    do {                                                                                                               \
        snprintf(key, sizeof key, "%s%s", p->name, SUFFIX);                                                            \
        if (an_st_writer_add(w, key, DT, ND, SHAPE, DATA, err)) return -1;                                             \
    } while (0)
    ADD("", AN_U8, 2, s_w, t->packed);
    ADD(".quant_map", AN_F32, 1, s_16, an_nf4_code);
    if (t->double_quant) {
        ADD(".absmax", AN_U8, 1, s_b, t->qabsmax);
        ADD(".nested_absmax", AN_F32, 1, s_b2, t->absmax2);
        ADD(".nested_quant_map", AN_F32, 1, s_256, t->code8);
    } else {
        ADD(".absmax", AN_F32, 1, s_b, t->absmax);
    }
    ADD(".quant_state.bitsandbytes__nf4", AN_U8, 1, s_js, json);
#undef ADD
    return 0;
}

int an_nf4_config_patch(const an_model *m, const char *path, an_error *err) {
    size_t len = 0;
    char *text = an_read_file(path, &len, err);
    if (!text) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return an_fail(err, "%s: cannot parse the config just written", path);
    cJSON_DeleteItemFromObjectCaseSensitive(root, "quantization_config");
    cJSON *q = cJSON_CreateObject();
    int dq = m->nf4 ? m->nf4->double_quant : 1;
    /* the keys and values transformers writes for BitsAndBytesConfig(load_in_4bit=True, nf4) */
    cJSON_AddBoolToObject(q, "_load_in_4bit", 1);
    cJSON_AddBoolToObject(q, "_load_in_8bit", 0);
    cJSON_AddStringToObject(q, "bnb_4bit_compute_dtype", "float32");
    cJSON_AddStringToObject(q, "bnb_4bit_quant_storage", "uint8");
    cJSON_AddStringToObject(q, "bnb_4bit_quant_type", "nf4");
    cJSON_AddBoolToObject(q, "bnb_4bit_use_double_quant", dq);
    cJSON_AddBoolToObject(q, "llm_int8_enable_fp32_cpu_offload", 0);
    cJSON_AddBoolToObject(q, "llm_int8_has_fp16_weight", 0);
    cJSON_AddNullToObject(q, "llm_int8_skip_modules");
    cJSON_AddRawToObject(q, "llm_int8_threshold", "6.0"); /* a float in Python: transformers checks the type */
    cJSON_AddBoolToObject(q, "load_in_4bit", 1);
    cJSON_AddBoolToObject(q, "load_in_8bit", 0);
    cJSON_AddStringToObject(q, "quant_method", "bitsandbytes");
    cJSON_AddItemToObject(root, "quantization_config", q);
    char *out = cJSON_Print(root);
    cJSON_Delete(root);
    if (!out) return an_fail(err, "%s: out of memory", path);
    size_t olen = strlen(out);
    out = realloc(out, olen + 2);
    out[olen] = '\n';
    int rc = an_write_file_atomic(path, out, olen + 1, err);
    free(out);
    return rc;
}

/* ---- compute ---- */

int an_nf4_merge_delta(an_model *m, an_param *w, const float *a, const float *bt, int r, float scaling,
                       an_error *err) {
    an_nf4_tensor *t = an_param_nf4(w);
    int64_t out = t->rows, in = t->cols;
    float *dense = malloc((size_t)t->n * sizeof(float));
    float *ha = malloc((size_t)r * in * sizeof(float)), *hb = malloc((size_t)r * out * sizeof(float));
    if (!dense || !ha || !hb) {
        free(dense);
        free(ha);
        free(hb);
        return an_fail(err, "lora merge: out of memory dequantizing %s", w->name);
    }
    an_nf4_tensor_dequantize(t, dense);
    m->ops->download(m->ops, ha, a, (size_t)r * in * sizeof(float));
    m->ops->download(m->ops, hb, bt, (size_t)r * out * sizeof(float));
    for (size_t k = 0; k < (size_t)r * in; k++) ha[k] *= scaling;
    /* W[o, i] += sum_k Bt[k, o] (s A)[k, i]: what PEFT adds to the dequantized weight, in host memory
     * (so on the CPU's op whatever m's backend) */
    const an_ops *cpu = an_ops_cpu();
    cpu->matmul_backward(cpu, NULL, dense, NULL, hb, ha, NULL, r, (int)in, (int)out);
    an_nf4_tensor q;
    int rc = an_nf4_tensor_quantize(&q, dense, out, in, t->blocksize, t->double_quant, err);
    if (!rc) {
        free_device_copy(t, m->ops);
        an_nf4_tensor_free(t);
        *t = q;
        rc = to_device(m, t, w->name, err);
    } else {
        an_fail_prefix(err, "lora merge: %s", w->name);
    }
    free(dense);
    free(ha);
    free(hb);
    return rc;
}
