/* The request handler of `autoneg serve` (serve/serve.h) without sockets, on TinyStories-656K with a
 * real engine stepped by a thread of this test:
 * - /v1/negatives writes exactly the negatives an_session_generate writes for the same prompts and seed
 *   (what `autoneg generate` prints), n samples too; /v1/completions the raw continuation; chat with
 *   one user message the same ids as the template; an adapter loaded at run time gives what a session
 *   opened with that adapter gives;
 * - streaming: the events' text put together is the non-streaming text; stop strings cut the text
 *   where they first appear (positions found in the text by the test);
 * - routing, OpenAI error objects with their statuses, the API key, the limits, unknown fields,
 *   adapter paths outside --adapter-dir, health while loading and draining, cancellation, metrics. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "infer/engine.h"
#include "infer/retrieval_pairs.h"
#include "infer/session.h"
#include "model/lora.h"
#include "serve/serve.h"
#include "tests/test.h"

static an_session sess;
static an_engine *eng;
static int loaded;

/* the engine thread */
static pthread_t engine_tid;
static pthread_mutex_t engine_mu = PTHREAD_MUTEX_INITIALIZER;
static int engine_stop, engine_paused;

static void *engine_loop(void *arg) {
    (void)arg;
    an_error err;
    for (;;) {
        pthread_mutex_lock(&engine_mu);
        int stop = engine_stop, paused = engine_paused;
        pthread_mutex_unlock(&engine_mu);
        if (stop) break;
        if (paused) {
            usleep(2000);
            continue;
        }
        if (an_engine_wait(eng, 20)) an_engine_step(eng, &err);
    }
    return NULL;
}

static void pause_engine(int p) {
    pthread_mutex_lock(&engine_mu);
    engine_paused = p;
    pthread_mutex_unlock(&engine_mu);
    if (p) usleep(50000); /* a step under way ends */
}

typedef struct reply {
    int status;
    char *body;
    cJSON *json;
    const char *allow;
} reply;

static void reply_free(reply *r) {
    free(r->body);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof *r);
}

/* One request through the handler; a generation is read to its end. */
static reply call(an_server *sv, const char *method, const char *path, const char *body, const char *auth) {
    an_http_header h = {"authorization", auth};
    an_http_request req = {method, path, &h, auth ? 1 : 0, body ? body : "", body ? strlen(body) : 0};
    an_http_response resp;
    an_serve_handle(sv, &req, &resp);
    reply r = {resp.status, NULL, NULL, resp.allow};
    if (resp.job) {
        size_t n = 0, cap = 1 << 16;
        r.body = malloc(cap);
        long k;
        while ((k = an_serve_job_read(resp.job, r.body + n, cap - n - 1, 10000)) != 0) {
            if (k < 0) break; /* 10 s without a byte: the check on the body fails */
            n += (size_t)k;
            if (cap - n < 1024) r.body = realloc(r.body, cap *= 2);
        }
        r.body[n] = 0;
        if (!an_serve_job_streaming(resp.job)) r.status = an_serve_job_status(resp.job);
    } else {
        r.body = strndup(resp.body ? resp.body : "", resp.body_len);
    }
    an_http_response_free(&resp);
    if (r.body && r.body[0] == '{') r.json = cJSON_Parse(r.body);
    return r;
}

static const char *jstr(const cJSON *o, const char *path) {
    /* "a.b.0.c": objects by key, arrays by index */
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *x = o;
    for (char *tok = strtok(buf, "."); tok && x; tok = strtok(NULL, "."))
        x = cJSON_IsArray(x) ? cJSON_GetArrayItem(x, atoi(tok)) : cJSON_GetObjectItemCaseSensitive(x, tok);
    return cJSON_IsString(x) ? x->valuestring : NULL;
}

static double jnum(const cJSON *o, const char *path) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *x = o;
    for (char *tok = strtok(buf, "."); tok && x; tok = strtok(NULL, "."))
        x = cJSON_IsArray(x) ? cJSON_GetArrayItem(x, atoi(tok)) : cJSON_GetObjectItemCaseSensitive(x, tok);
    return cJSON_IsNumber(x) ? x->valuedouble : -1e300;
}

/* An OpenAI error object with this status, type and (when given) param and code. */
static void check_error(const reply *r, int status, const char *param, const char *code, const char *in_message,
                        int line) {
    if (r->status != status) test_fail_at(__FILE__, line, "status %d, expected %d: %s", r->status, status, r->body);
    const char *msg = jstr(r->json, "error.message"), *type = jstr(r->json, "error.type");
    if (!msg || !type) test_fail_at(__FILE__, line, "not an error object: %s", r->body);
    if (param && (!jstr(r->json, "error.param") || strcmp(jstr(r->json, "error.param"), param)))
        test_fail_at(__FILE__, line, "error.param is not %s: %s", param, r->body);
    if (code && (!jstr(r->json, "error.code") || strcmp(jstr(r->json, "error.code"), code)))
        test_fail_at(__FILE__, line, "error.code is not %s: %s", code, r->body);
    if (in_message && (!msg || !strstr(msg, in_message)))
        test_fail_at(__FILE__, line, "error.message lacks \"%s\": %s", in_message, r->body);
}
#define CHECK_ERROR(r, status, param, code, in_message) check_error(&(r), status, param, code, in_message, __LINE__)

static an_server *new_server(const char *key, const char *adapter_dir, int max_jobs) {
    an_serve_config c = an_serve_config_default();
    c.api_key = key;
    c.adapter_dir = adapter_dir;
    c.model_id = "tiny";
    c.limits.max_prompt_tokens = 64;
    c.limits.max_tokens = 64;
    c.limits.max_n = 4;
    c.limits.max_body = 4096;
    if (max_jobs) c.limits.max_jobs = max_jobs;
    an_error err;
    an_server *sv = an_server_create(&c, &err);
    if (sv && loaded) an_server_attach(sv, &sess, eng);
    return sv;
}

/* The texts an_session_generate writes (what `autoneg generate` prints), input-major. */
static char **session_texts(an_session *s, const char *const *prompts, int n, int raw, an_gen_opts o) {
    an_text_result *res = calloc((size_t)(n * o.n_samples), sizeof *res);
    an_error err;
    char **out = calloc((size_t)(n * o.n_samples), sizeof *out);
    if (an_session_generate(s, prompts, n, raw, &o, res, &err)) {
        test_fail_at(__FILE__, __LINE__, "%s", err.msg);
        for (int i = 0; i < n * o.n_samples; i++) out[i] = strdup("");
    } else {
        for (int i = 0; i < n * o.n_samples; i++) out[i] = strdup(res[i].text);
        an_text_results_free(res, n * o.n_samples);
    }
    free(res);
    return out;
}

static void texts_free(char **t, int n) {
    for (int i = 0; i < n; i++) free(t[i]);
    free(t);
}

/* `autoneg generate`'s defaults, which /v1/negatives takes too */
static an_gen_opts gen_defaults(uint64_t seed, int max_tokens, int n) {
    an_gen_opts o = an_gen_defaults();
    o.sampling = (an_sampler_params){0.8f, 40, 0.95f, 0.05f, 1.0f};
    o.seed = seed;
    o.max_tokens = max_tokens;
    o.n_samples = n;
    return o;
}

static void test_loading_and_routes(void) {
    an_serve_config c = an_serve_config_default();
    an_error err;
    an_server *sv = an_server_create(&c, &err);
    reply r = call(sv, "GET", "/health", NULL, NULL);
    CHECK(r.status == 503);
    CHECK_STR(jstr(r.json, "status"), "loading");
    reply_free(&r);
    r = call(sv, "POST", "/v1/completions", "{\"prompt\": \"a\"}", NULL);
    CHECK_ERROR(r, 503, NULL, "loading", "loading");
    reply_free(&r);
    an_server_free(sv);
    if (!loaded) return;

    sv = new_server(NULL, NULL, 0);
    r = call(sv, "GET", "/health", NULL, NULL);
    CHECK(r.status == 200);
    CHECK_STR(jstr(r.json, "status"), "ok");
    reply_free(&r);
    r = call(sv, "GET", "/v1/nothing", NULL, NULL);
    CHECK_ERROR(r, 404, NULL, "not_found", "/v1/nothing");
    reply_free(&r);
    r = call(sv, "GET", "/v1/completions", NULL, NULL);
    CHECK_ERROR(r, 405, NULL, "method_not_allowed", "POST");
    CHECK_STR(r.allow, "POST");
    reply_free(&r);
    r = call(sv, "DELETE", "/v1/adapters/", NULL, NULL); /* no name: no such route */
    CHECK(r.status == 404);
    reply_free(&r);
    r = call(sv, "GET", "/", NULL, NULL);
    CHECK(r.status == 200);
    CHECK(r.body && strstr(r.body, "<textarea") && strstr(r.body, "/v1/negatives") && strstr(r.body, "getReader"));
    reply_free(&r);
    r = call(sv, "GET", "/v1/models", NULL, NULL);
    CHECK(r.status == 200);
    CHECK_STR(jstr(r.json, "object"), "list");
    CHECK_STR(jstr(r.json, "data.0.id"), "tiny");
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(r.json, "data")) == 1);
    reply_free(&r);
    an_server_drain(sv);
    r = call(sv, "GET", "/health", NULL, NULL);
    CHECK(r.status == 503);
    reply_free(&r);
    r = call(sv, "POST", "/v1/negatives", "{\"prompts\": [\"a\"]}", NULL);
    CHECK_ERROR(r, 503, NULL, "shutting_down", "shutting down");
    reply_free(&r);
    an_server_free(sv);
}

static void test_bad_requests(void) {
    if (!loaded) return;
    an_server *sv = new_server(NULL, NULL, 0);
    static const struct {
        const char *path, *body, *param, *in_message;
        int status;
    } cases[] = {
        {"/v1/completions", "", NULL, "empty", 400},
        {"/v1/completions", "{\"prompt\": \"a\",", NULL, "not valid JSON", 400},
        {"/v1/completions", "[1, 2]", NULL, "JSON object", 400},
        {"/v1/completions", "{\"prompt\": \"a\"} x", NULL, "after its JSON", 400},
        {"/v1/completions", "{\"prompt\": \"a\", \"max_token\": 5}", "max_token", "unrecognized", 400},
        {"/v1/completions", "{\"prompt\": 5}", "prompt", "string", 400},
        {"/v1/completions", "{\"prompt\": []}", "prompt", "1 to", 400},
        {"/v1/completions", "{\"prompt\": [1, 2]}", "prompt", "token-id", 400},
        {"/v1/completions", "{}", "prompt", "prompt", 400},
        {"/v1/completions", "{\"prompt\": \"a\", \"temperature\": \"hot\"}", "temperature", "number", 400},
        {"/v1/completions", "{\"prompt\": \"a\", \"temperature\": -1}", "temperature", "[0, 2]", 400},
        {"/v1/completions", "{\"prompt\": \"a\", \"top_p\": 0}", "top_p", "(0, 1]", 400},
        {"/v1/completions", "{\"prompt\": \"a\", \"temperature\": 1e-45}", "temperature", "use 0 for greedy", 400},
        {"/v1/completions", "{\"prompt\": \"a\", \"max_tokens\": 0}", "max_tokens", "from 1 to 64", 400},
        {"/v1/completions", "{\"prompt\": \"a\", \"max_tokens\": 1e9}", "max_tokens", "--max-tokens", 400},
        {"/v1/completions", "{\"prompt\": \"a\", \"max_tokens\": 2.5}", "max_tokens", "integer", 400},
        {"/v1/completions", "{\"prompt\": \"a\", \"n\": 5}", "n", "--max-n", 400},
        {"/v1/completions", "{\"prompt\": \"a\", \"n\": -1}", "n", "from 1 to 4", 400},
        {"/v1/completions", "{\"prompt\": \"a\", \"seed\": -3}", "seed", "seed", 400},
        {"/v1/completions", "{\"prompt\": \"a\", \"stop\": 3}", "stop", "up to 4", 400},
        {"/v1/completions", "{\"prompt\": \"a\", \"stop\": [\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop", "up to 4", 400},
        {"/v1/completions", "{\"prompt\": \"a\", \"stop\": [\"\"]}", "stop", "non-empty", 400},
        {"/v1/completions", "{\"prompt\": \"a\", \"stream\": 1}", "stream", "true or false", 400},
        {"/v1/completions", "{\"prompt\": \"a\", \"logprobs\": 6}", "logprobs", "5", 400},
        {"/v1/completions", "{\"prompt\": \"a\", \"presence_penalty\": 0.5}", "presence_penalty", "not supported", 400},
        {"/v1/completions", "{\"prompt\": \"a\", \"echo\": true}", "echo", "not supported", 400},
        {"/v1/completions", "{\"prompt\": \"a\", \"model\": \"nope\"}", "model", "does not exist", 404},
        {"/v1/completions", "{\"prompt\": \"a\", \"model\": 3}", "model", "string", 400},
        {"/v1/chat/completions", "{\"messages\": []}", "messages", "non-empty", 400},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}", "messages", "robot", 400},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", "messages", "text content", 400},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\", \"x\": 1}]}", "messages", "unrecognized", 400},
        {"/v1/chat/completions",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y\"}]}",
         "messages", "end with a user", 400},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"top_logprobs\": 2}",
         "top_logprobs", "needs logprobs: true", 400},
        {"/v1/chat/completions",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"logprobs\": true, \"top_logprobs\": 21}",
         "top_logprobs", "20", 400},
        {"/v1/negatives", "{\"prompts\": \"a cat\"}", "prompts", "array", 400},
        {"/v1/negatives", "{\"prompts\": [\"a\", 7]}", "prompts", "prompts[1]", 400},
        {"/v1/negatives", "{\"prompts\": [\"a\"], \"logprobs\": 0}", "logprobs", "unrecognized", 400},
        {"/v1/adapters", "{\"name\": \"a\", \"path\": \"x\"}", "path", "--adapter-dir", 403},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        reply r = call(sv, "POST", cases[i].path, cases[i].body, NULL);
        if (r.status != cases[i].status) test_fail_at(__FILE__, __LINE__, "case %zu (%s): status %d", i, cases[i].body, r.status);
        check_error(&r, cases[i].status, cases[i].param, NULL, cases[i].in_message, __LINE__);
        reply_free(&r);
    }
    /* a prompt past --max-prompt-tokens (64 here): 200 words are more tokens than that */
    char big[2048] = "{\"prompt\": \"";
    for (int i = 0; i < 200; i++) strcat(big, "cat ");
    strcat(big, "\"}");
    reply r = call(sv, "POST", "/v1/completions", big, NULL);
    CHECK_ERROR(r, 400, "prompt", "context_length_exceeded", "--max-prompt-tokens");
    reply_free(&r);
    /* a body past --max-body (4096 here) */
    char *huge = malloc(5000);
    memset(huge, ' ', 4999);
    huge[4999] = 0;
    huge[0] = '{';
    huge[4998] = '}';
    r = call(sv, "POST", "/v1/completions", huge, NULL);
    CHECK_ERROR(r, 413, NULL, "request_too_large", "--max-body");
    reply_free(&r);
    free(huge);
    an_server_free(sv);
}

static void test_api_key(void) {
    if (!loaded) return;
    an_server *sv = new_server("s3cret-key", NULL, 0);
    reply r = call(sv, "GET", "/v1/models", NULL, NULL);
    CHECK_ERROR(r, 401, NULL, "invalid_api_key", "Authorization: Bearer");
    reply_free(&r);
    const char *wrong[] = {"Bearer s3cret-ke", "Bearer s3cret-key2", "Bearer S3cret-key", "s3cret-key", "Basic s3cret-key", "Bearer "};
    for (size_t i = 0; i < sizeof wrong / sizeof *wrong; i++) {
        r = call(sv, "GET", "/v1/models", NULL, wrong[i]);
        CHECK_ERROR(r, 401, NULL, "invalid_api_key", NULL);
        reply_free(&r);
    }
    r = call(sv, "GET", "/metrics", NULL, "Bearer nope");
    CHECK(r.status == 401);
    reply_free(&r);
    r = call(sv, "GET", "/v1/models", NULL, "Bearer s3cret-key");
    CHECK(r.status == 200);
    reply_free(&r);
    r = call(sv, "GET", "/health", NULL, NULL); /* the health check needs no key */
    CHECK(r.status == 200);
    reply_free(&r);
    an_server_free(sv);
}

/* The streamed text of /v1/negatives (one prompt), put together; "" when malformed. */
static char *negative_stream_text(const char *body) {
    char *copy = strdup(body), *out = calloc(1, strlen(body) + 1);
    for (char *ev = copy; *ev;) {
        char *end = strstr(ev, "\n\n");
        if (!end || strncmp(ev, "data: ", 6)) break;
        *end = 0;
        cJSON *e = cJSON_Parse(ev + 6);
        if (jstr(e, "text")) strcat(out, jstr(e, "text"));
        cJSON_Delete(e);
        ev = end + 2;
    }
    free(copy);
    return out;
}

/* A stop string right after a space: the negative is cut before it and trimmed, streamed or not (the
 * stream must not have sent the space). ref: the negative of the first prompt without a stop. */
static void negatives_with_stop(an_server *sv, const char *ref) {
    const char *sp = strchr(ref + 1, ' ');
    while (sp && !(sp[1] > ' ' && sp[2] > ' ')) sp = strchr(sp + 1, ' ');
    CHECK_MSG(sp != NULL, "no word after a space in \"%s\"", ref);
    if (!sp) return;
    char stop[3] = {sp[1], sp[2], 0};
    size_t cut = (size_t)(strstr(ref, stop) - ref);
    while (cut > 0 && (ref[cut - 1] == ' ' || ref[cut - 1] == '\n')) cut--;
    char expect[1024];
    snprintf(expect, sizeof expect, "%.*s", (int)cut, ref);
    cJSON *js = cJSON_CreateString(stop);
    char *stop_json = cJSON_PrintUnformatted(js);
    char body[512];
    for (int stream = 0; stream <= 1; stream++) {
        snprintf(body, sizeof body, "{\"prompts\": [\"a cat in a garden\"], \"seed\": 7, \"max_tokens\": 24, \"stop\": %s, \"stream\": %s}",
                 stop_json, stream ? "true" : "false");
        reply r = call(sv, "POST", "/v1/negatives", body, NULL);
        if (stream) {
            char *got = negative_stream_text(r.body);
            CHECK_STR(got, expect);
            free(got);
        } else {
            CHECK_STR(jstr(r.json, "negatives.0"), expect);
        }
        reply_free(&r);
    }
    free(stop_json);
    cJSON_Delete(js);
}

/* Three prompts, seed 7, generate's sampling: the negatives are an_session_generate's, in order. */
static void test_negatives_equal_generate(void) {
    if (!loaded) return;
    an_server *sv = new_server(NULL, NULL, 0);
    const char *prompts[] = {"a cat in a garden", "castle at dusk, masterpiece", "Once upon a time"};
    for (int n = 1; n <= 2; n++) {
        char **ref = session_texts(&sess, prompts, 3, 0, gen_defaults(7, 24, n));
        char body[512];
        snprintf(body, sizeof body, "{\"prompts\": [\"%s\", \"%s\", \"%s\"], \"seed\": 7, \"max_tokens\": 24, \"n\": %d}",
                 prompts[0], prompts[1], prompts[2], n);
        reply r = call(sv, "POST", "/v1/negatives", body, NULL);
        CHECK_MSG(r.status == 200, "%d %s", r.status, r.body);
        const cJSON *neg = cJSON_GetObjectItem(r.json, "negatives");
        CHECK(cJSON_GetArraySize(neg) == 3);
        for (int p = 0; p < 3; p++)
            for (int s = 0; s < n; s++) {
                const cJSON *x = cJSON_GetArrayItem(neg, p);
                if (n > 1) x = cJSON_GetArrayItem(x, s);
                CHECK_STR(cJSON_IsString(x) ? x->valuestring : NULL, ref[p * n + s]);
            }
        if (n == 1) printf("  negative of \"%s\": \"%s\"\n", prompts[0], ref[0]);
        reply_free(&r);
        /* streamed: the text of the events, put together per prompt, is the same */
        snprintf(body, sizeof body, "{\"prompts\": [\"%s\", \"%s\", \"%s\"], \"seed\": 7, \"max_tokens\": 24, \"stream\": true}",
                 prompts[0], prompts[1], prompts[2]);
        if (n == 1) {
            r = call(sv, "POST", "/v1/negatives", body, NULL);
            CHECK(r.status == 200);
            char got[3][1024] = {"", "", ""};
            int finished = 0, done = 0;
            for (char *ev = r.body; ev && *ev;) {
                char *end = strstr(ev, "\n\n");
                CHECK_MSG(end && !strncmp(ev, "data: ", 6), "not an SSE event: %.60s", ev);
                if (!end) break;
                *end = 0;
                if (!strcmp(ev + 6, "[DONE]")) {
                    done = 1;
                } else {
                    cJSON *e = cJSON_Parse(ev + 6);
                    int i = (int)jnum(e, "index");
                    CHECK(i >= 0 && i < 3);
                    if (i >= 0 && i < 3 && jstr(e, "text")) strncat(got[i], jstr(e, "text"), 1000 - strlen(got[i]));
                    finished += jstr(e, "finish_reason") != NULL;
                    cJSON_Delete(e);
                }
                ev = end + 2;
            }
            CHECK(done && finished == 3);
            for (int p = 0; p < 3; p++) CHECK_STR(got[p], ref[p]);
            reply_free(&r);
        }
        if (n == 1) negatives_with_stop(sv, ref[0]);
        texts_free(ref, 3 * n);
    }
    an_server_free(sv);
}

/* Concatenated "text" (completions) or "delta.content" (chat) of an SSE body; "" when malformed. */
static char *sse_text(const char *body, int chat, int *finish_count, int *done) {
    char *copy = strdup(body), *out = calloc(1, strlen(body) + 1);
    *finish_count = 0;
    *done = 0;
    for (char *ev = copy; *ev;) {
        char *end = strstr(ev, "\n\n");
        if (!end || strncmp(ev, "data: ", 6)) {
            out[0] = 0;
            break;
        }
        *end = 0;
        if (!strcmp(ev + 6, "[DONE]")) {
            *done = 1;
        } else {
            cJSON *e = cJSON_Parse(ev + 6);
            const char *t = jstr(e, chat ? "choices.0.delta.content" : "choices.0.text");
            if (t) strcat(out, t);
            *finish_count += jstr(e, "choices.0.finish_reason") != NULL;
            cJSON_Delete(e);
        }
        ev = end + 2;
    }
    free(copy);
    return out;
}

static void test_completions_and_stops(void) {
    if (!loaded) return;
    an_server *sv = new_server(NULL, NULL, 0);
    const char *prompt[] = {"Once upon a time"};
    /* OpenAI's sampling defaults: temperature 1, no filters */
    an_gen_opts o = an_gen_defaults();
    o.sampling = (an_sampler_params){1.0f, 0, 1.0f, 0.0f, 1.0f};
    o.seed = 11;
    o.max_tokens = 40;
    char **ref = session_texts(&sess, prompt, 1, 1, o);
    reply r = call(sv, "POST", "/v1/completions",
                   "{\"model\": \"tiny\", \"prompt\": \"Once upon a time\", \"seed\": 11, \"max_tokens\": 40, \"logprobs\": 3}", NULL);
    CHECK_MSG(r.status == 200, "%s", r.body);
    CHECK_STR(jstr(r.json, "object"), "text_completion");
    CHECK_STR(jstr(r.json, "model"), "tiny");
    CHECK_STR(jstr(r.json, "choices.0.text"), ref[0]);
    CHECK(jstr(r.json, "id") && !strncmp(jstr(r.json, "id"), "cmpl-", 5));
    int out_tokens = (int)jnum(r.json, "usage.completion_tokens");
    CHECK(jnum(r.json, "usage.total_tokens") == jnum(r.json, "usage.prompt_tokens") + out_tokens);
    an_ids ids = {0};
    an_error err;
    CHECK(an_session_encode(&sess, "Once upon a time", 1, &ids, &err) == 0);
    CHECK(jnum(r.json, "usage.prompt_tokens") == (double)ids.n);
    an_ids_free(&ids);
    /* logprobs: one per token, each a log-probability (<= 0), the pieces spelling the text */
    const cJSON *lp = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(r.json, "choices"), 0), "logprobs");
    const cJSON *toks = cJSON_GetObjectItem(lp, "tokens"), *lps = cJSON_GetObjectItem(lp, "token_logprobs");
    CHECK(cJSON_GetArraySize(toks) == out_tokens && cJSON_GetArraySize(lps) == out_tokens);
    char joined[4096] = "";
    for (const cJSON *t = toks ? toks->child : NULL; t; t = t->next) strncat(joined, t->valuestring, 4000 - strlen(joined));
    CHECK_STR(joined, ref[0]);
    for (const cJSON *x = lps ? lps->child : NULL; x; x = x->next) CHECK(x->valuedouble <= 0 && x->valuedouble > -100);
    /* logprobs 3: per token up to 3 alternatives (fewer only where two share a text), most likely first;
     * the first is the most likely of all tokens, so at least the sampled one's (the engine test checks
     * the values against the logits themselves) */
    const cJSON *tops = cJSON_GetObjectItem(lp, "top_logprobs"), *chosen = lps ? lps->child : NULL;
    CHECK(cJSON_GetArraySize(tops) == out_tokens);
    for (const cJSON *tk = tops ? tops->child : NULL; tk; tk = tk->next, chosen = chosen ? chosen->next : NULL) {
        int n = cJSON_GetArraySize(tk);
        CHECK(cJSON_IsObject(tk) && n >= 1 && n <= 3);
        for (const cJSON *x = tk->child; x && x->next; x = x->next) CHECK(x->valuedouble >= x->next->valuedouble);
        CHECK(tk->child && chosen && tk->child->valuedouble >= chosen->valuedouble);
    }
    const char *reason = jstr(r.json, "choices.0.finish_reason");
    CHECK(reason && (!strcmp(reason, "length") ? out_tokens == 40 : !strcmp(reason, "stop")));
    reply_free(&r);

    /* streamed: the same text, one finish_reason, [DONE] last */
    r = call(sv, "POST", "/v1/completions",
             "{\"prompt\": \"Once upon a time\", \"seed\": 11, \"max_tokens\": 40, \"stream\": true}", NULL);
    int fin, done;
    char *s = sse_text(r.body, 0, &fin, &done);
    CHECK_STR(s, ref[0]);
    CHECK(fin == 1 && done);
    free(s);
    reply_free(&r);

    /* a stop string from the middle of the text: cut where it first appears */
    const char *t = ref[0];
    size_t len = strlen(t);
    char stop[8] = "";
    if (len > 10) {
        memcpy(stop, t + len / 2, 3);
        stop[3] = 0;
    }
    CHECK_MSG(len > 10, "the reference text is too short to cut: \"%s\"", t);
    size_t cut = (size_t)(strstr(t, stop) - t);
    char expect[4096];
    snprintf(expect, sizeof expect, "%.*s", (int)cut, t);
    char body[512];
    cJSON *js = cJSON_CreateString(stop);
    char *stop_json = cJSON_PrintUnformatted(js);
    for (int stream = 0; stream <= 1; stream++) {
        snprintf(body, sizeof body,
                 "{\"prompt\": \"Once upon a time\", \"seed\": 11, \"max_tokens\": 40, \"stop\": [\"zzzz\", %s], \"stream\": %s}",
                 stop_json, stream ? "true" : "false");
        r = call(sv, "POST", "/v1/completions", body, NULL);
        if (stream) {
            s = sse_text(r.body, 0, &fin, &done);
            CHECK_STR(s, expect);
            CHECK(strstr(r.body, "\"finish_reason\":\"stop\"") != NULL);
            free(s);
        } else {
            CHECK_STR(jstr(r.json, "choices.0.text"), expect);
            CHECK_STR(jstr(r.json, "choices.0.finish_reason"), "stop");
        }
        reply_free(&r);
    }
    printf("  completion: \"%s\"; with stop %s: \"%s\"\n", t, stop_json, expect);
    free(stop_json);
    cJSON_Delete(js);
    texts_free(ref, 1);
    an_server_free(sv);
}

/* A chat of one user message feeds exactly the template's ids for that text, so its answer, trimmed,
 * is the negative generate writes (with the same sampling). */
static void test_chat(void) {
    if (!loaded) return;
    an_server *sv = new_server(NULL, NULL, 0);
    const char *prompt[] = {"a red car"};
    char **ref = session_texts(&sess, prompt, 1, 0, gen_defaults(5, 20, 1));
    const char *body = "{\"messages\": [{\"role\": \"user\", \"content\": \"a red car\"}], \"seed\": 5, \"max_tokens\": 20, "
                       "\"temperature\": 0.8, \"top_k\": 40, \"top_p\": 0.95, \"min_p\": 0.05}";
    reply r = call(sv, "POST", "/v1/chat/completions", body, NULL);
    CHECK_MSG(r.status == 200, "%s", r.body);
    CHECK_STR(jstr(r.json, "object"), "chat.completion");
    CHECK_STR(jstr(r.json, "choices.0.message.role"), "assistant");
    const char *content = jstr(r.json, "choices.0.message.content");
    char trimmed[2048] = "";
    if (content) {
        while (*content == ' ' || *content == '\n') content++;
        snprintf(trimmed, sizeof trimmed, "%s", content);
        size_t n = strlen(trimmed);
        while (n && (trimmed[n - 1] == ' ' || trimmed[n - 1] == '\n')) trimmed[--n] = 0;
    }
    CHECK_STR(trimmed, ref[0]);
    char *untrimmed = content ? strdup(jstr(r.json, "choices.0.message.content")) : strdup("");
    reply_free(&r);
    /* streamed: a role chunk first, then the same content */
    char sbody[600];
    snprintf(sbody, sizeof sbody, "%.*s, \"stream\": true}", (int)strlen(body) - 1, body);
    r = call(sv, "POST", "/v1/chat/completions", sbody, NULL);
    CHECK(r.body && strstr(r.body, "\"delta\":{\"role\":\"assistant\",\"content\":\"\"}"));
    CHECK(r.body && strstr(r.body, "chat.completion.chunk"));
    int fin, done;
    char *s = sse_text(r.body, 1, &fin, &done);
    CHECK_STR(s, untrimmed);
    CHECK(fin == 1 && done);
    free(s);
    free(untrimmed);
    reply_free(&r);
    /* a system message and earlier rounds are accepted (the template renders them) */
    r = call(sv, "POST", "/v1/chat/completions",
             "{\"messages\": [{\"role\": \"system\", \"content\": \"be brief\"}, {\"role\": \"user\", \"content\": \"a\"},"
             " {\"role\": \"assistant\", \"content\": \"b\"}, {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"c\"}]}],"
             " \"max_tokens\": 4}", NULL);
    CHECK_MSG(r.status == 200, "%s", r.body);
    reply_free(&r);
    /* logprobs with top_logprobs 2: each content entry has its token, logprob, bytes and 2 alternatives
     * in the same shape, most likely first, the first at least as likely as the chosen token */
    r = call(sv, "POST", "/v1/chat/completions",
             "{\"messages\": [{\"role\": \"user\", \"content\": \"a red car\"}], \"seed\": 5, \"max_tokens\": 8, "
             "\"logprobs\": true, \"top_logprobs\": 2}", NULL);
    CHECK_MSG(r.status == 200, "%s", r.body);
    const cJSON *content_lp = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(r.json, "choices"), 0), "logprobs"), "content");
    CHECK(cJSON_GetArraySize(content_lp) == (int)jnum(r.json, "usage.completion_tokens"));
    for (const cJSON *tk = content_lp ? content_lp->child : NULL; tk; tk = tk->next) {
        const cJSON *alts = cJSON_GetObjectItem(tk, "top_logprobs");
        CHECK(cJSON_GetArraySize(alts) == 2);
        const cJSON *a0 = cJSON_GetArrayItem(alts, 0), *a1 = cJSON_GetArrayItem(alts, 1);
        CHECK(cJSON_IsString(cJSON_GetObjectItem(a0, "token")) && cJSON_IsArray(cJSON_GetObjectItem(a0, "bytes")));
        double l0 = cJSON_GetObjectItem(a0, "logprob") ? cJSON_GetObjectItem(a0, "logprob")->valuedouble : NAN;
        double l1 = cJSON_GetObjectItem(a1, "logprob") ? cJSON_GetObjectItem(a1, "logprob")->valuedouble : NAN;
        double lc = cJSON_GetObjectItem(tk, "logprob") ? cJSON_GetObjectItem(tk, "logprob")->valuedouble : NAN;
        CHECK(l0 <= 0 && l0 >= l1 && l0 >= lc); /* NaN fails each comparison */
    }
    reply_free(&r);
    texts_free(ref, 1);
    an_server_free(sv);
}

/* A PEFT adapter with non-zero B (so it changes the logits), saved in dir. */
static int write_adapter(const char *dir) {
    an_error err;
    an_model *m = an_model_load(test_shared("models/TinyStories-656K"), an_ops_cpu(), &err);
    if (!m) return test_fail_at(__FILE__, __LINE__, "%s", err.msg), -1;
    an_lora_config c = an_lora_config_default();
    c.r = 4;
    c.alpha = 8;
    an_lora_config_add_target(&c, "q_proj", &err);
    an_lora_config_add_target(&c, "v_proj", &err);
    int rc = an_lora_attach(m, &c, &err);
    if (rc == 0) {
        /* A random (attach), B: a fixed pattern, large enough to move the logits */
        for (int k = 0; k < m->lora->n_mods; k++) {
            an_param *bt = &m->lora->mods[k].bt;
            size_t n = bt->numel;
            for (size_t i = 0; i < n; i++) bt->data[i] = 0.05f * (float)((int)(i * 7 % 11) - 5);
        }
        mkdir(dir, 0755);
        rc = an_lora_save(m, dir, &err);
    }
    if (rc) test_fail_at(__FILE__, __LINE__, "%s", err.msg);
    an_model_free(m);
    return rc;
}

static void test_adapters(void) {
    if (!loaded) return;
    char root[512], adir[600], outside[600];
    snprintf(root, sizeof root, "%s", test_tmp_path("adapters"));
    mkdir(root, 0755);
    snprintf(adir, sizeof adir, "%s/style1", root);
    snprintf(outside, sizeof outside, "%s", test_tmp_path("outside"));
    if (write_adapter(adir) || write_adapter(outside)) return;
    /* beside style1, the retrieval index of a made-up run trained with data.retrieve 2 */
    {
        const char *prompts[] = {"a cat, garden", "a dog, beach", "a cat, night"};
        const char *negs[] = {"blurry, lowres", "cartoon", "dark, noisy"};
        an_error e;
        an_retrieval *rx = an_retrieval_build(prompts, negs, NULL, 3, 2, 32, &e);
        CHECK_MSG(rx && an_retrieval_save(rx, adir, &e) == 0, "%s", e.msg);
        an_retrieval_free(rx);
    }
    /* a link inside the folder that leads out of it */
    char link[700];
    snprintf(link, sizeof link, "%s/escape", root);
    CHECK(symlink(outside, link) == 0);
    an_server *sv = new_server(NULL, root, 0);
    reply r = call(sv, "POST", "/v1/adapters", "{\"name\": \"style1\", \"path\": \"style1\"}", NULL);
    CHECK_MSG(r.status == 200, "%s", r.body);
    reply_free(&r);
    r = call(sv, "POST", "/v1/adapters", "{\"name\": \"style1\", \"path\": \"style1\"}", NULL);
    CHECK_ERROR(r, 409, "name", NULL, "already loaded");
    reply_free(&r);
    char body[1024];
    snprintf(body, sizeof body, "{\"name\": \"out\", \"path\": \"%s\"}", outside);
    r = call(sv, "POST", "/v1/adapters", body, NULL);
    CHECK_ERROR(r, 403, "path", NULL, "outside");
    reply_free(&r);
    r = call(sv, "POST", "/v1/adapters", "{\"name\": \"out\", \"path\": \"../outside\"}", NULL);
    CHECK_ERROR(r, 403, "path", NULL, "outside");
    reply_free(&r);
    r = call(sv, "POST", "/v1/adapters", "{\"name\": \"out\", \"path\": \"escape\"}", NULL);
    CHECK_ERROR(r, 403, "path", NULL, "outside");
    reply_free(&r);
    r = call(sv, "POST", "/v1/adapters", "{\"name\": \"x\", \"path\": \"missing\"}", NULL);
    CHECK_ERROR(r, 404, "path", NULL, "missing");
    reply_free(&r);
    r = call(sv, "POST", "/v1/adapters", "{\"name\": \"../x\", \"path\": \"style1\"}", NULL);
    CHECK_ERROR(r, 400, "name", NULL, "letters");
    reply_free(&r);
    r = call(sv, "POST", "/v1/adapters", "{\"name\": \"y\", \"path\": \".\"}", NULL); /* the folder itself: no adapter */
    CHECK(r.status == 403 || r.status == 400);
    reply_free(&r);
    r = call(sv, "GET", "/v1/models", NULL, NULL);
    CHECK_STR(jstr(r.json, "data.1.id"), "style1");
    CHECK_STR(jstr(r.json, "data.1.parent"), "tiny");
    reply_free(&r);

    /* the adapter's negatives are those of a session opened with it (retrieval off) */
    an_session with;
    an_error err;
    if (an_session_open(&with, an_ops_cpu(), test_shared("models/TinyStories-656K"), NULL, adir, NULL, &err) == 0) {
        const char *prompts[] = {"a cat in a garden"};
        char **ref = session_texts(&with, prompts, 1, 0, gen_defaults(3, 24, 1));
        char **base = session_texts(&sess, prompts, 1, 0, gen_defaults(3, 24, 1));
        r = call(sv, "POST", "/v1/negatives", "{\"prompts\": [\"a cat in a garden\"], \"model\": \"style1\", \"seed\": 3, \"max_tokens\": 24, \"retrieve\": 0}", NULL);
        CHECK_STR(jstr(r.json, "negatives.0"), ref[0]);
        CHECK_STR(jstr(r.json, "model"), "style1");
        printf("  adapter style1: \"%s\" (base: \"%s\")\n", ref[0], base[0]);
        reply_free(&r);
        texts_free(ref, 1);
        texts_free(base, 1);
        /* with its index: the input holds the negatives of the two training prompts sharing tags with
         * the prompt, best first (both tags, then one), as generate --retrieve 2 writes it; by default
         * the K the run was trained with (2) */
        const char *with_nb[] = {"Negative prompts of similar prompts:\n- blurry, lowres\n- dark, noisy\nPrompt: a cat, garden, sunny"};
        ref = session_texts(&with, with_nb, 1, 0, gen_defaults(3, 24, 1));
        for (int pass = 0; pass < 2; pass++) {
            r = call(sv, "POST", "/v1/negatives", pass ? "{\"prompts\": [\"a cat, garden, sunny\"], \"model\": \"style1\", \"seed\": 3, \"max_tokens\": 24, \"retrieve\": 2}"
                                                       : "{\"prompts\": [\"a cat, garden, sunny\"], \"model\": \"style1\", \"seed\": 3, \"max_tokens\": 24}", NULL);
            CHECK_MSG(r.status == 200, "%s", r.body);
            CHECK_STR(jstr(r.json, "negatives.0"), ref[0]);
            reply_free(&r);
        }
        texts_free(ref, 1);
        /* the base has no index: asking for neighbours there is an error, not a silent no-op */
        r = call(sv, "POST", "/v1/negatives", "{\"prompts\": [\"a cat\"], \"retrieve\": 2}", NULL);
        CHECK_ERROR(r, 400, "retrieve", NULL, "no retrieval index");
        reply_free(&r);
        r = call(sv, "POST", "/v1/negatives", "{\"prompts\": [\"a cat\"], \"model\": \"style1\", \"retrieve\": 65}", NULL);
        CHECK_ERROR(r, 400, "retrieve", NULL, NULL);
        reply_free(&r);
        an_session_close(&with);
    } else {
        test_fail_at(__FILE__, __LINE__, "%s", err.msg);
    }
    r = call(sv, "DELETE", "/v1/adapters/style1", NULL, NULL);
    CHECK(r.status == 200 && cJSON_IsTrue(cJSON_GetObjectItem(r.json, "deleted")));
    reply_free(&r);
    r = call(sv, "DELETE", "/v1/adapters/style1", NULL, NULL);
    CHECK_ERROR(r, 404, "model", "model_not_found", NULL);
    reply_free(&r);
    r = call(sv, "POST", "/v1/negatives", "{\"prompts\": [\"a\"], \"model\": \"style1\"}", NULL);
    CHECK_ERROR(r, 404, "model", "model_not_found", NULL);
    reply_free(&r);
    an_server_free(sv);
}

/* Jobs past --max-jobs get 429; a cancelled job ends with finish_reason "cancelled"; metrics count. */
static void test_limits_cancel_metrics(void) {
    if (!loaded) return;
    an_server *sv = new_server(NULL, NULL, 1);
    pause_engine(1);
    const char *body = "{\"prompt\": \"Once\", \"max_tokens\": 64}";
    an_http_request req = {"POST", "/v1/completions", NULL, 0, body, strlen(body)};
    an_http_response first;
    an_serve_handle(sv, &req, &first);
    CHECK(first.job != NULL && an_server_jobs(sv) == 1);
    reply r = call(sv, "POST", "/v1/completions", body, NULL);
    CHECK_ERROR(r, 429, NULL, "rate_limit_exceeded", "--max-jobs");
    reply_free(&r);
    if (first.job) {
        an_serve_job_cancel(first.job);
        pause_engine(0);
        CHECK(an_serve_job_wait(first.job, 10000));
        char buf[4096];
        long k = an_serve_job_read(first.job, buf, sizeof buf - 1, 1000);
        buf[k > 0 ? k : 0] = 0;
        CHECK_MSG(strstr(buf, "\"finish_reason\":\"cancelled\"") != NULL, "%s", buf);
    }
    pause_engine(0);
    an_http_response_free(&first);
    CHECK(an_server_jobs(sv) == 0);
    r = call(sv, "GET", "/metrics", NULL, NULL);
    CHECK(r.status == 200);
    CHECK(r.body && strstr(r.body, "autoneg_requests_total{route=\"/v1/completions\",code=\"200\"} 1\n"));
    CHECK(r.body && strstr(r.body, "autoneg_requests_total{route=\"/v1/completions\",code=\"429\"} 1\n"));
    CHECK(r.body && strstr(r.body, "autoneg_cancelled_total 1\n"));
    CHECK(r.body && strstr(r.body, "# TYPE autoneg_time_to_first_token_seconds histogram"));
    CHECK(r.body && strstr(r.body, "autoneg_queue_length 0\n"));
    reply_free(&r);
    /* the server refuses, never leaks: a job freed before the engine ran it */
    pause_engine(1);
    an_serve_handle(sv, &req, &first);
    an_http_response_free(&first);
    pause_engine(0);
    for (int i = 0; i < 200 && an_server_jobs(sv); i++) usleep(10000);
    CHECK(an_server_jobs(sv) == 0);
    an_server_free(sv);
}

int main(void) {
    an_error err;
    if (an_session_open(&sess, an_ops_cpu(), test_shared("models/TinyStories-656K"), NULL, NULL, NULL, &err) == 0) {
        an_engine_config c = an_engine_config_default();
        c.slots = 4;
        c.prefix_cache = 0;
        eng = an_engine_create(sess.model, &c, &err);
        loaded = eng != NULL;
    }
    if (!loaded) test_fail_at(__FILE__, __LINE__, "cannot load the test model: %s", err.msg);
    if (loaded) pthread_create(&engine_tid, NULL, engine_loop, NULL);
    RUN(test_loading_and_routes);
    RUN(test_bad_requests);
    RUN(test_api_key);
    RUN(test_negatives_equal_generate);
    RUN(test_completions_and_stops);
    RUN(test_chat);
    RUN(test_adapters);
    RUN(test_limits_cancel_metrics);
    if (loaded) {
        pthread_mutex_lock(&engine_mu);
        engine_stop = 1;
        pthread_mutex_unlock(&engine_mu);
        an_engine_wake(eng);
        pthread_join(engine_tid, NULL);
        an_engine_free(eng);
        an_session_close(&sess);
    }
    return test_finish();
}
