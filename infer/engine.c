/* The request engine (infer/engine.h): a queue, a table of running requests (one per KV-cache slot),
 * adapters by name with reference counts, registered prefixes with their KV per adapter, and the step
 * that ties them to one an_infer state made for many adapters (an_infer_create_multi).
 *
 * Locking: one mutex guards the queue, the slot table, the adapter registry, the prefixes and the
 * statistics; submit, cancel, the adapter and prefix calls and stats take it from any thread. The
 * stepping thread takes it to admit, cancel and retire requests, and releases it for the forwards and
 * the callbacks, so a callback may call an_engine_cancel. A running request's own fields (history,
 * random stream) belong to the stepping thread alone.
 *
 * Exactness against an_generate: each admitted prompt is prefilled in a forward of its own (as
 * an_generate prefills a prompt that runs alone), decode steps run at most AN_ENGINE_DECODE_ROWS rows
 * per forward (kernels' matrix-vector path, whose rows do not depend on each other), adapters go
 * through lora_grouped_forward (per-row results), and the sampling is an_generate's own code
 * (an_gen_pick, an_gen_stream_seed). */
#include "infer/engine.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "infer/infer.h"
#include "model/lora.h"

typedef struct adapter {
    char name[64];
    an_lora *lora;
    int refs;    /* requests queued or running with it */
    int removed; /* no new request may name it; freed when refs reaches 0 */
    struct adapter *next;
} adapter;

/* A registered prefix and its KV, computed on first use, per adapter (ad NULL: the base). */
typedef struct prefix_kv {
    const adapter *ad;
    void *kv; /* an_infer_kv_bytes(n) of backend memory */
    struct prefix_kv *next;
} prefix_kv;

typedef struct prefix {
    int32_t *ids;
    int n;
    prefix_kv *kv;
} prefix;

typedef struct req {
    int64_t id;
    an_request r;  /* the caller's request; ids and stop_ids point at the copies below */
    int32_t *hist; /* prompt, then the generated tokens */
    int32_t *stops;
    int used, n;   /* prompt tokens, tokens generated */
    adapter *ad;
    an_rng rng;
    int slot;
    int cancel;    /* guarded by the mutex */
    int cached;
    double t_submit, t_start, t_first;
    struct req *next; /* in the queue */
} req;

struct an_engine {
    const an_model *m;
    an_engine_config c;
    int V;
    an_infer *inf;
    an_sampler *smp;
    float *logits; /* [AN_ENGINE_DECODE_ROWS, V] */
    float *masked; /* [V] */
    int32_t top_ids[AN_TOP_LOGPROBS_MAX]; /* the token being reported's alternatives (take_token) */
    float top_lps[AN_TOP_LOGPROBS_MAX];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    req *qhead, *qtail;
    req **run; /* [slots]: the request in each slot, NULL when free */
    adapter *ads;
    int n_ads; /* registered, not removed */
    prefix **prefixes;
    int n_prefixes, cap_prefixes;
    int64_t next_id;
    int woken;
    an_engine_stats st;
    /* the step's scratch: [slots] each */
    int32_t *sl, *ids;
    const an_lora **loras;
    req **rows, **admitted;
    /* sampling on the backend (an_infer_sample) for up to AN_ENGINE_DECODE_ROWS rows at once: their
     * parameters, generators advanced past u, tokens and counts kept, and ids (sample_ids_cap: a batch
     * whose histories and stop ids need more samples on the host) */
    int on_device;
    an_sample_row *srows;
    an_rng *speek;
    int32_t *picked, *sids;
    int sids_cap;
    unsigned char *seen; /* [V] */
};

an_engine_config an_engine_config_default(void) {
    an_engine_config c;
    memset(&c, 0, sizeof c);
    c.slots = 16;
    c.context = 0;
    c.prefill_tokens = 0;
    c.max_queue = 256;
    c.max_adapters = 16;
    c.max_rank = 256; /* scratch of context * 256 floats: 2 MiB at 2048 positions */
    c.prefix_cache = 1;
    return c;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* the ids one call of the device sampler may take: every decode row's whole history and a few stop ids */
#define SAMPLE_STOPS_PER_ROW 64
static int sample_ids_cap(const an_engine *e) {
    int R = e->c.slots < AN_ENGINE_DECODE_ROWS ? e->c.slots : AN_ENGINE_DECODE_ROWS;
    return R * (e->c.context + SAMPLE_STOPS_PER_ROW);
}

an_engine *an_engine_create(const an_model *m, const an_engine_config *cfg, an_error *err) {
    an_engine_config c = cfg ? *cfg : an_engine_config_default();
    if (c.slots < 1 || c.slots > 4096) {
        an_fail(err, "engine: slots %d must be in 1..4096", c.slots);
        return NULL;
    }
    if (c.context <= 0 || c.context > m->cfg.max_seq) c.context = m->cfg.max_seq;
    if (c.context < 2) {
        an_fail(err, "engine: a context of %d positions leaves no room for a prompt and a token", c.context);
        return NULL;
    }
    if (c.prefill_tokens <= 0) {
        long long all = (long long)c.slots * c.context;
        c.prefill_tokens = all < 0x7fffffff ? (int)all : 0x7fffffff;
    }
    if (c.threads < 0 || c.threads > 4096) {
        an_fail(err, "engine: threads %d must be in 0..4096 (0: leave OpenMP's count)", c.threads);
        return NULL;
    }
    if (c.max_queue < 0) {
        an_fail(err, "engine: max_queue %d must be >= 0", c.max_queue);
        return NULL;
    }
    if (c.max_adapters < 0 || c.max_rank < 0 || (c.max_adapters > 0 && c.max_rank < 1)) {
        an_fail(err, "engine: max_adapters %d and max_rank %d must be >= 0 (a rank >= 1 with adapters)",
                c.max_adapters, c.max_rank);
        return NULL;
    }
    an_engine *e = calloc(1, sizeof *e);
    if (!e) {
        an_fail(err, "engine: out of memory");
        return NULL;
    }
    e->m = m;
    e->c = c;
    e->V = m->cfg.vocab_size;
    e->next_id = 1;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    /* one prompt per prefill forward: rows for a whole context */
    e->inf = an_infer_create_multi(m, c.max_adapters > 0 ? c.max_rank : 0, c.slots, c.context, c.context, err);
    if (!e->inf) {
        an_engine_free(e);
        return NULL;
    }
    e->smp = an_sampler_create(e->V, err);
    if (!e->smp) {
        an_engine_free(e);
        return NULL;
    }
    size_t S = (size_t)c.slots;
    e->logits = malloc((size_t)AN_ENGINE_DECODE_ROWS * e->V * sizeof(float));
    e->masked = malloc((size_t)e->V * sizeof(float));
    e->run = calloc(S, sizeof *e->run);
    e->sl = malloc(S * sizeof *e->sl);
    e->ids = malloc(S * sizeof *e->ids);
    e->loras = malloc(S * sizeof *e->loras);
    e->rows = malloc(S * sizeof *e->rows);
    e->admitted = malloc(S * sizeof *e->admitted);
    if (!e->logits || !e->masked || !e->run || !e->sl || !e->ids || !e->loras || !e->rows || !e->admitted) {
        an_engine_free(e);
        an_fail(err, "engine: out of memory");
        return NULL;
    }
    e->st.slots = c.slots;
    int on = c.host_sampling ? 0 : an_infer_enable_sampling(e->inf, sample_ids_cap(e), err);
    if (on < 0) {
        an_engine_free(e);
        return NULL;
    }
    if (on > 0) {
        int R = AN_ENGINE_DECODE_ROWS;
        e->srows = malloc((size_t)R * sizeof *e->srows);
        e->speek = malloc((size_t)R * sizeof *e->speek);
        e->picked = malloc(2 * (size_t)R * sizeof *e->picked);
        e->sids = malloc((size_t)sample_ids_cap(e) * sizeof *e->sids);
        e->seen = calloc((size_t)e->V, 1);
        if (!e->srows || !e->speek || !e->picked || !e->sids || !e->seen) {
            an_engine_free(e);
            an_fail(err, "engine: out of memory");
            return NULL;
        }
        e->sids_cap = sample_ids_cap(e);
        e->on_device = 1;
    }
    return e;
}

/* ---------- adapters ---------- */

static adapter *find_adapter(an_engine *e, const char *name) {
    for (adapter *a = e->ads; a; a = a->next)
        if (!a->removed && strcmp(a->name, name) == 0) return a;
    return NULL;
}

/* Frees a removed adapter that no request holds, with its prefix KV; under the mutex. */
static void maybe_free_adapter(an_engine *e, adapter *a) {
    if (!a || !a->removed || a->refs > 0) return;
    for (adapter **p = &e->ads; *p; p = &(*p)->next)
        if (*p == a) {
            *p = a->next;
            break;
        }
    for (int i = 0; i < e->n_prefixes; i++)
        for (prefix_kv **p = &e->prefixes[i]->kv; *p;) {
            prefix_kv *k = *p;
            if (k->ad == a) {
                *p = k->next;
                e->m->ops->free(e->m->ops, k->kv);
                free(k);
            } else {
                p = &k->next;
            }
        }
    an_lora_free(a->lora);
    free(a);
}

/* lora's modules must be the base weights of this model. */
static int lora_fits(const an_engine *e, const an_lora *l, an_error *err) {
    const an_model *m = e->m;
    for (int i = 0; i < l->n_mods; i++) {
        const an_param *b = l->mods[i].base;
        if (b < m->params || b >= m->params + m->n_params)
            return an_fail(err, "module %s is not a weight of the engine's model (an adapter opened for another base)",
                           l->mods[i].name);
    }
    if (l->cfg.r > e->c.max_rank)
        return an_fail(err, "its rank %d exceeds the engine's max_rank %d", l->cfg.r, e->c.max_rank);
    return 0;
}

int an_engine_add_adapter(an_engine *e, const char *name, an_lora *lora, an_error *err) {
    size_t len = name ? strlen(name) : 0;
    if (len < 1 || len > 63) return an_fail(err, "engine: an adapter name must have 1 to 63 bytes");
    if (!lora) return an_fail(err, "engine: adapter %s: no adapter given", name);
    an_error why;
    if (lora_fits(e, lora, &why)) return an_fail(err, "engine: adapter %s: %s", name, why.msg);
    pthread_mutex_lock(&e->mu);
    int rc = 0;
    if (find_adapter(e, name)) {
        rc = an_fail(err, "engine: an adapter named %s is already loaded", name);
    } else if (e->n_ads >= e->c.max_adapters) {
        rc = an_fail(err, "engine: adapter %s: %d adapters are loaded, the most this engine holds (max_adapters)",
                     name, e->n_ads);
    } else {
        adapter *a = calloc(1, sizeof *a);
        if (!a) {
            rc = an_fail(err, "engine: out of memory");
        } else {
            memcpy(a->name, name, len + 1);
            a->lora = lora;
            a->next = e->ads;
            e->ads = a;
            e->n_ads++;
        }
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

int an_engine_remove_adapter(an_engine *e, const char *name, an_error *err) {
    pthread_mutex_lock(&e->mu);
    adapter *a = name ? find_adapter(e, name) : NULL;
    if (a) {
        a->removed = 1;
        e->n_ads--;
        maybe_free_adapter(e, a);
    }
    pthread_mutex_unlock(&e->mu);
    return a ? 0 : an_fail(err, "engine: no adapter named %s is loaded", AN_QUOTE(name));
}

int an_engine_adapters(an_engine *e, char **names, int cap) {
    pthread_mutex_lock(&e->mu);
    int n = 0;
    for (adapter *a = e->ads; a; a = a->next) {
        if (a->removed) continue;
        if (n < cap) names[n] = strdup(a->name);
        n++;
    }
    pthread_mutex_unlock(&e->mu);
    return n;
}

/* ---------- prefixes ---------- */

int an_engine_add_prefix(an_engine *e, const int32_t *ids, int n, an_error *err) {
    if (!ids || n < 1) return an_fail(err, "engine: an empty prefix");
    if (n >= e->c.context)
        return an_fail(err, "engine: a prefix of %d tokens fills the context of %d", n, e->c.context);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= e->V)
            return an_fail(err, "engine: prefix token %d (at %d) is outside the vocabulary of %d", ids[i], i, e->V);
    prefix *p = calloc(1, sizeof *p);
    int32_t *copy = malloc((size_t)n * sizeof *copy);
    if (!p || !copy) {
        free(p);
        free(copy);
        return an_fail(err, "engine: out of memory");
    }
    memcpy(copy, ids, (size_t)n * sizeof *copy);
    p->ids = copy;
    p->n = n;
    pthread_mutex_lock(&e->mu);
    int rc = 0, dup = 0;
    for (int i = 0; i < e->n_prefixes; i++)
        if (e->prefixes[i]->n == n && memcmp(e->prefixes[i]->ids, ids, (size_t)n * sizeof *ids) == 0) dup = 1;
    if (!dup && e->n_prefixes == e->cap_prefixes) {
        int cap = e->cap_prefixes ? 2 * e->cap_prefixes : 8;
        prefix **grown = realloc(e->prefixes, (size_t)cap * sizeof *grown);
        if (grown) {
            e->prefixes = grown;
            e->cap_prefixes = cap;
        } else {
            rc = an_fail(err, "engine: out of memory");
        }
    }
    if (!dup && rc == 0) {
        e->prefixes[e->n_prefixes++] = p;
        p = NULL;
    }
    pthread_mutex_unlock(&e->mu);
    if (p) {
        free(p->ids);
        free(p);
    }
    return rc;
}

/* The longest registered prefix of q's prompt that leaves at least one token to run; under the mutex. */
static prefix *match_prefix(an_engine *e, const req *q) {
    prefix *best = NULL;
    for (int i = 0; i < e->n_prefixes; i++) {
        prefix *p = e->prefixes[i];
        if (p->n < q->used && (!best || p->n > best->n) &&
            memcmp(p->ids, q->hist, (size_t)p->n * sizeof *p->ids) == 0)
            best = p;
    }
    return best;
}

/* ---------- requests ---------- */

static const char *adapter_name(const an_request *r) { return r->adapter && r->adapter[0] ? r->adapter : NULL; }

static int check_request(const an_engine *e, const an_request *r, an_error *err) {
    if (!r->ids || r->n_ids < 1) return an_fail(err, "request: the prompt is empty (at least one token)");
    for (int i = 0; i < r->n_ids; i++)
        if (r->ids[i] < 0 || r->ids[i] >= e->V)
            return an_fail(err, "request: prompt token %d (at %d) is outside the vocabulary of %d", r->ids[i], i, e->V);
    if (r->n_ids >= e->c.context)
        return an_fail(err, "request: a prompt of %d tokens leaves no room in the context of %d positions", r->n_ids,
                       e->c.context);
    if (r->max_tokens < 1) return an_fail(err, "request: max_tokens %d must be >= 1", r->max_tokens);
    if (r->min_tokens < 0 || r->min_tokens > r->max_tokens)
        return an_fail(err, "request: min_tokens %d must be in 0 .. max_tokens (%d)", r->min_tokens, r->max_tokens);
    if (r->sample < 0) return an_fail(err, "request: sample %d must be >= 0", r->sample);
    if (r->n_stop_ids < 0 || (r->n_stop_ids > 0 && !r->stop_ids))
        return an_fail(err, "request: %d stop ids given without an array", r->n_stop_ids);
    an_error why;
    if (an_sampler_check(&r->sampling, &why)) return an_fail(err, "request: %s", why.msg);
    if (r->top_logprobs < 0 || r->top_logprobs > AN_TOP_LOGPROBS_MAX || r->top_logprobs > e->V ||
        (r->top_logprobs && !r->want_logprobs))
        return an_fail(err, "request: top_logprobs %d must be in 0 .. %d (and the vocabulary), and > 0 only with "
                       "want_logprobs", r->top_logprobs, AN_TOP_LOGPROBS_MAX);
    return 0;
}

static void free_req(req *q) {
    if (!q) return;
    free(q->hist);
    free(q->stops);
    free(q);
}

an_engine_status an_engine_submit(an_engine *e, const an_request *r, int64_t *id_out, an_error *err) {
    if (id_out) *id_out = 0;
    if (!r) {
        an_fail(err, "request: none given");
        return AN_ENGINE_INVALID;
    }
    if (check_request(e, r, err)) return AN_ENGINE_INVALID;
    req *q = calloc(1, sizeof *q);
    /* room for every token the context allows: max_tokens may be far larger */
    int room = e->c.context - r->n_ids + 1, gen = r->max_tokens < room ? r->max_tokens : room;
    if (q) {
        q->hist = malloc(((size_t)r->n_ids + gen) * sizeof *q->hist);
        q->stops = malloc(((size_t)r->n_stop_ids + 1) * sizeof *q->stops);
    }
    if (!q || !q->hist || !q->stops) {
        free_req(q);
        an_fail(err, "request: out of memory");
        return AN_ENGINE_INVALID;
    }
    memcpy(q->hist, r->ids, (size_t)r->n_ids * sizeof *q->hist);
    if (r->n_stop_ids) memcpy(q->stops, r->stop_ids, (size_t)r->n_stop_ids * sizeof *q->stops);
    q->r = *r;
    q->r.ids = q->hist;
    q->r.stop_ids = q->stops;
    q->r.adapter = NULL;
    q->used = r->n_ids;
    q->slot = -1;
    an_rng_seed(&q->rng, an_gen_stream_seed(r->seed, r->sample));
    q->t_submit = now_s();

    an_engine_status st = AN_ENGINE_OK;
    pthread_mutex_lock(&e->mu);
    const char *name = adapter_name(r);
    adapter *a = name ? find_adapter(e, name) : NULL;
    if (name && !a) {
        an_fail(err, "request: no adapter named %s is loaded", AN_QUOTE(name));
        st = AN_ENGINE_INVALID;
    } else if (e->st.queued >= e->c.max_queue) {
        an_fail(err, "request: the queue is full (%d requests waiting); try again later", e->st.queued);
        st = AN_ENGINE_BUSY;
    } else {
        q->ad = a;
        if (a) a->refs++;
        q->id = e->next_id++;
        if (e->qtail) e->qtail->next = q;
        else e->qhead = q;
        e->qtail = q;
        e->st.queued++;
        if (id_out) *id_out = q->id;
        pthread_cond_broadcast(&e->cv);
    }
    pthread_mutex_unlock(&e->mu);
    if (st != AN_ENGINE_OK) free_req(q);
    return st;
}

void an_engine_cancel(an_engine *e, int64_t id) {
    pthread_mutex_lock(&e->mu);
    for (req *q = e->qhead; q; q = q->next)
        if (q->id == id) q->cancel = 1;
    for (int k = 0; k < e->c.slots; k++)
        if (e->run[k] && e->run[k]->id == id) e->run[k]->cancel = 1;
    pthread_mutex_unlock(&e->mu);
}

/* Ends q: its slot is free, on_done fires (without the mutex), its adapter reference is dropped. q is
 * queued (slot -1, already unlinked) or running. */
static void finish(an_engine *e, req *q, an_stop_reason why, const char *message) {
    double t = now_s();
    an_request_result res = {why,
                             q->used,
                             q->cached,
                             q->n,
                             (q->t_start > 0 ? q->t_start : t) - q->t_submit,
                             (q->t_first > 0 ? q->t_first : t) - q->t_submit,
                             t - q->t_submit,
                             message};
    if (q->slot >= 0) an_infer_reset_slot(e->inf, q->slot);
    pthread_mutex_lock(&e->mu);
    if (q->slot >= 0) {
        e->run[q->slot] = NULL;
        e->st.running--;
    }
    e->st.requests_done++;
    e->st.tokens_out += (uint64_t)q->n;
    if (q->ad) {
        q->ad->refs--;
        maybe_free_adapter(e, q->ad);
        q->ad = NULL;
    }
    pthread_mutex_unlock(&e->mu);
    q->slot = -1;
    if (q->r.on_done) q->r.on_done(q->r.ctx, &res);
    free_req(q);
}

/* log-softmax of the model's logits (before any sampling option) at id, and the k most likely tokens'
 * (most likely first, ties to the lower id: a stable insertion over the vocabulary in id order) */
static float logprobs(const float *logits, int V, int32_t id, int k, int32_t *top_ids, float *top_lps) {
    float mx = -INFINITY;
    for (int i = 0; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
    double z = 0;
    for (int i = 0; i < V; i++) z += exp((double)logits[i] - mx);
    double lz = log(z);
    int n = 0;
    for (int i = 0; i < V && k > 0; i++) {
        if (n == k && !(logits[i] > logits[top_ids[n - 1]])) continue;
        int at = n < k ? n++ : k - 1;
        while (at > 0 && logits[i] > logits[top_ids[at - 1]]) {
            top_ids[at] = top_ids[at - 1];
            at--;
        }
        top_ids[at] = i;
    }
    for (int j = 0; j < n; j++) top_lps[j] = (float)((double)logits[top_ids[j]] - mx - lz);
    return (float)((double)logits[id] - mx - lz);
}

/* Running request q goes on with id (-1: the sampler found none to draw); 1 when q ended (and is
 * freed). logits: q's row on the host, for its log-probabilities (NULL: sampled on the device, which
 * only requests without them are). */
static int accept_token(an_engine *e, req *q, int32_t id, const float *logits) {
    if (id < 0) {
        an_error why;
        an_sampler_no_token(&q->r.sampling, &why);
        finish(e, q, AN_STOP_ERROR, why.msg);
        return 1;
    }
    if (an_gen_is_stop(q->stops, q->r.n_stop_ids, id)) {
        finish(e, q, AN_STOP_EOS, NULL);
        return 1;
    }
    q->hist[q->used + q->n++] = id;
    if (q->n == 1) q->t_first = now_s();
    an_token t = {id, 0.0f, q->r.top_logprobs, e->top_ids, e->top_lps};
    if (q->r.want_logprobs && logits) t.logprob = logprobs(logits, e->V, id, t.n_top, e->top_ids, e->top_lps);
    if (q->r.on_token && q->r.on_token(q->r.ctx, &t))
        finish(e, q, AN_STOP_CALLER, NULL);
    else if (q->n >= q->r.max_tokens)
        finish(e, q, AN_STOP_MAX_TOKENS, NULL);
    else if (q->used + q->n - 1 >= e->c.context) /* no position left to feed it at */
        finish(e, q, AN_STOP_CONTEXT, NULL);
    else
        return 0;
    return 1;
}

/* The next token of running request q from its logits on the host (an_generate's take_token, with
 * the engine's callbacks); 1 when q ended (and is freed). */
static int take_token(an_engine *e, req *q, const float *logits) {
    int32_t id = an_gen_pick(e->smp, &q->r.sampling, logits, e->masked, q->stops, q->r.n_stop_ids, q->r.min_tokens,
                             q->n, q->hist, (size_t)(q->used + q->n), &q->rng);
    return accept_token(e, q, id, logits);
}

/* 1 when requests qs[0 .. n) can sample on the device: the backend can, none of them wants
 * log-probabilities (those need the logits on the host), and their ids fit the sampler's buffer. */
static int on_device(const an_engine *e, req *const *qs, int n) {
    if (!e->on_device) return 0;
    long ids = 0;
    for (int i = 0; i < n; i++) {
        if (qs[i]->r.want_logprobs) return 0;
        ids += qs[i]->used + qs[i]->n + (qs[i]->n < qs[i]->r.min_tokens ? qs[i]->r.n_stop_ids : 0);
    }
    return ids <= e->sids_cap;
}

/* The next token of requests qs[0 .. n) from the logits the last forward left on the device, as
 * take_token would draw them (an_gen_sample_row); -1 when the backend failed. */
static int take_tokens_on_device(an_engine *e, req *const *qs, int n, an_error *err) {
    int n_ids = 0;
    for (int i = 0; i < n; i++) {
        req *q = qs[i];
        e->speek[i] = q->rng;
        e->srows[i] = an_gen_sample_row(&q->r.sampling, &e->speek[i], q->stops, q->r.n_stop_ids, q->r.min_tokens, q->n,
                                        q->hist, q->used + q->n, e->V, e->seen, e->sids, &n_ids);
    }
    if (an_infer_sample(e->inf, n, e->srows, e->sids, n_ids, e->picked, err)) return -1;
    for (int i = 0; i < n; i++) {
        if (e->picked[2 * i + 1] > 1) qs[i]->rng = e->speek[i];
        accept_token(e, qs[i], e->picked[2 * i], NULL);
    }
    return 0;
}

/* Runs q's prompt into its slot, the logits after it into logits_out (NULL: left on the backend for
 * the device sampler): with a registered prefix, the
 * prefix's KV (computed now on first use for q's adapter) and only the rest of the prompt. */
static int prefill(an_engine *e, req *q, float *logits_out, an_error *err) {
    const an_lora *lora = q->ad ? q->ad->lora : NULL;
    prefix *p = NULL;
    void *kv = NULL;
    if (e->c.prefix_cache) {
        pthread_mutex_lock(&e->mu);
        p = match_prefix(e, q);
        for (prefix_kv *k = p ? p->kv : NULL; k; k = k->next)
            if (k->ad == q->ad) kv = k->kv;
        pthread_mutex_unlock(&e->mu);
    }
    if (!p) {
        int32_t slot = q->slot;
        const int32_t *rows[1] = {q->hist};
        return an_infer_prefill_adapters(e->inf, &slot, rows, &q->used, &lora, 1, logits_out, err);
    }
    if (kv) {
        if (an_infer_kv_load(e->inf, q->slot, kv, p->n, err)) return -1;
        q->cached = p->n;
    } else {
        /* first use with this adapter: the prefix alone, then its KV kept for the next requests */
        int32_t slot = q->slot;
        const int32_t *rows[1] = {p->ids};
        if (an_infer_prefill_adapters(e->inf, &slot, rows, &p->n, &lora, 1, NULL, err)) return -1; /* its logits unused */
        prefix_kv *k = calloc(1, sizeof *k);
        void *mem = k ? e->m->ops->alloc(e->m->ops, an_infer_kv_bytes(e->inf, p->n)) : NULL;
        if (mem && an_infer_kv_save(e->inf, q->slot, p->n, mem, err) == 0) {
            k->ad = q->ad;
            k->kv = mem;
            pthread_mutex_lock(&e->mu);
            k->next = p->kv;
            p->kv = k;
            pthread_mutex_unlock(&e->mu);
        } else { /* no memory for the cache: this request still runs */
            if (mem) e->m->ops->free(e->m->ops, mem);
            free(k);
        }
    }
    return an_infer_extend(e->inf, q->slot, q->hist + p->n, q->used - p->n, lora, logits_out, err);
}

/* Every running request ends with an error (the model failed). */
static void fail_running(an_engine *e, const char *msg) {
    for (int k = 0; k < e->c.slots; k++) {
        req *q = e->run[k]; /* only this thread changes run[] */
        if (q) finish(e, q, AN_STOP_ERROR, msg);
    }
}

static int pending(an_engine *e) {
    pthread_mutex_lock(&e->mu);
    int n = e->st.queued + e->st.running;
    pthread_mutex_unlock(&e->mu);
    return n;
}

int an_engine_step(an_engine *e, an_error *err_out) {
    an_error local, *err = err_out ? err_out : &local;
    if (e->c.threads > 0 && omp_get_max_threads() != e->c.threads) omp_set_num_threads(e->c.threads);
    req *cancelled = NULL;
    int n_admit = 0;
    double t = now_s();
    /* under the mutex: cancellations out, queued requests into free slots */
    pthread_mutex_lock(&e->mu);
    e->st.steps++;
    for (req **p = &e->qhead; *p;) {
        req *q = *p;
        if (q->cancel) {
            *p = q->next;
            e->st.queued--;
            q->next = cancelled;
            cancelled = q;
        } else {
            p = &q->next;
        }
    }
    e->qtail = NULL;
    for (req *q = e->qhead; q; q = q->next) e->qtail = q;
    int cancel_running = 0;
    for (int k = 0; k < e->c.slots; k++) cancel_running |= e->run[k] && e->run[k]->cancel;
    pthread_mutex_unlock(&e->mu);
    while (cancelled) {
        req *q = cancelled;
        cancelled = q->next;
        finish(e, q, AN_STOP_CANCELLED, NULL);
    }
    if (cancel_running)
        for (int k = 0; k < e->c.slots; k++) {
            pthread_mutex_lock(&e->mu);
            int c = e->run[k] && e->run[k]->cancel;
            pthread_mutex_unlock(&e->mu);
            if (c) finish(e, e->run[k], AN_STOP_CANCELLED, NULL);
        }
    pthread_mutex_lock(&e->mu);
    long budget = e->c.prefill_tokens;
    for (int k = 0; k < e->c.slots && e->qhead; k++) {
        if (e->run[k]) continue;
        req *q = e->qhead;
        if (n_admit > 0 && q->used > budget) break; /* the step's prefill budget: the rest waits */
        budget -= q->used;
        e->qhead = q->next;
        if (!e->qhead) e->qtail = NULL;
        q->next = NULL;
        e->st.queued--;
        e->st.running++;
        e->st.tokens_in += (uint64_t)q->used;
        q->slot = k;
        q->t_start = t;
        e->run[k] = q;
        e->admitted[n_admit++] = q;
    }
    pthread_mutex_unlock(&e->mu);

    /* the new prompts, one forward each (as each would run alone), and their first tokens */
    for (int i = 0; i < n_admit; i++) {
        req *q = e->admitted[i];
        int dev = on_device(e, &q, 1);
        if (prefill(e, q, dev ? NULL : e->logits, err)) {
            fail_running(e, err->msg);
            return -1;
        }
        if (q->cached) {
            pthread_mutex_lock(&e->mu);
            e->st.cached_tokens += (uint64_t)q->cached;
            pthread_mutex_unlock(&e->mu);
        }
        if (!dev) {
            take_token(e, q, e->logits); /* q may be freed from here on */
        } else if (take_tokens_on_device(e, &q, 1, err)) {
            fail_running(e, err->msg);
            return -1;
        }
    }

    /* one decode step for every running request, grouped by adapter (one segment each in the grouped
     * LoRA op), AN_ENGINE_DECODE_ROWS rows per forward */
    int n = 0;
    for (int k = 0; k < e->c.slots; k++)
        if (e->run[k]) e->rows[n++] = e->run[k];
    for (int i = 1; i < n; i++) { /* insertion sort by adapter, stable: slots in order within one */
        req *x = e->rows[i];
        int j = i;
        while (j > 0 && (uintptr_t)e->rows[j - 1]->ad > (uintptr_t)x->ad) {
            e->rows[j] = e->rows[j - 1];
            j--;
        }
        e->rows[j] = x;
    }
    for (int i0 = 0; i0 < n; i0 += AN_ENGINE_DECODE_ROWS) {
        int b = n - i0 < AN_ENGINE_DECODE_ROWS ? n - i0 : AN_ENGINE_DECODE_ROWS;
        for (int i = 0; i < b; i++) {
            req *q = e->rows[i0 + i];
            e->sl[i] = q->slot;
            e->ids[i] = q->hist[q->used + q->n - 1];
            e->loras[i] = q->ad ? q->ad->lora : NULL;
        }
        int dev = on_device(e, e->rows + i0, b);
        if (an_infer_decode_adapters(e->inf, e->sl, e->ids, e->loras, b, dev ? NULL : e->logits, err) ||
            (dev && take_tokens_on_device(e, e->rows + i0, b, err))) {
            fail_running(e, err->msg);
            return -1;
        }
        for (int i = 0; i < b && !dev; i++) take_token(e, e->rows[i0 + i], e->logits + (size_t)i * e->V);
    }
    return pending(e);
}

int an_engine_wait(an_engine *e, int timeout_ms) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    long long ns = until.tv_nsec + (long long)(timeout_ms > 0 ? timeout_ms : 0) * 1000000LL;
    until.tv_sec += (time_t)(ns / 1000000000LL);
    until.tv_nsec = (long)(ns % 1000000000LL);
    pthread_mutex_lock(&e->mu);
    while (e->st.queued + e->st.running == 0 && !e->woken)
        if (pthread_cond_timedwait(&e->cv, &e->mu, &until) == ETIMEDOUT) break;
    e->woken = 0;
    int work = e->st.queued + e->st.running > 0;
    pthread_mutex_unlock(&e->mu);
    return work;
}

void an_engine_wake(an_engine *e) {
    pthread_mutex_lock(&e->mu);
    e->woken = 1;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void an_engine_stats_get(an_engine *e, an_engine_stats *out) {
    pthread_mutex_lock(&e->mu);
    *out = e->st;
    pthread_mutex_unlock(&e->mu);
}

void an_engine_free(an_engine *e) {
    if (!e) return;
    /* every request still queued or running ends cancelled, callbacks and all */
    while (e->qhead) {
        req *q = e->qhead;
        e->qhead = q->next;
        e->st.queued--;
        finish(e, q, AN_STOP_CANCELLED, NULL);
    }
    for (int k = 0; e->run && k < e->c.slots; k++)
        if (e->run[k]) finish(e, e->run[k], AN_STOP_CANCELLED, NULL);
    while (e->ads) {
        adapter *a = e->ads;
        a->removed = 1;
        a->refs = 0;
        maybe_free_adapter(e, a);
    }
    for (int i = 0; i < e->n_prefixes; i++) {
        prefix *p = e->prefixes[i];
        while (p->kv) {
            prefix_kv *k = p->kv;
            p->kv = k->next;
            e->m->ops->free(e->m->ops, k->kv);
            free(k);
        }
        free(p->ids);
        free(p);
    }
    free(e->prefixes);
    an_infer_free(e->inf);
    an_sampler_free(e->smp);
    free(e->srows);
    free(e->speek);
    free(e->picked);
    free(e->sids);
    free(e->seen);
    free(e->logits);
    free(e->masked);
    free(e->run);
    free(e->sl);
    free(e->ids);
    free(e->loras);
    free(e->rows);
    free(e->admitted);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
    free(e);
}
