#ifndef AN_SERVE_IMPL_H
#define AN_SERVE_IMPL_H
/* Internal to serve/: the server's state, the metrics, and the job (a generation in flight). */
#include <pthread.h>
#include <stdint.h>

#include "data/tokenizers/tokenizer.h"
#include "serve/serve.h"

/* ---- a growing byte buffer ---- */
typedef struct an_sbuf {
    char *s;
    size_t n, cap;
    int oom;
} an_sbuf;
int an_sbuf_add(an_sbuf *b, const char *s, size_t n);
int an_sbuf_str(an_sbuf *b, const char *s);
int an_sbuf_printf(an_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void an_sbuf_free(an_sbuf *b);

/* ---- metrics (serve/metrics.c) ---- */
#define AN_HIST_BUCKETS 12
typedef struct an_histogram {
    const double *bounds; /* AN_HIST_BUCKETS upper bounds, seconds */
    uint64_t counts[AN_HIST_BUCKETS + 1];
    double sum;
    uint64_t count;
} an_histogram;

#define AN_METRIC_ROUTES 16
typedef struct an_serve_metrics {
    pthread_mutex_t mu;
    struct {
        const char *route; /* a static string */
        int code;
        uint64_t n;
    } requests[AN_METRIC_ROUTES * 8];
    int n_requests;
    uint64_t prompt_tokens, generated_tokens, cancelled, failed;
    an_histogram ttft, per_token, duration;
} an_serve_metrics;

void an_metrics_init(an_serve_metrics *m);
void an_metrics_destroy(an_serve_metrics *m);
void an_metrics_request(an_serve_metrics *m, const char *route, int code);
/* One finished engine request. */
void an_metrics_result(an_serve_metrics *m, const an_request_result *r);
/* The Prometheus text exposition, with the engine's gauges when e is not NULL. */
char *an_metrics_text(an_serve_metrics *m, an_engine *e, int jobs, size_t *len);

/* ---- the server ---- */
struct an_server {
    an_serve_config cfg;   /* strings below are the server's copies */
    char *api_key, *adapter_dir, *model_id;
    an_session *session;   /* NULL while loading */
    an_engine *engine;
    pthread_mutex_t mu;    /* guards the fields below */
    int draining;
    int jobs;              /* job objects alive: an owner holds them or an engine request still runs */
    struct an_serve_job **live; /* the jobs their owners still hold, for an_server_cancel_all */
    int n_live, cap_live;
    uint64_t next_id, seed_state;
    an_serve_metrics metrics;
    pthread_mutex_t index_mu;  /* guards indexes, and every query of them (serve/retrieval.c) */
    struct an_serve_index *indexes;
};

/* ---- retrieval (serve/retrieval.c) ---- */
typedef struct an_serve_index an_serve_index;
void an_serve_drop_index(an_server *sv, const char *name);
void an_serve_free_indexes(an_server *sv);
/* 1 when adapter (NULL: the base) has a retrieval index. */
int an_serve_has_index(an_server *sv, const char *adapter);
/* The template's input for prompt: the negatives of the k most similar training prompts of
 * adapter's index (NULL: the base's) in front, k < 0: the K its run was trained with; without an
 * index, or k = 0, a copy of prompt. malloc'd; NULL with err on failure. */
char *an_serve_retrieval_input(an_server *sv, const char *adapter, const char *prompt, int k, an_error *err);

/* ---- a job (serve/job.c) ---- */
typedef enum an_job_kind { AN_JOB_COMPLETION, AN_JOB_CHAT, AN_JOB_NEGATIVES } an_job_kind;

typedef struct an_job_choice {
    struct an_serve_job *job;
    int index;          /* the choice's index in the response (prompt * n + sample) */
    int64_t req_id;     /* the engine's id, 0 before submit */
    an_detok dt;
    an_sbuf text;       /* decoded so far */
    size_t cut;         /* where a stop string starts, or (size_t)-1 */
    size_t emitted;     /* bytes of text already sent as events (streaming) */
    int32_t *ids;       /* logprobs: the chosen tokens, their log-probabilities, the text offsets */
    float *lps;
    size_t *offs;
    int32_t *top_ids;   /* [cap_ids * top] each token's most likely alternatives and theirs */
    float *top_lps;
    int n_ids, cap_ids;
    an_request_result res;
    int done;
} an_job_choice;

struct an_serve_job {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;           /* the owner + every engine request not yet done */
    an_server *sv;
    an_job_kind kind;
    int stream, logprobs, prompts, n;
    int top;            /* alternatives per token asked for (completions' logprobs N, chat's top_logprobs) */
    int include_usage;  /* stream_options.include_usage: a last chunk with the usage */
    char id[48];
    long created;
    char *model;        /* the model name answered with */
    char **stops;       /* the request's stop strings */
    int n_stops;
    an_job_choice *ch;
    int n_choices, n_done;
    char error[512];    /* a failure of the model while it ran */
    an_sbuf out;        /* the body written so far */
    size_t out_read;
    int ended, status, cancelled;
    int registered;     /* counted in the server's jobs until destroyed */
};

/* A job for n_choices engine requests (not yet submitted). */
an_serve_job *an_job_new(an_server *sv, an_job_kind kind, int n_choices);
/* Fills an engine request's callbacks for choice i. */
void an_job_bind(an_serve_job *j, int i, an_request *r);
/* Registers the job with the server (counted in flight; cancelled by an_server_cancel_all). */
void an_job_register(an_serve_job *j);
/* Writes what a stream starts with (chat: the role chunks). */
void an_job_start(an_serve_job *j);

/* ---- handler helpers (serve/handler.c) ---- */
struct cJSON;
/* An OpenAI error body; param may be NULL, code may be NULL. */
void an_serve_error(an_http_response *r, int status, const char *type, const char *param, const char *code,
                    const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* body (malloc'd; NULL: out of memory, a 500) as the response */
void an_serve_body(an_http_response *r, int status, const char *type, char *body, size_t len);
/* o printed as the response body (and deleted) */
void an_serve_json(an_http_response *r, int status, struct cJSON *o);
/* The body as a JSON object, or NULL with a 400 in resp. */
struct cJSON *an_serve_parse(const an_http_request *req, an_http_response *resp);
/* -1 with a 400 naming the first field of o not in names (NULL-terminated). */
int an_serve_known_fields(const struct cJSON *o, const char *const *names, an_http_response *resp);
int an_serve_adapter_exists(an_server *sv, const char *name);
/* A fresh seed for a request that names none (53 bits). */
uint64_t an_server_random_seed(an_server *sv);

/* ---- the generation endpoints (serve/generate_api.c) ---- */
void an_serve_completions(an_server *sv, const an_http_request *req, an_http_response *resp);
void an_serve_chat(an_server *sv, const an_http_request *req, an_http_response *resp);
void an_serve_negatives(an_server *sv, const an_http_request *req, an_http_response *resp);

#endif
