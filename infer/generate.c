/* Batched generation over an_infer: a slot scheduler (continuous batching) around prefill, decode
 * and the sampler. */
#include "infer/generate.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "infer/infer.h"
#include "model/lora.h"

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
    /* sampling on the backend (an_infer_sample), when it can: per running row its parameters, where
     * its generator would be after drawing u, and the token and count kept; the rows' ids */
    int on_device;
    an_sample_row *rows;
    an_rng *peek;
    int32_t *picked, *ids;
    unsigned char *seen; /* [V] marks, to list each history id once */
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

an_sample_row an_gen_sample_row(const an_sampler_params *p, an_rng *peek, const int32_t *stop_ids, int n_stop_ids,
                                int min_tokens, int n_generated, const int32_t *hist, int n_hist, int V,
                                unsigned char *seen, int32_t *ids, int *n_ids) {
    an_sample_row r = {p->temperature, p->top_p, p->min_p, p->repeat_penalty, p->top_k, an_rng_uniform(peek), *n_ids, 0,
                       0};
    if (p->repeat_penalty != 1.0f) { /* each id once, as the host's sampler penalises it once */
        for (int h = 0; h < n_hist; h++) {
            int32_t id = hist[h];
            if (id < 0 || id >= V || seen[id]) continue;
            seen[id] = 1;
            ids[(*n_ids)++] = id, r.n_penalised++;
        }
        for (int k = r.ids_at; k < *n_ids; k++) seen[ids[k]] = 0;
    }
    if (n_generated < min_tokens)
        for (int k = 0; k < n_stop_ids; k++) ids[(*n_ids)++] = stop_ids[k], r.n_masked++;
    return r;
}

static void finish(gen *g, int j, an_stop_reason why) {
    job *jb = &g->jobs[j];
    g->out[j].stop = why;
    jb->done = 1;
    if (jb->slot >= 0) an_infer_reset_slot(g->inf, jb->slot);
    jb->slot = -1;
}

/* Sequence j goes on with id (from the sampler: -1 when it finds none to draw, logits that are not
 * numbers, which ends the whole run with that error rather than emit a garbage id). */
static int accept_token(gen *g, int j, int32_t id, an_error *err) {
    job *jb = &g->jobs[j];
    an_gen_output *out = &g->out[j];
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

/* The next token of sequence j from its logits (host memory), by the host's sampler. */
static int take_token(gen *g, int j, const float *logits, an_error *err) {
    job *jb = &g->jobs[j];
    int32_t id = an_gen_pick(g->smp, &g->o->sampling, logits, g->masked, g->o->stop_ids, g->o->n_stop_ids,
                             g->o->min_tokens, g->out[j].n, jb->hist, (size_t)(jb->used + g->out[j].n), &jb->rng);
    return accept_token(g, j, id, err);
}

/* The next token of sequences which[0 .. n) from the logits the last forward left on the backend, as
 * take_token would draw them: each row's parameters, u from a copy of its generator (kept when the
 * sampler used it, i.e. kept more than one token), its history's distinct ids for the penalty and,
 * below min_tokens, the stop ids to mask. */
static int take_tokens_on_device(gen *g, const int *which, int n, an_error *err) {
    int n_ids = 0;
    for (int i = 0; i < n; i++) {
        job *jb = &g->jobs[which[i]];
        int done = g->out[which[i]].n;
        g->peek[i] = jb->rng;
        g->rows[i] = an_gen_sample_row(&g->o->sampling, &g->peek[i], g->o->stop_ids, g->o->n_stop_ids, g->o->min_tokens,
                                       done, jb->hist, jb->used + done, g->m->cfg.vocab_size, g->seen, g->ids, &n_ids);
    }
    if (an_infer_sample(g->inf, n, g->rows, g->ids, n_ids, g->picked, err)) return -1;
    for (int i = 0; i < n; i++) {
        if (g->picked[2 * i + 1] > 1) g->jobs[which[i]].rng = g->peek[i];
        if (accept_token(g, which[i], g->picked[2 * i], err)) return -1;
    }
    return 0;
}

uint64_t an_gen_stream_seed(uint64_t seed, int j) {
    uint64_t x = seed ^ (0x9E3779B97F4A7C15ull * ((uint64_t)j + 1)); /* j + 1 in 64 bits: no int overflow at INT_MAX */
    x ^= x >> 31;
    return x * 0xBF58476D1CE4E5B9ull;
}

static int run(gen *g, int J, an_error *err) {
    an_infer *inf = g->inf;
    int V = g->m->cfg.vocab_size, slots = inf->slots;
    float *logits = g->on_device ? NULL : malloc((size_t)slots * V * sizeof(float)); /* host sampling's copy */
    int32_t *sl = malloc((size_t)slots * sizeof(int32_t)), *ids = malloc((size_t)slots * sizeof(int32_t));
    int *lens = malloc((size_t)slots * sizeof(int)), *which = malloc((size_t)slots * sizeof(int));
    const int32_t **rows = malloc((size_t)slots * sizeof *rows);
    int *owner = malloc((size_t)slots * sizeof(int)); /* job running in each slot, -1 free */
    int rc = 0;
    if ((!logits && !g->on_device) || !sl || !ids || !lens || !which || !rows || !owner) {
        rc = an_fail(err, "generate: out of memory");
        goto done;
    }
    for (int k = 0; k < slots; k++) owner[k] = -1;
    int next = 0;
    for (;;) {
        /* new prompts into free slots (each prefilled in a forward of its own, below) */
        int n = 0;
        for (int k = 0; k < slots && next < J; k++) {
            if (owner[k] >= 0) continue;
            job *jb = &g->jobs[next];
            sl[n] = k;
            rows[n] = jb->hist;
            lens[n] = jb->used;
            which[n++] = next;
            owner[k] = next;
            jb->slot = k;
            next++;
        }
        if (n > 0) {
            /* one forward per prompt, as the prompt alone: OpenBLAS's rows depend on the row count, so a
             * joint [n, T] prefill would round each prompt differently with other prompts beside it */
            for (int i = 0; i < n; i++)
                if (an_infer_prefill(inf, &sl[i], &rows[i], &lens[i], 1, g->on_device ? NULL : logits + (size_t)i * V,
                                     err) ||
                    (g->on_device && take_tokens_on_device(g, &which[i], 1, err))) {
                    rc = -1;
                    goto done;
                }
            for (int i = 0; i < n && !g->on_device; i++)
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
        if (an_infer_decode(inf, sl, ids, n, g->on_device ? NULL : logits, err) ||
            (g->on_device && take_tokens_on_device(g, which, n, err))) {
            rc = -1;
            goto done;
        }
        for (int i = 0; i < n && !g->on_device; i++)
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
    gen g = {.m = m, .o = o, .jobs = calloc((size_t)J, sizeof(job)), .out = out, .max_T = max_T};
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
    int prefill = longest; /* one prompt per prefill forward */
    g.inf = an_infer_create(m, lora, slots, max_T, prefill, err);
    g.smp = g.inf ? an_sampler_create(m->cfg.vocab_size, err) : NULL;
    long long id_room = (long long)slots * (max_T + o->n_stop_ids); /* every running row's history and stop ids */
    if (g.smp && !o->host_sampling && id_room < INT_MAX) { /* (past INT_MAX: the host samples) */
        int on = an_infer_enable_sampling(g.inf, (int)id_room, err);
        g.on_device = on > 0;
        if (g.on_device) {
            g.rows = malloc((size_t)slots * sizeof *g.rows);
            g.peek = malloc((size_t)slots * sizeof *g.peek);
            g.picked = malloc(2 * (size_t)slots * sizeof *g.picked);
            g.ids = malloc(((size_t)id_room + 1) * sizeof *g.ids);
            g.seen = calloc((size_t)m->cfg.vocab_size, 1);
        }
        if (on < 0 || (g.on_device && (!g.rows || !g.peek || !g.picked || !g.ids || !g.seen))) {
            if (on >= 0) an_fail(err, "generate: out of memory");
            an_sampler_free(g.smp);
            g.smp = NULL;
        }
    }
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
    free(g.rows);
    free(g.peek);
    free(g.picked);
    free(g.ids);
    free(g.seen);
    return rc;
}
