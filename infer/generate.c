/* Batched generation over an_infer: a slot scheduler (continuous batching) around prefill, decode
 * and the sampler. */
#include "infer/generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "infer/infer.h"
#include "model/lora.h"

/* Rows one prefill may hold beyond a single full-context prompt: enough to prefill a batch of short
 * prompts together, bounded so a large model's prefill scratch stays a few hundred MiB. */
#define AN_PREFILL_ROWS 2048

an_gen_opts an_gen_defaults(void) {
    an_gen_opts o;
    memset(&o, 0, sizeof o);
    o.sampling = an_sampler_defaults();
    o.max_tokens = 64;
    o.n_samples = 1;
    o.batch = 16;
    return o;
}

void an_gen_outputs_free(an_gen_output *out, int n) {
    if (!out) return;
    for (int i = 0; i < n; i++) {
        free(out[i].ids);
        out[i].ids = NULL;
    }
}

typedef struct job {
    int32_t *hist; /* prompt used + generated */
    int used;      /* prompt tokens in hist */
    an_rng rng;
    int slot;      /* -1 when not running */
    int done;
} job;

typedef struct gen {
    const an_model *m;
    const an_gen_opts *o;
    an_infer *inf;
    an_sampler *smp;
    float *masked; /* [V] logits with the stop ids masked, for sequences below min_tokens */
    job *jobs;
    an_gen_output *out;
    int max_T;
} gen;

int an_gen_is_stop(const int32_t *stop_ids, int n_stop_ids, int32_t id) {
    for (int i = 0; i < n_stop_ids; i++)
        if (stop_ids[i] == id) return 1;
    return 0;
}

int32_t an_gen_pick(an_sampler *smp, const an_sampler_params *p, const float *logits, float *masked,
                    const int32_t *stop_ids, int n_stop_ids, int min_tokens, int n_generated, const int32_t *hist,
                    size_t n_hist, an_rng *rng) {
    if (n_generated < min_tokens && n_stop_ids > 0) {
        /* -inf before the penalty and the softmax: it stays -inf through both and gets probability 0 */
        memcpy(masked, logits, (size_t)smp->V * sizeof(float));
        for (int i = 0; i < n_stop_ids; i++) {
            int32_t s = stop_ids[i];
            if (s >= 0 && s < smp->V) masked[s] = -INFINITY;
        }
        logits = masked;
    }
    return an_sampler_sample(smp, p, logits, hist, n_hist, rng);
}

static void finish(gen *g, int j, an_stop_reason why) {
    job *jb = &g->jobs[j];
    g->out[j].stop = why;
    jb->done = 1;
    if (jb->slot >= 0) an_infer_reset_slot(g->inf, jb->slot);
    jb->slot = -1;
}

/* The next token of sequence j from its logits; -1 when the sampler finds none to draw (logits that
 * are not numbers), which ends the whole run with that error rather than emit a garbage id. */
static int take_token(gen *g, int j, const float *logits, an_error *err) {
    job *jb = &g->jobs[j];
    an_gen_output *out = &g->out[j];
    int32_t id = an_gen_pick(g->smp, &g->o->sampling, logits, g->masked, g->o->stop_ids, g->o->n_stop_ids,
                             g->o->min_tokens, out->n, jb->hist, (size_t)(jb->used + out->n), &jb->rng);
    if (id < 0) return an_sampler_no_token(&g->o->sampling, err);
    if (an_gen_is_stop(g->o->stop_ids, g->o->n_stop_ids, id)) {
        finish(g, j, AN_STOP_EOS);
        return 0;
    }
    jb->hist[jb->used + out->n++] = id;
    if (g->o->on_token && g->o->on_token(g->o->ctx, j, id))
        finish(g, j, AN_STOP_CALLER);
    else if (out->n >= g->o->max_tokens)
        finish(g, j, AN_STOP_MAX_TOKENS);
    else if (jb->used + out->n - 1 >= g->max_T) /* no position left to feed it at */
        finish(g, j, AN_STOP_CONTEXT);
    return 0;
}

uint64_t an_gen_stream_seed(uint64_t seed, int j) {
    uint64_t x = seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(j + 1));
    x ^= x >> 31;
    return x * 0xBF58476D1CE4E5B9ull;
}

static int run(gen *g, int J, an_error *err) {
    an_infer *inf = g->inf;
    int V = g->m->cfg.vocab_size, slots = inf->slots;
    float *logits = malloc((size_t)slots * V * sizeof(float));
    int32_t *sl = malloc((size_t)slots * sizeof(int32_t)), *ids = malloc((size_t)slots * sizeof(int32_t));
    int *lens = malloc((size_t)slots * sizeof(int)), *which = malloc((size_t)slots * sizeof(int));
    const int32_t **rows = malloc((size_t)slots * sizeof *rows);
    int *owner = malloc((size_t)slots * sizeof(int)); /* job running in each slot, -1 free */
    int rc = 0;
    if (!logits || !sl || !ids || !lens || !which || !rows || !owner) {
        rc = an_fail(err, "generate: out of memory");
        goto done;
    }
    for (int k = 0; k < slots; k++) owner[k] = -1;
    int next = 0;
    for (;;) {
        /* new prompts into free slots, prefilled together while they fit the planned rows */
        int n = 0, T = 0;
        for (int k = 0; k < slots && next < J; k++) {
            if (owner[k] >= 0) continue;
            job *jb = &g->jobs[next];
            int t = jb->used > T ? jb->used : T;
            if (n > 0 && (long long)(n + 1) * t > inf->max_rows) break;
            T = t;
            sl[n] = k;
            rows[n] = jb->hist;
            lens[n] = jb->used;
            which[n++] = next;
            owner[k] = next;
            jb->slot = k;
            next++;
        }
        if (n > 0) {
            if (an_infer_prefill(inf, sl, rows, lens, n, logits, err)) {
                rc = -1;
                goto done;
            }
            for (int i = 0; i < n; i++)
                if (take_token(g, which[i], logits + (size_t)i * V, err)) {
                    rc = -1;
                    goto done;
                }
        }
        /* one decode step for every running sequence */
        n = 0;
        for (int k = 0; k < slots; k++) {
            if (owner[k] < 0) continue;
            job *jb = &g->jobs[owner[k]];
            if (jb->done) {
                owner[k] = -1;
                continue;
            }
            sl[n] = k;
            ids[n] = jb->hist[jb->used + g->out[owner[k]].n - 1];
            which[n++] = owner[k];
        }
        if (n == 0) {
            if (next >= J) break;
            continue;
        }
        if (an_infer_decode(inf, sl, ids, n, logits, err)) {
            rc = -1;
            goto done;
        }
        for (int i = 0; i < n; i++)
            if (take_token(g, which[i], logits + (size_t)i * V, err)) {
                rc = -1;
                goto done;
            }
    }
done:
    free(logits);
    free(sl);
    free(ids);
    free(lens);
    free(which);
    free(rows);
    free(owner);
    return rc;
}

int an_gen_check(const an_gen_opts *o, an_error *err) {
    if (o->max_tokens < 0) return an_fail(err, "--max-tokens %d: must be >= 0", o->max_tokens);
    if (o->min_tokens < 0) return an_fail(err, "--min-tokens %d: must be >= 0 (0 = off)", o->min_tokens);
    if (o->min_tokens > o->max_tokens)
        return an_fail(err, "--min-tokens %d: must not exceed --max-tokens %d", o->min_tokens, o->max_tokens);
    if (o->n_samples < 1 || o->n_samples > 1000000) return an_fail(err, "--n %d: must be >= 1", o->n_samples);
    return 0;
}

int an_generate(const an_model *m, const an_lora *lora, const an_gen_prompt *prompts, int n_prompts,
                int32_t bos_id, const an_gen_opts *o, an_gen_output *out, an_error *err) {
    if (an_sampler_check(&o->sampling, err)) return -1;
    if (n_prompts <= 0) return an_fail(err, "generate: no prompts");
    if (an_gen_check(o, err)) return -1;
    if (o->batch < 1) return an_fail(err, "generate: batch %d must be >= 1", o->batch);
    int ctx = m->cfg.max_seq;
    if (o->context > 0 && o->context < ctx) ctx = o->context;
    int room = o->max_tokens < ctx / 2 ? o->max_tokens : ctx / 2;
    int keep = ctx - room > 0 ? ctx - room : 1;
    int longest = 0;
    for (int p = 0; p < n_prompts; p++) {
        if (prompts[p].n <= 0) return an_fail(err, "generate: prompt %d is empty (no tokens, not even BOS)", p + 1);
        if (prompts[p].n > keep && o->strict)
            return an_fail(err,
                           "generate: prompt %d has %d tokens; with --max-tokens %d the context of %d positions "
                           "leaves it %d (--strict refuses to truncate)",
                           p + 1, prompts[p].n, o->max_tokens, ctx, keep);
        int used = prompts[p].n < keep ? prompts[p].n : keep;
        longest = used > longest ? used : longest;
    }
    int J = n_prompts * o->n_samples;
    int max_T = longest + o->max_tokens < ctx ? longest + o->max_tokens : ctx;
    gen g = {m, o, NULL, NULL, NULL, calloc((size_t)J, sizeof(job)), out, max_T};
    int rc = -1;
    g.masked = malloc((size_t)m->cfg.vocab_size * sizeof(float));
    if (!g.jobs || !g.masked) {
        an_fail(err, "generate: out of memory");
        goto done;
    }
    for (int j = 0; j < J; j++) {
        const an_gen_prompt *pr = &prompts[j / o->n_samples];
        job *jb = &g.jobs[j];
        int used = pr->n < keep ? pr->n : keep, drop = pr->n - used;
        jb->hist = malloc(((size_t)used + o->max_tokens) * sizeof(int32_t));
        if (!jb->hist) {
            an_fail(err, "generate: out of memory");
            goto done;
        }
        /* cut from the left, but keep the BOS the model expects at position 0 */
        int lead = drop > 0 && pr->ids[0] == bos_id && bos_id >= 0;
        if (lead) jb->hist[0] = bos_id;
        memcpy(jb->hist + lead, pr->ids + drop + lead, (size_t)(used - lead) * sizeof(int32_t));
        jb->used = used;
        jb->slot = -1;
        an_rng_seed(&jb->rng, an_gen_stream_seed(o->seed, j));
        memset(&out[j], 0, sizeof out[j]);
        out[j].prompt_tokens = used;
        out[j].truncated = drop;
        if (o->max_tokens == 0) {
            jb->done = 1;
            out[j].stop = AN_STOP_MAX_TOKENS;
        }
    }
    if (o->max_tokens == 0) {
        rc = 0;
        goto done;
    }
    int slots = o->batch < J ? o->batch : J;
    long long want = (long long)slots * longest;
    int prefill = want > AN_PREFILL_ROWS ? AN_PREFILL_ROWS : (int)want;
    g.inf = an_infer_create(m, lora, slots, max_T, prefill, err);
    g.smp = g.inf ? an_sampler_create(m->cfg.vocab_size, err) : NULL;
    if (g.smp) rc = run(&g, J, err);
done:
    for (int j = 0; g.jobs && j < J; j++) {
        if (rc == 0 && g.jobs[j].hist) {
            out[j].ids = malloc(((size_t)out[j].n + 1) * sizeof(int32_t));
            if (!out[j].ids) {
                rc = an_fail(err, "generate: out of memory");
            } else {
                memcpy(out[j].ids, g.jobs[j].hist + g.jobs[j].used, (size_t)out[j].n * sizeof(int32_t));
            }
        }
        free(g.jobs[j].hist);
    }
    if (rc) an_gen_outputs_free(out, g.jobs ? J : 0);
    free(g.jobs);
    free(g.masked);
    an_sampler_free(g.smp);
    an_infer_free(g.inf);
    return rc;
}
