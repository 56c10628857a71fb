/* A generation in flight: the engine's callbacks (on the engine thread) decode each choice's tokens,
 * find stop strings in the text, and write the response body -- server-sent events as the text comes,
 * or one JSON object when every choice is done -- which the HTTP thread reads (an_serve_job_read). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data/tokenizers/unicode.h"
#include "serve/serve_impl.h"

/* ---- an_sbuf ---- */
int an_sbuf_add(an_sbuf *b, const char *s, size_t n) {
    if (b->oom) return -1;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) return b->oom = 1, -1;
        b->s = p;
        b->cap = cap;
    }
    if (n) memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
    return 0;
}

int an_sbuf_str(an_sbuf *b, const char *s) { return an_sbuf_add(b, s, strlen(s)); }

int an_sbuf_printf(an_sbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0) return -1;
    if ((size_t)k < sizeof tmp) return an_sbuf_add(b, tmp, (size_t)k);
    char *big = malloc((size_t)k + 1);
    if (!big) return b->oom = 1, -1;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)k + 1, fmt, ap);
    va_end(ap);
    int rc = an_sbuf_add(b, big, (size_t)k);
    free(big);
    return rc;
}

void an_sbuf_free(an_sbuf *b) {
    free(b->s);
    memset(b, 0, sizeof *b);
}

/* ---- job life ---- */
an_serve_job *an_job_new(an_server *sv, an_job_kind kind, int n_choices) {
    an_serve_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->ch = calloc((size_t)n_choices, sizeof *j->ch);
    if (!j->ch) {
        free(j);
        return NULL;
    }
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->refs = 1;
    j->sv = sv;
    j->kind = kind;
    j->n_choices = n_choices;
    j->status = 200;
    j->created = (long)time(NULL);
    for (int i = 0; i < n_choices; i++) {
        j->ch[i].job = j;
        j->ch[i].index = i;
        j->ch[i].cut = (size_t)-1;
        if (sv->session) an_detok_init(&j->ch[i].dt, sv->session->tok);
    }
    return j;
}

static void job_destroy(an_serve_job *j) {
    if (j->registered) {
        pthread_mutex_lock(&j->sv->mu);
        j->sv->jobs--;
        pthread_mutex_unlock(&j->sv->mu);
    }
    for (int i = 0; i < j->n_choices; i++) {
        an_sbuf_free(&j->ch[i].text);
        free(j->ch[i].ids);
        free(j->ch[i].lps);
        free(j->ch[i].offs);
        free(j->ch[i].top_ids);
        free(j->ch[i].top_lps);
    }
    for (int i = 0; i < j->n_stops; i++) free(j->stops[i]);
    free(j->stops);
    free(j->ch);
    free(j->model);
    an_sbuf_free(&j->out);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

void an_job_register(an_serve_job *j) {
    an_server *sv = j->sv;
    pthread_mutex_lock(&sv->mu);
    if (sv->n_live == sv->cap_live) {
        int cap = sv->cap_live ? sv->cap_live * 2 : 64;
        an_serve_job **p = realloc(sv->live, (size_t)cap * sizeof *p);
        if (p) {
            sv->live = p;
            sv->cap_live = cap;
        }
    }
    if (sv->n_live < sv->cap_live) sv->live[sv->n_live++] = j;
    sv->jobs++;
    j->registered = 1;
    pthread_mutex_unlock(&sv->mu);
}

static void unregister(an_serve_job *j) {
    an_server *sv = j->sv;
    pthread_mutex_lock(&sv->mu);
    for (int i = 0; i < sv->n_live; i++)
        if (sv->live[i] == j) {
            sv->live[i] = sv->live[--sv->n_live];
            break;
        }
    pthread_mutex_unlock(&sv->mu);
}

/* Drops one reference (j->mu held); frees the job at the last. */
static void unref_locked(an_serve_job *j) {
    int last = --j->refs == 0;
    pthread_mutex_unlock(&j->mu);
    if (last) job_destroy(j);
}

void an_serve_job_cancel(an_serve_job *j) {
    pthread_mutex_lock(&j->mu);
    j->cancelled = 1;
    for (int i = 0; i < j->n_choices; i++)
        if (j->ch[i].req_id > 0 && !j->ch[i].done) an_engine_cancel(j->sv->engine, j->ch[i].req_id);
    pthread_mutex_unlock(&j->mu);
}

void an_serve_job_free(an_serve_job *j) {
    if (!j) return;
    an_serve_job_cancel(j);
    unregister(j);
    pthread_mutex_lock(&j->mu);
    unref_locked(j);
}

int an_serve_job_streaming(const an_serve_job *j) { return j->stream; }

static void deadline_in(struct timespec *ts, int ms) {
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) ts->tv_sec++, ts->tv_nsec -= 1000000000L;
}

int an_serve_job_wait(an_serve_job *j, int timeout_ms) {
    struct timespec ts;
    deadline_in(&ts, timeout_ms);
    pthread_mutex_lock(&j->mu);
    while (!j->ended && pthread_cond_timedwait(&j->cv, &j->mu, &ts) != ETIMEDOUT) {
    }
    int ended = j->ended;
    pthread_mutex_unlock(&j->mu);
    return ended;
}

int an_serve_job_status(an_serve_job *j) {
    pthread_mutex_lock(&j->mu);
    int s = j->status;
    pthread_mutex_unlock(&j->mu);
    return s;
}

const char *an_serve_job_content_type(an_serve_job *j) {
    return j->stream ? "text/event-stream" : "application/json";
}

long an_serve_job_read(an_serve_job *j, char *buf, size_t cap, int timeout_ms) {
    struct timespec ts;
    deadline_in(&ts, timeout_ms);
    pthread_mutex_lock(&j->mu);
    /* a non-streaming body is read only whole */
    while ((j->stream ? j->out_read == j->out.n : 0) && !j->ended &&
           pthread_cond_timedwait(&j->cv, &j->mu, &ts) != ETIMEDOUT) {
    }
    while (!j->stream && !j->ended && pthread_cond_timedwait(&j->cv, &j->mu, &ts) != ETIMEDOUT) {
    }
    long k;
    if (j->out_read < j->out.n && (j->stream || j->ended)) {
        size_t n = j->out.n - j->out_read;
        if (n > cap) n = cap;
        memcpy(buf, j->out.s + j->out_read, n);
        j->out_read += n;
        k = (long)n;
    } else {
        k = j->ended ? 0 : -1;
    }
    pthread_mutex_unlock(&j->mu);
    return k;
}

/* ---- writing the body ---- */
static const char *finish_reason(an_stop_reason r) {
    switch (r) {
    case AN_STOP_EOS:
    case AN_STOP_CALLER: return "stop";
    case AN_STOP_MAX_TOKENS:
    case AN_STOP_CONTEXT: return "length";
    case AN_STOP_CANCELLED: return "cancelled";
    default: return "error";
    }
}

static void add_json(an_sbuf *b, cJSON *o) {
    char *t = o ? cJSON_PrintUnformatted(o) : NULL;
    if (!t) b->oom = 1;
    else an_sbuf_str(b, t);
    free(t);
    cJSON_Delete(o);
}

static void add_event(an_serve_job *j, cJSON *o) {
    an_sbuf_str(&j->out, "data: ");
    add_json(&j->out, o);
    an_sbuf_str(&j->out, "\n\n");
}

static int is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

/* The final text of a choice: cut at its stop string; a negative is trimmed of surrounding whitespace
 * as `autoneg generate` writes it. */
static void final_span(const an_serve_job *j, const an_job_choice *c, size_t *start, size_t *end) {
    size_t e = c->cut != (size_t)-1 ? c->cut : c->text.n, s = 0;
    if (j->kind == AN_JOB_NEGATIVES) {
        while (s < e && is_space(c->text.s[s])) s++;
        while (e > s && is_space(c->text.s[e - 1])) e--;
    }
    *start = s;
    *end = e;
}

/* How much of the text may be sent now: not a tail that may still become a stop string, and for a
 * negative, not trailing whitespace (the final text is trimmed). */
static size_t safe_len(const an_serve_job *j, const an_job_choice *c) {
    size_t n = c->cut;
    if (n == (size_t)-1) {
        size_t hold = 0;
        const an_template *t = &j->sv->session->tpl;
        int total = (int)t->n_stop_words + j->n_stops;
        n = c->text.n;
        for (int w = 0; w < total; w++) {
            const char *s = w < (int)t->n_stop_words ? t->stop_words[w] : j->stops[w - (int)t->n_stop_words];
            size_t L = strlen(s);
            for (size_t k = L > 1 ? L - 1 : 0; k > hold; k--)
                if (k <= n && memcmp(c->text.s + n - k, s, k) == 0) {
                    hold = k;
                    break;
                }
        }
        n -= hold;
    }
    if (j->kind == AN_JOB_NEGATIVES)
        while (n > 0 && is_space(c->text.s[n - 1])) n--;
    return n;
}

static cJSON *chunk_base(const an_serve_job *j) {
    cJSON *o = cJSON_CreateObject();
    if (j->kind == AN_JOB_NEGATIVES) return o;
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "object", j->kind == AN_JOB_CHAT ? "chat.completion.chunk" : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)j->created);
    cJSON_AddStringToObject(o, "model", j->model ? j->model : "");
    return o;
}

/* One event with text[from, to) of choice c (and its finish reason when given). */
static void emit_delta(an_serve_job *j, an_job_choice *c, size_t from, size_t to, const char *finish) {
    cJSON *o = chunk_base(j);
    char *piece = strndup(c->text.s ? c->text.s + from : "", to - from);
    if (!o || !piece) {
        j->out.oom = 1;
        cJSON_Delete(o);
        free(piece);
        return;
    }
    if (j->kind == AN_JOB_NEGATIVES) {
        cJSON_AddNumberToObject(o, "index", c->index);
        cJSON_AddStringToObject(o, "text", piece);
        if (finish) cJSON_AddStringToObject(o, "finish_reason", finish);
    } else {
        cJSON *choices = cJSON_AddArrayToObject(o, "choices"), *ch = cJSON_CreateObject();
        cJSON_AddItemToArray(choices, ch);
        cJSON_AddNumberToObject(ch, "index", c->index);
        if (j->kind == AN_JOB_CHAT) {
            cJSON *d = cJSON_AddObjectToObject(ch, "delta");
            if (to > from || !finish) cJSON_AddStringToObject(d, "content", piece);
        } else {
            cJSON_AddStringToObject(ch, "text", piece);
        }
        cJSON_AddNullToObject(ch, "logprobs");
        if (finish) cJSON_AddStringToObject(ch, "finish_reason", finish);
        else cJSON_AddNullToObject(ch, "finish_reason");
    }
    free(piece);
    add_event(j, o);
}

void an_job_start(an_serve_job *j) {
    pthread_mutex_lock(&j->mu);
    if (j->stream && j->kind == AN_JOB_CHAT)
        for (int i = 0; i < j->n_choices; i++) {
            cJSON *o = chunk_base(j), *choices = cJSON_AddArrayToObject(o, "choices"), *ch = cJSON_CreateObject();
            cJSON_AddItemToArray(choices, ch);
            cJSON_AddNumberToObject(ch, "index", i);
            cJSON *d = cJSON_AddObjectToObject(ch, "delta");
            cJSON_AddStringToObject(d, "role", "assistant");
            cJSON_AddStringToObject(d, "content", "");
            cJSON_AddNullToObject(ch, "logprobs");
            cJSON_AddNullToObject(ch, "finish_reason");
            add_event(j, o);
        }
    pthread_mutex_unlock(&j->mu);
}

/* One alternative token's text: its bytes when they are whole UTF-8 characters, else U+FFFD for each
 * broken sequence (a byte-level token can end inside a character; the "bytes" field keeps them). */
static char *token_text(const an_serve_job *j, int32_t id, unsigned char **bytes, size_t *n) {
    an_error e;
    *bytes = (unsigned char *)an_tokenizer_decode_len(j->sv->session->tok, &id, 1, n, &e);
    if (!*bytes) return NULL;
    char *s = malloc(*n * 3 + 1), *o = s;
    for (size_t i = 0; s && i < *n;) {
        uint32_t cp;
        int len = an_utf8_decode(*bytes + i, *n - i, &cp);
        if (cp == 0xFFFD && len == 1) o += an_utf8_encode(cp, o); /* a broken sequence's byte */
        else memcpy(o, *bytes + i, (size_t)len), o += len;
        i += (size_t)len;
    }
    if (s) *o = 0;
    return s;
}

/* Token k's alternatives, most likely first: chat's [{token, logprob, bytes}], or completions'
 * {text: logprob} (a text two tokens share keeps the likelier one's). */
static cJSON *top_json(const an_serve_job *j, const an_job_choice *c, int k) {
    int chat = j->kind == AN_JOB_CHAT;
    cJSON *out = chat ? cJSON_CreateArray() : cJSON_CreateObject();
    for (int t = 0; t < j->top; t++) {
        unsigned char *raw;
        size_t n;
        char *text = token_text(j, c->top_ids[(size_t)k * j->top + t], &raw, &n);
        float lp = c->top_lps[(size_t)k * j->top + t];
        if (chat) {
            cJSON *x = cJSON_CreateObject();
            cJSON_AddStringToObject(x, "token", text ? text : "");
            cJSON_AddNumberToObject(x, "logprob", lp);
            cJSON *bytes = cJSON_AddArrayToObject(x, "bytes");
            for (size_t q = 0; raw && q < n; q++) cJSON_AddItemToArray(bytes, cJSON_CreateNumber(raw[q]));
            cJSON_AddItemToArray(out, x);
        } else if (text && !cJSON_GetObjectItemCaseSensitive(out, text)) {
            cJSON_AddNumberToObject(out, text, lp);
        }
        free(text);
        free(raw);
    }
    return out;
}

static cJSON *logprobs_json(const an_serve_job *j, const an_job_choice *c, size_t start, size_t end) {
    if (!j->logprobs) return cJSON_CreateNull();
    cJSON *o = cJSON_CreateObject();
    if (j->kind == AN_JOB_CHAT) {
        cJSON *content = cJSON_AddArrayToObject(o, "content");
        for (int k = 0; k < c->n_ids; k++) {
            size_t a = c->offs[k], b = k + 1 < c->n_ids ? c->offs[k + 1] : c->text.n;
            if (a >= end) break;
            if (b > end) b = end;
            char *piece = strndup(c->text.s + a, b - a);
            cJSON *t = cJSON_CreateObject();
            cJSON_AddStringToObject(t, "token", piece ? piece : "");
            cJSON_AddNumberToObject(t, "logprob", c->lps[k]);
            cJSON *bytes = cJSON_AddArrayToObject(t, "bytes");
            for (size_t q = a; q < b; q++) cJSON_AddItemToArray(bytes, cJSON_CreateNumber((unsigned char)c->text.s[q]));
            cJSON_AddItemToObject(t, "top_logprobs", top_json(j, c, k));
            cJSON_AddItemToArray(content, t);
            free(piece);
        }
        return o;
    }
    cJSON *toks = cJSON_AddArrayToObject(o, "tokens"), *lps = cJSON_AddArrayToObject(o, "token_logprobs"),
          *offs = cJSON_AddArrayToObject(o, "text_offset"), *top = j->top ? cJSON_CreateArray() : NULL;
    for (int k = 0; k < c->n_ids; k++) {
        size_t a = c->offs[k], b = k + 1 < c->n_ids ? c->offs[k + 1] : c->text.n;
        if (a >= end) break;
        if (b > end) b = end;
        char *piece = strndup(c->text.s + a, b - a);
        cJSON_AddItemToArray(toks, cJSON_CreateString(piece ? piece : ""));
        cJSON_AddItemToArray(lps, cJSON_CreateNumber(c->lps[k]));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(a - start)));
        if (top) cJSON_AddItemToArray(top, top_json(j, c, k));
        free(piece);
    }
    if (top) cJSON_AddItemToObject(o, "top_logprobs", top);
    else cJSON_AddNullToObject(o, "top_logprobs");
    return o;
}

static void add_usage(cJSON *o, const an_serve_job *j) {
    double in = 0, out = 0;
    for (int i = 0; i < j->n_choices; i++) {
        /* a prompt with n samples is one prompt: counted once, as OpenAI does */
        if (j->ch[i].index % j->n == 0) in += j->ch[i].res.prompt_tokens;
        out += j->ch[i].res.n_tokens;
    }
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", in);
    cJSON_AddNumberToObject(u, "completion_tokens", out);
    cJSON_AddNumberToObject(u, "total_tokens", in + out);
}

/* The whole body of a non-streaming job, once every choice is done. */
static void write_final(an_serve_job *j) {
    cJSON *o = cJSON_CreateObject();
    if (!o) {
        j->out.oom = 1;
        return;
    }
    if (j->kind == AN_JOB_NEGATIVES) {
        cJSON_AddStringToObject(o, "object", "negatives");
        cJSON_AddStringToObject(o, "model", j->model ? j->model : "");
        cJSON *neg = cJSON_AddArrayToObject(o, "negatives");
        for (int p = 0; p < j->prompts; p++) {
            cJSON *samples = j->n > 1 ? cJSON_CreateArray() : NULL;
            for (int s = 0; s < j->n; s++) {
                const an_job_choice *c = &j->ch[p * j->n + s];
                size_t a, b;
                final_span(j, c, &a, &b);
                cJSON *t = cJSON_CreateString("");
                if (b > a) {
                    char *x = strndup(c->text.s + a, b - a);
                    cJSON_Delete(t);
                    t = cJSON_CreateString(x ? x : "");
                    free(x);
                }
                cJSON_AddItemToArray(samples ? samples : neg, t);
            }
            if (samples) cJSON_AddItemToArray(neg, samples);
        }
    } else {
        cJSON_AddStringToObject(o, "id", j->id);
        cJSON_AddStringToObject(o, "object", j->kind == AN_JOB_CHAT ? "chat.completion" : "text_completion");
        cJSON_AddNumberToObject(o, "created", (double)j->created);
        cJSON_AddStringToObject(o, "model", j->model ? j->model : "");
        cJSON *choices = cJSON_AddArrayToObject(o, "choices");
        for (int i = 0; i < j->n_choices; i++) {
            const an_job_choice *c = &j->ch[i];
            size_t a, b;
            final_span(j, c, &a, &b);
            char *x = strndup(c->text.s ? c->text.s + a : "", b - a);
            cJSON *ch = cJSON_CreateObject();
            cJSON_AddNumberToObject(ch, "index", c->index);
            if (j->kind == AN_JOB_CHAT) {
                cJSON *m = cJSON_AddObjectToObject(ch, "message");
                cJSON_AddStringToObject(m, "role", "assistant");
                cJSON_AddStringToObject(m, "content", x ? x : "");
            } else {
                cJSON_AddStringToObject(ch, "text", x ? x : "");
            }
            free(x);
            cJSON_AddItemToObject(ch, "logprobs", logprobs_json(j, c, a, b));
            cJSON_AddStringToObject(ch, "finish_reason", finish_reason(c->res.stop));
            cJSON_AddItemToArray(choices, ch);
        }
    }
    add_usage(o, j);
    add_json(&j->out, o);
}

static void write_error(an_serve_job *j) {
    cJSON *o = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "message", j->error);
    cJSON_AddStringToObject(e, "type", "server_error");
    cJSON_AddNullToObject(e, "param");
    cJSON_AddNullToObject(e, "code");
    if (j->stream) {
        add_event(j, o);
    } else {
        j->status = 500;
        add_json(&j->out, o);
    }
}

/* ---- the engine's callbacks (engine thread) ---- */
static int stop_hit(an_serve_job *j, an_job_choice *c, size_t before) {
    const an_template *t = &j->sv->session->tpl;
    int total = (int)t->n_stop_words + j->n_stops;
    size_t best = (size_t)-1;
    for (int w = 0; w < total; w++) {
        const char *s = w < (int)t->n_stop_words ? t->stop_words[w] : j->stops[w - (int)t->n_stop_words];
        size_t L = strlen(s);
        if (!L || !c->text.s) continue;
        /* only where the new text can complete it: earlier text was searched already */
        size_t from = before >= L ? before - L + 1 : 0;
        const char *hit = strstr(c->text.s + from, s);
        if (hit && (size_t)(hit - c->text.s) < best) best = (size_t)(hit - c->text.s);
    }
    if (best == (size_t)-1) return 0;
    c->cut = best;
    return 1;
}

static int on_token(void *ctx, const an_token *tk) {
    an_job_choice *c = ctx;
    an_serve_job *j = c->job;
    pthread_mutex_lock(&j->mu);
    char piece[256];
    size_t before = c->text.n;
    int k = an_detok_feed(&c->dt, tk->id, piece, sizeof piece);
    if (k > 0) an_sbuf_add(&c->text, piece, (size_t)k);
    if (j->logprobs && c->n_ids < (1 << 24)) {
        if (c->n_ids == c->cap_ids) {
            int cap = c->cap_ids ? c->cap_ids * 2 : 32;
            size_t tops = (size_t)cap * (size_t)(j->top ? j->top : 1);
            int32_t *ids = realloc(c->ids, (size_t)cap * sizeof *ids);
            if (ids) c->ids = ids;
            float *lps = realloc(c->lps, (size_t)cap * sizeof *lps);
            if (lps) c->lps = lps;
            size_t *offs = realloc(c->offs, (size_t)cap * sizeof *offs);
            if (offs) c->offs = offs;
            int32_t *top_ids = realloc(c->top_ids, tops * sizeof *top_ids);
            if (top_ids) c->top_ids = top_ids;
            float *top_lps = realloc(c->top_lps, tops * sizeof *top_lps);
            if (top_lps) c->top_lps = top_lps;
            if (ids && lps && offs && top_ids && top_lps) c->cap_ids = cap;
        }
        if (c->n_ids < c->cap_ids) {
            for (int t = 0; t < j->top && t < tk->n_top; t++) { /* the engine gives all j->top */
                c->top_ids[(size_t)c->n_ids * j->top + t] = tk->top_ids[t];
                c->top_lps[(size_t)c->n_ids * j->top + t] = tk->top_logprobs[t];
            }
            c->ids[c->n_ids] = tk->id;
            c->lps[c->n_ids] = tk->logprob;
            c->offs[c->n_ids++] = before;
        }
    }
    int stop = c->cut == (size_t)-1 && stop_hit(j, c, before);
    if (j->stream && !j->cancelled) {
        size_t safe = safe_len(j, c), from = c->emitted;
        if (j->kind == AN_JOB_NEGATIVES && from == 0)
            while (from < safe && is_space(c->text.s[from])) from++;
        if (safe > from) {
            emit_delta(j, c, from, safe, NULL);
            c->emitted = safe;
            pthread_cond_broadcast(&j->cv);
        } else if (from > c->emitted && c->emitted == 0) {
            c->emitted = from; /* leading whitespace of a negative: skipped */
        }
    }
    int cancelled = j->cancelled;
    pthread_mutex_unlock(&j->mu);
    return stop || cancelled;
}

static void on_done(void *ctx, const an_request_result *r) {
    an_job_choice *c = ctx;
    an_serve_job *j = c->job;
    an_metrics_result(&j->sv->metrics, r);
    pthread_mutex_lock(&j->mu);
    c->res = *r;
    c->res.message = NULL;
    c->done = 1;
    if (r->stop == AN_STOP_ERROR && !j->error[0])
        snprintf(j->error, sizeof j->error, "generation failed: %s", r->message ? r->message : "the model failed");
    if (c->cut == (size_t)-1) {
        char tail[64];
        int k = an_detok_flush(&c->dt, tail, sizeof tail);
        if (k > 0) an_sbuf_add(&c->text, tail, (size_t)k);
    }
    if (j->stream && !j->cancelled && !j->error[0]) {
        size_t a, b;
        final_span(j, c, &a, &b);
        size_t from = c->emitted > a ? c->emitted : a;
        emit_delta(j, c, from, b > from ? b : from, finish_reason(r->stop));
        c->emitted = b;
    }
    if (++j->n_done == j->n_choices) {
        if (j->error[0]) write_error(j);
        else if (!j->stream) write_final(j);
        if (j->stream) {
            if (!j->error[0] && j->include_usage) {
                /* a last chunk with the usage, as OpenAI sends with stream_options.include_usage */
                cJSON *o = chunk_base(j);
                cJSON_AddArrayToObject(o, "choices");
                add_usage(o, j);
                add_event(j, o);
            }
            an_sbuf_str(&j->out, "data: [DONE]\n\n");
        }
        if (j->out.oom) {
            /* nothing sensible can be sent: an empty body with an error status */
            j->status = 500;
            j->out.n = j->out_read = 0;
        }
        j->ended = 1;
    }
    pthread_cond_broadcast(&j->cv);
    unref_locked(j);
}

void an_job_bind(an_serve_job *j, int i, an_request *r) {
    r->on_token = on_token;
    r->on_done = on_done;
    r->ctx = &j->ch[i];
    r->want_logprobs = j->logprobs;
    r->top_logprobs = j->logprobs ? j->top : 0;
}
