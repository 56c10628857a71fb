/* The request engine (infer/engine.h) on the llama fixture model (tests/ref/models/llama: 2 layers,
 * dim 32, vocab 256, 64 positions) with the base and two adapters of different ranks and targets whose
 * B is random (a fresh adapter's B is zero and would change nothing).
 *
 * The reference is an_generate on each request's prompt alone: n_samples = sample + 1 (decoded
 * together, as `autoneg generate --n` does), sequence `sample` of its output; every comparison is
 * exact (token for token, and the stop reason), because the engine is built so that a request's
 * computation does not depend on what else runs (one forward per prompt, decode forwards of at most
 * AN_ENGINE_DECODE_ROWS rows, per-row grouped LoRA). Checked:
 *  (a) a mix of adapters, sampling options, seeds, samples, stop ids, min_tokens and arrival steps,
 *      with more requests than slots and more than 16 running (two decode forwards a step);
 *  (b) cancellation of a running and of a queued request, and from inside a token callback: on_done
 *      once with AN_STOP_CANCELLED, and the freed slot goes to the next queued request;
 *  (c) the prefix cache on and off: the same tokens (and an_generate's), cached_tokens > 0;
 *  (d) a full queue is BUSY; bad requests are INVALID with a message naming the problem;
 *  (e) an adapter removed while a request uses it: that request finishes as an_generate would, new
 *      ones naming it are refused;
 *  the stops besides EOS and max_tokens: the caller's, the context's, and an error (NaN logits);
 *  (f) one thread submits (and cancels) while another steps: `make tsan` runs this binary too. */
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/rng.h"
#include "infer/engine.h"
#include "infer/infer.h"
#include "model/lora.h"
#include "tests/test_model_util.h"

enum { MAXTOK = 64, TOPK = 5 }; /* TOPK: the alternatives every test request asks for */

/* An adapter with A from an_lora_create and B random in +-0.5 (rank r, the given targets). */
static an_lora *random_adapter(an_model *m, int r, const char *const *targets, int n_targets, uint64_t seed) {
    an_error e;
    an_lora_config c = an_lora_config_default();
    c.r = r;
    c.alpha = 2.0f * (float)r;
    c.seed = seed;
    for (int i = 0; i < n_targets; i++)
        if (an_lora_config_add_target(&c, targets[i], &e)) return NULL;
    an_lora *l = an_lora_create(m, &c, &e);
    if (!l) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        return NULL;
    }
    an_rng g;
    an_rng_seed(&g, seed + 1);
    for (int i = 0; i < l->n_mods; i++) {
        an_param *bt = &l->mods[i].bt;
        float *h = malloc(sizeof(float) * bt->numel);
        for (size_t k = 0; k < bt->numel; k++) h[k] = 0.5f * (2.0f * an_rng_uniform(&g) - 1.0f);
        m->ops->upload(m->ops, bt->data, h, sizeof(float) * bt->numel);
        free(h);
    }
    return l;
}

typedef struct fixture {
    an_model *m;
    an_lora *lora[3]; /* [0] NULL: the base */
} fixture;

static const char *const adapter_names[3] = {NULL, "one", "two"};

/* The model (tests/ref/models/NAME) and its two adapters: rank 4 on every linear layer, rank 8 on a
 * few modules (the head among them for Llama). */
static int fixture_open_model(fixture *f, const char *name) {
    memset(f, 0, sizeof *f);
    f->m = load_fixture_model(name);
    if (!f->m) return -1;
    static const char *const all[] = {"all-linear"}, *const llama[] = {"q_proj", "v_proj", "down_proj", "lm_head"},
                             *const gpt2[] = {"c_attn", "mlp.c_proj"};
    int is_gpt2 = strcmp(name, "gpt2") == 0;
    f->lora[1] = random_adapter(f->m, 4, all, 1, 11);
    f->lora[2] = random_adapter(f->m, 8, is_gpt2 ? gpt2 : llama, is_gpt2 ? 2 : 4, 22);
    return f->lora[1] && f->lora[2] ? 0 : -1;
}

static int fixture_open(fixture *f) { return fixture_open_model(f, "llama"); }

/* An engine with the two adapters registered (the engine then owns them). */
static an_engine *engine_open(fixture *f, an_engine_config c) {
    an_error e;
    an_engine *en = an_engine_create(f->m, &c, &e);
    CHECK_MSG(en != NULL, "%s", e.msg);
    for (int k = 1; en && k < 3; k++)
        CHECK_MSG(an_engine_add_adapter(en, adapter_names[k], f->lora[k], &e) == 0, "%s", e.msg);
    return en;
}

static void fixture_close(fixture *f, int adapters_owned_by_engine) {
    if (!adapters_owned_by_engine) {
        an_lora_free(f->lora[1]);
        an_lora_free(f->lora[2]);
    }
    an_model_free(f->m);
}

/* ---------- requests and what they produced ---------- */

typedef struct spec {
    int32_t prompt[40];
    int n;
    int adapter; /* 0 base, 1, 2 */
    an_sampler_params sampling;
    uint64_t seed;
    int sample, max_tokens, min_tokens;
    int arrive; /* the step before which it is submitted */
    int32_t stop_ids[2];
    int n_stop;
} spec;

typedef struct rec {
    int32_t ids[MAXTOK];
    float lps[MAXTOK]; /* each token's log-probability, as on_token got it */
    int32_t top[MAXTOK][TOPK]; /* and its TOPK most likely alternatives */
    float top_lps[MAXTOK][TOPK];
    int n, done_calls;
    an_request_result res;
    an_engine *e;
    int64_t id;
    int cancel_after; /* > 0: cancels itself from on_token after this many tokens */
    int stop_after;   /* > 0: on_token returns 1 after this many tokens */
    char message[256]; /* AN_STOP_ERROR's message */
    double lp_sum;
} rec;

static int on_token(void *ctx, const an_token *t) {
    rec *r = ctx;
    if (r->n < MAXTOK) {
        r->ids[r->n] = t->id, r->lps[r->n] = t->logprob;
        for (int j = 0; j < TOPK; j++) {
            r->top[r->n][j] = j < t->n_top ? t->top_ids[j] : -1;
            r->top_lps[r->n][j] = j < t->n_top ? t->top_logprobs[j] : 0.0f;
        }
    }
    r->n++;
    r->lp_sum += t->logprob;
    if (r->cancel_after && r->n == r->cancel_after) an_engine_cancel(r->e, r->id);
    return r->stop_after && r->n >= r->stop_after;
}

static void on_done(void *ctx, const an_request_result *res) {
    rec *r = ctx;
    r->done_calls++;
    r->res = *res;
    if (res->message) snprintf(r->message, sizeof r->message, "%s", res->message);
    r->res.message = NULL;
}

static an_request make_request(const spec *s, rec *r) {
    an_request q;
    memset(&q, 0, sizeof q);
    q.ids = s->prompt;
    q.n_ids = s->n;
    q.sampling = s->sampling;
    q.seed = s->seed;
    q.sample = s->sample;
    q.max_tokens = s->max_tokens;
    q.min_tokens = s->min_tokens;
    q.stop_ids = s->stop_ids;
    q.n_stop_ids = s->n_stop;
    q.adapter = adapter_names[s->adapter];
    q.want_logprobs = 1;
    q.top_logprobs = TOPK;
    q.on_token = on_token;
    q.on_done = on_done;
    q.ctx = r;
    return q;
}

/* an_generate on the request's prompt alone, as `autoneg generate --n sample+1` runs it (its default
 * batch of 16: the samples decode together), sequence `sample` of its output. */
static int reference(const fixture *f, const spec *s, an_gen_output *out) {
    an_gen_opts o = an_gen_defaults();
    o.sampling = s->sampling;
    o.seed = s->seed;
    o.max_tokens = s->max_tokens;
    o.min_tokens = s->min_tokens;
    o.n_samples = s->sample + 1;
    o.stop_ids = s->stop_ids;
    o.n_stop_ids = s->n_stop;
    an_gen_prompt p = {s->prompt, s->n};
    an_gen_output *all = calloc((size_t)o.n_samples, sizeof *all);
    an_error e;
    int rc = an_generate(f->m, f->lora[s->adapter], &p, 1, -1, &o, all, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    if (rc == 0) {
        *out = all[s->sample];
        all[s->sample].ids = NULL;
        an_gen_outputs_free(all, o.n_samples);
    }
    free(all);
    return rc;
}

/* r's tokens and stop are exactly the reference's */
static int same_as_reference(const fixture *f, const spec *s, const rec *r, const char *what, int k) {
    an_gen_output ref = {0};
    if (reference(f, s, &ref)) return 0;
    int same = r->n == ref.n && memcmp(r->ids, ref.ids, sizeof(int32_t) * (size_t)ref.n) == 0 &&
               r->res.stop == ref.stop;
    CHECK_MSG(same,
              "%s request %d (adapter %d, temperature %g, seed %llu, sample %d): %d tokens stop %d, alone %d "
              "tokens stop %d",
              what, k, s->adapter, (double)s->sampling.temperature, (unsigned long long)s->seed, s->sample, r->n,
              (int)r->res.stop, ref.n, (int)ref.stop);
    free(ref.ids);
    return same;
}

/* The log-probabilities of r's tokens from the forwards an_generate runs for a prompt alone (one
 * slot: a prefill of the prompt, then one decode row per token), with log-softmax written out here:
 * equal bits mean the engine's logits were those of the request alone, bit for bit, which the token
 * comparison alone could not show (a rounding difference rarely flips a token). */
static int same_logits_as_alone(const fixture *f, const spec *s, const rec *r, int k) {
    an_error e;
    int V = f->m->cfg.vocab_size, n = r->n < MAXTOK ? r->n : MAXTOK;
    an_infer *inf = an_infer_create(f->m, f->lora[s->adapter], 1, s->n + s->max_tokens, 0, &e);
    float *logits = malloc(sizeof(float) * (size_t)V);
    int32_t slot = 0;
    const int32_t *rows[1] = {s->prompt};
    int ok = inf && an_infer_prefill(inf, &slot, rows, &s->n, 1, logits, &e) == 0, bad = -1, bad_top = -1;
    float alone = 0;
    for (int t = 0; ok && t < n; t++) {
        float mx = -INFINITY;
        for (int i = 0; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
        double z = 0;
        for (int i = 0; i < V; i++) z += exp((double)logits[i] - mx);
        float lp = (float)((double)logits[r->ids[t]] - mx - log(z));
        if (memcmp(&lp, &r->lps[t], sizeof lp) != 0 && bad < 0) bad = t, alone = lp;
        /* the alternatives, checked by counting rather than the engine's insertion: the j-th is a token
         * that exactly j tokens beat (a larger logit, or an equal one at a lower id), with its bits */
        for (int j = 0; j < TOPK; j++) {
            int32_t id = r->top[t][j];
            int beaten_by = 0;
            for (int i = 0; id >= 0 && id < V && i < V; i++)
                beaten_by += logits[i] > logits[id] || (logits[i] == logits[id] && i < id);
            float lpj = id >= 0 && id < V ? (float)((double)logits[id] - mx - log(z)) : NAN;
            if ((beaten_by != j || memcmp(&lpj, &r->top_lps[t][j], sizeof lpj) != 0) && bad_top < 0) bad_top = t;
        }
        if (t + 1 < n) ok = an_infer_decode(inf, &slot, &r->ids[t], 1, logits, &e) == 0;
    }
    CHECK_MSG(ok, "%s", e.msg);
    CHECK_MSG(bad < 0, "request %d: token %d's log-probability differs from the request alone (%.9g vs %.9g)", k, bad,
              bad >= 0 ? (double)r->lps[bad] : 0.0, (double)alone);
    CHECK_MSG(bad_top < 0, "request %d: token %d's top %d alternatives are not the most likely, in order", k, bad_top,
              TOPK);
    free(logits);
    an_infer_free(inf);
    return ok && bad < 0 && bad_top < 0;
}

static void fill_prompt(spec *s, int n, uint64_t seed) {
    an_rng g;
    an_rng_seed(&g, seed);
    s->n = n;
    s->prompt[0] = 1; /* BOS */
    for (int i = 1; i < n; i++) s->prompt[i] = 3 + (int32_t)(an_rng_uniform(&g) * 250.0f);
}

/* A mix: every third request on each adapter, greedy / temperature with top-p / top-k with min-p and
 * a penalty, seeds and samples that differ, prompts of 2 to 31 tokens (above 16: GEMM prefill), one
 * with a stop id it will meet and min_tokens. */
static void make_mix_ctx(spec *sp, int n, int arrivals, int ctx) {
    for (int k = 0; k < n; k++) {
        spec *s = &sp[k];
        memset(s, 0, sizeof *s);
        fill_prompt(s, 2 + (k * 7) % (ctx / 2 - 2), 100 + (uint64_t)k);
        s->adapter = k % 3;
        s->sampling = an_sampler_defaults();
        switch (k % 4) {
        case 0: s->sampling.temperature = 0; break;
        case 1: s->sampling.temperature = 0.9f, s->sampling.top_p = 0.8f; break;
        case 2: s->sampling.temperature = 1.3f, s->sampling.top_k = 20, s->sampling.min_p = 0.02f; break;
        case 3: s->sampling.temperature = 0.7f, s->sampling.repeat_penalty = 1.3f; break;
        }
        s->seed = 1000 + (uint64_t)(k % 5);
        s->sample = k % 3;
        s->max_tokens = 4 + (k * 5) % 17;
        if (s->n + s->max_tokens > ctx) s->max_tokens = ctx - s->n;
        s->arrive = (k * 3) % arrivals;
        if (k % 5 == 4) {
            s->n_stop = 2;
            s->stop_ids[0] = 7 + k;
            s->stop_ids[1] = 2;
            s->min_tokens = 2;
        }
    }
}

static void make_mix(spec *sp, int n, int arrivals) { make_mix_ctx(sp, n, arrivals, 64); }

/* Submits each spec before its arrival step and steps until every request is done. */
static void run_specs(an_engine *en, const spec *sp, rec *rs, int n) {
    an_error e;
    int submitted = 0, guard = 0;
    for (int step = 0; guard < 10000; step++, guard++) {
        for (int k = 0; k < n; k++)
            if (sp[k].arrive == step) {
                an_request q = make_request(&sp[k], &rs[k]);
                rs[k].e = en;
                CHECK_MSG(an_engine_submit(en, &q, &rs[k].id, &e) == AN_ENGINE_OK, "request %d: %s", k, e.msg);
                submitted++;
            }
        int left = an_engine_step(en, &e);
        CHECK_MSG(left >= 0, "%s", e.msg);
        if (left <= 0 && submitted == n) break;
    }
    CHECK(guard < 10000);
}

/* (a) */
static void check_mix(const char *model, int slots, int n, int arrivals) {
    fixture f;
    if (fixture_open_model(&f, model)) return fixture_close(&f, 0);
    an_engine_config c = an_engine_config_default();
    c.slots = slots;
    c.max_rank = 8;
    an_engine *en = engine_open(&f, c);
    spec *sp = calloc((size_t)n, sizeof *sp);
    rec *rs = calloc((size_t)n, sizeof *rs);
    make_mix_ctx(sp, n, arrivals, f.m->cfg.max_seq);
    if (en) run_specs(en, sp, rs, n);
    int same = 0, bits = 0;
    for (int k = 0; k < n; k++) {
        CHECK_MSG(rs[k].done_calls == 1, "request %d: on_done %d times", k, rs[k].done_calls);
        CHECK(rs[k].res.n_tokens == rs[k].n && rs[k].res.prompt_tokens == sp[k].n && rs[k].res.cached_tokens == 0);
        CHECK(rs[k].lp_sum < 0); /* log-probabilities of the chosen tokens */
        same += same_as_reference(&f, &sp[k], &rs[k], "mix", k);
        bits += same_logits_as_alone(&f, &sp[k], &rs[k], k);
    }
    printf("%s: %d requests on %d slots, arrivals over %d steps: %d of %d the tokens of an_generate alone, %d of %d "
           "every log-probability bit for bit\n", model, n, slots, arrivals, same, n, bits, n);
    /* the adapters matter: one greedy prompt, three adapters, three different continuations */
    spec g = sp[0];
    an_gen_output o[3] = {{0}};
    for (int a = 0; a < 3; a++) {
        g.adapter = a;
        g.max_tokens = 12;
        reference(&f, &g, &o[a]);
    }
    CHECK(o[0].n != o[1].n || memcmp(o[0].ids, o[1].ids, sizeof(int32_t) * (size_t)o[0].n));
    CHECK(o[0].n != o[2].n || memcmp(o[0].ids, o[2].ids, sizeof(int32_t) * (size_t)o[0].n));
    CHECK(o[1].n != o[2].n || memcmp(o[1].ids, o[2].ids, sizeof(int32_t) * (size_t)o[1].n));
    for (int a = 0; a < 3; a++) free(o[a].ids);
    an_engine_stats st;
    if (en) {
        an_engine_stats_get(en, &st);
        CHECK(st.requests_done == (uint64_t)n && st.queued == 0 && st.running == 0 && st.slots == slots);
        uint64_t in = 0, out = 0;
        for (int k = 0; k < n; k++) in += (uint64_t)sp[k].n, out += (uint64_t)rs[k].n;
        CHECK(st.tokens_in == in && st.tokens_out == out);
    }
    an_engine_free(en);
    free(sp);
    free(rs);
    fixture_close(&f, en != NULL);
}

static void test_mix_many_slots(void) { check_mix("llama", 20, 30, 4); } /* up to 20 running: two decode forwards */
static void test_mix_few_slots(void) { check_mix("llama", 3, 14, 9); }   /* a queue, slots freed and refilled */
static void test_mix_gpt2(void) { check_mix("gpt2", 18, 24, 3); } /* layernorm, fused qkv, learned positions */

/* (b) */
static void test_cancel(void) {
    fixture f;
    if (fixture_open(&f)) return fixture_close(&f, 0);
    an_engine_config c = an_engine_config_default();
    c.slots = 1;
    c.max_rank = 8;
    an_engine *en = engine_open(&f, c);
    if (!en) return fixture_close(&f, 0);
    spec sp[4];
    make_mix(sp, 4, 1);
    for (int k = 0; k < 4; k++) sp[k].max_tokens = 20, sp[k].n_stop = 0, sp[k].min_tokens = 0;
    rec rs[4];
    memset(rs, 0, sizeof rs);
    rs[2].cancel_after = 3; /* cancels itself from its token callback */
    an_error e;
    for (int k = 0; k < 4; k++) {
        an_request q = make_request(&sp[k], &rs[k]);
        rs[k].e = en;
        CHECK(an_engine_submit(en, &q, &rs[k].id, &e) == AN_ENGINE_OK);
    }
    CHECK(an_engine_step(en, &e) == 4);
    CHECK(an_engine_step(en, &e) == 4);
    CHECK(rs[0].n == 3 && rs[1].n == 0);
    an_engine_cancel(en, rs[0].id); /* running */
    an_engine_cancel(en, rs[3].id); /* queued */
    an_engine_cancel(en, 9999);     /* unknown: ignored */
    CHECK(rs[0].done_calls == 0);   /* at the next step */
    an_engine_stats st;
    for (int i = 0; i < 200 && an_engine_step(en, &e) > 0; i++) {
        an_engine_stats_get(en, &st);
        CHECK(st.running <= 1);
    }
    CHECK(rs[0].done_calls == 1 && rs[0].res.stop == AN_STOP_CANCELLED && rs[0].n == 3);
    CHECK(rs[3].done_calls == 1 && rs[3].res.stop == AN_STOP_CANCELLED && rs[3].n == 0 && rs[3].res.n_tokens == 0);
    CHECK(rs[2].done_calls == 1 && rs[2].res.stop == AN_STOP_CANCELLED && rs[2].n == 3);
    /* the slot went to the queued request, which ran as it runs alone */
    CHECK(rs[1].done_calls == 1);
    same_as_reference(&f, &sp[1], &rs[1], "after a cancel", 1);
    an_engine_cancel(en, rs[1].id); /* finished: ignored */
    CHECK(an_engine_step(en, &e) == 0 && rs[1].done_calls == 1);
    an_engine_stats_get(en, &st);
    CHECK(st.requests_done == 4 && st.running == 0 && st.queued == 0);
    /* an_engine_free ends what is left, cancelled, callbacks and all */
    rec left = {0};
    an_request q = make_request(&sp[0], &left);
    CHECK(an_engine_submit(en, &q, &left.id, &e) == AN_ENGINE_OK);
    an_engine_free(en);
    CHECK(left.done_calls == 1 && left.res.stop == AN_STOP_CANCELLED);
    fixture_close(&f, 1);
}

/* (c) */
static void test_prefix_cache(void) {
    fixture f;
    if (fixture_open(&f)) return fixture_close(&f, 0);
    enum { N = 9, LEAD = 12 };
    spec sp[N];
    make_mix(sp, N, 3);
    spec lead;
    fill_prompt(&lead, LEAD, 7);
    for (int k = 0; k < N; k++) { /* the lead, then each prompt's own tokens */
        spec *s = &sp[k];
        int own = 1 + k % 6;
        memmove(s->prompt + LEAD, s->prompt + 1, sizeof(int32_t) * (size_t)own);
        memcpy(s->prompt, lead.prompt, sizeof(int32_t) * LEAD);
        s->n = LEAD + own;
        s->max_tokens = 10;
    }
    rec on[N], off[N];
    memset(on, 0, sizeof on);
    memset(off, 0, sizeof off);
    uint64_t cached = 0;
    for (int pass = 0; pass < 2; pass++) {
        fixture g;
        if (fixture_open(&g)) return fixture_close(&g, 0);
        an_engine_config c = an_engine_config_default();
        c.slots = 4;
        c.max_rank = 8;
        c.prefix_cache = pass == 0;
        an_engine *en = engine_open(&g, c);
        if (!en) return fixture_close(&g, 0);
        an_error e;
        CHECK_MSG(an_engine_add_prefix(en, lead.prompt, LEAD, &e) == 0, "%s", e.msg);
        CHECK(an_engine_add_prefix(en, lead.prompt, 5, &e) == 0); /* a shorter one: the longest match wins */
        CHECK(an_engine_add_prefix(en, lead.prompt, 0, &e) == -1);
        run_specs(en, sp, pass == 0 ? on : off, N);
        an_engine_stats st;
        an_engine_stats_get(en, &st);
        if (pass == 0) cached = st.cached_tokens;
        else CHECK(st.cached_tokens == 0);
        an_engine_free(en);
        fixture_close(&g, 1);
    }
    /* the first request of each adapter computes the prefix; the later ones take it from the cache */
    int seen[3] = {0}, hits = 0;
    double worst = 0;
    for (int k = 0; k < N; k++) {
        for (int t = 0; t < on[k].n && t < off[k].n && t < MAXTOK; t++)
            worst = test_nan_max(worst, fabs((double)on[k].lps[t] - off[k].lps[t]));
        seen[sp[k].adapter]++;
        CHECK(on[k].res.cached_tokens == 0 || on[k].res.cached_tokens == LEAD);
        hits += on[k].res.cached_tokens == LEAD;
        CHECK_MSG(on[k].n == off[k].n && memcmp(on[k].ids, off[k].ids, sizeof(int32_t) * (size_t)on[k].n) == 0 &&
                      on[k].res.stop == off[k].res.stop,
                  "request %d: %d tokens with the prefix cache, %d without", k, on[k].n, off[k].n);
        same_as_reference(&f, &sp[k], &off[k], "no prefix cache", k);
    }
    /* one computation per adapter (the lookup runs as each prompt is prefilled, so the second request
     * of an adapter admitted in the same step already finds it) */
    CHECK(hits == N - (seen[0] > 0) - (seen[1] > 0) - (seen[2] > 0));
    CHECK(cached == (uint64_t)hits * LEAD && cached > 0);
    /* the rest of a prompt runs through other kernels (an_infer_extend): its logits agree with a whole
     * prefill to float rounding (~1e-6 here, a 2-layer model of width 32), not bit for bit; a KV at
     * wrong positions or of another adapter would be off by 0.1 and more */
    CHECK_MSG(worst < 1e-4, "the prefix cache moves a log-probability by %.3g", worst);
    printf("prefix cache: %d of %d requests took %d cached tokens, tokens as without it, log-probabilities within "
           "%.3g\n", hits, N, LEAD, worst);
    fixture_close(&f, 0);
}

/* (d) */
#define EDIT(name, body) static void name(an_request *x) { body; }
EDIT(empty, x->n_ids = 0)
EDIT(no_ids, x->ids = NULL)
EDIT(too_long, x->n_ids = 32)
EDIT(unknown_adapter, x->adapter = "three")
EDIT(neg_temp, x->sampling.temperature = -1)
EDIT(top_p0, x->sampling.top_p = 0)
EDIT(no_tokens, x->max_tokens = 0)
EDIT(min_over, x->min_tokens = x->max_tokens + 1)
EDIT(neg_sample, x->sample = -1)
EDIT(stops_null, x->n_stop_ids = 3; x->stop_ids = NULL)
#undef EDIT

struct bad {
    const char *want;
    void (*edit)(an_request *);
};

static void test_busy_and_invalid(void) {
    fixture f;
    if (fixture_open(&f)) return fixture_close(&f, 0);
    an_engine_config c = an_engine_config_default();
    c.slots = 1;
    c.max_queue = 2;
    c.max_rank = 8;
    c.context = 32;
    an_engine *en = engine_open(&f, c);
    if (!en) return fixture_close(&f, 0);
    spec s;
    make_mix(&s, 1, 1);
    s.n = 5;
    rec r[4];
    memset(r, 0, sizeof r);
    an_error e;
    int64_t id;
    for (int k = 0; k < 2; k++) {
        an_request q = make_request(&s, &r[k]);
        CHECK(an_engine_submit(en, &q, &id, &e) == AN_ENGINE_OK && id > 0);
    }
    an_request q = make_request(&s, &r[2]);
    e.msg[0] = 0;
    CHECK(an_engine_submit(en, &q, &id, &e) == AN_ENGINE_BUSY && id == 0 && strstr(e.msg, "queue is full"));
    CHECK(an_engine_step(en, &e) == 2); /* one admitted: room in the queue again */
    CHECK(an_engine_submit(en, &q, &id, &e) == AN_ENGINE_OK);
    an_engine_stats st;
    an_engine_stats_get(en, &st);
    CHECK(st.queued == 2 && st.running == 1);

    static int32_t big[40];
    for (int i = 0; i < 40; i++) big[i] = 1;
    big[3] = 256;
    const struct bad bads[] = {
        {"empty", empty},           {"empty", no_ids},         {"leaves no room", too_long},
        {"no adapter named", unknown_adapter}, {"--temperature", neg_temp}, {"--top-p", top_p0},
        {"max_tokens", no_tokens},  {"min_tokens", min_over},  {"sample", neg_sample},
        {"stop ids", stops_null},
    };
    for (size_t k = 0; k < sizeof bads / sizeof bads[0]; k++) {
        an_request x = make_request(&s, &r[3]);
        bads[k].edit(&x);
        e.msg[0] = 0;
        CHECK_MSG(an_engine_submit(en, &x, &id, &e) == AN_ENGINE_INVALID && strstr(e.msg, bads[k].want),
                  "case %zu: \"%s\" lacks \"%s\"", k, e.msg, bads[k].want);
    }
    an_request x = make_request(&s, &r[3]);
    x.ids = big;
    x.n_ids = 5;
    CHECK(an_engine_submit(en, &x, &id, &e) == AN_ENGINE_INVALID && strstr(e.msg, "vocabulary"));
    CHECK(an_engine_submit(en, NULL, &id, &e) == AN_ENGINE_INVALID);
    CHECK(r[3].done_calls == 0); /* a refused request never calls back */
    /* bad configurations and adapters */
    CHECK(an_engine_add_adapter(en, "one", f.lora[1], &e) == -1 && strstr(e.msg, "already"));
    CHECK(an_engine_add_adapter(en, "", f.lora[1], &e) == -1);
    CHECK(an_engine_remove_adapter(en, "nine", &e) == -1 && strstr(e.msg, "nine"));
    static const char *const all[] = {"all-linear"};
    an_lora *big_rank = random_adapter(f.m, 16, all, 1, 44); /* above the engine's max_rank 8 */
    CHECK(big_rank && an_engine_add_adapter(en, "big", big_rank, &e) == -1 && strstr(e.msg, "max_rank"));
    an_lora_free(big_rank); /* refused: still the caller's */
    an_model *other = load_fixture_model("gpt2");
    an_lora *foreign = other ? random_adapter(other, 2, all, 1, 55) : NULL;
    CHECK(foreign && an_engine_add_adapter(en, "foreign", foreign, &e) == -1 && strstr(e.msg, "another base"));
    an_lora_free(foreign);
    an_model_free(other);
    an_engine_config bad = c;
    bad.slots = 0;
    CHECK(an_engine_create(f.m, &bad, &e) == NULL && strstr(e.msg, "slots"));
    bad = c;
    bad.threads = -1;
    CHECK(an_engine_create(f.m, &bad, &e) == NULL && strstr(e.msg, "threads"));
    bad = c;
    bad.max_queue = -1;
    CHECK(an_engine_create(f.m, &bad, &e) == NULL && strstr(e.msg, "max_queue"));
    while (an_engine_step(en, &e) > 0) {}
    CHECK(r[0].done_calls == 1 && r[1].done_calls == 1 && r[2].done_calls == 1);
    rec far = {0};
    an_request fq = make_request(&s, &far);
    fq.sample = 0x7fffffff; /* the largest sample index: its stream's seed is computed without overflow */
    CHECK(an_engine_submit(en, &fq, &id, &e) == AN_ENGINE_OK);
    while (an_engine_step(en, &e) > 0) {}
    CHECK(far.done_calls == 1 && far.n > 0);
    an_engine_free(en);
    fixture_close(&f, 1);
}

/* (e) */
static void test_remove_adapter_in_use(void) {
    fixture f;
    if (fixture_open(&f)) return fixture_close(&f, 0);
    an_engine_config c = an_engine_config_default();
    c.slots = 2;
    c.max_rank = 8;
    an_engine *en = engine_open(&f, c);
    if (!en) return fixture_close(&f, 0);
    spec s[2];
    make_mix(s, 2, 1);
    s[0].adapter = s[1].adapter = 2;
    s[0].max_tokens = s[1].max_tokens = 15;
    s[0].n_stop = s[1].n_stop = 0;
    an_gen_output ref[2] = {{0}};
    for (int k = 0; k < 2; k++) reference(&f, &s[k], &ref[k]); /* before the adapter goes */
    rec r[3];
    memset(r, 0, sizeof r);
    an_error e;
    an_request q0 = make_request(&s[0], &r[0]), q1 = make_request(&s[1], &r[1]);
    CHECK(an_engine_submit(en, &q0, &r[0].id, &e) == AN_ENGINE_OK);
    CHECK(an_engine_step(en, &e) == 1);
    CHECK(an_engine_submit(en, &q1, &r[1].id, &e) == AN_ENGINE_OK); /* queued, not yet running */
    CHECK_MSG(an_engine_remove_adapter(en, "two", &e) == 0, "%s", e.msg);
    an_request q2 = make_request(&s[0], &r[2]);
    CHECK(an_engine_submit(en, &q2, &r[2].id, &e) == AN_ENGINE_INVALID && strstr(e.msg, "two"));
    char *names[4] = {0};
    CHECK(an_engine_adapters(en, names, 4) == 1 && names[0] && strcmp(names[0], "one") == 0);
    free(names[0]);
    while (an_engine_step(en, &e) > 0) {}
    for (int k = 0; k < 2; k++) {
        CHECK(r[k].done_calls == 1);
        CHECK_MSG(r[k].n == ref[k].n && memcmp(r[k].ids, ref[k].ids, sizeof(int32_t) * (size_t)ref[k].n) == 0 &&
                      r[k].res.stop == ref[k].stop,
                  "request %d on the removed adapter: %d tokens, alone %d", k, r[k].n, ref[k].n);
        free(ref[k].ids);
    }
    CHECK(r[2].done_calls == 0);
    an_engine_free(en);
    fixture_close(&f, 1);
}

/* Every way a request ends besides EOS and max_tokens: on_token returning non-zero (CALLER, the token
 * kept), the context (CONTEXT, as an_generate with the same context), and a model whose logits are
 * not numbers for that request's adapter (ERROR with the sampler's message, the others unaffected). */
static void test_stops(void) {
    fixture f;
    if (fixture_open(&f)) return fixture_close(&f, 0);
    an_lora *nan_adapter = random_adapter(f.m, 2, (const char *const[]){"all-linear"}, 1, 33);
    for (int i = 0; nan_adapter && i < nan_adapter->n_mods; i++) {
        an_param *bt = &nan_adapter->mods[i].bt;
        float *h = malloc(sizeof(float) * bt->numel);
        for (size_t k = 0; k < bt->numel; k++) h[k] = NAN;
        f.m->ops->upload(f.m->ops, bt->data, h, sizeof(float) * bt->numel);
        free(h);
    }
    an_engine_config c = an_engine_config_default();
    c.slots = 4;
    c.max_rank = 8;
    c.context = 20;
    an_engine *en = engine_open(&f, c);
    an_error e;
    CHECK(en && nan_adapter && an_engine_add_adapter(en, "nan", nan_adapter, &e) == 0);
    if (!en) return fixture_close(&f, 0);
    spec s[3];
    make_mix(s, 3, 1);
    for (int k = 0; k < 3; k++) s[k].n = 10, s[k].max_tokens = 50, s[k].n_stop = 0, s[k].min_tokens = 0;
    rec r[3];
    memset(r, 0, sizeof r);
    r[0].stop_after = 4;
    for (int k = 0; k < 3; k++) {
        an_request q = make_request(&s[k], &r[k]);
        if (k == 2) q.adapter = "nan";
        CHECK(an_engine_submit(en, &q, &r[k].id, &e) == AN_ENGINE_OK);
    }
    while (an_engine_step(en, &e) > 0) {}
    CHECK(r[0].done_calls == 1 && r[0].res.stop == AN_STOP_CALLER && r[0].n == 4 && r[0].res.n_tokens == 4);
    CHECK(r[1].done_calls == 1 && r[1].res.stop == AN_STOP_CONTEXT && r[1].n == 20 - 10 + 1);
    CHECK(r[2].done_calls == 1 && r[2].res.stop == AN_STOP_ERROR && r[2].n == 0);
    CHECK_MSG(r[2].message[0] && strstr(r[2].message, "NaN"), "the error message: \"%s\"", r[2].message);
    /* the context stop is an_generate's with the same context */
    an_gen_opts o = an_gen_defaults();
    o.sampling = s[1].sampling;
    o.seed = s[1].seed;
    o.max_tokens = 50;
    o.context = 20;
    o.n_samples = s[1].sample + 1;
    o.batch = 1;
    an_gen_prompt p = {s[1].prompt, s[1].n};
    an_gen_output out[3] = {{0}};
    CHECK_MSG(an_generate(f.m, f.lora[s[1].adapter], &p, 1, -1, &o, out, &e) == 0, "%s", e.msg);
    an_gen_output *ref = &out[s[1].sample];
    CHECK(ref->stop == AN_STOP_CONTEXT && ref->n == r[1].n &&
          memcmp(ref->ids, r[1].ids, sizeof(int32_t) * (size_t)ref->n) == 0);
    an_gen_outputs_free(out, o.n_samples);
    an_engine_free(en);
    fixture_close(&f, 1);
}

/* The step's prefill budget: prompts of 8 tokens with prefill_tokens 10 are admitted one per step (the
 * running ones decode meanwhile), a prompt over the budget still runs alone in its step, and every
 * request's tokens stay an_generate's. */
static void test_prefill_budget(void) {
    fixture f;
    if (fixture_open(&f)) return fixture_close(&f, 0);
    an_engine_config c = an_engine_config_default();
    c.slots = 4;
    c.max_rank = 8;
    c.prefill_tokens = 10;
    an_engine *en = engine_open(&f, c);
    if (!en) return fixture_close(&f, 0);
    enum { N = 4 };
    spec sp[N];
    make_mix(sp, N, 1);
    for (int k = 0; k < N; k++)
        sp[k].n = k == 3 ? 14 : 8, sp[k].max_tokens = 12, sp[k].n_stop = 0, sp[k].min_tokens = 0;
    rec rs[N];
    memset(rs, 0, sizeof rs);
    an_error e;
    for (int k = 0; k < N; k++) {
        an_request q = make_request(&sp[k], &rs[k]);
        CHECK(an_engine_submit(en, &q, &rs[k].id, &e) == AN_ENGINE_OK);
    }
    for (int step = 1; step <= N; step++) {
        CHECK(an_engine_step(en, &e) == N);
        an_engine_stats st;
        an_engine_stats_get(en, &st);
        CHECK_MSG(st.running == step && st.queued == N - step, "step %d: %d running, %d queued", step, st.running,
                  st.queued);
    }
    while (an_engine_step(en, &e) > 0) {}
    for (int k = 0; k < N; k++) same_as_reference(&f, &sp[k], &rs[k], "prefill budget", k);
    an_engine_free(en);
    fixture_close(&f, 1);
}

/* (f) */
typedef struct shared {
    an_engine *en;
    spec *sp;
    rec *rs;
    int n;
    int submitted; /* written by the submitting thread before it ends; read after the join */
} shared;

static void *submitter(void *arg) {
    shared *s = arg;
    an_error e;
    for (int k = 0; k < s->n; k++) {
        an_request q = make_request(&s->sp[k], &s->rs[k]);
        s->rs[k].e = s->en;
        if (k % 7 == 3) s->rs[k].cancel_after = 2;
        an_engine_status st;
        while ((st = an_engine_submit(s->en, &q, &s->rs[k].id, &e)) == AN_ENGINE_BUSY) {
            struct timespec t = {0, 200000};
            nanosleep(&t, NULL);
        }
        if (st != AN_ENGINE_OK) return NULL;
        if (k % 5 == 1) an_engine_cancel(s->en, s->rs[k].id);
        if (k % 3 == 0) {
            struct timespec t = {0, 300000};
            nanosleep(&t, NULL);
        }
    }
    s->submitted = s->n;
    return NULL;
}

static void test_threads(void) {
    fixture f;
    if (fixture_open(&f)) return fixture_close(&f, 0);
    an_engine_config c = an_engine_config_default();
    c.slots = 5;
    c.max_queue = 4;
    c.max_rank = 8;
    c.threads = omp_get_max_threads(); /* what the references below run with */
    an_engine *en = engine_open(&f, c);
    if (!en) return fixture_close(&f, 0);
    enum { N = 24 };
    spec sp[N];
    rec rs[N];
    memset(rs, 0, sizeof rs);
    make_mix(sp, N, 1);
    shared sh = {en, sp, rs, N, 0};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, submitter, &sh) == 0);
    /* the engine thread: wait for work, step, until every request has called back */
    an_error e;
    for (int guard = 0; guard < 100000; guard++) {
        an_engine_stats st;
        an_engine_stats_get(en, &st);
        if (st.requests_done == N) break;
        if (an_engine_wait(en, 50)) CHECK(an_engine_step(en, &e) >= 0);
    }
    pthread_join(t, NULL);
    CHECK(sh.submitted == N);
    int cancelled = 0, exact = 0;
    for (int k = 0; k < N; k++) {
        CHECK_MSG(rs[k].done_calls == 1, "request %d: on_done %d times", k, rs[k].done_calls);
        if (rs[k].res.stop == AN_STOP_CANCELLED) {
            cancelled++;
            continue;
        }
        exact += same_as_reference(&f, &sp[k], &rs[k], "threads", k);
    }
    printf("threads: %d requests, %d cancelled, %d of the others exactly as alone\n", N, cancelled, exact);
    CHECK(cancelled >= 3); /* the ones that cancel themselves from their callback at 2 tokens */
    an_engine_wake(en);
    CHECK(an_engine_wait(en, 0) == 0);
    an_engine_free(en);
    fixture_close(&f, 1);
}

int main(void) {
    RUN(test_mix_many_slots);
    RUN(test_mix_few_slots);
    RUN(test_mix_gpt2);
    RUN(test_cancel);
    RUN(test_prefix_cache);
    RUN(test_busy_and_invalid);
    RUN(test_remove_adapter_in_use);
    RUN(test_stops);
    RUN(test_prefill_budget);
    RUN(test_threads);
    return test_finish();
}
