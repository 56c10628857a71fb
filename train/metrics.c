#include "train/metrics.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"

/* The shortest of %.15g/%.16g/%.17g that reads back to x; null when x is not finite. */
static void fmt_num(char *out, size_t size, double x) {
    if (!isfinite(x)) {
        snprintf(out, size, "null");
        return;
    }
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(out, size, "%.*g", digits, x);
        if (strtod(out, NULL) == x) return;
    }
}

int an_metrics_format_train(char *buf, size_t size, const an_metrics_train *t) {
    char loss[32], lr[32], gn[32], tps[32], el[32];
    fmt_num(loss, sizeof loss, t->loss);
    fmt_num(lr, sizeof lr, t->lr);
    fmt_num(gn, sizeof gn, t->grad_norm);
    fmt_num(tps, sizeof tps, t->tokens_per_s);
    fmt_num(el, sizeof el, t->elapsed_s);
    int n = snprintf(buf, size, "{\"step\":%ld,\"loss\":%s,\"lr\":%s,\"grad_norm\":%s,\"tokens\":%lld,\"tokens_per_s\":%s,\"elapsed_s\":%s}\n",
                     t->step, loss, lr, gn, t->tokens, tps, el);
    return n < 0 || (size_t)n >= size ? -1 : n;
}

int an_metrics_format_eval(char *buf, size_t size, const an_metrics_eval *e) {
    char loss[32], el[32];
    fmt_num(loss, sizeof loss, e->eval_loss);
    fmt_num(el, sizeof el, e->elapsed_s);
    int n = snprintf(buf, size, "{\"step\":%ld,\"eval_loss\":%s,\"eval_tokens\":%lld,\"elapsed_s\":%s}\n", e->step, loss,
                     e->eval_tokens, el);
    return n < 0 || (size_t)n >= size ? -1 : n;
}

int an_metrics_open(an_metrics *m, const char *path, int append, an_error *err) {
    memset(m, 0, sizeof *m);
    if (strlen(path) >= sizeof m->path) return an_fail(err, "%s: path too long", path);
    strcpy(m->path, path);
    m->f = fopen(path, append ? "ab" : "wb");
    if (!m->f) return an_fail(err, "%s: cannot open for writing: %s", path, strerror(errno));
    return 0;
}

static int write_line(an_metrics *m, const char *line, int n, an_error *err) {
    if (!m->f) return an_fail(err, "%s: metrics file is not open", m->path);
    if (n < 0) return an_fail(err, "%s: metrics line too long", m->path);
    if (fwrite(line, 1, (size_t)n, m->f) != (size_t)n || fflush(m->f) != 0)
        return an_fail(err, "%s: write failed: %s", m->path, strerror(errno));
    return 0;
}

int an_metrics_log_train(an_metrics *m, const an_metrics_train *t, an_error *err) {
    char line[512];
    return write_line(m, line, an_metrics_format_train(line, sizeof line, t), err);
}

int an_metrics_log_eval(an_metrics *m, const an_metrics_eval *e, an_error *err) {
    char line[512];
    return write_line(m, line, an_metrics_format_eval(line, sizeof line, e), err);
}

int an_metrics_close(an_metrics *m, an_error *err) {
    if (!m->f) return 0;
    int rc = fclose(m->f);
    m->f = NULL;
    return rc ? an_fail(err, "%s: close failed: %s", m->path, strerror(errno)) : 0;
}

/* ---- reading ---- */

static int push(long **steps, double **vals, size_t *n, long step, double v) {
    long *ns = realloc(*steps, (*n + 1) * sizeof **steps);
    if (!ns) return -1;
    *steps = ns;
    double *nv = realloc(*vals, (*n + 1) * sizeof **vals);
    if (!nv) return -1;
    *vals = nv;
    ns[*n] = step;
    nv[*n] = v;
    (*n)++;
    return 0;
}

/* Calls fn for each complete, parsed line. A last line without its newline was cut by a crash or a
 * full disk mid-write (each line is written whole, newline included): it is skipped and its number put
 * in *torn (0: none). Any other line that does not parse is an error. */
typedef int (*line_fn)(void *ctx, const cJSON *obj, const char *line, size_t len, long lineno, an_error *err);

static int each_line(const char *path, line_fn fn, void *ctx, long *torn, an_error *err) {
    size_t size;
    char *text = an_read_file(path, &size, err);
    if (!text) return -1;
    int rc = 0;
    long lineno = 0;
    *torn = 0;
    for (size_t off = 0; off < size && rc == 0;) {
        lineno++;
        char *nl = memchr(text + off, '\n', size - off);
        if (!nl) {
            if (strspn(text + off, " \t\r") != size - off) *torn = lineno;
            break;
        }
        size_t len = (size_t)(nl - (text + off));
        *nl = 0;
        const char *line = text + off;
        off += len + 1;
        if (strspn(line, " \t\r") == len) continue;
        cJSON *obj = cJSON_ParseWithOpts(line, NULL, 1);
        if (!obj || !cJSON_IsObject(obj)) rc = an_fail(err, "%s: line %ld: not a JSON object", path, lineno);
        else rc = fn(ctx, obj, line, len, lineno, err);
        cJSON_Delete(obj);
    }
    free(text);
    return rc;
}

static int get_step(const cJSON *obj, const char *path, long lineno, long *step, an_error *err) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(obj, "step");
    if (!cJSON_IsNumber(s) || s->valuedouble != floor(s->valuedouble) || s->valuedouble < 0 || s->valuedouble > 1e15)
        return an_fail(err, "%s: line %ld: \"step\" is missing or not a non-negative integer", path, lineno);
    *step = (long)s->valuedouble;
    return 0;
}

typedef struct read_ctx {
    const char *path;
    an_metrics_series *s;
} read_ctx;

static int read_one(void *vctx, const cJSON *obj, const char *line, size_t len, long lineno, an_error *err) {
    (void)line, (void)len;
    read_ctx *c = vctx;
    long step = 0;
    if (get_step(obj, c->path, lineno, &step, err)) return -1;
    const cJSON *ev = cJSON_GetObjectItemCaseSensitive(obj, "eval_loss");
    const cJSON *tr = cJSON_GetObjectItemCaseSensitive(obj, "loss");
    const cJSON *v = ev ? ev : tr;
    if (!v) return 0; /* another kind of line (a future field set); not ours to judge */
    if (!cJSON_IsNumber(v) && !cJSON_IsNull(v))
        return an_fail(err, "%s: line %ld: \"%s\" is not a number", c->path, lineno, ev ? "eval_loss" : "loss");
    double x = cJSON_IsNull(v) ? NAN : v->valuedouble;
    int rc = ev ? push(&c->s->eval_step, &c->s->eval_loss, &c->s->n_eval, step, x)
                : push(&c->s->train_step, &c->s->train_loss, &c->s->n_train, step, x);
    return rc ? an_fail(err, "%s: out of memory", c->path) : 0;
}

int an_metrics_read(const char *path, an_metrics_series *s, an_error *err) {
    memset(s, 0, sizeof *s);
    read_ctx c = {path, s};
    long torn;
    if (each_line(path, read_one, &c, &torn, err)) {
        an_metrics_series_free(s);
        return -1;
    }
    return 0;
}

void an_metrics_series_free(an_metrics_series *s) {
    free(s->train_step);
    free(s->train_loss);
    free(s->eval_step);
    free(s->eval_loss);
    memset(s, 0, sizeof *s);
}

typedef struct trunc_ctx {
    const char *path;
    long keep_to;
    char *out;
    size_t n, cap;
} trunc_ctx;

static int keep_line(void *vctx, const cJSON *obj, const char *line, size_t len, long lineno, an_error *err) {
    trunc_ctx *c = vctx;
    long step = 0;
    if (get_step(obj, c->path, lineno, &step, err)) return -1;
    if (step > c->keep_to) return 0;
    if (c->n + len + 1 > c->cap) {
        size_t cap = (c->cap + len + 1) * 2;
        char *nb = realloc(c->out, cap);
        if (!nb) return an_fail(err, "%s: out of memory", c->path);
        c->out = nb;
        c->cap = cap;
    }
    memcpy(c->out + c->n, line, len);
    c->out[c->n + len] = '\n';
    c->n += len + 1;
    return 0;
}

int an_metrics_truncate_after(const char *path, long step, long *torn, an_error *err) {
    *torn = 0;
    if (!an_file_exists(path)) return 0;
    trunc_ctx c = {path, step, NULL, 0, 0};
    int rc = each_line(path, keep_line, &c, torn, err);
    if (rc == 0) rc = an_write_file_atomic(path, c.out ? c.out : "", c.n, err);
    free(c.out);
    return rc;
}
