/* GET /metrics: counters and histograms in Prometheus' text exposition format (version 0.0.4). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/serve_impl.h"

/* seconds: time to first token and per token span 1 ms .. 60 s on a CPU */
static const double ttft_bounds[AN_HIST_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
static const double token_bounds[AN_HIST_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5};
static const double duration_bounds[AN_HIST_BUCKETS] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};

void an_metrics_init(an_serve_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    m->ttft.bounds = ttft_bounds;
    m->per_token.bounds = token_bounds;
    m->duration.bounds = duration_bounds;
}

void an_metrics_destroy(an_serve_metrics *m) { pthread_mutex_destroy(&m->mu); }

void an_metrics_request(an_serve_metrics *m, const char *route, int code) {
    pthread_mutex_lock(&m->mu);
    int i = 0;
    while (i < m->n_requests && !(m->requests[i].code == code && !strcmp(m->requests[i].route, route))) i++;
    if (i == m->n_requests && i < (int)(sizeof m->requests / sizeof m->requests[0])) {
        m->requests[i].route = route;
        m->requests[i].code = code;
        m->requests[i].n = 0;
        m->n_requests++;
    }
    if (i < m->n_requests) m->requests[i].n++;
    pthread_mutex_unlock(&m->mu);
}

static void observe(an_histogram *h, double v) {
    int b = 0;
    while (b < AN_HIST_BUCKETS && v > h->bounds[b]) b++;
    h->counts[b]++;
    h->sum += v;
    h->count++;
}

void an_metrics_result(an_serve_metrics *m, const an_request_result *r) {
    pthread_mutex_lock(&m->mu);
    m->prompt_tokens += (uint64_t)(r->prompt_tokens > 0 ? r->prompt_tokens : 0);
    m->generated_tokens += (uint64_t)(r->n_tokens > 0 ? r->n_tokens : 0);
    if (r->stop == AN_STOP_CANCELLED) m->cancelled++;
    if (r->stop == AN_STOP_ERROR) m->failed++;
    if (r->n_tokens > 0) observe(&m->ttft, r->first_token_s);
    /* the decode time per token after the first */
    if (r->n_tokens > 1) observe(&m->per_token, (r->total_s - r->first_token_s) / (r->n_tokens - 1));
    observe(&m->duration, r->total_s);
    pthread_mutex_unlock(&m->mu);
}

static void hist_text(an_sbuf *b, const char *name, const char *help, const an_histogram *h) {
    an_sbuf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < AN_HIST_BUCKETS; i++) {
        cum += h->counts[i];
        an_sbuf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i], (unsigned long long)cum);
    }
    cum += h->counts[AN_HIST_BUCKETS];
    an_sbuf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9g\n%s_count %llu\n", name, (unsigned long long)cum, name,
                   h->sum, name, (unsigned long long)h->count);
}

char *an_metrics_text(an_serve_metrics *m, an_engine *e, int jobs, size_t *len) {
    an_sbuf b = {0};
    pthread_mutex_lock(&m->mu);
    an_sbuf_str(&b, "# HELP autoneg_requests_total HTTP requests answered, by route and status code.\n"
                    "# TYPE autoneg_requests_total counter\n");
    for (int i = 0; i < m->n_requests; i++)
        an_sbuf_printf(&b, "autoneg_requests_total{route=\"%s\",code=\"%d\"} %llu\n", m->requests[i].route,
                       m->requests[i].code, (unsigned long long)m->requests[i].n);
    an_sbuf_printf(&b,
                   "# HELP autoneg_prompt_tokens_total Prompt tokens fed to the model.\n"
                   "# TYPE autoneg_prompt_tokens_total counter\nautoneg_prompt_tokens_total %llu\n"
                   "# HELP autoneg_generated_tokens_total Tokens generated.\n"
                   "# TYPE autoneg_generated_tokens_total counter\nautoneg_generated_tokens_total %llu\n"
                   "# HELP autoneg_cancelled_total Generations cancelled (client gone, shutdown).\n"
                   "# TYPE autoneg_cancelled_total counter\nautoneg_cancelled_total %llu\n"
                   "# HELP autoneg_failed_total Generations the model failed.\n"
                   "# TYPE autoneg_failed_total counter\nautoneg_failed_total %llu\n",
                   (unsigned long long)m->prompt_tokens, (unsigned long long)m->generated_tokens,
                   (unsigned long long)m->cancelled, (unsigned long long)m->failed);
    hist_text(&b, "autoneg_time_to_first_token_seconds", "Submit to first generated token.", &m->ttft);
    hist_text(&b, "autoneg_time_per_output_token_seconds", "Decode time per token after the first.", &m->per_token);
    hist_text(&b, "autoneg_request_duration_seconds", "Submit to the last token of one generation.", &m->duration);
    pthread_mutex_unlock(&m->mu);
    an_sbuf_printf(&b, "# HELP autoneg_http_jobs Generation requests in flight.\n# TYPE autoneg_http_jobs gauge\n"
                       "autoneg_http_jobs %d\n", jobs);
    if (e) {
        an_engine_stats st;
        an_engine_stats_get(e, &st);
        an_sbuf_printf(&b,
                       "# HELP autoneg_queue_length Requests waiting for a batch slot.\n"
                       "# TYPE autoneg_queue_length gauge\nautoneg_queue_length %d\n"
                       "# HELP autoneg_batch_size Requests decoding in the batch.\n"
                       "# TYPE autoneg_batch_size gauge\nautoneg_batch_size %d\n"
                       "# HELP autoneg_batch_slots Slots of the batch.\n"
                       "# TYPE autoneg_batch_slots gauge\nautoneg_batch_slots %d\n"
                       "# HELP autoneg_engine_steps_total Engine steps.\n"
                       "# TYPE autoneg_engine_steps_total counter\nautoneg_engine_steps_total %llu\n"
                       "# HELP autoneg_cached_prompt_tokens_total Prompt tokens taken from the prefix cache.\n"
                       "# TYPE autoneg_cached_prompt_tokens_total counter\nautoneg_cached_prompt_tokens_total %llu\n",
                       st.queued, st.running, st.slots, (unsigned long long)st.steps,
                       (unsigned long long)st.cached_tokens);
    }
    if (b.oom) {
        an_sbuf_free(&b);
        return NULL;
    }
    *len = b.n;
    return b.s;
}
