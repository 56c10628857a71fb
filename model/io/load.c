/* Loading a model from a Hugging Face folder, a llama2.c .bin or a GGUF file, and saving one as a Hugging
 * Face folder.
 *
 * Every tensor the family needs must be in the file with the expected shape; any other tensor is an
 * error too (a checkpoint with biases the config does not announce would otherwise load as garbage),
 * except the buffers Hugging Face keeps in old checkpoints (GPT-2 attn.bias / attn.masked_bias, rotary
 * inv_freq) and a duplicate lm_head.weight of a tied model. Weights of any float dtype become float32. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model/io/gguf_model.h"
#include "model/io/llama2c.h"
#include "model/model.h"
#include "model/nf4_weights.h"
#include "model/io/safetensors.h"

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int ignorable(const an_model *m, const char *name) {
    if (ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias") || ends_with(name, "rotary_emb.inv_freq"))
        return 1;
    return m->cfg.tie_embeddings && strcmp(name, "lm_head.weight") == 0;
}

/* The tensor in the file for parameter p: its own name, GPT-2's name without "transformer." (the
 * original OpenAI checkpoints), or for a tied embedding the head it is tied to (some tied checkpoints,
 * TinyStories-656K among them, store only lm_head.weight). */
static const an_st_tensor *find_tensor(const an_model *m, const an_safetensors *st, const an_param *p) {
    const an_st_tensor *t = an_st_find(st, p->name);
    if (!t && strncmp(p->name, "transformer.", 12) == 0) t = an_st_find(st, p->name + 12);
    if (!t && p == m->tok_emb && m->cfg.tie_embeddings) t = an_st_find(st, "lm_head.weight");
    return t;
}

static void shape_str(char *out, size_t n, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(out, n, "[");
    for (int i = 0; i < ndim && k < n; i++) k += (size_t)snprintf(out + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(out + k, n - k, "]");
}

/* used[]: the tensors of st already taken (by the NF4 reader) */
static int load_tensors(an_model *m, const an_safetensors *st, const char *file, char *used, an_error *err) {
    size_t maxn = 1;
    for (int i = 0; i < m->n_params; i++)
        if (!an_param_nf4(&m->params[i]) && m->params[i].numel > maxn) maxn = m->params[i].numel;
    float *buf = malloc(maxn * sizeof(float)), *tmp = malloc(maxn * sizeof(float));
    int rc = -1;
    if (!buf || !tmp) {
        an_fail(err, "%s: out of memory while loading", file);
        goto done;
    }
    for (int i = 0; i < m->n_params; i++) {
        an_param *p = &m->params[i];
        if (an_param_nf4(p)) continue; /* read by an_nf4_weights_read */
        const an_st_tensor *t = find_tensor(m, st, p);
        if (!t) {
            an_fail(err, "%s: tensor %s is missing", file, p->name);
            goto done;
        }
        used[t - st->tensors] = 1;
        int64_t want[2] = {p->transposed ? p->shape[1] : p->shape[0], p->transposed ? p->shape[0] : p->shape[1]};
        int ok = t->ndim == p->ndim && t->shape[0] == want[0] && (p->ndim == 1 || t->shape[1] == want[1]);
        if (!ok) {
            char got[128], exp[128];
            shape_str(got, sizeof got, t->ndim, t->shape);
            shape_str(exp, sizeof exp, p->ndim, want);
            an_fail(err, "%s: tensor %s has shape %s, expected %s", file, t->name, got, exp);
            goto done;
        }
        if (an_st_to_f32(t, p->transposed ? tmp : buf, err)) {
            an_fail_prefix(err, "%s: tensor %s", file, t->name);
            goto done;
        }
        if (an_st_check_finite(t, p->transposed ? tmp : buf, file, err)) goto done;
        if (p->transposed) { /* Conv1D [in, out] -> [out, in] */
            int rows = (int)p->shape[0], cols = (int)p->shape[1];
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < cols; c++) buf[(size_t)r * cols + c] = tmp[(size_t)c * rows + r];
        }
        m->ops->upload(m->ops, p->data, buf, p->numel * sizeof(float));
    }
    for (int i = 0; i < st->n_tensors; i++) {
        if (!used[i] && !ignorable(m, st->tensors[i].name)) {
            an_fail(err, "%s: unexpected tensor %s (not part of a %s model with this config)", file,
                    AN_QUOTE(st->tensors[i].name), m->cfg.architecture);
            goto done;
        }
    }
    rc = 0;
done:
    free(buf);
    free(tmp);
    return rc;
}

/* A .gguf file (model/io/gguf_model.h): its quantized weights kept in their blocks (keep) or dequantized
 * to float32 as they are read. With quant_blocksize > 0 the float model is then quantized to NF4, as
 * an_model_quantize_nf4 does for any loaded model (the GGUF blocks are not converted to NF4 directly:
 * ggml's and NF4's blocks differ). */
static an_model *load_gguf(const char *path, const an_ops *ops, int keep, int quant_blocksize, int double_quant,
                           an_error *err) {
    an_gguf g;
    if (an_gguf_open(&g, path, err)) return NULL;
    an_model *m = NULL;
    an_model_config cfg;
    int rc = -1;
    if (an_gguf_model_config(&g, &cfg, err)) goto done;
    if (an_config_validate(&cfg, "GGUF metadata", err)) {
        an_fail_prefix(err, "%s", path);
        goto done;
    }
    if (!(m = calloc(1, sizeof *m))) {
        an_fail(err, "%s: out of memory", path);
        goto done;
    }
    m->cfg = cfg;
    m->ops = ops;
    if (an_model_build_table(m, err)) {
        an_fail_prefix(err, "%s", path);
        goto done;
    }
    if (keep && an_gguf_model_keep_quantized(m, &g, err)) goto done;
    if (an_model_alloc_params(m, err)) {
        an_fail_prefix(err, "%s", path);
        goto done;
    }
    if (an_gguf_model_read_weights(m, &g, err)) goto done;
    if (quant_blocksize > 0 && an_model_quantize_nf4(m, quant_blocksize, double_quant, err)) {
        an_fail_prefix(err, "%s", path);
        goto done;
    }
    rc = 0;
done:
    an_gguf_close(&g);
    if (rc) {
        an_model_free(m);
        return NULL;
    }
    return m;
}

/* quant_blocksize > 0: quantize the linear weights to NF4 while reading (an_model_load_nf4). Weights
 * the file holds in bitsandbytes' NF4 serialization load as NF4 either way. */
static an_model *load(const char *path, const an_ops *ops, int quant_blocksize, int double_quant, an_error *err) {
    an_model_config cfg;
    an_safetensors st;
    memset(&st, 0, sizeof st);
    char file[4096];
    if (!an_is_dir(path) && ends_with(path, ".gguf"))
        return load_gguf(path, ops, quant_blocksize <= 0, quant_blocksize, double_quant, err);
    if (an_is_dir(path)) {
        char cfg_path[4096];
        if (an_path_join(cfg_path, sizeof cfg_path, path, "config.json")) {
            an_fail(err, "%s: path too long", path);
            return NULL;
        }
        if (an_config_load(&cfg, cfg_path, err)) return NULL;
        if (an_st_open(&st, path, err)) return NULL;
        an_path_join(file, sizeof file, path, "model.safetensors");
        if (!an_file_exists(file)) an_path_join(file, sizeof file, path, "model.safetensors.index.json");
    } else {
        if (an_llama2c_open(&cfg, &st, path, err)) return NULL;
        snprintf(file, sizeof file, "%s", path);
    }
    an_model *m = NULL;
    char *used = calloc((size_t)st.n_tensors + 1, 1);
    int rc = -1;
    if (!used) {
        an_fail(err, "%s: out of memory", path);
        goto done;
    }
    if (an_config_validate(&cfg, "model config", err)) {
        an_fail_prefix(err, "%s", path);
        goto done;
    }
    if (!(m = calloc(1, sizeof *m))) {
        an_fail(err, "%s: out of memory", path);
        goto done;
    }
    m->cfg = cfg;
    m->ops = ops;
    if (an_model_build_table(m, err)) {
        an_fail_prefix(err, "%s", path);
        goto done;
    }
    if (an_nf4_weights_read(m, &st, file, quant_blocksize, double_quant, used, err)) goto done;
    if (m->nf4 && !ops->supports(ops, AN_OP_linear_forward, AN_NF4)) {
        an_fail(err, "%s: the model's weights are NF4, which the %s backend does not run", path, ops->name);
        goto done;
    }
    if (an_model_alloc_params(m, err)) {
        an_fail_prefix(err, "%s", path);
        goto done;
    }
    if (load_tensors(m, &st, file, used, err)) goto done;
    rc = an_nf4_weights_finish(m, err);
done:
    free(used);
    an_st_close(&st);
    if (rc) {
        an_model_free(m);
        return NULL;
    }
    return m;
}

an_model *an_model_load(const char *path, const an_ops *ops, an_error *err) { return load(path, ops, 0, 0, err); }

an_model *an_model_load_gguf(const char *path, const an_ops *ops, an_gguf_load mode, an_error *err) {
    return load_gguf(path, ops, mode == AN_GGUF_KEEP, 0, 0, err);
}

an_model *an_model_load_nf4(const char *path, const an_ops *ops, int blocksize, int double_quant, an_error *err) {
    if (blocksize < 32 || blocksize > 4096 || (blocksize & (blocksize - 1))) {
        an_fail(err, "%s: NF4 blocksize %d is not a power of two in 32..4096", path, blocksize);
        return NULL;
    }
    return load(path, ops, blocksize, double_quant, err);
}

int an_model_save(const an_model *m, const char *dir, an_error *err) {
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) return an_fail(err, "%s: cannot create folder: %s", dir, strerror(errno));
    char path[4096];
    if (an_path_join(path, sizeof path, dir, "config.json")) return an_fail(err, "%s: path too long", dir);
    /* an_model_export turns llama2.c's interleaved q/k rows into rotate-half order, so the saved
     * model is a plain Hugging Face one */
    an_model_config cfg = m->cfg;
    if (m->nf4 && cfg.rope_interleaved)
        return an_fail(err, "%s: a llama2.c model with NF4 weights cannot be saved (its q/k rows would need "
                            "reordering inside the quantized blocks); save the float model and quantize that", dir);
    cfg.rope_interleaved = 0;
    if (an_config_save(&cfg, path, err)) return -1;
    if (m->nf4 && an_nf4_config_patch(m, path, err)) return -1;

    /* every weight but NF4 ones (written as bitsandbytes' arrays) goes through host as float32, those
     * kept in a GGUF's blocks or panels too (not counted in n_param_floats) */
    size_t maxn = 0, total = 1;
    for (int i = 0; i < m->n_params; i++) {
        if (m->params[i].numel > maxn) maxn = m->params[i].numel;
        if (!an_param_nf4(&m->params[i])) total += m->params[i].numel;
    }
    float *host = malloc(total * sizeof(float)), *tmp = malloc(maxn * sizeof(float));
    enum { JSON_CAP = 512 };
    char *json = m->nf4 ? malloc((size_t)m->n_params * JSON_CAP) : NULL; /* quant_state of each NF4 weight */
    an_st_writer w;
    an_st_writer_init(&w);
    int rc = -1;
    if (!host || !tmp || (m->nf4 && !json)) {
        an_fail(err, "%s: out of memory while saving", dir);
        goto done;
    }
    size_t off = 0;
    for (int i = 0; i < m->n_params; i++) {
        const an_param *p = &m->params[i];
        if (an_param_nf4(p)) { /* bitsandbytes' serialization, as transformers saves a 4-bit model */
            if (an_nf4_weights_add(&w, p, json + (size_t)i * JSON_CAP, JSON_CAP, err)) goto done;
            continue;
        }
        float *dst = host + off;
        off += p->numel;
        an_model_export(m, p, p->data, dst, tmp);
        int64_t shape[2] = {p->transposed ? p->shape[1] : p->shape[0], p->transposed ? p->shape[0] : p->shape[1]};
        if (an_st_writer_add(&w, p->name, AN_F32, p->ndim, shape, dst, err)) goto done;
    }
    if (an_st_writer_meta(&w, "format", "pt", err)) goto done;
    if (an_path_join(path, sizeof path, dir, "model.safetensors")) {
        an_fail(err, "%s: path too long", dir);
        goto done;
    }
    rc = an_st_write(&w, path, err);
done:
    an_st_writer_free(&w);
    free(host);
    free(tmp);
    free(json);
    return rc;
}
