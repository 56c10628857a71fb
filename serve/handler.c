/* The request handler: the server's state, routing, the API key, errors in OpenAI's shape, and the
 * endpoints that generate nothing (models, adapters, health, metrics, the page). The generation
 * endpoints are in serve/generate_api.c. */
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/file.h"
#include "model/lora.h"
#include "serve/serve_impl.h"

an_serve_config an_serve_config_default(void) {
    an_serve_config c;
    memset(&c, 0, sizeof c);
    c.limits.max_body = 1 << 20;
    c.limits.max_prompt_tokens = 4096;
    c.limits.max_tokens = 2048;
    c.limits.max_n = 16;
    c.limits.max_prompts = 64;
    c.limits.max_jobs = 512;
    c.model_id = "autoneg";
    c.retrieve = -1;
    return c;
}

an_server *an_server_create(const an_serve_config *c, an_error *err) {
    an_server *sv = calloc(1, sizeof *sv);
    if (!sv) return an_fail_null(err, "serve: out of memory");
    sv->cfg = *c;
    sv->api_key = c->api_key && *c->api_key ? strdup(c->api_key) : NULL;
    sv->adapter_dir = c->adapter_dir ? strdup(c->adapter_dir) : NULL;
    sv->model_id = strdup(c->model_id ? c->model_id : "autoneg");
    if ((c->api_key && *c->api_key && !sv->api_key) || (c->adapter_dir && !sv->adapter_dir) || !sv->model_id) {
        an_server_free(sv);
        return an_fail_null(err, "serve: out of memory");
    }
    sv->cfg.api_key = sv->api_key;
    sv->cfg.adapter_dir = sv->adapter_dir;
    sv->cfg.model_id = sv->model_id;
    pthread_mutex_init(&sv->mu, NULL);
    pthread_mutex_init(&sv->index_mu, NULL);
    an_metrics_init(&sv->metrics);
    sv->seed_state = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    return sv;
}

void an_server_attach(an_server *sv, an_session *s, an_engine *e) {
    pthread_mutex_lock(&sv->mu);
    sv->session = s;
    sv->engine = e;
    pthread_mutex_unlock(&sv->mu);
}

void an_server_drain(an_server *sv) {
    pthread_mutex_lock(&sv->mu);
    sv->draining = 1;
    pthread_mutex_unlock(&sv->mu);
}

void an_server_cancel_all(an_server *sv) {
    /* a job stays alive while its owner (the HTTP thread) holds it; cancelling under the server lock
     * keeps it from being freed meanwhile (an_serve_job_free unregisters under the same lock first) */
    pthread_mutex_lock(&sv->mu);
    for (int i = 0; i < sv->n_live; i++) an_serve_job_cancel(sv->live[i]);
    pthread_mutex_unlock(&sv->mu);
}

int an_server_jobs(an_server *sv) {
    pthread_mutex_lock(&sv->mu);
    int n = sv->jobs;
    pthread_mutex_unlock(&sv->mu);
    return n;
}

void an_server_free(an_server *sv) {
    if (!sv) return;
    free(sv->api_key);
    free(sv->adapter_dir);
    free(sv->model_id);
    free(sv->live);
    an_serve_free_indexes(sv);
    pthread_mutex_destroy(&sv->index_mu);
    pthread_mutex_destroy(&sv->mu);
    an_metrics_destroy(&sv->metrics);
    free(sv);
}

uint64_t an_server_random_seed(an_server *sv) {
    pthread_mutex_lock(&sv->mu);
    uint64_t z = (sv->seed_state += 0x9E3779B97F4A7C15ull);
    pthread_mutex_unlock(&sv->mu);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (z ^ (z >> 31)) >> 11; /* 53 bits: a seed a JSON number holds exactly */
}

/* ---- responses ---- */
void an_serve_body(an_http_response *r, int status, const char *type, char *body, size_t len) {
    r->status = status;
    r->content_type = type;
    r->body = body;
    r->body_len = len;
    if (!body) { /* out of memory: an empty 500 */
        r->status = 500;
        r->body = NULL;
        r->body_len = 0;
    }
}

void an_serve_json(an_http_response *r, int status, cJSON *o) {
    char *t = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    an_serve_body(r, status, "application/json", t, t ? strlen(t) : 0);
}

void an_serve_error(an_http_response *r, int status, const char *type, const char *param, const char *code,
                    const char *fmt, ...) {
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *o = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", type);
    if (param) cJSON_AddStringToObject(e, "param", param);
    else cJSON_AddNullToObject(e, "param");
    if (code) cJSON_AddStringToObject(e, "code", code);
    else cJSON_AddNullToObject(e, "code");
    an_serve_json(r, status, o);
}

void an_http_response_free(an_http_response *resp) {
    free(resp->body);
    resp->body = NULL;
    if (resp->job) an_serve_job_free(resp->job);
    resp->job = NULL;
}

/* ---- the API key ---- */
static const char *header(const an_http_request *req, const char *name) {
    for (int i = 0; i < req->n_headers; i++)
        if (req->headers[i].name && !strcasecmp(req->headers[i].name, name)) return req->headers[i].value;
    return NULL;
}

/* Compares every byte of the longer string whatever the mismatch, so the time taken tells nothing
 * about how much of a guessed key was right. */
static int same_key(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b), n = na > nb ? na : nb;
    volatile unsigned char diff = (unsigned char)(na != nb);
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)((i < na ? a[i] : 0) ^ (i < nb ? b[i] : 0));
    return diff == 0;
}

static int authorized(const an_server *sv, const an_http_request *req, an_http_response *resp) {
    if (!sv->api_key) return 1;
    const char *h = header(req, "Authorization");
    if (!h) {
        an_serve_error(resp, 401, "invalid_request_error", NULL, "invalid_api_key",
                       "this server needs an API key: send the header Authorization: Bearer KEY");
        return 0;
    }
    if (strncasecmp(h, "Bearer ", 7) != 0 || !same_key(h + 7, sv->api_key)) {
        an_serve_error(resp, 401, "invalid_request_error", NULL, "invalid_api_key", "incorrect API key provided");
        return 0;
    }
    return 1;
}

/* ---- JSON bodies ---- */
cJSON *an_serve_parse(const an_http_request *req, an_http_response *resp) {
    if (req->body_len == 0) {
        an_serve_error(resp, 400, "invalid_request_error", NULL, NULL, "the request body is empty: send a JSON object");
        return NULL;
    }
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(req->body, req->body_len, &end, 0);
    if (!o) {
        size_t at = end && end >= req->body ? (size_t)(end - req->body) : 0;
        an_serve_error(resp, 400, "invalid_request_error", NULL, NULL,
                       "the request body is not valid JSON (at byte %zu of %zu)", at, req->body_len);
        return NULL;
    }
    for (const char *p = end; p && p < req->body + req->body_len; p++)
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') {
            cJSON_Delete(o);
            an_serve_error(resp, 400, "invalid_request_error", NULL, NULL,
                           "the request body has text after its JSON value (at byte %zu)", (size_t)(p - req->body));
            return NULL;
        }
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        an_serve_error(resp, 400, "invalid_request_error", NULL, NULL, "the request body must be a JSON object");
        return NULL;
    }
    return o;
}

int an_serve_known_fields(const cJSON *o, const char *const *names, an_http_response *resp) {
    for (const cJSON *f = o->child; f; f = f->next) {
        int known = 0;
        for (int i = 0; names[i] && !known; i++) known = !strcmp(f->string, names[i]);
        if (!known) {
            an_serve_error(resp, 400, "invalid_request_error", f->string, "unknown_field",
                           "unrecognized request field %s (docs/serving.md lists the fields)", AN_QUOTE(f->string));
            return -1;
        }
    }
    return 0;
}

/* ---- models and adapters ---- */
static void list_models(an_server *sv, an_http_response *resp) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", sv->model_id);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", 0);
    cJSON_AddStringToObject(m, "owned_by", "autoneg");
    cJSON_AddItemToArray(data, m);
    char *names[256];
    int n = an_engine_adapters(sv->engine, names, 256);
    for (int i = 0; i < n; i++) {
        cJSON *a = cJSON_CreateObject();
        cJSON_AddStringToObject(a, "id", names[i]);
        cJSON_AddStringToObject(a, "object", "model");
        cJSON_AddNumberToObject(a, "created", 0);
        cJSON_AddStringToObject(a, "owned_by", "autoneg");
        cJSON_AddStringToObject(a, "parent", sv->model_id);
        cJSON_AddItemToArray(data, a);
        free(names[i]);
    }
    an_serve_json(resp, 200, o);
}

int an_serve_adapter_exists(an_server *sv, const char *name) {
    char *names[256];
    int n = an_engine_adapters(sv->engine, names, 256), found = 0;
    for (int i = 0; i < n; i++) {
        found |= !strcmp(names[i], name);
        free(names[i]);
    }
    return found;
}

/* 1..63 bytes of letters, digits, '.', '_', '-', not starting with '.' */
static int good_name(const char *s) {
    size_t n = strlen(s);
    if (n < 1 || n > 63 || s[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static void add_adapter(an_server *sv, const an_http_request *req, an_http_response *resp) {
    cJSON *o = an_serve_parse(req, resp);
    if (!o) return;
    static const char *const fields[] = {"name", "path", NULL};
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name"), *path = cJSON_GetObjectItemCaseSensitive(o, "path");
    char dir_real[PATH_MAX], real[PATH_MAX], full[PATH_MAX];
    an_error err;
    if (an_serve_known_fields(o, fields, resp)) goto done;
    if (!cJSON_IsString(name) || !good_name(name->valuestring)) {
        an_serve_error(resp, 400, "invalid_request_error", "name", NULL,
                       "name must be 1 to 63 letters, digits, '.', '_' or '-' (not starting with '.')");
        goto done;
    }
    if (!cJSON_IsString(path) || !*path->valuestring) {
        an_serve_error(resp, 400, "invalid_request_error", "path", NULL, "path must be a non-empty string");
        goto done;
    }
    if (!sv->adapter_dir) {
        an_serve_error(resp, 403, "invalid_request_error", "path", NULL,
                       "loading adapters is off: start the server with --adapter-dir DIR");
        goto done;
    }
    if (!strcmp(name->valuestring, sv->model_id) || an_serve_adapter_exists(sv, name->valuestring)) {
        an_serve_error(resp, 409, "invalid_request_error", "name", NULL, "a model named %s is already loaded",
                       AN_QUOTE(name->valuestring));
        goto done;
    }
    /* a relative path is under the adapter folder; whatever it says, the folder it resolves to (links
     * followed) must be inside the adapter folder */
    const char *p = path->valuestring;
    if (p[0] != '/') {
        if (an_path_join(full, sizeof full, sv->adapter_dir, p)) {
            an_serve_error(resp, 400, "invalid_request_error", "path", NULL, "path is too long");
            goto done;
        }
        p = full;
    }
    if (!realpath(sv->adapter_dir, dir_real)) {
        an_serve_error(resp, 500, "server_error", NULL, NULL, "the adapter folder (--adapter-dir) cannot be read");
        goto done;
    }
    size_t nd = strlen(dir_real);
    if (!realpath(p, real)) {
        an_serve_error(resp, 404, "invalid_request_error", "path", NULL, "no adapter folder %s under --adapter-dir",
                       AN_QUOTE(path->valuestring));
        goto done;
    }
    if (strncmp(real, dir_real, nd) != 0 || (real[nd] != '/' && !(nd == 1 && dir_real[0] == '/'))) {
        an_serve_error(resp, 403, "invalid_request_error", "path", NULL, "path %s is outside the adapter folder (--adapter-dir)",
                       AN_QUOTE(path->valuestring));
        goto done;
    }
    struct an_lora *l = an_lora_open(sv->session->model, real, &err);
    if (!l) {
        an_serve_error(resp, 400, "invalid_request_error", "path", NULL, "%s", err.msg);
        goto done;
    }
    if (an_engine_add_adapter(sv->engine, name->valuestring, l, &err)) {
        an_lora_free(l); /* the engine took it only on success */
        an_serve_error(resp, 400, "invalid_request_error", "name", NULL, "%s", err.msg);
        goto done;
    }
    if (an_server_add_index(sv, name->valuestring, real, &err)) { /* a damaged index: not half loaded */
        an_error ignored;
        an_engine_remove_adapter(sv->engine, name->valuestring, &ignored);
        an_serve_error(resp, 400, "invalid_request_error", "path", NULL, "%s", err.msg);
        goto done;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "id", name->valuestring);
    cJSON_AddStringToObject(r, "object", "model");
    cJSON_AddStringToObject(r, "parent", sv->model_id);
    an_serve_json(resp, 200, r);
done:
    cJSON_Delete(o);
}

static void remove_adapter(an_server *sv, const char *name, an_http_response *resp) {
    an_error err;
    if (!good_name(name) || !an_serve_adapter_exists(sv, name)) {
        an_serve_error(resp, 404, "invalid_request_error", "model", "model_not_found", "no adapter named %s is loaded",
                       AN_QUOTE(name));
        return;
    }
    if (an_engine_remove_adapter(sv->engine, name, &err)) {
        an_serve_error(resp, 404, "invalid_request_error", "model", "model_not_found", "%s", err.msg);
        return;
    }
    an_serve_drop_index(sv, name);
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "id", name);
    cJSON_AddStringToObject(r, "object", "model");
    cJSON_AddBoolToObject(r, "deleted", 1);
    an_serve_json(resp, 200, r);
}

/* ---- routing ---- */
typedef enum route_kind {
    R_PAGE, R_HEALTH, R_METRICS, R_MODELS, R_COMPLETIONS, R_CHAT, R_NEGATIVES, R_ADAPTERS, R_ADAPTER, R_NONE
} route_kind;

static const struct {
    const char *path, *method;
    route_kind kind;
} routes[] = {
    {"/", "GET", R_PAGE},
    {"/health", "GET", R_HEALTH},
    {"/metrics", "GET", R_METRICS},
    {"/v1/models", "GET", R_MODELS},
    {"/v1/completions", "POST", R_COMPLETIONS},
    {"/v1/chat/completions", "POST", R_CHAT},
    {"/v1/negatives", "POST", R_NEGATIVES},
    {"/v1/adapters", "POST", R_ADAPTERS},
    {"/v1/adapters/", "DELETE", R_ADAPTER}, /* a prefix: the name follows */
};

static void dispatch(an_server *sv, const an_http_request *req, an_http_response *resp, const char **route_name) {
    const char *path = req->path ? req->path : "";
    int found = -1;
    for (size_t i = 0; i < sizeof routes / sizeof *routes && found < 0; i++) {
        size_t n = strlen(routes[i].path);
        int match = routes[i].kind == R_ADAPTER ? !strncmp(path, routes[i].path, n) && path[n] : !strcmp(path, routes[i].path);
        if (match) found = (int)i;
    }
    if (found < 0) {
        an_serve_error(resp, 404, "invalid_request_error", NULL, "not_found", "no such endpoint: %s",
                       AN_QUOTE(path));
        return;
    }
    *route_name = routes[found].path;
    route_kind k = routes[found].kind;
    int head = !strcmp(req->method, "HEAD") && !strcmp(routes[found].method, "GET");
    if (strcmp(req->method, routes[found].method) && !head) {
        an_serve_error(resp, 405, "invalid_request_error", NULL, "method_not_allowed", "%s %s: this endpoint takes %s",
                       AN_QUOTE(req->method), path, routes[found].method);
        resp->allow = routes[found].method;
        return;
    }
    if (req->body_len > sv->cfg.limits.max_body) {
        an_serve_error(resp, 413, "invalid_request_error", NULL, "request_too_large",
                       "the request body is %zu bytes, more than the limit of %zu (--max-body)", req->body_len,
                       sv->cfg.limits.max_body);
        return;
    }
    /* the page and the health check need no key: the page holds nothing, and asks for the key itself */
    if (k != R_HEALTH && k != R_PAGE && !authorized(sv, req, resp)) return;
    pthread_mutex_lock(&sv->mu);
    int loading = sv->engine == NULL, draining = sv->draining;
    pthread_mutex_unlock(&sv->mu);
    if (k == R_PAGE) {
        an_serve_body(resp, 200, "text/html; charset=utf-8", strdup(an_serve_page_html), strlen(an_serve_page_html));
        return;
    }
    if (k == R_HEALTH) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "status", loading ? "loading" : draining ? "shutting down" : "ok");
        an_serve_json(resp, loading || draining ? 503 : 200, o);
        return;
    }
    if (k == R_METRICS) {
        size_t len = 0;
        char *t = an_metrics_text(&sv->metrics, loading ? NULL : sv->engine, an_server_jobs(sv), &len);
        an_serve_body(resp, 200, "text/plain; version=0.0.4", t, len);
        return;
    }
    if (loading) {
        an_serve_error(resp, 503, "server_error", NULL, "loading", "the model is still loading: try again shortly (GET /health)");
        return;
    }
    if (draining && (k == R_COMPLETIONS || k == R_CHAT || k == R_NEGATIVES || k == R_ADAPTERS)) {
        an_serve_error(resp, 503, "server_error", NULL, "shutting_down", "the server is shutting down");
        return;
    }
    switch (k) {
    case R_MODELS: list_models(sv, resp); break;
    case R_COMPLETIONS: an_serve_completions(sv, req, resp); break;
    case R_CHAT: an_serve_chat(sv, req, resp); break;
    case R_NEGATIVES: an_serve_negatives(sv, req, resp); break;
    case R_ADAPTERS: add_adapter(sv, req, resp); break;
    case R_ADAPTER: remove_adapter(sv, path + strlen(routes[found].path), resp); break;
    default: an_serve_error(resp, 500, "server_error", NULL, NULL, "unhandled route"); break;
    }
}

void an_serve_handle(an_server *sv, const an_http_request *req, an_http_response *resp) {
    memset(resp, 0, sizeof *resp);
    const char *route = "other";
    if (!req->method || !req->path) {
        an_serve_error(resp, 400, "invalid_request_error", NULL, NULL, "a request needs a method and a path");
    } else {
        dispatch(sv, req, resp, &route);
    }
    /* a generation's status is counted when it is known: here for the ones refused */
    an_metrics_request(&sv->metrics, route, resp->job ? 200 : resp->status);
}
