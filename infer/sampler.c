/* The sampler (see sampler.h for the order of the steps and their meaning). */
#include "infer/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

an_sampler_params an_sampler_defaults(void) { return (an_sampler_params){1.0f, 0, 1.0f, 0.0f, 1.0f}; }

int an_sampler_check(const an_sampler_params *p, an_error *err) {
    if (!(p->temperature >= 0.0f) || isinf(p->temperature))
        return an_fail(err, "--temperature %g: must be a finite number >= 0 (0 = greedy)", (double)p->temperature);
    if (p->top_k < 0) return an_fail(err, "--top-k %d: must be >= 0 (0 = off)", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return an_fail(err, "--top-p %g: must be in (0, 1] (1 = off)", (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return an_fail(err, "--min-p %g: must be in [0, 1] (0 = off)", (double)p->min_p);
    if (!(p->repeat_penalty > 0.0f) || isinf(p->repeat_penalty))
        return an_fail(err, "--repeat-penalty %g: must be a finite number > 0 (1 = off)", (double)p->repeat_penalty);
    return 0;
}

an_sampler *an_sampler_create(int V, an_error *err) {
    an_sampler *s = calloc(1, sizeof *s);
    if (s && V > 0) {
        s->V = V;
        s->cand = malloc((size_t)V * sizeof *s->cand);
        s->prob = malloc((size_t)V * sizeof *s->prob);
        s->seen = calloc((size_t)V, 1);
    }
    if (!s || V <= 0 || !s->cand || !s->prob || !s->seen) {
        an_sampler_free(s);
        an_fail(err, "sampler: cannot allocate for a vocabulary of %d", V);
        return NULL;
    }
    return s;
}

void an_sampler_free(an_sampler *s) {
    if (!s) return;
    free(s->cand);
    free(s->prob);
    free(s->seen);
    free(s);
}

/* a before b: more likely, then the lower id (a fixed order, so ties never depend on the sort) */
static int better(const an_candidate *a, const an_candidate *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cmp_cand(const void *x, const void *y) {
    const an_candidate *a = x, *b = y;
    return better(a, b) ? -1 : better(b, a) ? 1 : 0;
}

/* The k best candidates to the front, sorted, by insertion into a running top-k list (most candidates
 * fail the first comparison with the current k-th, so this is about one pass for small k). */
static void select_top(an_candidate *c, int n, int k) {
    int have = 0;
    for (int i = 0; i < n; i++) {
        an_candidate x = c[i];
        if (have == k && !better(&x, &c[k - 1])) continue;
        int j = have < k ? have++ : k - 1;
        while (j > 0 && better(&x, &c[j - 1])) {
            c[j] = c[j - 1];
            j--;
        }
        c[j] = x;
    }
}

/* Fills s->cand[0..n) and s->prob[0..n) (normalised); returns n, 0 when no token can be drawn (see
 * sampler.h: no logit is a number, or the temperature scaled one past the float range). */
static int candidates(an_sampler *s, const an_sampler_params *p, const float *logits, const int32_t *history,
                      size_t n_history) {
    int V = s->V;
    for (int i = 0; i < V; i++) s->cand[i] = (an_candidate){logits[i], i};
    if (p->repeat_penalty != 1.0f && n_history) {
        for (size_t h = 0; h < n_history; h++) {
            int32_t id = history[h];
            if (id < 0 || id >= V || s->seen[id]) continue; /* each token once, however often it occurred */
            s->seen[id] = 1;
            float *l = &s->cand[id].logit;
            *l = *l > 0 ? *l / p->repeat_penalty : *l * p->repeat_penalty;
        }
        for (size_t h = 0; h < n_history; h++)
            if (history[h] >= 0 && history[h] < V) s->seen[history[h]] = 0;
    }
    /* a NaN logit is a token that is never drawn: as -inf it sorts last, gets probability 0, and keeps
     * better() a consistent order for qsort */
    for (int i = 0; i < V; i++)
        if (isnan(s->cand[i].logit)) s->cand[i].logit = -INFINITY;
    if (p->temperature == 0.0f) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (better(&s->cand[i], &s->cand[best])) best = i;
        if (s->cand[best].logit == -INFINITY) return 0; /* every token impossible */
        s->cand[0] = s->cand[best];
        s->prob[0] = 1.0;
        return 1;
    }
    for (int i = 0; i < V; i++) s->cand[i].logit /= p->temperature;
    int n = V;
    if (p->top_k > 0 && p->top_k < V && p->top_k <= 256) {
        select_top(s->cand, V, p->top_k);
        n = p->top_k;
    } else if (p->top_k > 0 || p->top_p < 1.0f) {
        qsort(s->cand, (size_t)V, sizeof *s->cand, cmp_cand);
        if (p->top_k > 0 && p->top_k < V) n = p->top_k;
    }
    float mx = s->cand[0].logit;
    for (int i = 1; i < n; i++) mx = s->cand[i].logit > mx ? s->cand[i].logit : mx;
    /* -inf: every token impossible; +inf: the temperature overflowed a logit, and inf - inf is NaN */
    if (!isfinite(mx)) return 0;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += s->prob[i] = exp((double)s->cand[i].logit - mx);
    for (int i = 0; i < n; i++) s->prob[i] /= sum;
    if (p->top_p < 1.0f) { /* sorted here: keep while the mass before a token is below top_p */
        double before = 0;
        int keep = 0;
        while (keep < n && before < p->top_p) before += s->prob[keep++];
        n = keep;
    }
    if (p->min_p > 0.0f) {
        double top = 0;
        for (int i = 0; i < n; i++) top = s->prob[i] > top ? s->prob[i] : top;
        int keep = 0;
        for (int i = 0; i < n; i++)
            if (s->prob[i] >= p->min_p * top) {
                s->cand[keep] = s->cand[i];
                s->prob[keep++] = s->prob[i];
            }
        n = keep;
    }
    sum = 0;
    for (int i = 0; i < n; i++) sum += s->prob[i];
    for (int i = 0; i < n; i++) s->prob[i] /= sum;
    return n;
}

int an_sampler_distribution(an_sampler *s, const an_sampler_params *p, const float *logits, const int32_t *history,
                            size_t n_history, double *probs_out) {
    int n = candidates(s, p, logits, history, n_history);
    memset(probs_out, 0, (size_t)s->V * sizeof *probs_out);
    for (int i = 0; i < n; i++) probs_out[s->cand[i].id] = s->prob[i];
    return n;
}

int32_t an_sampler_sample(an_sampler *s, const an_sampler_params *p, const float *logits, const int32_t *history,
                          size_t n_history, an_rng *rng) {
    int n = candidates(s, p, logits, history, n_history);
    if (n <= 0) return -1;
    if (n == 1) return s->cand[0].id;
    double u = (double)an_rng_uniform(rng), cum = 0;
    for (int i = 0; i < n; i++) {
        cum += s->prob[i];
        if (u < cum) return s->cand[i].id;
    }
    return s->cand[n - 1].id; /* u within rounding of 1 */
}

int an_sampler_no_token(const an_sampler_params *p, an_error *err) {
    if (p->temperature > 0.0f && p->temperature < 1e-3f)
        return an_fail(err, "sampler: no token can be drawn: --temperature %g scales the logits past the float range "
                            "or they are not numbers (use 0 for greedy decoding)", (double)p->temperature);
    return an_fail(err, "sampler: no token can be drawn: every logit is NaN or -inf (the model's weights or "
                        "activations are not finite numbers)");
}
