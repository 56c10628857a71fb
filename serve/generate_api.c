/* The generation endpoints: POST /v1/completions, /v1/chat/completions and /v1/negatives. Each reads
 * and checks its JSON body (unknown fields are refused; OpenAI fields autoneg does not implement are
 * taken only at their neutral value), turns its prompts into token ids, and submits one engine
 * request per (prompt, sample) to a job whose body the HTTP layer reads as it is written.
 *
 * Sample s of prompt p is the engine's sample p * n + s with the request's seed: exactly the random
 * stream `autoneg generate` (an_session_generate) gives sequence p * n + s, so /v1/negatives with
 * the same seed writes the same negatives as the CLI. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infer/retrieval_pairs.h"
#include "serve/serve_impl.h"

typedef struct gen_req {
    an_sampler_params sp;
    uint64_t seed;
    int max_tokens, min_tokens, n, stream, logprobs, top, include_usage;
    const char *adapter;  /* NULL: the base */
    const char *model;    /* the name answered with */
    char **stops;
    int n_stops;
} gen_req;

static void gen_req_free(gen_req *g) {
    for (int i = 0; i < g->n_stops; i++) free(g->stops[i]);
    free(g->stops);
    g->stops = NULL;
    g->n_stops = 0;
}

/* 0 absent (or null), 1 read, -1 wrong (resp holds the 400) */
static int get_num(const cJSON *o, const char *name, double lo, double hi, int integer, double *out,
                   an_http_response *resp) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!f || cJSON_IsNull(f)) return 0;
    if (!cJSON_IsNumber(f) || (integer && f->valuedouble != floor(f->valuedouble))) {
        an_serve_error(resp, 400, "invalid_request_error", name, "invalid_type", "%s must be %s", name,
                       integer ? "an integer" : "a number");
        return -1;
    }
    double v = f->valuedouble;
    if (!(v >= lo && v <= hi)) {
        an_serve_error(resp, 400, "invalid_request_error", name, "invalid_value", "%s is %g; it must be in [%g, %g]", name,
                       v, lo, hi);
        return -1;
    }
    *out = v;
    return 1;
}

static int get_bool(const cJSON *o, const char *name, int *out, an_http_response *resp) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!f || cJSON_IsNull(f)) return 0;
    if (!cJSON_IsBool(f)) {
        an_serve_error(resp, 400, "invalid_request_error", name, "invalid_type", "%s must be true or false", name);
        return -1;
    }
    *out = cJSON_IsTrue(f);
    return 1;
}

/* A field autoneg takes only at OpenAI's neutral value. */
static int neutral_only(const cJSON *o, an_http_response *resp) {
    double v = 0;
    static const char *const zero[] = {"frequency_penalty", "presence_penalty", NULL};
    for (int i = 0; zero[i]; i++) {
        int r = get_num(o, zero[i], -2, 2, 0, &v, resp);
        if (r < 0) return -1;
        if (r > 0 && v != 0) {
            an_serve_error(resp, 400, "invalid_request_error", zero[i], "unsupported_value",
                           "%s is not supported (only 0); repetition_penalty is", zero[i]);
            return -1;
        }
    }
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, "logit_bias");
    if (f && !cJSON_IsNull(f) && !(cJSON_IsObject(f) && !f->child)) {
        an_serve_error(resp, 400, "invalid_request_error", "logit_bias", "unsupported_value", "logit_bias is not supported");
        return -1;
    }
    f = cJSON_GetObjectItemCaseSensitive(o, "user");
    if (f && !cJSON_IsNull(f) && !cJSON_IsString(f)) {
        an_serve_error(resp, 400, "invalid_request_error", "user", "invalid_type", "user must be a string");
        return -1;
    }
    int b = 0;
    if (get_bool(o, "echo", &b, resp) < 0) return -1;
    if (b) {
        an_serve_error(resp, 400, "invalid_request_error", "echo", "unsupported_value", "echo is not supported");
        return -1;
    }
    f = cJSON_GetObjectItemCaseSensitive(o, "suffix");
    if (f && !cJSON_IsNull(f) && !(cJSON_IsString(f) && !*f->valuestring)) {
        an_serve_error(resp, 400, "invalid_request_error", "suffix", "unsupported_value", "suffix is not supported");
        return -1;
    }
    f = cJSON_GetObjectItemCaseSensitive(o, "response_format");
    if (f && !cJSON_IsNull(f)) {
        const cJSON *t = cJSON_IsObject(f) ? cJSON_GetObjectItemCaseSensitive(f, "type") : NULL;
        if (!cJSON_IsString(t) || strcmp(t->valuestring, "text")) {
            an_serve_error(resp, 400, "invalid_request_error", "response_format", "unsupported_value",
                           "response_format: only {\"type\": \"text\"} is supported");
            return -1;
        }
    }
    return 0;
}

static int get_stops(const cJSON *o, gen_req *g, an_http_response *resp) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, "stop");
    if (!f || cJSON_IsNull(f)) return 0;
    int n = cJSON_IsString(f) ? 1 : cJSON_IsArray(f) ? cJSON_GetArraySize(f) : -1;
    if (n < 0 || n > 4) {
        an_serve_error(resp, 400, "invalid_request_error", "stop", "invalid_value",
                       "stop must be a string or an array of up to 4 strings");
        return -1;
    }
    g->stops = calloc((size_t)n + 1, sizeof *g->stops);
    if (!g->stops) {
        an_serve_error(resp, 500, "server_error", NULL, NULL, "out of memory");
        return -1;
    }
    const cJSON *s = cJSON_IsString(f) ? f : f->child;
    for (int i = 0; i < n; i++, s = s->next) {
        if (!cJSON_IsString(s) || !*s->valuestring || strlen(s->valuestring) > 256) {
            an_serve_error(resp, 400, "invalid_request_error", "stop", "invalid_value",
                           "stop: each stop must be a non-empty string of at most 256 bytes");
            return -1;
        }
        if (!(g->stops[g->n_stops++] = strdup(s->valuestring))) {
            an_serve_error(resp, 500, "server_error", NULL, NULL, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* The options every generation endpoint reads. max_default: max_tokens when the request names none. */
static int read_gen(an_server *sv, const cJSON *o, an_job_kind kind, gen_req *g, an_http_response *resp) {
    const an_serve_limits *L = &sv->cfg.limits;
    double v;
    int r;
    /* the model: the base by its name (or none given), else an adapter by name, as vLLM does */
    g->model = sv->model_id;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "model");
    if (m && !cJSON_IsNull(m)) {
        if (!cJSON_IsString(m)) {
            an_serve_error(resp, 400, "invalid_request_error", "model", "invalid_type", "model must be a string");
            return -1;
        }
        if (*m->valuestring && strcmp(m->valuestring, sv->model_id)) {
            if (!an_serve_adapter_exists(sv, m->valuestring)) {
                an_serve_error(resp, 404, "invalid_request_error", "model", "model_not_found",
                               "the model %s does not exist (GET /v1/models lists the base and its adapters)",
                               AN_QUOTE(m->valuestring));
                return -1;
            }
            g->adapter = g->model = m->valuestring;
        }
    }
    if ((r = get_num(o, "temperature", 0, 2, 0, &v, resp)) < 0) return -1;
    if (r) {
        /* below this, logits divided by it leave the float range and no token can be drawn */
        if (v > 0 && v < 1e-3) {
            an_serve_error(resp, 400, "invalid_request_error", "temperature", "invalid_value",
                           "temperature %g is too small to sample with: use 0 for greedy decoding", v);
            return -1;
        }
        g->sp.temperature = (float)v;
    }
    if ((r = get_num(o, "top_p", 0, 1, 0, &v, resp)) < 0) return -1;
    if (r) {
        if (v <= 0) {
            an_serve_error(resp, 400, "invalid_request_error", "top_p", "invalid_value", "top_p must be in (0, 1]");
            return -1;
        }
        g->sp.top_p = (float)v;
    }
    if ((r = get_num(o, "top_k", -1, 1e9, 1, &v, resp)) < 0) return -1;
    if (r) g->sp.top_k = v < 0 ? 0 : (int)v; /* -1: off, as vLLM spells it */
    if ((r = get_num(o, "min_p", 0, 1, 0, &v, resp)) < 0) return -1;
    if (r) g->sp.min_p = (float)v;
    if ((r = get_num(o, "repetition_penalty", 0, 100, 0, &v, resp)) < 0) return -1;
    if (r) {
        if (v <= 0) {
            an_serve_error(resp, 400, "invalid_request_error", "repetition_penalty", "invalid_value",
                           "repetition_penalty must be > 0 (1 = off)");
            return -1;
        }
        g->sp.repeat_penalty = (float)v;
    }
    const char *max_name = "max_tokens";
    if ((r = get_num(o, "max_tokens", -1e18, 1e18, 1, &v, resp)) < 0) return -1;
    if (!r && kind == AN_JOB_CHAT && (r = get_num(o, "max_completion_tokens", -1e18, 1e18, 1, &v, resp)) != 0) {
        if (r < 0) return -1;
        max_name = "max_completion_tokens";
    }
    if (r) {
        if (v < 1 || v > L->max_tokens) {
            an_serve_error(resp, 400, "invalid_request_error", max_name, "invalid_value",
                           "%s is %g; it must be from 1 to %d (the server's limit, --max-tokens)", max_name, v,
                           L->max_tokens);
            return -1;
        }
        g->max_tokens = (int)v;
    }
    if (g->max_tokens > L->max_tokens) g->max_tokens = L->max_tokens;
    if ((r = get_num(o, "min_tokens", 0, L->max_tokens, 1, &v, resp)) < 0) return -1;
    if (r) g->min_tokens = (int)v < g->max_tokens ? (int)v : g->max_tokens;
    if ((r = get_num(o, "n", -1e18, 1e18, 1, &v, resp)) < 0) return -1;
    if (r) {
        if (v < 1 || v > L->max_n) {
            an_serve_error(resp, 400, "invalid_request_error", "n", "invalid_value",
                           "n is %g; it must be from 1 to %d (the server's limit, --max-n)", v, L->max_n);
            return -1;
        }
        g->n = (int)v;
    }
    if ((r = get_num(o, "best_of", 1, L->max_n, 1, &v, resp)) < 0) return -1;
    if (r && (int)v != g->n) {
        an_serve_error(resp, 400, "invalid_request_error", "best_of", "unsupported_value",
                       "best_of is not supported (only best_of equal to n)");
        return -1;
    }
    /* any integer a JSON number holds exactly */
    if ((r = get_num(o, "seed", 0, 9007199254740992.0, 1, &v, resp)) < 0) return -1;
    if (r) g->seed = (uint64_t)v;
    if (get_bool(o, "stream", &g->stream, resp) < 0) return -1;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(o, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so)) {
            an_serve_error(resp, 400, "invalid_request_error", "stream_options", "invalid_type", "stream_options must be an object");
            return -1;
        }
        if (get_bool(so, "include_usage", &g->include_usage, resp) < 0) return -1;
    }
    if (get_stops(o, g, resp)) return -1;
    if (kind == AN_JOB_COMPLETION) {
        /* logprobs N: the chosen token's log-probability and the N most likely tokens' (OpenAI: 0 .. 5) */
        if ((r = get_num(o, "logprobs", 0, 5, 1, &v, resp)) < 0) return -1;
        g->logprobs = r > 0;
        g->top = r > 0 ? (int)v : 0;
    } else if (kind == AN_JOB_CHAT) {
        if (get_bool(o, "logprobs", &g->logprobs, resp) < 0) return -1;
        if ((r = get_num(o, "top_logprobs", 0, AN_TOP_LOGPROBS_MAX, 1, &v, resp)) < 0) return -1;
        if (r && v > 0 && !g->logprobs) {
            an_serve_error(resp, 400, "invalid_request_error", "top_logprobs", "invalid_value",
                           "top_logprobs needs logprobs: true");
            return -1;
        }
        g->top = r > 0 ? (int)v : 0;
    }
    return neutral_only(o, resp);
}

static int context_of(const an_server *sv) {
    int c = sv->session->model->cfg.max_seq;
    return sv->cfg.context > 0 && sv->cfg.context < c ? sv->cfg.context : c;
}

/* Checks the prompts' lengths, then submits every (prompt, sample) to one job. */
static void submit(an_server *sv, an_job_kind kind, an_ids *prompts, int n_prompts, const char *param, gen_req *g,
                   an_http_response *resp) {
    int ctx = context_of(sv);
    for (int p = 0; p < n_prompts; p++) {
        int n = (int)prompts[p].n;
        if (n > sv->cfg.limits.max_prompt_tokens || n >= ctx) {
            char which[64];
            if (n_prompts > 1) snprintf(which, sizeof which, "%s[%d]", param, p);
            else snprintf(which, sizeof which, "%s", param);
            an_serve_error(resp, 400, "invalid_request_error", param, "context_length_exceeded",
                           "%s is %d tokens; the limit is %d (%s)", which, n,
                           n >= ctx ? ctx - 1 : sv->cfg.limits.max_prompt_tokens,
                           n >= ctx ? "the context less one token to write" : "--max-prompt-tokens");
            return;
        }
    }
    if (an_server_jobs(sv) >= sv->cfg.limits.max_jobs) {
        an_serve_error(resp, 429, "rate_limit_exceeded", NULL, "rate_limit_exceeded",
                       "%d requests are in flight, the server's limit (--max-jobs): try again later", sv->cfg.limits.max_jobs);
        return;
    }
    an_serve_job *j = an_job_new(sv, kind, n_prompts * g->n);
    if (!j) {
        an_serve_error(resp, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    j->stream = g->stream;
    j->logprobs = g->logprobs;
    j->top = g->top;
    j->include_usage = g->include_usage;
    j->prompts = n_prompts;
    j->n = g->n;
    j->stops = g->stops;
    j->n_stops = g->n_stops;
    g->stops = NULL;
    g->n_stops = 0;
    j->model = strdup(g->model);
    pthread_mutex_lock(&sv->mu);
    unsigned long long id = ++sv->next_id;
    pthread_mutex_unlock(&sv->mu);
    snprintf(j->id, sizeof j->id, "%s-%llu", kind == AN_JOB_CHAT ? "chatcmpl" : kind == AN_JOB_NEGATIVES ? "neg" : "cmpl", id);
    an_job_register(j);
    an_job_start(j);
    const an_session *s = sv->session;
    for (int p = 0; p < n_prompts; p++)
        for (int k = 0; k < g->n; k++) {
            int i = p * g->n + k;
            an_request r;
            memset(&r, 0, sizeof r);
            r.ids = prompts[p].v;
            r.n_ids = (int)prompts[p].n;
            r.sampling = g->sp;
            r.seed = g->seed;
            r.sample = i;
            r.max_tokens = g->max_tokens;
            r.min_tokens = g->min_tokens;
            r.stop_ids = s->stop_ids.v;
            r.n_stop_ids = (int)s->stop_ids.n;
            r.adapter = g->adapter;
            an_job_bind(j, i, &r);
            pthread_mutex_lock(&j->mu);
            j->refs++;
            pthread_mutex_unlock(&j->mu);
            int64_t rid = 0;
            an_error err;
            an_engine_status st = an_engine_submit(sv->engine, &r, &rid, &err);
            pthread_mutex_lock(&j->mu);
            if (st != AN_ENGINE_OK) j->refs--;
            else j->ch[i].req_id = rid;
            pthread_mutex_unlock(&j->mu);
            if (st == AN_ENGINE_BUSY) {
                an_serve_job_free(j);
                an_serve_error(resp, 429, "rate_limit_exceeded", NULL, "rate_limit_exceeded",
                               "the generation queue is full (--max-queue): try again later");
                return;
            }
            if (st != AN_ENGINE_OK) {
                an_serve_job_free(j);
                an_serve_error(resp, 400, "invalid_request_error", param, NULL, "%s", err.msg);
                return;
            }
        }
    resp->status = 200;
    resp->content_type = g->stream ? "text/event-stream" : "application/json";
    resp->job = j;
}

static void ids_free(an_ids *v, int n) {
    for (int i = 0; v && i < n; i++) an_ids_free(&v[i]);
    free(v);
}

/* ---- POST /v1/completions ---- */
void an_serve_completions(an_server *sv, const an_http_request *req, an_http_response *resp) {
    static const char *const fields[] = {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "min_p",
                                         "repetition_penalty", "n", "stop", "seed", "stream", "stream_options",
                                         "min_tokens", "logprobs", "echo", "best_of", "suffix", "user",
                                         "frequency_penalty", "presence_penalty", "logit_bias", NULL};
    cJSON *o = an_serve_parse(req, resp);
    if (!o) return;
    /* OpenAI's defaults: temperature 1, no filters, 16 tokens, a fresh seed */
    gen_req g = {.sp = {1.0f, 0, 1.0f, 0.0f, 1.0f}, .seed = an_server_random_seed(sv), .max_tokens = 16, .n = 1};
    an_ids *ids = NULL;
    int n = 0;
    if (an_serve_known_fields(o, fields, resp) || read_gen(sv, o, AN_JOB_COMPLETION, &g, resp)) goto done;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "prompt");
    n = cJSON_IsString(p) ? 1 : cJSON_IsArray(p) ? cJSON_GetArraySize(p) : -1;
    if (n < 1 || n > sv->cfg.limits.max_prompts) {
        an_serve_error(resp, 400, "invalid_request_error", "prompt", n < 0 ? "invalid_type" : "invalid_value",
                       "prompt must be a string or an array of 1 to %d strings", sv->cfg.limits.max_prompts);
        n = 0;
        goto done;
    }
    if (!(ids = calloc((size_t)n, sizeof *ids))) {
        an_serve_error(resp, 500, "server_error", NULL, NULL, "out of memory");
        goto done;
    }
    const cJSON *x = cJSON_IsString(p) ? p : p->child;
    for (int i = 0; i < n; i++, x = x->next) {
        an_error err;
        if (!cJSON_IsString(x)) {
            an_serve_error(resp, 400, "invalid_request_error", "prompt", "invalid_type",
                           "prompt[%d] is not a string (token-id prompts are not supported)", i);
            goto done;
        }
        if (an_session_encode(sv->session, x->valuestring, 1, &ids[i], &err)) {
            an_serve_error(resp, 400, "invalid_request_error", "prompt", NULL, "%s", err.msg);
            goto done;
        }
    }
    submit(sv, AN_JOB_COMPLETION, ids, n, "prompt", &g, resp);
done:
    ids_free(ids, n);
    gen_req_free(&g);
    cJSON_Delete(o);
}

/* ---- POST /v1/chat/completions ---- */

/* A message's text: a string, or an array of {"type": "text", "text": ...} parts; NULL when neither. */
static char *message_text(const cJSON *c) {
    if (!c || cJSON_IsNull(c)) return strdup("");
    if (cJSON_IsString(c)) return strdup(c->valuestring);
    if (!cJSON_IsArray(c)) return NULL;
    an_sbuf b = {0};
    an_sbuf_str(&b, "");
    for (const cJSON *part = c->child; part; part = part->next) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "type"), *x = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(t) || strcmp(t->valuestring, "text") || !cJSON_IsString(x)) {
            an_sbuf_free(&b);
            return NULL;
        }
        an_sbuf_str(&b, x->valuestring);
    }
    if (b.oom) an_sbuf_free(&b);
    return b.s;
}

/* The conversation in the model's template, as XTuner writes rounds: SYSTEM + INSTRUCTION(user) for
 * the first turn, then each answer + SUFFIX + SEP, then INSTRUCTION(user) again. A conversation of one
 * user message is exactly what `autoneg generate` feeds for that text. */
static int render_chat(const an_session *s, const cJSON *msgs, an_ids *out, an_http_response *resp) {
    const an_template *t = &s->tpl;
    an_sbuf sys = {0}, text = {0};
    an_sbuf_str(&sys, "");
    an_sbuf_str(&text, "");
    int rc = -1, users = 0, last_user = 0, i = 0;
    an_error err;
    for (const cJSON *m = msgs->child; m; m = m->next, i++) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        char *content = cJSON_IsObject(m) ? message_text(cJSON_GetObjectItemCaseSensitive(m, "content")) : NULL;
        for (const cJSON *f = cJSON_IsObject(m) ? m->child : NULL; f && content; f = f->next)
            if (strcmp(f->string, "role") && strcmp(f->string, "content") && strcmp(f->string, "name")) {
                an_serve_error(resp, 400, "invalid_request_error", "messages", "unknown_field",
                               "messages[%d]: unrecognized field %s (role, content, name)", i, AN_QUOTE(f->string));
                free(content);
                goto done;
            }
        if (!cJSON_IsString(role) || !content) {
            an_serve_error(resp, 400, "invalid_request_error", "messages", "invalid_type",
                           "messages[%d] must be an object with a string role and a text content", i);
            free(content);
            goto done;
        }
        const char *r = role->valuestring;
        char *piece = NULL;
        if (!strcmp(r, "system") || !strcmp(r, "developer")) {
            if (users) {
                an_serve_error(resp, 400, "invalid_request_error", "messages", "invalid_value",
                               "messages[%d]: a system message must come before the first user message", i);
                free(content);
                goto done;
            }
            if (sys.n) an_sbuf_str(&sys, "\n");
            an_sbuf_str(&sys, content);
        } else if (!strcmp(r, "user")) {
            piece = an_template_render_input(t, content, users ? NULL : sys.s, &err);
            users++;
            last_user = 1;
        } else if (!strcmp(r, "assistant")) {
            if (!users) {
                an_serve_error(resp, 400, "invalid_request_error", "messages", "invalid_value",
                               "messages[%d]: an assistant message must follow a user message", i);
                free(content);
                goto done;
            }
            piece = an_template_render_output(t, content, &err);
            if (piece) {
                an_sbuf_str(&text, piece);
                free(piece);
                piece = strdup(t->sep ? t->sep : "");
            }
            last_user = 0;
        } else {
            an_serve_error(resp, 400, "invalid_request_error", "messages", "invalid_value",
                           "messages[%d]: role %s is not one of system, developer, user, assistant", i, AN_QUOTE(r));
            free(content);
            goto done;
        }
        free(content);
        if (strcmp(r, "system") && strcmp(r, "developer")) {
            if (!piece) {
                an_serve_error(resp, 500, "server_error", NULL, NULL, "the template failed: %s", err.msg);
                goto done;
            }
            an_sbuf_str(&text, piece);
            free(piece);
        }
    }
    if (!users || !last_user) {
        an_serve_error(resp, 400, "invalid_request_error", "messages", "invalid_value",
                       "messages must end with a user message");
        goto done;
    }
    if (sys.oom || text.oom) {
        an_serve_error(resp, 500, "server_error", NULL, NULL, "out of memory");
        goto done;
    }
    out->n = 0;
    if ((s->enc.bos >= 0 && an_ids_push(out, s->enc.bos)) || s->enc.encode(s->enc.ctx, text.s, text.n, out, &err)) {
        an_serve_error(resp, 400, "invalid_request_error", "messages", NULL, "%s", err.msg);
        goto done;
    }
    rc = 0;
done:
    an_sbuf_free(&sys);
    an_sbuf_free(&text);
    return rc;
}

void an_serve_chat(an_server *sv, const an_http_request *req, an_http_response *resp) {
    static const char *const fields[] = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature",
                                         "top_p", "top_k", "min_p", "repetition_penalty", "n", "stop", "seed", "stream",
                                         "stream_options", "min_tokens", "logprobs", "top_logprobs", "user",
                                         "frequency_penalty", "presence_penalty", "logit_bias", "response_format", NULL};
    cJSON *o = an_serve_parse(req, resp);
    if (!o) return;
    gen_req g = {.sp = {1.0f, 0, 1.0f, 0.0f, 1.0f}, .seed = an_server_random_seed(sv),
                 .max_tokens = sv->cfg.limits.max_tokens, .n = 1};
    an_ids ids = {0};
    if (an_serve_known_fields(o, fields, resp) || read_gen(sv, o, AN_JOB_CHAT, &g, resp)) goto done;
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(o, "messages");
    if (!cJSON_IsArray(msgs) || !msgs->child) {
        an_serve_error(resp, 400, "invalid_request_error", "messages", "invalid_type",
                       "messages must be a non-empty array of {\"role\", \"content\"} objects");
        goto done;
    }
    if (render_chat(sv->session, msgs, &ids, resp)) goto done;
    submit(sv, AN_JOB_CHAT, &ids, 1, "messages", &g, resp);
done:
    an_ids_free(&ids);
    gen_req_free(&g);
    cJSON_Delete(o);
}

/* ---- POST /v1/negatives ---- */
void an_serve_negatives(an_server *sv, const an_http_request *req, an_http_response *resp) {
    static const char *const fields[] = {"prompts", "model", "max_tokens", "temperature", "top_p", "top_k", "min_p",
                                         "repetition_penalty", "n", "stop", "seed", "stream", "min_tokens", "retrieve",
                                         NULL};
    cJSON *o = an_serve_parse(req, resp);
    if (!o) return;
    /* `autoneg generate`'s defaults (cli_gen_defaults), so the same prompt gives the same negative */
    gen_req g = {.sp = {0.8f, 40, 0.95f, 0.05f, 1.0f}, .seed = 1234, .max_tokens = 128, .n = 1};
    an_ids *ids = NULL;
    int n = 0;
    if (an_serve_known_fields(o, fields, resp) || read_gen(sv, o, AN_JOB_NEGATIVES, &g, resp)) goto done;
    /* retrieval: the negatives of the K most similar training prompts in front, from the index the
     * adapter's run stored (as `autoneg generate` does); default --retrieve, else the trained K */
    int k = sv->cfg.retrieve;
    double kv;
    int kr = get_num(o, "retrieve", 0, AN_RETRIEVAL_MAX_K, 1, &kv, resp);
    if (kr < 0) goto done;
    if (kr) k = (int)kv;
    if (kr && k > 0 && !an_serve_has_index(sv, g.adapter)) {
        an_serve_error(resp, 400, "invalid_request_error", "retrieve", "invalid_value",
                       "retrieve %d: the model %s has no retrieval index (train it with data.retrieve)", k,
                       AN_QUOTE(g.model));
        goto done;
    }
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "prompts");
    n = cJSON_IsArray(p) ? cJSON_GetArraySize(p) : -1;
    if (n < 1 || n > sv->cfg.limits.max_prompts) {
        an_serve_error(resp, 400, "invalid_request_error", "prompts", n < 0 ? "invalid_type" : "invalid_value",
                       "prompts must be an array of 1 to %d strings (--max-prompts)", sv->cfg.limits.max_prompts);
        n = 0;
        goto done;
    }
    if (!(ids = calloc((size_t)n, sizeof *ids))) {
        an_serve_error(resp, 500, "server_error", NULL, NULL, "out of memory");
        goto done;
    }
    const cJSON *x = p->child;
    for (int i = 0; i < n; i++, x = x->next) {
        an_error err;
        if (!cJSON_IsString(x)) {
            an_serve_error(resp, 400, "invalid_request_error", "prompts", "invalid_type", "prompts[%d] is not a string", i);
            goto done;
        }
        char *in = an_serve_retrieval_input(sv, g.adapter, x->valuestring, k, &err);
        int bad = !in || an_session_encode(sv->session, in, 0, &ids[i], &err);
        free(in);
        if (bad) {
            an_serve_error(resp, 400, "invalid_request_error", "prompts", NULL, "prompts[%d]: %s", i, err.msg);
            goto done;
        }
    }
    submit(sv, AN_JOB_NEGATIVES, ids, n, "prompts", &g, resp);
done:
    ids_free(ids, n);
    gen_req_free(&g);
    cJSON_Delete(o);
}
