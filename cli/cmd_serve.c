/* autoneg serve: an HTTP server (OpenAI-compatible, plus /v1/negatives) over the request engine.
 *
 *   autoneg serve --model M [--adapter NAME=DIR]... [--adapter-dir D] [--host 127.0.0.1] [--port 8080]
 *                 [--api-key K | --api-key-file F] [--parallel N] [--device cpu|cuda|cuda-bf16] [--template NAME]
 *
 * The HTTP port opens first (GET /health answers 503 while the model loads); one engine thread steps
 * the engine; the main thread waits for SIGTERM or SIGINT, then stops accepting, lets the requests in
 * flight finish for up to --drain seconds, cancels the rest, and exits 0. docs/serving.md. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/help.h"
#include "core/file.h"
#include "infer/engine.h"
#include "infer/retrieval_pairs.h"
#include "infer/session.h"
#include "model/lora.h"
#include "serve/http.h"
#include "serve/serve.h"

static const cli_opt serve_opts[] = {
    {"--model", "M", "model: a Hugging Face style folder, a GGUF file or a llama2.c .bin (required)"},
    {"--adapter", "NAME=DIR", "a PEFT LoRA adapter folder served as model NAME (repeatable)"},
    {"--adapter-dir", "D", "POST /v1/adapters may load adapter folders under D (default: off)"},
    {"--tokenizer", "T", "tokenizer file or folder (default: the model's own)"},
    {"--template", "NAME", "prompt template (default: the model's autoneg.json or GGUF chat template, else infotext)"},
    {"--name", "NAME", "the base model's name in /v1/models (default: the model path's last part)"},
    {"--host", "ADDR", "address to listen on (default: 127.0.0.1, this machine only)"},
    {"--port", "N", "port to listen on, 0 = any free one (default: 8080)"},
    {"--api-key", "K", "every endpoint but /health and the page needs Authorization: Bearer K"},
    {"--api-key-file", "F", "the same, the key read from file F (first line)"},
    {"--parallel", "N", "requests decoded at once, the batch (default: 8)"},
    {"--device", "cpu|cuda|cuda-bf16", "backend to compute on (default: cpu)"},
    {"--ctx", "N", "positions per sequence (default: the model's maximum)"},
    {"--retrieve", "K", "/v1/negatives: the negatives of the K most similar training prompts in front, from the index an adapter's run stored, 0 = off (default: the K it was trained with)"},
    {"--max-body", "BYTES", "largest request body (default: 1048576)"},
    {"--max-prompt-tokens", "N", "longest prompt in tokens (default: 4096, and less than the context)"},
    {"--max-tokens", "N", "largest max_tokens a request may ask (default: 2048)"},
    {"--max-n", "N", "largest n (default: 16)"},
    {"--max-prompts", "N", "most prompts in one request (default: 64)"},
    {"--max-jobs", "N", "requests in flight before 429 (default: 512)"},
    {"--max-queue", "N", "generations waiting for a batch slot before 429 (default: 4096)"},
    {"--timeout", "S", "close a connection idle for S seconds, e.g. a client that never finishes (default: 30)"},
    {"--drain", "S", "on SIGTERM, let requests in flight finish for up to S seconds, then cancel (default: 10)"},
    {NULL, NULL, NULL},
};

const cli_help cli_help_serve = {
    "serve --model M [--adapter NAME=DIR]... [--adapter-dir D] [--host ADDR] [--port N] [--api-key K] [options]",
    "Serves the model over HTTP: /v1/completions, /v1/chat/completions, /v1/models (OpenAI's API, SSE\n"
    "streaming), /v1/negatives, /v1/adapters, /health, /metrics and a web page at /. SIGTERM drains and\n"
    "exits 0. docs/serving.md.",
    serve_opts, NULL, NULL,
    "serve --model ../shared/models/TinyStories-656K --port 8080",
};

typedef struct adapter_arg {
    char name[64];
    const char *dir;
} adapter_arg;

typedef struct serve_args {
    const char *model, *tokenizer, *template_name, *name, *host, *api_key, *api_key_file, *device, *adapter_dir;
    adapter_arg adapters[64];
    int n_adapters, port, parallel, ctx, max_queue, timeout_s, drain_s, retrieve;
    an_serve_limits limits;
} serve_args;

static int parse_int(const char *flag, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) return cli_fail("%s: expected an integer in [%ld, %ld], got '%s'", flag, lo, hi, s);
    *out = v;
    return 0;
}

static int parse_args(serve_args *a, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return cli_help_fail(&cli_help_serve, "%s needs a value", f);
        i++;
        long n = 0;
        if (!strcmp(f, "--model")) a->model = v;
        else if (!strcmp(f, "--tokenizer")) a->tokenizer = v;
        else if (!strcmp(f, "--template")) a->template_name = v;
        else if (!strcmp(f, "--name")) a->name = v;
        else if (!strcmp(f, "--host")) a->host = v;
        else if (!strcmp(f, "--api-key")) a->api_key = v;
        else if (!strcmp(f, "--api-key-file")) a->api_key_file = v;
        else if (!strcmp(f, "--device")) a->device = v;
        else if (!strcmp(f, "--adapter-dir")) a->adapter_dir = v;
        else if (!strcmp(f, "--adapter")) {
            const char *eq = strchr(v, '=');
            if (!eq || eq == v || (size_t)(eq - v) >= sizeof a->adapters[0].name || !eq[1])
                return cli_fail("--adapter: expected NAME=DIR (NAME 1 to 63 bytes), got '%s'", v);
            if (a->n_adapters == (int)(sizeof a->adapters / sizeof a->adapters[0])) return cli_fail("--adapter: at most 64");
            adapter_arg *ad = &a->adapters[a->n_adapters++];
            memcpy(ad->name, v, (size_t)(eq - v));
            ad->name[eq - v] = 0;
            ad->dir = eq + 1;
        } else if (!strcmp(f, "--port")) {
            if (parse_int(f, v, 0, 65535, &n)) return 1;
            a->port = (int)n;
        } else if (!strcmp(f, "--parallel")) {
            if (parse_int(f, v, 1, 4096, &n)) return 1;
            a->parallel = (int)n;
        } else if (!strcmp(f, "--ctx")) {
            if (parse_int(f, v, 2, 1 << 24, &n)) return 1;
            a->ctx = (int)n;
        } else if (!strcmp(f, "--retrieve")) {
            if (parse_int(f, v, 0, AN_RETRIEVAL_MAX_K, &n)) return 1;
            a->retrieve = (int)n;
        } else if (!strcmp(f, "--max-body")) {
            if (parse_int(f, v, 64, 1L << 30, &n)) return 1;
            a->limits.max_body = (size_t)n;
        } else if (!strcmp(f, "--max-prompt-tokens")) {
            if (parse_int(f, v, 1, 1 << 24, &n)) return 1;
            a->limits.max_prompt_tokens = (int)n;
        } else if (!strcmp(f, "--max-tokens")) {
            if (parse_int(f, v, 1, 1 << 24, &n)) return 1;
            a->limits.max_tokens = (int)n;
        } else if (!strcmp(f, "--max-n")) {
            if (parse_int(f, v, 1, 1024, &n)) return 1;
            a->limits.max_n = (int)n;
        } else if (!strcmp(f, "--max-prompts")) {
            if (parse_int(f, v, 1, 100000, &n)) return 1;
            a->limits.max_prompts = (int)n;
        } else if (!strcmp(f, "--max-jobs")) {
            if (parse_int(f, v, 1, 1000000, &n)) return 1;
            a->limits.max_jobs = (int)n;
        } else if (!strcmp(f, "--max-queue")) {
            if (parse_int(f, v, 1, 10000000, &n)) return 1;
            a->max_queue = (int)n;
        } else if (!strcmp(f, "--timeout")) {
            if (parse_int(f, v, 1, 86400, &n)) return 1;
            a->timeout_s = (int)n;
        } else if (!strcmp(f, "--drain")) {
            if (parse_int(f, v, 0, 86400, &n)) return 1;
            a->drain_s = (int)n;
        } else {
            return cli_help_fail(&cli_help_serve, "serve: unknown option '%s'", f);
        }
    }
    if (!a->model) return cli_help_fail(&cli_help_serve, "serve: --model is required");
    if (a->api_key && a->api_key_file) return cli_fail("serve: give --api-key or --api-key-file, not both");
    if (a->api_key && !*a->api_key) return cli_fail("--api-key: the key is empty");
    return 0;
}

/* The key from the first line of a file, without its line end and surrounding blanks. */
static char *read_key(const char *path) {
    an_error err;
    char *s = an_read_file(path, NULL, &err);
    if (!s) {
        cli_error(&err);
        return NULL;
    }
    s[strcspn(s, "\r\n")] = 0;
    char *b = s;
    while (*b == ' ' || *b == '\t') b++;
    size_t n = strlen(b);
    while (n && (b[n - 1] == ' ' || b[n - 1] == '\t')) b[--n] = 0;
    if (!n) {
        free(s);
        cli_fail("%s: the API key file's first line is empty", path);
        return NULL;
    }
    memmove(s, b, n + 1);
    return s;
}

/* The model path's last part, without a .gguf / .bin extension. */
static void default_name(const char *model, char *out, size_t cap) {
    size_t n = strlen(model);
    while (n > 1 && model[n - 1] == '/') n--;
    size_t start = n;
    while (start > 0 && model[start - 1] != '/') start--;
    size_t len = n - start;
    if (len > 5 && !strncmp(model + n - 5, ".gguf", 5)) len -= 5;
    else if (len > 4 && !strncmp(model + n - 4, ".bin", 4)) len -= 4;
    snprintf(out, cap, "%.*s", (int)len, model + start);
    if (!*out) snprintf(out, cap, "autoneg");
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct engine_thread {
    an_engine *e;
    volatile int stop; /* set by the main thread, read here: a plain flag plus an_engine_wake */
    pthread_mutex_t mu;
} engine_thread;

static int engine_stopping(engine_thread *t) {
    pthread_mutex_lock(&t->mu);
    int s = t->stop;
    pthread_mutex_unlock(&t->mu);
    return s;
}

/* The engine steps on the main thread, the one that loaded the model: its OpenMP team is the only
 * one. (A second stepping thread got a team of its own; with more OpenMP threads than cores libgomp
 * stops spinning at barriers, and a decode step of SmolLM2 took 34 ms instead of 10.) */
static void engine_loop(engine_thread *t) {
    an_error err;
    while (!engine_stopping(t))
        if (an_engine_wait(t->e, 100) && an_engine_step(t->e, &err) < 0)
            fprintf(stderr, "autoneg: serve: a step failed (its requests ended with an error): %s\n", err.msg);
}

/* The shutdown, on a thread of its own while the main thread steps the engine: waits for SIGTERM or
 * SIGINT, stops new connections, lets running requests finish for up to drain_s seconds, cancels the
 * rest, closes the listener and then tells the engine loop to end. */
typedef struct shutdown_thread {
    sigset_t sigs;
    an_server *sv;
    an_http_server *http;
    engine_thread *et;
    int drain_s;
} shutdown_thread;

static void *shutdown_main(void *arg) {
    shutdown_thread *d = arg;
    int sig = 0;
    sigwait(&d->sigs, &sig);
    fprintf(stderr, "autoneg: serve: %s: no new connections; finishing %d request(s) for up to %d s\n",
            sig == SIGTERM ? "SIGTERM" : "SIGINT", an_server_jobs(d->sv), d->drain_s);
    an_http_quiesce(d->http);
    an_server_drain(d->sv);
    double t0 = now_s();
    while (an_server_jobs(d->sv) > 0 && now_s() - t0 < d->drain_s) usleep(20000);
    if (an_server_jobs(d->sv) > 0) {
        fprintf(stderr, "autoneg: serve: cancelling %d request(s) still running\n", an_server_jobs(d->sv));
        an_server_cancel_all(d->sv);
    }
    an_http_stop(d->http); /* the connections' threads end once their jobs have */
    pthread_mutex_lock(&d->et->mu);
    d->et->stop = 1;
    pthread_mutex_unlock(&d->et->mu);
    an_engine_wake(d->et->e);
    return NULL;
}

/* The template's lead-in (BOS and the instruction up to the user's text) as a prefix the engine
 * computes once. */
static void add_template_prefix(an_session *s, an_engine *e) {
    const char *at = strstr(s->tpl.instruction, "{input}");
    if (!at) return;
    an_ids ids = {0};
    an_error err;
    char *lead = strndup(s->tpl.instruction, (size_t)(at - s->tpl.instruction));
    if (lead && (s->enc.bos < 0 || an_ids_push(&ids, s->enc.bos) == 0) &&
        (!*lead || s->enc.encode(s->enc.ctx, lead, strlen(lead), &ids, &err) == 0) && ids.n >= 2)
        an_engine_add_prefix(e, ids.v, (int)ids.n, &err); /* only an optimisation: a failure changes nothing */
    free(lead);
    an_ids_free(&ids);
}


int an_cmd_serve(int argc, char **argv) {
    int rc;
    if (cli_help_check(&cli_help_serve, argc, argv, 1, &rc)) return rc;
    serve_args a;
    memset(&a, 0, sizeof a);
    an_serve_config cfg = an_serve_config_default();
    a.limits = cfg.limits;
    a.host = "127.0.0.1";
    a.port = 8080;
    a.parallel = 8;
    a.max_queue = 4096;
    a.timeout_s = 30;
    a.drain_s = 10;
    a.retrieve = -1;
    if (parse_args(&a, argc, argv)) return 1;
    char *key_from_file = a.api_key_file ? read_key(a.api_key_file) : NULL;
    if (a.api_key_file && !key_from_file) return 1;
    const an_ops *ops = cli_backend(a.device);
    if (!ops) {
        free(key_from_file);
        return 1;
    }
    char name[256];
    if (a.name) snprintf(name, sizeof name, "%s", a.name);
    else default_name(a.model, name, sizeof name);
    cfg.limits = a.limits;
    cfg.api_key = key_from_file ? key_from_file : a.api_key;
    cfg.adapter_dir = a.adapter_dir;
    cfg.model_id = name;
    cfg.context = a.ctx;
    cfg.retrieve = a.retrieve;
    if (a.adapter_dir && !an_is_dir(a.adapter_dir)) {
        free(key_from_file);
        return cli_fail("--adapter-dir %s: not a folder", a.adapter_dir);
    }

    /* SIGTERM and SIGINT are taken by sigwait below: blocked here, before any thread starts, so every
     * thread inherits the mask and none of them is interrupted by one */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    an_error err;
    an_server *sv = an_server_create(&cfg, &err);
    free(key_from_file);
    if (!sv) return cli_error(&err);
    an_http_options ho = {a.host, a.port, a.timeout_s, 1024, cfg.limits.max_body};
    an_http_server *http = an_http_start(sv, &ho, &err);
    if (!http) {
        an_server_free(sv);
        return cli_error(&err);
    }
    fprintf(stderr, "autoneg: serve: listening on http://%s%s%s:%d/ (loading %s)\n", strchr(a.host, ':') ? "[" : "", a.host,
            strchr(a.host, ':') ? "]" : "", an_http_port(http), a.model);

    an_session s;
    an_engine *e = NULL;
    rc = 1;
    int opened = 0;
    if (an_session_open(&s, ops, a.model, a.tokenizer, NULL, a.template_name, &err)) {
        cli_error(&err);
        goto out;
    }
    opened = 1;
    an_engine_config ec = an_engine_config_default();
    ec.slots = a.parallel;
    ec.context = a.ctx;
    ec.max_queue = a.max_queue;
    if (ec.max_adapters < a.n_adapters + 16) ec.max_adapters = a.n_adapters + 16;
    ec.prefix_cache = 1;
    if (!(e = an_engine_create(s.model, &ec, &err))) {
        cli_error(&err);
        goto out;
    }
    for (int i = 0; i < a.n_adapters; i++) {
        struct an_lora *l = an_lora_open(s.model, a.adapters[i].dir, &err);
        if (!l || an_engine_add_adapter(e, a.adapters[i].name, l, &err)) {
            an_lora_free(l); /* the engine took it only on success */
            cli_fail("--adapter %s=%s: %s", a.adapters[i].name, a.adapters[i].dir, err.msg);
            goto out;
        }
        if (an_server_add_index(sv, a.adapters[i].name, a.adapters[i].dir, &err)) { /* its run's retrieval index */
            cli_fail("--adapter %s=%s: %s", a.adapters[i].name, a.adapters[i].dir, err.msg);
            goto out;
        }
    }
    add_template_prefix(&s, e);
    engine_thread et = {e, 0, PTHREAD_MUTEX_INITIALIZER};
    shutdown_thread down = {sigs, sv, http, &et, a.drain_s};
    pthread_t tid;
    if (pthread_create(&tid, NULL, shutdown_main, &down)) {
        cli_fail("serve: cannot start the shutdown thread");
        goto out;
    }
    an_server_attach(sv, &s, e);
    fprintf(stderr, "autoneg: serve: ready: model %s, %d adapter(s), %d slots\n", name, a.n_adapters, a.parallel);
    engine_loop(&et); /* until the shutdown thread has stopped the server */
    pthread_join(tid, NULL);
    http = NULL; /* stopped by the shutdown thread */
    fprintf(stderr, "autoneg: serve: stopped\n");
    rc = 0;
out:
    an_http_stop(http);
    if (e) an_engine_free(e); /* ends any request left (their callbacks use the server): before it */
    an_server_free(sv);
    if (opened) an_session_close(&s);
    return rc;
}
