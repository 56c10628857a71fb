/* Generation with the sampler on the backend (sample_tokens, kernels/ops.h) draws what the host's
 * sampler draws from the same logits: TinyStories-656K on the backend AN_TEST_DEVICE names (default
 * the CPU), each setting generated twice on that one backend, once sampling there and once with
 * host_sampling, which copies the same logits to the host (a forward is deterministic, so both runs
 * see the same logits). The ids must agree exactly: the device sums probabilities in another order,
 * which moves a boundary between two tokens by ~1e-15, and u lands that close with probability ~1e-12
 * a draw. A counting wrapper around the op shows which path ran: every step on a GPU, never on the
 * CPU (which samples on the host, where its logits already are). The server's engine likewise, with
 * requests of different settings in one batch, and one that asks for log-probabilities (its batches
 * sample on the host). */
#include <stdlib.h>
#include <string.h>

#include "infer/engine.h"
#include "infer/generate.h"
#include "infer/session.h"
#include "kernels/backend.h"
#include "tests/test.h"

static const an_ops *g_inner; /* the backend under test */
static an_ops g_counting;     /* it, with sample_tokens counted */
static long g_calls;

static void counted_sample(const an_ops *o, int32_t *out, float *logits, int B, int V, const an_sample_row *rows,
                           const int32_t *ids, int promise, void *work, size_t work_bytes) {
    g_calls++;
    g_inner->sample_tokens(o, out, logits, B, V, rows, ids, promise, work, work_bytes);
}

static const an_ops *backend(void) {
    if (g_inner) return &g_counting;
    const char *dev = getenv("AN_TEST_DEVICE");
    an_error e;
    g_inner = an_backend_open(dev && *dev ? dev : "cpu", &e);
    if (!g_inner) {
        test_fail_at(__FILE__, __LINE__, "AN_TEST_DEVICE=%s: %s", dev, e.msg);
        return NULL;
    }
    g_counting = *g_inner;
    if (g_inner->sample_tokens) g_counting.sample_tokens = counted_sample;
    fprintf(stderr, "generating on %s\n", g_inner->description);
    return &g_counting;
}

static int same_outputs(const an_gen_output *a, const an_gen_output *b, int n, const char *what) {
    for (int j = 0; j < n; j++)
        if (a[j].n != b[j].n || a[j].stop != b[j].stop || memcmp(a[j].ids, b[j].ids, (size_t)a[j].n * sizeof(int32_t))) {
            test_fail_at(__FILE__, __LINE__, "%s: sequence %d: %d tokens (stop %d) sampling on the backend, %d (stop %d) on the host",
                         what, j, a[j].n, (int)a[j].stop, b[j].n, (int)b[j].stop);
            return 0;
        }
    return 1;
}

/* TinyStories-656K on the backend under test; 0 when it did not open */
static int open_model(an_session *s) {
    const an_ops *ops = backend();
    an_error e;
    if (!ops) return 0;
    if (an_session_open(s, ops, test_shared("models/TinyStories-656K"), NULL, NULL, NULL, &e)) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        return 0;
    }
    return 1;
}

static void test_device_draws_the_hosts_tokens(void) {
    an_session s;
    an_error e;
    if (!open_model(&s)) return;
    const an_ops *ops = backend();
    an_ids story = {0};
    CHECK_MSG(an_session_encode(&s, "Once upon a time, there was a", 1, &story, &e) == 0, "%s", e.msg);
    const int32_t p1[] = {5, 6, 7}, p2[] = {9};
    an_gen_prompt pr[3] = {{story.v, (int)story.n}, {p1, 3}, {p2, 1}};
    /* greedy; top-k, top-p, the penalty and min_tokens together; min-p alone (the host draws in id
     * order there); no filter at all; top-p alone (the whole vocabulary of 512 ordered: on a GPU, the
     * sort rather than the selection of the top-k) */
    an_sampler_params settings[5] = {{0.0f, 0, 1.0f, 0.0f, 1.0f}, {0.9f, 40, 0.9f, 0.0f, 1.2f},
                                     {1.2f, 0, 1.0f, 0.1f, 1.0f}, {1.0f, 0, 1.0f, 0.0f, 1.0f},
                                     {0.8f, 0, 0.9f, 0.0f, 1.0f}};
    int supports = ops->supports(ops, AN_OP_sample_tokens, AN_F32);
    /* setting 1 also stops at the story's first three greedy tokens, likely ones, which min_tokens
     * must mask for its first 5 tokens */
    int32_t stops[16];
    int n_stops = (int)s.stop_ids.n < 13 ? (int)s.stop_ids.n : 13;
    memcpy(stops, s.stop_ids.v, (size_t)n_stops * sizeof *stops);
    for (int k = 0; k < 5; k++) {
        an_gen_opts o = an_gen_defaults();
        o.sampling = settings[k];
        o.max_tokens = 24;
        o.n_samples = k ? 3 : 1;
        o.batch = 4; /* 9 sequences through 4 slots: rows join and leave the batch */
        o.seed = 7 + (uint64_t)k;
        o.stop_ids = stops;
        o.n_stop_ids = n_stops;
        o.min_tokens = k == 1 ? 5 : 0;
        int J = 3 * o.n_samples;
        an_gen_output dev[9], host[9];
        memset(dev, 0, sizeof dev);
        memset(host, 0, sizeof host);
        g_calls = 0;
        CHECK_MSG(an_generate(s.model, NULL, pr, 3, an_tokenizer_bos(s.tok), &o, dev, &e) == 0, "%s", e.msg);
        long calls = g_calls;
        o.host_sampling = 1;
        CHECK_MSG(an_generate(s.model, NULL, pr, 3, an_tokenizer_bos(s.tok), &o, host, &e) == 0, "%s", e.msg);
        int tokens = 0;
        for (int j = 0; j < J; j++) tokens += host[j].n;
        char what[64];
        snprintf(what, sizeof what, "setting %d", k);
        same_outputs(dev, host, J, what);
        if (k == 0) {
            CHECK(host[0].n >= 3);
            for (int t = 0; t < 3 && t < host[0].n; t++) stops[n_stops + t] = host[0].ids[t];
        } else if (k == 1) {
            for (int j = 0; j < J; j++) CHECK_MSG(host[j].n >= 5, "min_tokens 5: sequence %d has %d", j, host[j].n);
        }
        if (k == 0) n_stops += 3;
        if (k == 1) n_stops -= 3;
        /* a call per prefill and per decode step on a GPU, so at least one per 9 tokens; none on the CPU
         * and none with host_sampling */
        CHECK_MSG(supports ? calls > 0 && calls >= tokens / 9 : calls == 0, "setting %d: %ld calls of sample_tokens for %d tokens", k,
                  calls, tokens);
        CHECK(g_calls == calls);
        CHECK(tokens > 3 * J); /* sequences that generate, not stop at once */
        an_gen_outputs_free(dev, J);
        an_gen_outputs_free(host, J);
    }
    if (!supports) printf("%s samples on the host: the two runs took the one path\n", ops->name);
    an_ids_free(&story);
    an_session_close(&s);
}

enum { ENG_REQS = 6, ENG_MAX = 20 };
typedef struct eng_out {
    int32_t ids[ENG_MAX];
    int n, done;
    an_stop_reason stop;
} eng_out;
static int eng_token(void *ctx, const an_token *t) {
    eng_out *o = ctx;
    if (o->n < ENG_MAX) o->ids[o->n++] = t->id;
    return 0;
}
static void eng_done(void *ctx, const an_request_result *r) {
    eng_out *o = ctx;
    o->done++;
    o->stop = r->stop;
}

/* Six requests, each its own sampling (greedy, top-k + top-p + penalty + min_tokens, min-p, none),
 * seed and prompt, through 4 slots; in the second run request 5 asks for log-probabilities, so the
 * batches it is in sample on the host, the others on the device. */
static void run_engine(an_session *s, int host_sampling, int logprobs, eng_out *out) {
    an_engine_config c = an_engine_config_default();
    c.slots = 4;
    c.context = 64;
    c.host_sampling = host_sampling;
    an_error e;
    an_engine *en = an_engine_create(s->model, &c, &e);
    CHECK_MSG(en != NULL, "%s", e.msg);
    if (!en) return;
    static const int32_t prompts[ENG_REQS][3] = {{5, 6, 7}, {9, 10, 11}, {12, 13, 14}, {1, 2, 3}, {20, 21, 22}, {30, 31, 32}};
    const an_sampler_params sp[4] = {
        {0.0f, 0, 1.0f, 0.0f, 1.0f}, {0.9f, 40, 0.9f, 0.0f, 1.2f}, {1.2f, 0, 1.0f, 0.1f, 1.0f}, {1.0f, 0, 1.0f, 0.0f, 1.0f}};
    for (int k = 0; k < ENG_REQS; k++) {
        an_request r;
        memset(&r, 0, sizeof r);
        r.ids = prompts[k];
        r.n_ids = 3;
        r.sampling = sp[k % 4];
        r.seed = 40 + (uint64_t)k;
        r.max_tokens = ENG_MAX;
        r.min_tokens = k == 1 ? 4 : 0;
        r.stop_ids = s->stop_ids.v;
        r.n_stop_ids = (int)s->stop_ids.n;
        r.want_logprobs = logprobs && k == 5;
        r.on_token = eng_token;
        r.on_done = eng_done;
        r.ctx = &out[k];
        int64_t id;
        CHECK_MSG(an_engine_submit(en, &r, &id, &e) == AN_ENGINE_OK, "%s", e.msg);
    }
    for (int guard = 0; guard < 1000 && an_engine_step(en, &e) > 0; guard++) {}
    an_engine_free(en);
}

static void test_engine_draws_the_hosts_tokens(void) {
    an_session s;
    if (!open_model(&s)) return;
    const an_ops *ops = backend();
    int supports = ops->supports(ops, AN_OP_sample_tokens, AN_F32);
    for (int logprobs = 0; logprobs <= 1; logprobs++) {
        eng_out dev[ENG_REQS], host[ENG_REQS];
        memset(dev, 0, sizeof dev);
        memset(host, 0, sizeof host);
        g_calls = 0;
        run_engine(&s, 0, logprobs, dev);
        long calls = g_calls;
        run_engine(&s, 1, logprobs, host);
        int tokens = 0;
        for (int k = 0; k < ENG_REQS; k++) {
            CHECK_MSG(dev[k].done == 1 && host[k].done == 1, "request %d ended %d / %d times", k, dev[k].done, host[k].done);
            CHECK_MSG(dev[k].n == host[k].n && dev[k].stop == host[k].stop &&
                          memcmp(dev[k].ids, host[k].ids, (size_t)dev[k].n * sizeof(int32_t)) == 0,
                      "engine%s: request %d: %d tokens (stop %d) sampling on the backend, %d (stop %d) on the host",
                      logprobs ? " (one with log-probabilities)" : "", k, dev[k].n, (int)dev[k].stop, host[k].n,
                      (int)host[k].stop);
            tokens += host[k].n;
        }
        CHECK(tokens > 2 * ENG_REQS);
        CHECK_MSG(supports ? calls >= tokens / (4 * ENG_MAX) + 1 : calls == 0, "engine: %ld calls of sample_tokens", calls);
    }
    an_session_close(&s);
}

int main(void) {
    RUN(test_device_draws_the_hosts_tokens);
    RUN(test_engine_draws_the_hosts_tokens);
    if (g_inner) an_backend_close(g_inner);
    return test_finish();
}
