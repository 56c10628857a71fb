/* PEFT adapter folders: adapter_config.json + adapter_model.safetensors (model/lora.h).
 *
 * Keys are "base_model.model.<module>.lora_A.weight" [r, in] and ".lora_B.weight" [out, r], float32.
 * GPT-2's Conv1D layers take the same shapes (PEFT derives in/out from the Conv1D weight and sets
 * fan_in_fan_out, which only changes how it merges). A llama2.c model holds q/k rows in interleaved
 * RoPE order while the Hugging Face export permutes them, so lora_B of q_proj/k_proj is permuted the
 * same way on save and back on load. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/file.h"
#include "model/io/llama2c.h"
#include "model/lora.h"
#include "model/io/safetensors.h"

#define PEFT_PREFIX "base_model.model."

static int permuted_rows(const an_model *m, const an_lora_module *mod) {
    if (!m->cfg.rope_interleaved) return 0;
    for (int l = 0; l < m->cfg.n_layers; l++)
        if (mod->base == m->layers[l].wq || mod->base == m->layers[l].wk) return 1;
    return 0;
}

/* rows of b [out, r] from interleaved to rotate-half order (dir 1) or back (dir -1); tmp: out * r */
static void permute_b(const an_model *m, const an_lora_module *mod, float *b, float *tmp, int dir) {
    int hd = m->cfg.head_dim, heads = mod->out / hd, r = (int)mod->bt.shape[0];
    if (dir > 0) {
        memcpy(tmp, b, (size_t)mod->out * r * sizeof(float));
        an_llama2c_permute_qk(b, tmp, heads, hd, r);
        return;
    }
    /* the inverse: where does each row go? permute a column of row numbers and scatter back */
    float *idx = malloc((size_t)mod->out * 2 * sizeof(float));
    if (!idx) return;
    for (int i = 0; i < mod->out; i++) idx[i] = (float)i;
    an_llama2c_permute_qk(idx + mod->out, idx, heads, hd, 1);
    memcpy(tmp, b, (size_t)mod->out * r * sizeof(float));
    for (int i = 0; i < mod->out; i++) /* row i of the permuted matrix came from row idx[out + i] */
        memcpy(b + (size_t)idx[mod->out + i] * r, tmp + (size_t)i * r, (size_t)r * sizeof(float));
    free(idx);
}

static int save_config(const an_model *m, const char *path, an_error *err) {
    const an_lora *l = m->lora;
    const an_lora_config *c = &l->cfg;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "alpha_pattern", cJSON_CreateObject());
    cJSON_AddNullToObject(o, "auto_mapping");
    cJSON_AddStringToObject(o, "base_model_name_or_path", l->base_model);
    cJSON_AddStringToObject(o, "bias", "none");
    cJSON_AddBoolToObject(o, "fan_in_fan_out", m->cfg.arch == AN_ARCH_GPT2);
    cJSON_AddBoolToObject(o, "inference_mode", 1);
    cJSON_AddBoolToObject(o, "init_lora_weights", 1);
    cJSON_AddNullToObject(o, "layers_pattern");
    cJSON_AddNullToObject(o, "layers_to_transform");
    cJSON_AddNumberToObject(o, "lora_alpha", c->alpha);
    cJSON_AddNumberToObject(o, "lora_dropout", c->dropout);
    cJSON_AddNullToObject(o, "modules_to_save");
    cJSON_AddStringToObject(o, "peft_type", "LORA");
    cJSON_AddNumberToObject(o, "r", c->r);
    cJSON_AddItemToObject(o, "rank_pattern", cJSON_CreateObject());
    cJSON_AddNullToObject(o, "revision");
    /* "all-linear" is written out as the short names it selected, as PEFT does */
    cJSON *t = cJSON_CreateArray();
    for (int i = 0; i < c->n_targets; i++) {
        if (strcmp(c->targets[i], "all-linear") != 0) {
            cJSON_AddItemToArray(t, cJSON_CreateString(c->targets[i]));
            continue;
        }
        for (int k = 0; k < l->n_mods; k++) {
            const char *dot = strrchr(l->mods[k].name, '.');
            const char *s = dot ? dot + 1 : l->mods[k].name;
            int seen = 0;
            cJSON *e;
            cJSON_ArrayForEach(e, t) seen |= strcmp(e->valuestring, s) == 0;
            if (!seen) cJSON_AddItemToArray(t, cJSON_CreateString(s));
        }
    }
    cJSON_AddItemToObject(o, "target_modules", t);
    cJSON_AddStringToObject(o, "task_type", "CAUSAL_LM");
    cJSON_AddBoolToObject(o, "use_dora", 0);
    cJSON_AddBoolToObject(o, "use_rslora", c->use_rslora);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return an_fail(err, "%s: out of memory", path);
    int rc = an_write_file_atomic(path, text, strlen(text), err);
    free(text);
    return rc;
}

int an_lora_save(const an_model *m, const char *dir, an_error *err) {
    const an_lora *l = m->lora;
    if (!l) return an_fail(err, "%s: the model has no LoRA adapter to save", dir);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) return an_fail(err, "%s: cannot create folder: %s", dir, strerror(errno));
    char path[4096];
    if (an_path_join(path, sizeof path, dir, "adapter_config.json")) return an_fail(err, "%s: path too long", dir);
    if (save_config(m, path, err)) return -1;

    size_t maxn = 0;
    for (int i = 0; i < l->n_mods; i++)
        if (l->mods[i].bt.numel > maxn) maxn = l->mods[i].bt.numel;
    float *host = malloc(l->n_floats * sizeof(float)), *tmp = malloc((maxn ? maxn : 1) * sizeof(float));
    char(*names)[160] = calloc((size_t)l->n_mods * 2, sizeof *names);
    an_st_writer w;
    an_st_writer_init(&w);
    int rc = -1;
    if (!host || !tmp || !names) {
        an_fail(err, "%s: out of memory while saving the adapter", dir);
        goto done;
    }
    size_t off = 0;
    for (int i = 0; i < l->n_mods; i++) {
        const an_lora_module *mod = &l->mods[i];
        const an_param *ps[2] = {&mod->a, &mod->bt};
        for (int k = 0; k < 2; k++) {
            const an_param *p = ps[k];
            float *dst = host + off;
            off += p->numel;
            an_model_export(m, p, p->data, dst, tmp); /* bt [r, out] -> lora_B [out, r] */
            if (k == 1 && permuted_rows(m, mod)) permute_b(m, mod, dst, tmp, 1);
            int64_t shape[2] = {p->transposed ? p->shape[1] : p->shape[0], p->transposed ? p->shape[0] : p->shape[1]};
            snprintf(names[2 * i + k], sizeof names[0], PEFT_PREFIX "%s", p->name);
            if (an_st_writer_add(&w, names[2 * i + k], AN_F32, 2, shape, dst, err)) goto done;
        }
    }
    if (an_path_join(path, sizeof path, dir, "adapter_model.safetensors")) {
        an_fail(err, "%s: path too long", dir);
        goto done;
    }
    rc = an_st_write(&w, path, err);
done:
    an_st_writer_free(&w);
    free(host);
    free(tmp);
    free(names);
    return rc;
}

/* ---- loading ---- */

static int read_config(an_lora_config *c, char *base, size_t base_cap, const char *path, an_error *err) {
    char *text = an_read_file(path, NULL, err);
    if (!text) return -1;
    cJSON *o = cJSON_Parse(text);
    free(text);
    if (!o || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return an_fail(err, "%s: not a JSON object", path);
    }
    int rc = -1;
    *c = an_lora_config_default();
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "peft_type");
    if (!cJSON_IsString(v) || strcmp(v->valuestring, "LORA") != 0) {
        an_fail(err, "%s: peft_type must be \"LORA\"%s", path, cJSON_IsString(v) ? "" : " (missing)");
        goto done;
    }
    v = cJSON_GetObjectItemCaseSensitive(o, "r");
    if (!v) {
        an_fail(err, "%s: r is missing", path);
        goto done;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 1 || v->valuedouble > 65536) {
        an_fail(err, "%s: r must be an integer in [1, 65536]", path);
        goto done;
    }
    c->r = (int)v->valuedouble;
    v = cJSON_GetObjectItemCaseSensitive(o, "lora_alpha");
    if (v && !cJSON_IsNumber(v)) {
        an_fail(err, "%s: lora_alpha must be a number", path);
        goto done;
    }
    c->alpha = v ? (float)v->valuedouble : 8.0f; /* PEFT's default */
    v = cJSON_GetObjectItemCaseSensitive(o, "lora_dropout");
    if (v && (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= 1)) {
        an_fail(err, "%s: lora_dropout must be a number in [0, 1)", path);
        goto done;
    }
    c->dropout = v ? (float)v->valuedouble : 0.0f;
    v = cJSON_GetObjectItemCaseSensitive(o, "use_rslora");
    c->use_rslora = cJSON_IsTrue(v);
    v = cJSON_GetObjectItemCaseSensitive(o, "base_model_name_or_path");
    snprintf(base, base_cap, "%s", cJSON_IsString(v) ? v->valuestring : "");
    v = cJSON_GetObjectItemCaseSensitive(o, "use_dora");
    if (cJSON_IsTrue(v)) {
        an_fail(err, "%s: use_dora is true; DoRA adapters are not supported", path);
        goto done;
    }
    v = cJSON_GetObjectItemCaseSensitive(o, "bias");
    if (cJSON_IsString(v) && strcmp(v->valuestring, "none") != 0) {
        an_fail(err, "%s: bias %s is not supported (only \"none\")", path, AN_QUOTE(v->valuestring));
        goto done;
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "lora_bias"))) {
        an_fail(err, "%s: lora_bias is true; LoRA biases are not supported", path);
        goto done;
    }
    const char *unsupported[] = {"rank_pattern", "alpha_pattern"};
    for (int i = 0; i < 2; i++) {
        v = cJSON_GetObjectItemCaseSensitive(o, unsupported[i]);
        if (v && !cJSON_IsNull(v) && !(cJSON_IsObject(v) && !v->child)) {
            an_fail(err, "%s: %s is not supported (one rank and alpha for every module)", path, unsupported[i]);
            goto done;
        }
    }
    const char *unsupported_lists[] = {"modules_to_save", "layers_to_transform", "layer_replication"};
    for (int i = 0; i < 3; i++) {
        v = cJSON_GetObjectItemCaseSensitive(o, unsupported_lists[i]);
        if (v && !cJSON_IsNull(v) && !(cJSON_IsArray(v) && !v->child)) {
            an_fail(err, "%s: %s is not supported", path, unsupported_lists[i]);
            goto done;
        }
    }
    v = cJSON_GetObjectItemCaseSensitive(o, "target_modules");
    if (cJSON_IsString(v)) {
        if (strcmp(v->valuestring, "all-linear") != 0) {
            an_fail(err, "%s: target_modules is the regular expression %s; only a list of names (or \"all-linear\") "
                    "is supported", path, AN_QUOTE(v->valuestring));
            goto done;
        }
        if (an_lora_config_add_target(c, "all-linear", err)) goto done;
    } else if (cJSON_IsArray(v) && v->child) {
        const cJSON *e;
        cJSON_ArrayForEach(e, v) {
            if (!cJSON_IsString(e)) {
                an_fail(err, "%s: target_modules must hold strings", path);
                goto done;
            }
            if (an_lora_config_add_target(c, e->valuestring, err)) {
                an_fail_prefix(err, "%s", path);
                goto done;
            }
        }
    } else {
        an_fail(err, "%s: target_modules is missing or empty", path);
        goto done;
    }
    rc = 0;
done:
    cJSON_Delete(o);
    return rc;
}

an_lora *an_lora_open(an_model *m, const char *dir, an_error *err) {
    char cpath[4096], wpath[4096];
    if (an_path_join(cpath, sizeof cpath, dir, "adapter_config.json") ||
        an_path_join(wpath, sizeof wpath, dir, "adapter_model.safetensors"))
        return an_fail_null(err, "%s: path too long", dir);
    if (!an_file_exists(cpath)) return an_fail_null(err, "%s: no adapter_config.json (not a PEFT adapter folder)", dir);
    an_lora_config c;
    char base[1024];
    if (read_config(&c, base, sizeof base, cpath, err)) return NULL;
    an_safetensors st;
    if (an_st_open(&st, wpath, err)) return NULL;
    an_lora *l = an_lora_new_zeroed(m, &c, err);
    if (!l) {
        an_fail_prefix(err, "%s", cpath);
        an_st_close(&st);
        return NULL;
    }
    size_t maxn = 0;
    for (int i = 0; i < l->n_mods; i++) {
        size_t n = l->mods[i].a.numel > l->mods[i].bt.numel ? l->mods[i].a.numel : l->mods[i].bt.numel;
        if (n > maxn) maxn = n;
    }
    float *host = malloc(maxn * sizeof(float)), *tmp = malloc(maxn * sizeof(float));
    int rc = -1, used = 0;
    if (!host || !tmp) {
        an_fail(err, "%s: out of memory", wpath);
        goto done;
    }
    for (int i = 0; i < l->n_mods; i++) {
        an_lora_module *mod = &l->mods[i];
        an_param *ps[2] = {&mod->a, &mod->bt};
        for (int k = 0; k < 2; k++) {
            an_param *p = ps[k];
            char key[160];
            snprintf(key, sizeof key, PEFT_PREFIX "%s", p->name);
            int64_t shape[2] = {p->transposed ? p->shape[1] : p->shape[0], p->transposed ? p->shape[0] : p->shape[1]};
            const an_st_tensor *t = an_st_expect(&st, key, 2, shape, err);
            if (!t || an_st_to_f32(t, k ? tmp : host, err)) goto done;
            used++;
            if (an_st_check_finite(t, k ? tmp : host, wpath, err)) goto done;
            if (k == 1) { /* lora_B [out, r] -> bt [r, out] */
                if (permuted_rows(m, mod)) permute_b(m, mod, tmp, host, -1);
                for (int o = 0; o < mod->out; o++)
                    for (int j = 0; j < c.r; j++) host[(size_t)j * mod->out + o] = tmp[(size_t)o * c.r + j];
            }
            m->ops->upload(m->ops, p->data, host, p->numel * sizeof(float));
        }
    }
    if (used != st.n_tensors) {
        /* name one tensor the targets do not account for */
        for (int i = 0; i < st.n_tensors; i++) {
            int known = 0;
            for (int k = 0; k < l->n_mods && !known; k++) {
                char a[160], b[160];
                snprintf(a, sizeof a, PEFT_PREFIX "%s", l->mods[k].a.name);
                snprintf(b, sizeof b, PEFT_PREFIX "%s", l->mods[k].bt.name);
                known = !strcmp(st.tensors[i].name, a) || !strcmp(st.tensors[i].name, b);
            }
            if (!known) {
                an_fail(err, "%s: tensor %s belongs to no target module of this model", wpath, st.tensors[i].name);
                goto done;
            }
        }
    }
    rc = 0;
    snprintf(l->base_model, sizeof l->base_model, "%s", base);
done:
    free(host);
    free(tmp);
    an_st_close(&st);
    if (rc) {
        an_lora_free(l);
        return NULL;
    }
    return l;
}

int an_lora_load(an_model *m, const char *dir, an_error *err) {
    if (m->lora) return an_fail(err, "%s: the model already has an adapter", dir);
    an_lora *l = an_lora_open(m, dir, err);
    if (!l) return -1;
    if (an_lora_adopt(m, l, err)) {
        an_lora_free(l);
        return an_fail_prefix(err, "%s", dir);
    }
    return 0;
}
