/* Run setup and output: the model and tokenizer, checkpoints of model state, the final folder. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/file.h"
#include "data/tokenizers/tokenizer.h"
#include "kernels/backend.h"
#include "train/data_pipeline.h"
#include "train/trainer_impl.h"

void an_trainer_note(const an_trainer_opts *o, const char *fmt, ...) {
    if (!o || !o->note) return;
    char line[1400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    o->note(o->note_ctx, line);
}

int an_trainer_first_missing(const char *path, char *out, size_t size, an_error *err) {
    char p[1100];
    out[0] = 0;
    if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p) return an_fail(err, "%s: path too long", path);
    for (char *s = p + 1;; s++) {
        if (*s && *s != '/') continue;
        char c = *s;
        *s = 0;
        struct stat st;
        if (lstat(p, &st) != 0 && errno == ENOENT) {
            if (snprintf(out, size, "%s", p) >= (int)size) return an_fail(err, "%s: path too long", path);
            return 0;
        }
        *s = c;
        if (!c) return 0;
    }
}

int an_trainer_mkdirs(const char *path, an_error *err) {
    char p[1100];
    if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p) return an_fail(err, "%s: path too long", path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0755) && errno != EEXIST) return an_fail(err, "%s: cannot create folder: %s", p, strerror(errno));
        *s = '/';
    }
    if (mkdir(p, 0755) && errno != EEXIST) return an_fail(err, "%s: cannot create folder: %s", p, strerror(errno));
    if (!an_is_dir(p)) return an_fail(err, "%s: exists and is not a folder", p);
    return 0;
}

int an_trainer_lock(const char *dir, an_error *err) {
    char path[1100];
    if (an_path_join(path, sizeof path, dir, "run.lock")) return an_fail(err, "%s: path too long", dir);
    /* O_CLOEXEC: a child process (none today) must not hold the run's lock after the run ends */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return an_fail(err, "%s: cannot open the run's lock file: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        close(fd);
        if (e != EWOULDBLOCK) return an_fail(err, "%s: cannot lock: %s", path, strerror(e));
        return an_fail(err, "%s: another autoneg train (pid %s) is using this run folder; two runs in one folder would "
                            "overwrite each other's checkpoints and metrics. Wait for it to end, or train into another "
                            "--out",
                       dir, pid[0] ? pid : "unknown");
    }
    /* the pid is for the message above only; the lock itself is the flock, which the kernel drops when
     * this process ends however it ends, so a stale pid in the file never blocks a run */
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) || pwrite(fd, pid, (size_t)len, 0) != len) {
        an_fail(err, "%s: cannot write: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* The config of a run from scratch, written to DIR/config.json and read back through the config
 * loader, so an inline object gets the same checks as a file. */
static int scratch_config(const an_recipe *r, an_model_config *cfg, an_error *err) {
    char out[1100], preset[1100];
    if (an_path_join(out, sizeof out, r->output.dir, "config.json")) return an_fail(err, "%s: path too long", r->output.dir);
    if (r->model_config_json) {
        if (an_write_file_atomic(out, r->model_config_json, strlen(r->model_config_json), err)) return -1;
        if (an_config_load(cfg, out, err)) return an_fail_prefix(err, "recipe: model_config");
        return 0;
    }
    const char *p = r->model_config_preset;
    if (an_file_exists(p))
        snprintf(preset, sizeof preset, "%s", p);
    else
        snprintf(preset, sizeof preset, "configs/models/%s.json", p);
    if (!an_file_exists(preset))
        return an_fail(err, "recipe: model_config: %s is neither a file nor a preset in configs/models/", p);
    if (an_config_load(cfg, preset, err)) return -1;
    return an_config_save(cfg, out, err);
}

static int train_tokenizer(const an_recipe *r, const an_trainer_opts *o, an_error *err) {
    an_train_texts t;
    if (an_train_texts_load(r, &t, err)) return -1;
    an_trainer_note(o, "training a %d-token byte-level BPE on %zu texts", r->tokenizer.train_vocab, t.n);
    /* returns the vocabulary size it reached (fewer tokens when the texts run out of pairs), -1 on error */
    int got = an_tokenizer_train_bytelevel_ex((const char *const *)t.text, t.len, t.n, r->tokenizer.train_vocab,
                                              r->tokenizer.add_prefix_space, r->output.dir, err);
    an_train_texts_free(&t);
    if (got < 0) return -1;
    if (got < r->tokenizer.train_vocab)
        an_trainer_note(o, "the tokenizer stopped at %d tokens: the training texts hold no more pairs to merge", got);
    return 0;
}

int an_trainer_is_gguf(const char *path) {
    size_t n = strlen(path);
    return n > 5 && strcmp(path + n - 5, ".gguf") == 0;
}

const char *an_trainer_ggml_summary(const an_model *m) {
    static const an_dtype types[] = {AN_Q8_0, AN_Q4_0, AN_Q4_1, AN_Q4_K, AN_Q6_K};
    static _Thread_local char buf[160];
    size_t len = 0;
    buf[0] = 0;
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        int n = 0;
        for (int i = 0; i < m->n_params; i++) n += an_dtype_x8_base(m->params[i].dtype) == types[k];
        if (n && len < sizeof buf)
            len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%d %s", len ? ", " : "", n, an_dtype_name(types[k]));
    }
    return buf;
}

static an_model *build_model(const an_ops *ops, const an_recipe *r, int resuming, char *tok_path, size_t tok_size,
                             const an_trainer_opts *o, an_error *err) {
    an_model *m = NULL;
    if (r->model.base[0]) {
        if (r->tokenizer.path[0])
            snprintf(tok_path, tok_size, "%s", r->tokenizer.path);
        else if (an_is_dir(r->model.base) || an_trainer_is_gguf(r->model.base)) /* a GGUF file carries its tokenizer */
            snprintf(tok_path, tok_size, "%s", r->model.base);
        else {
            an_fail(err, "%s: a llama2.c model file carries no tokenizer; set tokenizer.path", r->model.base);
            return NULL;
        }
        /* a GGUF base keeps its quantized blocks for an adapter unless asked otherwise (quant.gguf);
         * full fine-tuning trains float32 weights */
        int keep = r->model.method != AN_METHOD_FULL && r->quant.gguf == AN_GGUF_MODE_KEEP;
        m = an_trainer_is_gguf(r->model.base) ? an_model_load_gguf(r->model.base, ops, keep ? AN_GGUF_KEEP : AN_GGUF_DEQUANTIZE, err)
                                   : an_model_load(r->model.base, ops, err);
        if (!m) return NULL;
    } else {
        an_model_config cfg;
        if (scratch_config(r, &cfg, err)) return NULL;
        if (r->tokenizer.path[0]) {
            snprintf(tok_path, tok_size, "%s", r->tokenizer.path);
        } else {
            char tj[1100];
            an_path_join(tj, sizeof tj, r->output.dir, "tokenizer.json");
            if (!(resuming && an_file_exists(tj)) && train_tokenizer(r, o, err)) return NULL;
            snprintf(tok_path, tok_size, "%s", r->output.dir);
        }
        m = an_model_init_random(&cfg, ops, (uint64_t)r->train.seed, err);
        if (!m) return NULL;
    }
    an_tokenizer *tok = an_tokenizer_load(tok_path, err);
    if (!tok) {
        an_model_free(m);
        return NULL;
    }
    int v = an_tokenizer_vocab_size(tok);
    an_tokenizer_free(tok);
    if (v > m->cfg.vocab_size) {
        an_fail(err, "%s: the tokenizer has %d tokens, more than the model's vocab_size %d", tok_path, v, m->cfg.vocab_size);
        an_model_free(m);
        return NULL;
    }
    if (r->train.seq_len > m->cfg.max_seq && m->cfg.arch == AN_ARCH_GPT2) {
        an_fail(err, "recipe: train.seq_len %d exceeds the model's %d learned positions", r->train.seq_len, m->cfg.max_seq);
        an_model_free(m);
        return NULL;
    }
    return m;
}

/* The backend named by train.device; the trainer closes it after freeing the model. */
an_model *an_trainer_build_model(const an_recipe *r, int resuming, char *tok_path, size_t tok_size,
                                 const an_trainer_opts *o, an_error *err) {
    const an_ops *ops = an_backend_open(r->train.device, err);
    if (!ops) return NULL;
    an_model *m = build_model(ops, r, resuming, tok_path, tok_size, o, err);
    if (!m) an_backend_close(ops);
    return m;
}

/* ---------- LoRA ---------- */

int an_trainer_attach_lora(an_model *m, const an_recipe *r, an_error *err) {
    an_lora_config c = an_lora_config_default();
    c.r = r->lora.r;
    c.alpha = (float)r->lora.alpha;
    c.dropout = (float)r->lora.dropout;
    c.use_rslora = r->lora.use_rslora;
    c.seed = (uint64_t)r->train.seed;
    for (int i = 0; i < r->lora.target_modules.n; i++)
        if (an_lora_config_add_target(&c, r->lora.target_modules.v[i], err))
            return an_fail_prefix(err, "recipe: lora.target_modules");
    if (an_lora_attach(m, &c, err)) return an_fail_prefix(err, "recipe: lora.target_modules");
    snprintf(m->lora->base_model, sizeof m->lora->base_model, "%s", r->model.base);
    return 0;
}

/* ---------- checkpoints of the model state ---------- */

int an_trainer_save_ckpt(const an_model *m, const an_trainable *t, an_optim *opt, const an_ckpt_state *st,
                         const char *path, int write, long long byte_limit, an_error *err) {
    int n = t->n;
    const char **names = calloc((size_t)n + 1, sizeof *names);
    uint64_t *numels = calloc((size_t)n + 1, sizeof *numels);
    uint32_t *parts = calloc((size_t)n + 1, sizeof *parts);
    size_t maxel = 1;
    for (int k = 0; k < n; k++) {
        names[k] = t->p[k]->name;
        numels[k] = t->p[k]->numel;
        parts[k] = 3;
        if (t->p[k]->numel > maxel) maxel = t->p[k]->numel;
    }
    float *host = malloc(maxel * sizeof *host);
    int rc = -1;
    an_ckpt_writer w;
    /* ZeRO-1: every rank's slice of the moments gathered (every rank takes part; rank 0 writes) */
    float *mom = an_optim_full_moments(opt, 1, err);
    if (!mom && opt->n_floats) goto done;
    if (!write) {
        rc = 0;
        goto done;
    }
    if (!names || !numels || !parts || !host) {
        an_fail(err, "%s: out of memory", path);
        goto done;
    }
    if (an_ckpt_write_begin(&w, path, st, n, names, numels, parts, byte_limit, err)) goto done;
    for (int k = 0; k < n; k++) {
        const an_param *p = t->p[k];
        size_t off = an_optim_offset(opt, k);
        const float *src[3] = {p->data, mom + off, mom + opt->n_floats + off};
        for (int j = 0; j < 3; j++) {
            m->ops->download(m->ops, host, src[j], p->numel * sizeof(float));
            if (an_ckpt_write_floats(&w, host, p->numel, err)) goto done;
        }
    }
    rc = an_ckpt_write_commit(&w, err);
done:
    an_optim_full_moments_done(opt, mom, 0);
    free(names);
    free(numels);
    free(parts);
    free(host);
    return rc;
}

int an_trainer_load_ckpt(an_model *m, const an_trainable *t, an_optim *opt, const char *path, an_ckpt_state *st,
                         an_error *err) {
    an_ckpt c;
    if (an_ckpt_read(&c, path, err)) return -1;
    int rc = an_trainer_apply_ckpt(m, t, opt, &c, st, err);
    an_ckpt_free(&c);
    return rc;
}

int an_trainer_apply_ckpt(an_model *m, const an_trainable *t, an_optim *opt, const an_ckpt *c_in, an_ckpt_state *st,
                          an_error *err) {
    const an_ckpt *c = c_in;
    const char *path = c->path;
    size_t maxel = 1;
    for (int k = 0; k < t->n; k++)
        if (t->p[k]->numel > maxel) maxel = t->p[k]->numel;
    float *host = malloc(maxel * sizeof *host);
    int rc = host ? 0 : an_fail(err, "%s: out of memory", path);
    /* the full moments; ZeRO-1 keeps this rank's slice of them */
    float *mom = rc ? NULL : an_optim_full_moments(opt, 0, err);
    if (!mom && opt->n_floats) rc = -1;
    for (int k = 0; k < t->n && !rc; k++) {
        an_param *p = t->p[k];
        size_t off = an_optim_offset(opt, k);
        float *dst[3] = {p->data, mom + off, mom + opt->n_floats + off};
        for (uint32_t j = 0; j < 3 && !rc; j++) {
            rc = an_ckpt_get(c, p->name, j, host, p->numel, err);
            if (!rc) m->ops->upload(m->ops, dst[j], host, p->numel * sizeof(float));
        }
    }
    if (!rc && c->n_tensors != t->n)
        rc = an_fail(err, "%s: holds %d tensors, this run trains %d (another method or model?)", path, c->n_tensors, t->n);
    if (!rc) {
        *st = c->state;
        opt->step = (long)c->state.step; /* every step of the run was one optimizer step */
    }
    an_optim_full_moments_done(opt, mom, !rc);
    free(host);
    return rc;
}

/* ---------- the final folder ---------- */

static int copy_file(const char *src, const char *dst, an_error *err) {
    size_t n;
    char *data = an_read_file(src, &n, err);
    if (!data) return -1;
    int rc = an_write_file_atomic(dst, data, n, err);
    free(data);
    return rc;
}

/* The template the model was trained with, which autoneg generate reads from autoneg.json. */
static int write_meta(const char *template_name, const char *out_dir, an_error *err) {
    char meta[1400], mpath[1200];
    int len = snprintf(meta, sizeof meta, "{\"template\": \"%s\"}\n", template_name);
    if (an_path_join(mpath, sizeof mpath, out_dir, "autoneg.json")) return an_fail(err, "%s: path too long", out_dir);
    return an_write_file_atomic(mpath, meta, (size_t)len, err);
}

/* The test hook's failure, worded as a real full disk's. */
static int hook_fail(const char *out_dir, an_error *err) {
    return an_fail(err, "%s/autoneg.json: cannot write: %s (simulated by the test hook)", out_dir, strerror(ENOSPC));
}

int an_trainer_save_adapter(const an_model *m, const char *template_name, const char *out_dir, int fail_hook,
                            an_error *err) {
    if (an_trainer_mkdirs(out_dir, err) || an_lora_save(m, out_dir, err)) return -1;
    if (fail_hook) return hook_fail(out_dir, err);
    return write_meta(template_name, out_dir, err);
}

int an_trainer_save_final(const an_model *m, const char *tok_path, const char *template_name, const char *out_dir,
                          int fail_hook, an_error *err) {
    if (an_trainer_mkdirs(out_dir, err) || an_model_save(m, out_dir, err)) return -1;
    if (fail_hook) return hook_fail(out_dir, err);
    if (write_meta(template_name, out_dir, err)) return -1;
    /* the tokenizer files transformers and autoneg look for */
    static const char *const names[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                        "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
                                        "generation_config.json"};
    char dir[1100], src[1200], dst[1200];
    if (an_is_dir(tok_path)) {
        snprintf(dir, sizeof dir, "%s", tok_path);
    } else {
        /* a tokenizer file: copy it under its own name */
        const char *base = strrchr(tok_path, '/');
        base = base ? base + 1 : tok_path;
        if (an_path_join(dst, sizeof dst, out_dir, base)) return an_fail(err, "%s: path too long", out_dir);
        return copy_file(tok_path, dst, err);
    }
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (an_path_join(src, sizeof src, dir, names[i]) || an_path_join(dst, sizeof dst, out_dir, names[i]))
            return an_fail(err, "%s: path too long", out_dir);
        if (an_file_exists(src) && copy_file(src, dst, err)) return -1;
    }
    return 0;
}

/* ---------- putting a finished folder in place ---------- */

/* The entries of a folder deleted, the folder kept (keep_dir) or deleted too. */
static int remove_tree(const char *path, int keep_dir, an_error *err) {
    DIR *d = opendir(path);
    if (!d) {
        if (errno == ENOENT) return 0;
        if (errno == ENOTDIR) return remove(path) ? an_fail(err, "%s: cannot delete: %s", path, strerror(errno)) : 0;
        return an_fail(err, "%s: cannot list: %s", path, strerror(errno));
    }
    int rc = 0;
    struct dirent *e;
    char p[1300];
    while (!rc && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (an_path_join(p, sizeof p, path, e->d_name)) rc = an_fail(err, "%s: path too long", path);
        else if (an_is_dir(p)) rc = remove_tree(p, 0, err);
        else if (remove(p) && errno != ENOENT) rc = an_fail(err, "%s: cannot delete: %s", p, strerror(errno));
    }
    closedir(d);
    if (!rc && !keep_dir && rmdir(path) && errno != ENOENT)
        rc = an_fail(err, "%s: cannot delete: %s", path, strerror(errno));
    return rc;
}

int an_trainer_remove_tree(const char *path, an_error *err) { return remove_tree(path, 0, err); }
int an_trainer_empty_dir(const char *path, an_error *err) { return remove_tree(path, 1, err); }

int an_trainer_dir_is_empty(const char *path) {
    DIR *d = opendir(path);
    if (!d) return 0;
    int empty = 1;
    struct dirent *e;
    while (empty && (e = readdir(d))) empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
    closedir(d);
    return empty;
}

int an_trainer_publish_dir(const char *tmp, const char *dst, an_error *err) {
    if (!an_is_dir(dst)) {
        if (rename(tmp, dst)) return an_fail(err, "%s: cannot rename into place: %s", dst, strerror(errno));
        return 0;
    }
    /* an existing folder: swap the two in one step (Linux renameat2), so dst is always either the whole
     * old folder or the whole new one; then the old one, now at tmp, is deleted */
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dst, RENAME_EXCHANGE) == 0) return an_trainer_remove_tree(tmp, err);
    if (errno != EINVAL && errno != ENOSYS)
        return an_fail(err, "%s: cannot swap in %s: %s", dst, tmp, strerror(errno));
    /* a filesystem without the swap: move the old folder aside first (dst is missing for an instant) */
    char old[1200];
    if (snprintf(old, sizeof old, "%s.old", dst) >= (int)sizeof old) return an_fail(err, "%s: path too long", dst);
    if (an_trainer_remove_tree(old, err)) return -1;
    if (rename(dst, old)) return an_fail(err, "%s: cannot move aside: %s", dst, strerror(errno));
    if (rename(tmp, dst)) {
        int e = errno;
        rename(old, dst);
        return an_fail(err, "%s: cannot rename into place: %s", dst, strerror(e));
    }
    return an_trainer_remove_tree(old, err);
}
