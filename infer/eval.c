/* Tag precision / recall / F1, and picking one negative among several by agreement (see eval.h). */
#include "infer/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/prompts/prompt_syntax.h"

const char an_eval_general_negative[] =
    "lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, worst "
    "quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry, artist name";

static int tags_of(const char *text, an_tags *out, an_error *err) {
    return an_prompt_tags(text ? text : "", AN_PROMPT_A1111, NULL, out, err);
}

int an_eval_score(const char *pred, const char *ref, an_tag_score *out, an_error *err) {
    an_tags p, r;
    if (tags_of(pred, &p, err)) return -1;
    if (tags_of(ref, &r, err)) {
        an_tags_free(&p);
        return -1;
    }
    size_t common = 0;
    for (size_t i = 0; i < p.n; i++) /* tag lists are short (tens): quadratic is fine */
        for (size_t j = 0; j < r.n; j++)
            if (!strcmp(p.v[i], r.v[j])) {
                common++;
                break;
            }
    out->n_pred = p.n;
    out->n_ref = r.n;
    out->n_common = common;
    if (p.n == 0 && r.n == 0) {
        out->precision = out->recall = out->f1 = 1.0;
    } else {
        out->precision = p.n ? (double)common / (double)p.n : 0.0;
        out->recall = r.n ? (double)common / (double)r.n : 0.0;
        double s = out->precision + out->recall;
        out->f1 = s > 0 ? 2 * out->precision * out->recall / s : 0.0;
    }
    an_tags_free(&p);
    an_tags_free(&r);
    return 0;
}

int an_eval_mbr_pick(const char *const *cands, int n, int *best, an_error *err) {
    if (n < 1) return an_fail(err, "eval: no candidate to choose from");
    double top = -1;
    *best = 0;
    for (int j = 0; j < n; j++) {
        double sum = 0;
        for (int k = 0; k < n; k++) {
            if (k == j) continue;
            an_tag_score sc;
            if (an_eval_score(cands[j], cands[k], &sc, err)) return -1;
            sum += sc.f1;
        }
        if (sum > top) {
            top = sum;
            *best = j;
        }
    }
    return 0;
}

int an_eval_consensus_pick(const char *const *negs, const double *sims, int n, int *best, double *agree,
                           an_error *err) {
    if (n < 1) return an_fail(err, "eval: no neighbour to choose from");
    double top = -1;
    *best = 0;
    for (int j = 0; j < n; j++) {
        double sum = 0;
        for (int i = 0; i < n; i++) {
            double w = sims[i];
            if (i == j || !(w > 0) || !isfinite(w)) continue; /* NaN, negative, infinite: no weight */
            an_tag_score sc;
            if (an_eval_score(negs[j], negs[i], &sc, err)) return -1;
            sum += w * sc.f1;
        }
        if (sum > top) {
            top = sum;
            *best = j;
        }
    }
    if (agree) *agree = top;
    return 0;
}

/* a tag of the vote: where it first appeared (for ties) and its summed weight */
typedef struct voted {
    const char *tag;
    size_t first;
    double vote;
} voted;

static int by_vote(const void *a, const void *b) {
    const voted *x = a, *y = b;
    if (x->vote != y->vote) return x->vote > y->vote ? -1 : 1;
    return x->first < y->first ? -1 : x->first > y->first;
}

int an_eval_tag_vote(const char *const *negs, const double *sims, int n, char **out, an_error *err) {
    *out = NULL;
    if (n < 1) return an_fail(err, "eval: no neighbour to vote");
    an_tags *tags = calloc((size_t)n, sizeof *tags);
    double *w = malloc((size_t)n * sizeof *w);
    voted *v = NULL;
    size_t nv = 0, total_tags = 0;
    int rc = -1;
    if (!tags || !w) {
        an_fail(err, "eval: out of memory");
        goto done;
    }
    double wsum = 0;
    for (int i = 0; i < n; i++) {
        double s = sims[i];
        w[i] = s > 0 && isfinite(s) ? s * s : 0.0; /* NaN, negative, infinite: no weight */
        wsum += w[i];
    }
    for (int i = 0; i < n; i++) {
        if (wsum <= 0) w[i] = 1.0;
        if (tags_of(negs[i], &tags[i], err)) goto done;
        total_tags += tags[i].n;
    }
    if (wsum <= 0) wsum = n;
    v = malloc((total_tags + 1) * sizeof *v);
    if (!v) {
        an_fail(err, "eval: out of memory");
        goto done;
    }
    double expected = 0;
    for (int i = 0; i < n; i++) {
        expected += w[i] * (double)tags[i].n;
        for (size_t j = 0; j < tags[i].n; j++) { /* a few hundred tags at most: quadratic is fine */
            size_t k = 0;
            while (k < nv && strcmp(v[k].tag, tags[i].v[j])) k++;
            if (k == nv) {
                v[nv] = (voted){tags[i].v[j], nv, 0.0};
                nv++;
            }
            v[k].vote += w[i];
        }
    }
    expected /= wsum;
    qsort(v, nv, sizeof *v, by_vote);
    size_t best_k = 0, len = 0;
    double best = 0, cum = 0;
    for (size_t k = 0; k < nv; k++) {
        cum += v[k].vote / wsum;
        double f = 2 * cum / ((double)(k + 1) + expected);
        if (f > best) best = f, best_k = k + 1;
    }
    for (size_t k = 0; k < best_k; k++) len += strlen(v[k].tag) + 2;
    if (!(*out = malloc(len + 1))) {
        an_fail(err, "eval: out of memory");
        goto done;
    }
    len = 0;
    for (size_t k = 0; k < best_k; k++) {
        size_t l = strlen(v[k].tag);
        if (k) (*out)[len++] = ',', (*out)[len++] = ' ';
        memcpy(*out + len, v[k].tag, l);
        len += l;
    }
    (*out)[len] = 0;
    rc = 0;
done:
    for (int i = 0; tags && i < n; i++) an_tags_free(&tags[i]);
    free(tags);
    free(w);
    free(v);
    return rc;
}
