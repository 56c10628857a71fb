#ifndef AN_SERVE_H
#define AN_SERVE_H
/* The HTTP API of `autoneg serve` as plain functions (docs/serving.md): a request (method, path,
 * headers, body) goes in, a response comes out -- either whole (status, content type, body) or a
 * generation in flight (an_serve_job) whose body is read as it is written: server-sent events for
 * `"stream": true`, else one JSON object once every sample is done. No sockets here: serve/http.c is
 * the libmicrohttpd layer over it, and the tests and the fuzz target call it directly.
 *
 * Endpoints: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, POST /v1/negatives,
 * POST /v1/adapters, DELETE /v1/adapters/NAME, GET /health, GET /metrics, GET / (the web page).
 * Errors have OpenAI's shape {"error": {"message", "type", "param", "code"}}.
 *
 * Threads: an_serve_handle and the job calls may run on any number of threads at once; the engine is
 * stepped by one thread of the caller's (the callbacks that fill the jobs run there). */
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "infer/engine.h"
#include "infer/session.h"

typedef struct an_serve_limits {
    size_t max_body;       /* request body bytes (413 past it) */
    int max_prompt_tokens; /* tokens of one prompt (400 past it); also bounded by the context */
    int max_tokens;        /* the largest max_tokens a request may ask for */
    int max_n;             /* the largest n */
    int max_prompts;       /* prompts in one /v1/negatives or /v1/completions request */
    int max_jobs;          /* requests generating or waiting at once (429 past it) */
} an_serve_limits;

typedef struct an_serve_config {
    an_serve_limits limits;
    const char *api_key;     /* NULL or "": no key needed */
    const char *adapter_dir; /* POST /v1/adapters loads only folders under it; NULL: refused */
    const char *model_id;    /* the base model's name in /v1/models and responses */
    int context;             /* positions per sequence, as the engine was made with; 0: the model's */
    int retrieve;            /* /v1/negatives' default neighbours: -1 (default) the K each index was
                              * trained with, 0 off */
} an_serve_config;

an_serve_config an_serve_config_default(void);

typedef struct an_server an_server;

/* A server that answers /health with 503 (loading) and every other endpoint with 503 until
 * an_server_attach. The config's strings are copied. */
an_server *an_server_create(const an_serve_config *c, an_error *err);
/* The loaded model and its engine (both stay the caller's, and must outlive the server's jobs):
 * from now on requests are served. */
void an_server_attach(an_server *sv, an_session *s, an_engine *e);
/* Loads the retrieval index that a run trained with data.retrieve stored in dir (beside the adapter
 * served as name), for /v1/negatives; a dir without one is no error (returns 0). */
int an_server_add_index(an_server *sv, const char *name, const char *dir, an_error *err);
/* Shutting down: new generation requests get 503; jobs in flight go on. */
void an_server_drain(an_server *sv);
/* Cancels every job in flight (their engine requests end at the next step). */
void an_server_cancel_all(an_server *sv);
/* Jobs in flight: held by a caller, or freed by it while the engine has not yet ended their requests. */
int an_server_jobs(an_server *sv);
/* Only once an_server_jobs is 0, or after the engine was freed (which ends every request): the jobs'
 * callbacks use the server. */
void an_server_free(an_server *sv);

/* ---- one request ---- */
typedef struct an_http_header {
    const char *name, *value;
} an_http_header;

typedef struct an_http_request {
    const char *method; /* "GET", "POST", ... */
    const char *path;   /* "/v1/completions", without the query string */
    const an_http_header *headers;
    int n_headers;
    const char *body;   /* not NUL-terminated; may hold NUL bytes */
    size_t body_len;
} an_http_request;

typedef struct an_serve_job an_serve_job;

typedef struct an_http_response {
    int status;
    const char *content_type; /* a static string */
    char *body;               /* malloc'd (body_len bytes, NUL after them), or NULL when job is set */
    size_t body_len;
    const char *allow;        /* 405: the Allow header's value; else NULL */
    an_serve_job *job;        /* a generation: read its body with an_serve_job_read, then free it */
} an_http_response;

/* Answers one request. Never fails: every problem becomes an error response. */
void an_serve_handle(an_server *sv, const an_http_request *req, an_http_response *resp);
/* Frees the body, and the job (cancelled first when it is still running). */
void an_http_response_free(an_http_response *resp);

/* ---- a generation in flight ---- */
/* 1: the body is server-sent events (status 200, sent before the generation ends). */
int an_serve_job_streaming(const an_serve_job *j);
/* Waits up to timeout_ms for the job to end (non-streaming jobs: the body is complete then);
 * returns 1 when it has ended. */
int an_serve_job_wait(an_serve_job *j, int timeout_ms);
/* The HTTP status and content type of a non-streaming job's body (valid once it has ended). */
int an_serve_job_status(an_serve_job *j);
const char *an_serve_job_content_type(an_serve_job *j);
/* Copies up to cap bytes of the body not read yet, waiting up to timeout_ms for some to be written.
 * Returns the count (> 0), 0 when the body is complete and all of it was read, -1 when nothing came
 * within timeout_ms. */
long an_serve_job_read(an_serve_job *j, char *buf, size_t cap, int timeout_ms);
/* Ends the job's requests at the engine's next step (the client went away). */
void an_serve_job_cancel(an_serve_job *j);
/* Cancels and releases it (the engine's callbacks may still run: the job lives until the last one). */
void an_serve_job_free(an_serve_job *j);

/* ---- the web page (serve/page.c) ---- */
extern const char an_serve_page_html[];

#endif
