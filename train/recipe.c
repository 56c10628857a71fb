#include "train/recipe.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/file.h"

/* Every number has an upper bound too: past it a value is a typo or a unit mix-up, and unbounded ones
 * failed far from the recipe (train.threads 65536 crashed inside libgomp; sizes overflowed). The
 * bounds are generous -- several times what any run here needs -- and docs/recipes.md states them. */
#define AN_RECIPE_MAX_THREADS 1024

/* One table describes every key: where it lives in the struct, its type, its range and its default.
 * Loading, --set, writing back, comparing and the docs test all walk this table, so a key cannot be
 * readable but not writable, or written but not compared. */
typedef enum kind { K_INT, K_DOUBLE, K_BOOL, K_STR, K_ENUM, K_STRLIST, K_DOUBLE2, K_MODEL_CONFIG } kind;

enum {
    R_LO = 1,      /* value >= lo */
    R_LO_EXCL = 2, /* value > lo */
    R_HI = 4,      /* value <= hi */
    R_HI_EXCL = 8, /* value < hi */
    R_ZERO_OK = 16 /* 0 is allowed besides the range (0 = off) */
};

typedef struct field {
    const char *path;
    kind k;
    size_t off, size;
    unsigned range;
    double lo, hi;
    const char *const *names; /* K_ENUM: NULL-terminated */
    const char *type;         /* for docs and errors */
    const char *def;          /* default, JSON text */
} field;

static const char *const method_names[] = {"full", "lora", "qlora", NULL};
static const char *const dtype_names[] = {"f32", "bf16", "f16", NULL};
static const char *const quant_names[] = {"nf4", NULL};
static const char *const gguf_names[] = {"keep", "dequantize", "nf4", NULL};
static const char *const pack_names[] = {"segments", "xtuner", "pad", NULL};
static const char *const sched_names[] = {"constant", "linear", "cosine", NULL};
static const char *const loss_norm_names[] = {"tokens", "mean_of_means", NULL};
static const char *const format_names[] = {"auto", "jsonl", "json", "csv", NULL};
static const char *const group_names[] = {"source", "negative", "prompt", "pair", NULL};

#define OFF(m) offsetof(an_recipe, m), sizeof(((an_recipe *)0)->m)
#define NOR 0, 0.0, 0.0
#define F_INT(p, m, rng, lo, hi, d) {p, K_INT, OFF(m), rng, lo, hi, NULL, "integer", d}
#define F_DBL(p, m, rng, lo, hi, d) {p, K_DOUBLE, OFF(m), rng, lo, hi, NULL, "number", d}
#define F_BOOL(p, m, d) {p, K_BOOL, OFF(m), NOR, NULL, "boolean", d}
#define F_STR(p, m, d) {p, K_STR, OFF(m), NOR, NULL, "string", d}
#define F_ENUM(p, m, names, type, d) {p, K_ENUM, OFF(m), NOR, names, type, d}
#define F_LIST(p, m, d) {p, K_STRLIST, OFF(m), NOR, NULL, "list of strings", d}

static const field fields[] = {
    F_STR("description", description, "\"\""),
    F_STR("model.base", model.base, "\"\""),
    F_ENUM("model.method", model.method, method_names, "\"full\" | \"lora\" | \"qlora\"", "\"lora\""),
    F_ENUM("model.dtype", model.dtype, dtype_names, "\"f32\" | \"bf16\" | \"f16\"", "\"f32\""),
    F_INT("lora.r", lora.r, R_LO | R_HI, 1, 4096, "8"),
    F_DBL("lora.alpha", lora.alpha, R_LO_EXCL | R_HI, 0, 65536, "16"),
    F_DBL("lora.dropout", lora.dropout, R_LO | R_HI_EXCL, 0, 1, "0.05"),
    F_LIST("lora.target_modules", lora.target_modules, "[\"all-linear\"]"),
    F_BOOL("lora.use_rslora", lora.use_rslora, "false"),
    F_ENUM("quant.type", quant.type, quant_names, "\"nf4\"", "\"nf4\""),
    F_INT("quant.block_size", quant.block_size, R_LO | R_HI, 16, 4096, "64"),
    F_BOOL("quant.double_quant", quant.double_quant, "true"),
    F_ENUM("quant.gguf", quant.gguf, gguf_names, "\"keep\" | \"dequantize\" | \"nf4\"", "\"keep\""),
    F_LIST("data.train", data.train, "[]"),
    F_STR("data.val", data.val, "\"\""),
    F_ENUM("data.format", data.format, format_names, "\"auto\" | \"jsonl\" | \"json\" | \"csv\"", "\"auto\""),
    F_STR("data.template", data.template_name, "\"default\""),
    F_STR("data.system", data.system, "\"\""),
    F_INT("data.max_length", data.max_length, R_LO | R_HI, 2, 1 << 20, "512"),
    F_ENUM("data.pack", data.pack, pack_names, "\"segments\" | \"xtuner\" | \"pad\"", "\"segments\""),
    F_DBL("data.val_fraction", data.val_fraction, R_LO | R_HI_EXCL, 0, 1, "0"),
    F_ENUM("data.group_by", data.group_by, group_names, "\"source\" | \"negative\" | \"prompt\" | \"pair\"", "\"source\""),
    F_INT("data.shuffle_seed", data.shuffle_seed, R_LO, 0, 0, "0"),
    F_STR("data.subjects", data.subjects, "\"\""),
    F_INT("data.subjects_per_pair", data.subjects_per_pair, R_LO | R_HI, 1, 64, "1"),
    F_INT("data.retrieve", data.retrieve, R_LO | R_HI, 0, 64, "0"),
    F_INT("data.retrieve_max_tags", data.retrieve_max_tags, R_LO | R_HI, 1, 1000, "32"),
    F_DBL("data.retrieve_dropout", data.retrieve_dropout, R_LO | R_HI, 0, 1, "0"),
    F_DBL("optim.lr", optim.lr, R_LO_EXCL | R_HI, 0, 1, "0.0002"),
    {"optim.betas", K_DOUBLE2, OFF(optim.betas), R_LO | R_HI_EXCL, 0, 1, NULL, "[number, number]", "[0.9, 0.999]"},
    F_DBL("optim.eps", optim.eps, R_LO_EXCL | R_HI, 0, 1, "1e-08"),
    F_DBL("optim.weight_decay", optim.weight_decay, R_LO | R_HI, 0, 10, "0"),
    F_DBL("optim.clip", optim.clip, R_LO | R_HI, 0, 1e6, "1"),
    F_INT("optim.accumulation", optim.accumulation, R_LO | R_HI, 1, 65536, "1"),
    F_ENUM("schedule.type", schedule.type, sched_names, "\"constant\" | \"linear\" | \"cosine\"", "\"cosine\""),
    F_DBL("schedule.warmup_ratio", schedule.warmup_ratio, R_LO | R_HI_EXCL, 0, 1, "0.03"),
    F_INT("schedule.warmup_steps", schedule.warmup_steps, R_LO | R_HI, 0, 1e9, "0"),
    F_DBL("schedule.warmup_start_factor", schedule.warmup_start_factor, R_LO_EXCL | R_HI, 0, 1, "1e-05"),
    F_DBL("schedule.min_lr_ratio", schedule.min_lr_ratio, R_LO | R_HI, 0, 1, "0"),
    F_BOOL("schedule.per_micro_batch", schedule.per_micro_batch, "false"),
    F_INT("train.batch_size", train.batch_size, R_LO | R_HI, 1, 65536, "1"),
    F_INT("train.seq_len", train.seq_len, R_LO | R_HI, 2, 1 << 20, "512"),
    F_INT("train.steps", train.steps, R_LO | R_HI, 0, 1e9, "0"),
    F_DBL("train.epochs", train.epochs, R_LO | R_HI, 0, 1e6, "1"),
    F_INT("train.seed", train.seed, R_LO, 0, 0, "1234"),
    F_INT("train.threads", train.threads, R_LO | R_HI, 0, AN_RECIPE_MAX_THREADS, "0"),
    F_STR("train.device", train.device, "\"cpu\""),
    F_BOOL("train.recompute", train.recompute, "false"),
    F_INT("train.zero", train.zero, R_LO | R_HI, 0, 1, "0"),
    F_ENUM("train.loss_norm", train.loss_norm, loss_norm_names, "\"tokens\" | \"mean_of_means\"", "\"tokens\""),
    F_INT("train.log_every", train.log_every, R_LO | R_HI, 1, 1e9, "1"),
    F_INT("eval.every", eval.every, R_LO | R_HI, 0, 1e9, "0"),
    F_INT("eval.samples", eval.samples, R_LO | R_HI, 0, 100000, "0"),
    F_LIST("eval.prompts", eval.prompts, "[]"),
    F_INT("eval.max_new_tokens", eval.max_new_tokens, R_LO | R_HI, 1, 65536, "64"),
    F_INT("checkpoint.every", checkpoint.every, R_LO | R_HI, 0, 1e9, "0"),
    F_INT("checkpoint.keep", checkpoint.keep, R_LO | R_HI, 0, 1000, "2"),
    F_STR("output.dir", output.dir, "\"runs/out\""),
    F_STR("tokenizer.path", tokenizer.path, "\"\""),
    F_INT("tokenizer.train_vocab", tokenizer.train_vocab, R_LO | R_ZERO_OK, 260, 1 << 20, "0"),
    F_BOOL("tokenizer.add_prefix_space", tokenizer.add_prefix_space, "false"),
    {"model_config", K_MODEL_CONFIG, 0, 0, NOR, NULL, "string (preset) | object (config.json) | null", "null"},
};
#define N_FIELDS ((int)(sizeof fields / sizeof fields[0]))

static const char *const sections[] = {"model", "lora", "quant", "data", "optim", "schedule",
                                       "train", "eval", "checkpoint", "output", "tokenizer"};
#define N_SECTIONS ((int)(sizeof sections / sizeof sections[0]))

static void *at(an_recipe *r, const field *f) { return (char *)r + f->off; }
static const void *cat(const an_recipe *r, const field *f) { return (const char *)r + f->off; }

static const field *find_field(const char *path) {
    for (int i = 0; i < N_FIELDS; i++)
        if (!strcmp(fields[i].path, path)) return &fields[i];
    return NULL;
}

static int is_section(const char *path) {
    for (int i = 0; i < N_SECTIONS; i++)
        if (!strcmp(sections[i], path)) return 1;
    return 0;
}

/* ---- lists ---- */

static void strlist_free(an_strlist *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static int strlist_push(an_strlist *l, const char *s, size_t len) {
    char **nv = realloc(l->v, (size_t)(l->n + 1) * sizeof *nv);
    if (!nv) return -1;
    l->v = nv;
    char *c = malloc(len + 1);
    if (!c) return -1;
    memcpy(c, s, len);
    c[len] = 0;
    l->v[l->n++] = c;
    return 0;
}

/* ---- suggestions ---- */

static size_t edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return (size_t)-1;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++) row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best) best = row[j] + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The closest known key path (or section) to path, or NULL when nothing is close. Matching the last
 * component alone catches a right key put in the wrong section (train.lr -> optim.lr). */
static const char *closest_key(const char *path) {
    const char *best = NULL;
    size_t best_d = (size_t)-1;
    const char *leaf = strrchr(path, '.');
    int top = leaf == NULL;
    leaf = leaf ? leaf + 1 : path;
    for (int i = 0; i < N_FIELDS + N_SECTIONS; i++) {
        const char *cand = i < N_FIELDS ? fields[i].path : sections[i - N_FIELDS];
        if (top && strchr(cand, '.')) continue; /* a top-level key is a section or a top-level key */
        size_t d = edit_distance(path, cand);
        const char *cleaf = strrchr(cand, '.');
        cleaf = cleaf ? cleaf + 1 : cand;
        size_t dl = edit_distance(leaf, cleaf);
        if (dl != (size_t)-1 && dl + 1 < d) d = dl + 1;
        if (d < best_d) best_d = d, best = cand;
    }
    size_t limit = strlen(leaf) / 3 + 1;
    if (limit < 2) limit = 2;
    return best_d <= limit ? best : NULL;
}

static const char *json_type_name(const cJSON *v) {
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "something else";
}

/* ---- applying one value ---- */

static int check_range(const field *f, double x, const char *src, an_error *err) {
    if ((f->range & R_ZERO_OK) && x == 0) return 0;
    const char *zero = (f->range & R_ZERO_OK) ? "0 or " : "";
    if ((f->range & R_LO) && !(x >= f->lo)) return an_fail(err, "%s: %s: must be %s>= %.15g, found %.15g", src, f->path, zero, f->lo, x);
    if ((f->range & R_LO_EXCL) && !(x > f->lo)) return an_fail(err, "%s: %s: must be %s> %.15g, found %.15g", src, f->path, zero, f->lo, x);
    if ((f->range & R_HI) && !(x <= f->hi)) return an_fail(err, "%s: %s: must be %s<= %.15g, found %.15g", src, f->path, zero, f->hi, x);
    if ((f->range & R_HI_EXCL) && !(x < f->hi)) return an_fail(err, "%s: %s: must be %s< %.15g, found %.15g", src, f->path, zero, f->hi, x);
    return 0;
}

static int type_error(const field *f, const char *expected, const cJSON *v, const char *src, an_error *err) {
    return an_fail(err, "%s: %s: expected %s, found %s", src, f->path, expected, json_type_name(v));
}

static int apply_int(an_recipe *r, const field *f, const cJSON *v, const char *src, an_error *err) {
    if (!cJSON_IsNumber(v)) return type_error(f, "an integer", v, src, err);
    double x = v->valuedouble;
    if (x != floor(x) || x < INT_MIN || x > INT_MAX)
        return an_fail(err, "%s: %s: expected an integer, found %g", src, f->path, x);
    if (check_range(f, x, src, err)) return -1;
    *(int *)at(r, f) = (int)x;
    return 0;
}

static int apply_double(an_recipe *r, const field *f, const cJSON *v, const char *src, an_error *err) {
    if (!cJSON_IsNumber(v)) return type_error(f, "a number", v, src, err);
    if (!isfinite(v->valuedouble)) return an_fail(err, "%s: %s: must be finite", src, f->path);
    if (check_range(f, v->valuedouble, src, err)) return -1;
    *(double *)at(r, f) = v->valuedouble;
    return 0;
}

static int apply_str(an_recipe *r, const field *f, const cJSON *v, const char *src, an_error *err) {
    if (!cJSON_IsString(v)) return type_error(f, "a string", v, src, err);
    size_t n = strlen(v->valuestring);
    if (n >= f->size) return an_fail(err, "%s: %s: string of %zu bytes is longer than the %zu allowed", src, f->path, n, f->size - 1);
    memcpy(at(r, f), v->valuestring, n + 1);
    return 0;
}

static int apply_enum(an_recipe *r, const field *f, const cJSON *v, const char *src, an_error *err) {
    if (!cJSON_IsString(v)) return type_error(f, "a string", v, src, err);
    for (int i = 0; f->names[i]; i++)
        if (!strcmp(f->names[i], v->valuestring)) {
            *(int *)at(r, f) = i;
            return 0;
        }
    char allowed[256] = "";
    for (int i = 0; f->names[i]; i++) {
        size_t used = strlen(allowed);
        snprintf(allowed + used, sizeof allowed - used, "%s%s", i ? ", " : "", f->names[i]);
    }
    return an_fail(err, "%s: %s: must be one of %s, found %s", src, f->path, allowed, AN_QUOTE(v->valuestring));
}

static int apply_strlist(an_recipe *r, const field *f, const cJSON *v, const char *src, an_error *err) {
    an_strlist fresh = {0};
    if (cJSON_IsString(v)) { /* one string is a one-element list */
        if (strlist_push(&fresh, v->valuestring, strlen(v->valuestring))) goto oom;
    } else if (cJSON_IsArray(v)) {
        int i = 0;
        for (const cJSON *e = v->child; e; e = e->next, i++) {
            if (!cJSON_IsString(e)) {
                strlist_free(&fresh);
                return an_fail(err, "%s: %s[%d]: expected a string, found %s", src, f->path, i, json_type_name(e));
            }
            if (strlist_push(&fresh, e->valuestring, strlen(e->valuestring))) goto oom;
        }
    } else {
        return type_error(f, "a list of strings", v, src, err);
    }
    an_strlist *dst = at(r, f);
    strlist_free(dst);
    *dst = fresh;
    return 0;
oom:
    strlist_free(&fresh);
    return an_fail(err, "%s: %s: out of memory", src, f->path);
}

static int apply_double2(an_recipe *r, const field *f, const cJSON *v, const char *src, an_error *err) {
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2)
        return an_fail(err, "%s: %s: expected an array of 2 numbers, found %s%s", src, f->path, json_type_name(v),
                       cJSON_IsArray(v) ? " of another length" : "");
    double tmp[2];
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        if (!cJSON_IsNumber(e))
            return an_fail(err, "%s: %s[%d]: expected a number, found %s", src, f->path, i, json_type_name(e));
        char p[96];
        snprintf(p, sizeof p, "%s[%d]", f->path, i);
        field fe = *f;
        fe.path = p;
        if (check_range(&fe, e->valuedouble, src, err)) return -1;
        tmp[i] = e->valuedouble;
    }
    memcpy(at(r, f), tmp, sizeof tmp);
    return 0;
}

static int apply_model_config(an_recipe *r, const field *f, const cJSON *v, const char *src, an_error *err) {
    if (cJSON_IsNull(v)) {
        r->model_config_preset[0] = 0;
        free(r->model_config_json);
        r->model_config_json = NULL;
        return 0;
    }
    if (cJSON_IsString(v)) {
        size_t n = strlen(v->valuestring);
        if (n == 0) return an_fail(err, "%s: %s: empty preset name (use null for none)", src, f->path);
        if (n >= sizeof r->model_config_preset) return an_fail(err, "%s: %s: preset name too long", src, f->path);
        memcpy(r->model_config_preset, v->valuestring, n + 1);
        free(r->model_config_json);
        r->model_config_json = NULL;
        return 0;
    }
    if (cJSON_IsObject(v)) {
        char *text = cJSON_PrintUnformatted(v);
        if (!text) return an_fail(err, "%s: %s: out of memory", src, f->path);
        free(r->model_config_json);
        r->model_config_json = text;
        r->model_config_preset[0] = 0;
        return 0;
    }
    return an_fail(err, "%s: %s: expected a preset name (string) or a config.json object, found %s", src, f->path,
                   json_type_name(v));
}

static int apply_field(an_recipe *r, const field *f, const cJSON *v, const char *src, an_error *err) {
    switch (f->k) {
    case K_INT: return apply_int(r, f, v, src, err);
    case K_DOUBLE: return apply_double(r, f, v, src, err);
    case K_BOOL:
        if (!cJSON_IsBool(v)) return type_error(f, "a boolean (true or false)", v, src, err);
        *(int *)at(r, f) = cJSON_IsTrue(v);
        return 0;
    case K_STR: return apply_str(r, f, v, src, err);
    case K_ENUM: return apply_enum(r, f, v, src, err);
    case K_STRLIST: return apply_strlist(r, f, v, src, err);
    case K_DOUBLE2: return apply_double2(r, f, v, src, err);
    case K_MODEL_CONFIG: return apply_model_config(r, f, v, src, err);
    }
    return an_fail(err, "%s: %s: internal error: unknown kind", src, f->path);
}

static int unknown_key(const char *path, const char *src, an_error *err) {
    const char *s = closest_key(path);
    if (s) return an_fail(err, "%s: %s: unknown key (did you mean %s?)", src, path, s);
    return an_fail(err, "%s: %s: unknown key (see docs/recipes.md for the keys)", src, path);
}

/* Applies the members of obj, whose keys sit under prefix ("" at the top). */
static int apply_object(an_recipe *r, const cJSON *obj, const char *prefix, const char *src, an_error *err) {
    for (const cJSON *m = obj->child; m; m = m->next) {
        const char *key = m->string ? m->string : "";
        if (key[0] == '_') continue;
        char path[256];
        if (snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", key) >= (int)sizeof path)
            return an_fail(err, "%s: key path %.64s... too long", src, path);
        for (const cJSON *e = obj->child; e != m; e = e->next)
            if (e->string && !strcmp(e->string, key)) return an_fail(err, "%s: %s: key given twice", src, path);
        const field *f = find_field(path);
        if (f) {
            if (apply_field(r, f, m, src, err)) return -1;
        } else if (is_section(path)) {
            if (!cJSON_IsObject(m)) return an_fail(err, "%s: %s: expected an object (a section), found %s", src, path, json_type_name(m));
            if (apply_object(r, m, path, src, err)) return -1;
        } else {
            return unknown_key(path, src, err);
        }
    }
    return 0;
}

/* cJSON reports where parsing stopped; turn that into a line and column. */
static int parse_error(const char *text, const char *end, const char *src, an_error *err) {
    int line = 1, col = 1;
    for (const char *p = text; end && p < end && *p; p++) {
        if (*p == '\n') line++, col = 1;
        else col++;
    }
    return an_fail(err, "%s: line %d, column %d: invalid JSON", src, line, col);
}

static int apply_json_in_place(an_recipe *r, const char *json, const char *source, an_error *err) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json, &end, 1);
    if (!root) return parse_error(json, end, source, err);
    int rc;
    if (!cJSON_IsObject(root)) rc = an_fail(err, "%s: expected a JSON object at the top, found %s", source, json_type_name(root));
    else rc = apply_object(r, root, "", source, err);
    cJSON_Delete(root);
    return rc;
}

/* ---- defaults, free, copy ---- */

void an_recipe_defaults(an_recipe *r) {
    memset(r, 0, sizeof *r);
    for (int i = 0; i < N_FIELDS; i++) {
        cJSON *v = cJSON_Parse(fields[i].def);
        /* the defaults are constants checked by tests/test_recipe.c; a failure here is a table bug */
        if (v) apply_field(r, &fields[i], v, "defaults", NULL);
        cJSON_Delete(v);
    }
}

void an_recipe_free(an_recipe *r) {
    for (int i = 0; i < N_FIELDS; i++)
        if (fields[i].k == K_STRLIST) strlist_free(at(r, &fields[i]));
    free(r->model_config_json);
    r->model_config_json = NULL;
}

int an_recipe_copy(an_recipe *dst, const an_recipe *src, an_error *err) {
    memcpy(dst, src, sizeof *dst);
    dst->model_config_json = NULL;
    for (int i = 0; i < N_FIELDS; i++)
        if (fields[i].k == K_STRLIST) *(an_strlist *)at(dst, &fields[i]) = (an_strlist){0};
    for (int i = 0; i < N_FIELDS; i++) {
        if (fields[i].k != K_STRLIST) continue;
        const an_strlist *s = cat(src, &fields[i]);
        an_strlist *d = at(dst, &fields[i]);
        for (int j = 0; j < s->n; j++)
            if (strlist_push(d, s->v[j], strlen(s->v[j]))) goto oom;
    }
    if (src->model_config_json && !(dst->model_config_json = strdup(src->model_config_json))) goto oom;
    return 0;
oom:
    an_recipe_free(dst);
    return an_fail(err, "recipe: out of memory copying");
}

int an_recipe_load(an_recipe *r, const char *path, an_error *err) {
    an_recipe_defaults(r);
    char *text = an_read_file(path, NULL, err);
    if (!text) return -1;
    int rc = an_recipe_apply_json(r, text, path, err);
    free(text);
    return rc;
}

/* ---- overrides ---- */

static int set_key_in_place(an_recipe *r, const char *key, const char *value, const char *source, an_error *err) {
    const field *f = find_field(key);
    if (!f && !is_section(key)) return unknown_key(key, source, err);
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithOpts(value, &end, 1);
    /* Bare text for a string key stays text: --set output.dir=2024 means the folder "2024". */
    int textual = f && (f->k == K_STR || f->k == K_ENUM || f->k == K_MODEL_CONFIG);
    if (v && textual && (cJSON_IsNumber(v) || cJSON_IsBool(v) || (cJSON_IsNull(v) && f->k != K_MODEL_CONFIG))) {
        cJSON_Delete(v);
        v = NULL;
    }
    if (!v && f && f->k == K_STRLIST) { /* a,b,c */
        v = cJSON_CreateArray();
        const char *p = value;
        while (v) {
            const char *comma = strchr(p, ',');
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            char *item = strndup(p, n);
            if (!item || !cJSON_AddItemToArray(v, cJSON_CreateString(item))) {
                free(item);
                cJSON_Delete(v);
                v = NULL;
                break;
            }
            free(item);
            if (!comma) break;
            p = comma + 1;
        }
        if (v && !*value) { /* empty text: the empty list */
            cJSON_Delete(v);
            v = cJSON_CreateArray();
        }
    } else if (!v) {
        v = cJSON_CreateString(value);
    }
    if (!v) return an_fail(err, "%s: out of memory", source);
    int rc;
    if (f) {
        rc = apply_field(r, f, v, source, err);
    } else if (!cJSON_IsObject(v)) {
        rc = an_fail(err, "%s: %s: is a section, expected a JSON object, found %s", source, key, json_type_name(v));
    } else {
        rc = apply_object(r, v, key, source, err);
    }
    cJSON_Delete(v);
    return rc;
}

/* Applies a change to a copy and keeps it only when all of it passed, so a failed override (a
 * section object whose third key is wrong) leaves r as it was. */
static int commit(an_recipe *r, an_recipe *changed, int rc) {
    if (rc) {
        an_recipe_free(changed);
        return -1;
    }
    an_recipe_free(r);
    *r = *changed;
    return 0;
}

int an_recipe_apply_json(an_recipe *r, const char *json, const char *source, an_error *err) {
    an_recipe t;
    if (an_recipe_copy(&t, r, err)) return -1;
    return commit(r, &t, apply_json_in_place(&t, json, source, err));
}

int an_recipe_set_key(an_recipe *r, const char *key, const char *value, const char *source, an_error *err) {
    an_recipe t;
    if (an_recipe_copy(&t, r, err)) return -1;
    return commit(r, &t, set_key_in_place(&t, key, value, source, err));
}

int an_recipe_set(an_recipe *r, const char *assignment, an_error *err) {
    char src[300];
    snprintf(src, sizeof src, "--set %.280s", assignment);
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment) return an_fail(err, "%s: expected key=value", src);
    char key[128];
    size_t kn = (size_t)(eq - assignment);
    if (kn >= sizeof key) return an_fail(err, "%s: key too long", src);
    memcpy(key, assignment, kn);
    key[kn] = 0;
    return an_recipe_set_key(r, key, eq + 1, src, err);
}

static an_strlist *list_for(an_recipe *r, const char *key, an_error *err) {
    const field *f = find_field(key);
    if (!f || f->k != K_STRLIST) {
        an_fail(err, "recipe: %s: not a list-of-strings key", key);
        return NULL;
    }
    return at(r, f);
}

int an_recipe_list_append(an_recipe *r, const char *key, const char *item, an_error *err) {
    an_strlist *l = list_for(r, key, err);
    if (!l) return -1;
    if (strlist_push(l, item, strlen(item))) return an_fail(err, "recipe: %s: out of memory", key);
    return 0;
}

int an_recipe_list_clear(an_recipe *r, const char *key, an_error *err) {
    an_strlist *l = list_for(r, key, err);
    if (!l) return -1;
    strlist_free(l);
    return 0;
}

/* ---- whole-recipe checks ---- */

int an_recipe_validate(const an_recipe *r, const char *src, an_error *err) {
    int scratch = r->model.base[0] == 0;
    int has_cfg = r->model_config_preset[0] || r->model_config_json;
    if (scratch && !has_cfg) return an_fail(err, "%s: model.base is empty and no model_config is given: nothing to train", src);
    if (!scratch && has_cfg)
        return an_fail(err, "%s: both model.base and model_config are set; model_config is only for training from scratch", src);
    if (scratch && r->model.method != AN_METHOD_FULL)
        return an_fail(err, "%s: model.method is %s but there is no base model; training from scratch needs \"full\"", src,
                       an_train_method_name(r->model.method));
    if (scratch && !r->tokenizer.path[0] && r->tokenizer.train_vocab == 0)
        return an_fail(err, "%s: training from scratch needs tokenizer.path or tokenizer.train_vocab", src);
    if (!scratch && r->tokenizer.train_vocab > 0)
        return an_fail(err, "%s: tokenizer.train_vocab is set but model.base has its own tokenizer", src);
    if (r->tokenizer.path[0] && r->tokenizer.train_vocab > 0)
        return an_fail(err, "%s: tokenizer.path and tokenizer.train_vocab are both set; give one", src);
    if (r->data.train.n == 0) return an_fail(err, "%s: data.train is empty: no training data", src);
    /* the table allows up to 1024 (any machine); this machine's limit is known only here. Far more
     * threads than cores only slows OpenMP down, and a few hundred fail in libgomp with no word of
     * the recipe */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores > 0 && r->train.threads > 4 * cores)
        return an_fail(err, "%s: train.threads: %d is more than 4 x the %ld cores of this machine (at most %ld)", src,
                       r->train.threads, cores, 4 * cores);
    if (r->train.steps == 0 && r->train.epochs <= 0) return an_fail(err, "%s: train.steps and train.epochs are both 0", src);
    if (r->data.max_length > r->train.seq_len)
        return an_fail(err, "%s: data.max_length %d is longer than train.seq_len %d", src, r->data.max_length, r->train.seq_len);
    if (r->model.method != AN_METHOD_FULL && r->lora.target_modules.n == 0)
        return an_fail(err, "%s: lora.target_modules is empty", src);
    if (r->data.val[0] && r->data.val_fraction > 0)
        return an_fail(err, "%s: data.val and data.val_fraction are both set; give one", src);
    if (r->data.subjects_per_pair > 1 && !r->data.subjects[0])
        return an_fail(err, "%s: data.subjects_per_pair is %d but data.subjects names no subject list", src,
                       r->data.subjects_per_pair);
    return 0;
}

/* ---- writing ---- */

/* cJSON prints with 15 digits and accepts the result when it is within an epsilon of the value, so
 * some doubles would not come back bit for bit; print the shortest of %.15g/%.16g/%.17g that does. */
static cJSON *exact_number(double x) {
    char buf[40];
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, x);
        if (strtod(buf, NULL) == x) break;
    }
    return cJSON_CreateRaw(buf);
}

static cJSON *field_to_json(const an_recipe *r, const field *f) {
    const void *p = cat(r, f);
    switch (f->k) {
    case K_INT: return cJSON_CreateNumber(*(const int *)p);
    case K_DOUBLE: return exact_number(*(const double *)p);
    case K_BOOL: return cJSON_CreateBool(*(const int *)p);
    case K_STR: return cJSON_CreateString(p);
    case K_ENUM: return cJSON_CreateString(f->names[*(const int *)p]);
    case K_DOUBLE2: {
        cJSON *a = cJSON_CreateArray();
        for (int i = 0; a && i < 2; i++)
            if (!cJSON_AddItemToArray(a, exact_number(((const double *)p)[i]))) {
                cJSON_Delete(a);
                return NULL;
            }
        return a;
    }
    case K_STRLIST: {
        const an_strlist *l = p;
        cJSON *a = cJSON_CreateArray();
        for (int i = 0; a && i < l->n; i++)
            if (!cJSON_AddItemToArray(a, cJSON_CreateString(l->v[i]))) {
                cJSON_Delete(a);
                return NULL;
            }
        return a;
    }
    case K_MODEL_CONFIG:
        if (r->model_config_json) return cJSON_Parse(r->model_config_json);
        if (r->model_config_preset[0]) return cJSON_CreateString(r->model_config_preset);
        return cJSON_CreateNull();
    }
    return NULL;
}

char *an_recipe_to_json(const an_recipe *r, an_error *err) {
    cJSON *root = cJSON_CreateObject();
    for (int i = 0; root && i < N_FIELDS; i++) {
        const field *f = &fields[i];
        cJSON *parent = root;
        const char *dot = strchr(f->path, '.');
        const char *leaf = f->path;
        if (dot) {
            char sec[32];
            snprintf(sec, sizeof sec, "%.*s", (int)(dot - f->path), f->path);
            parent = cJSON_GetObjectItemCaseSensitive(root, sec);
            if (!parent && !(parent = cJSON_AddObjectToObject(root, sec))) goto oom;
            leaf = dot + 1;
        }
        cJSON *v = field_to_json(r, f);
        if (!v || !cJSON_AddItemToObject(parent, leaf, v)) {
            cJSON_Delete(v);
            goto oom;
        }
    }
    if (root) {
        char *text = cJSON_Print(root);
        cJSON_Delete(root);
        if (text) return text;
        root = NULL;
    }
oom:
    cJSON_Delete(root);
    an_fail(err, "recipe: out of memory writing JSON");
    return NULL;
}

int an_recipe_save(const an_recipe *r, const char *path, an_error *err) {
    char *text = an_recipe_to_json(r, err);
    if (!text) return an_fail_prefix(err, "%s", path);
    size_t n = strlen(text);
    text[n] = '\n'; /* cJSON's buffer holds the NUL we overwrite; length n + 1 is written */
    int rc = an_write_file_atomic(path, text, n + 1, err);
    free(text);
    return rc;
}

int an_recipe_equal(const an_recipe *a, const an_recipe *b, char *diff_key, size_t diff_size) {
    for (int i = 0; i < N_FIELDS; i++) {
        const field *f = &fields[i];
        const void *pa = cat(a, f), *pb = cat(b, f);
        int same = 1;
        switch (f->k) {
        case K_INT:
        case K_BOOL:
        case K_ENUM: same = *(const int *)pa == *(const int *)pb; break;
        case K_DOUBLE: same = !memcmp(pa, pb, sizeof(double)); break;
        case K_DOUBLE2: same = !memcmp(pa, pb, 2 * sizeof(double)); break;
        case K_STR: same = !strcmp(pa, pb); break;
        case K_STRLIST: {
            const an_strlist *la = pa, *lb = pb;
            same = la->n == lb->n;
            for (int j = 0; same && j < la->n; j++) same = !strcmp(la->v[j], lb->v[j]);
            break;
        }
        case K_MODEL_CONFIG:
            same = !strcmp(a->model_config_preset, b->model_config_preset) &&
                   !strcmp(a->model_config_json ? a->model_config_json : "", b->model_config_json ? b->model_config_json : "");
            break;
        }
        if (!same) {
            if (diff_key && diff_size) snprintf(diff_key, diff_size, "%s", f->path);
            return 0;
        }
    }
    return 1;
}

int an_recipe_key_count(void) { return N_FIELDS; }

int an_recipe_key_info(int i, const char **path, const char **type, const char **default_json) {
    if (i < 0 || i >= N_FIELDS) return -1;
    if (path) *path = fields[i].path;
    if (type) *type = fields[i].type;
    if (default_json) *default_json = fields[i].def;
    return 0;
}

int an_recipe_key_upper_bound(int i, double *hi) {
    if (i < 0 || i >= N_FIELDS || !(fields[i].range & (R_HI | R_HI_EXCL))) return 0;
    *hi = fields[i].hi;
    return 1;
}

long an_recipe_total_steps(const an_recipe *r, long rows_per_epoch) {
    if (r->train.steps > 0) return r->train.steps;
    double per_step = (double)r->train.batch_size * r->optim.accumulation;
    double steps = ceil(r->train.epochs * (double)rows_per_epoch / per_step - 1e-9);
    return steps < 1 ? 1 : steps > 1e15 ? (long)1e15 : (long)steps;
}

double an_recipe_lora_scaling(const an_recipe *r) {
    return r->lora.use_rslora ? r->lora.alpha / sqrt((double)r->lora.r) : r->lora.alpha / r->lora.r;
}

const char *an_train_method_name(an_train_method m) { return (unsigned)m < 3 ? method_names[m] : "?"; }
const char *an_pack_mode_name(an_pack_mode m) { return (unsigned)m < 3 ? pack_names[m] : "?"; }
const char *an_schedule_type_name(an_schedule_type t) { return (unsigned)t < 3 ? sched_names[t] : "?"; }
