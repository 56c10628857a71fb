/* Tag precision / recall / F1 and the tf-idf nearest-prompt baseline (see eval.h). */
#include "infer/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/prompts/prompt_syntax.h"
#include "data/pairs/stats_strmap.h"

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

struct an_tfidf {
    an_strmap vocab;   /* tag -> id + 1 */
    size_t n_docs, n_terms;
    double *idf;       /* [n_terms] */
    double *norm;      /* [n_docs] L2 norm of each document's vector */
    size_t *post_off;  /* [n_terms + 1] into post */
    size_t *post;      /* documents containing each term, ascending */
};

void an_tfidf_free(an_tfidf *ix) {
    if (!ix) return;
    an_strmap_free(&ix->vocab);
    free(ix->idf);
    free(ix->norm);
    free(ix->post_off);
    free(ix->post);
    free(ix);
}

an_tfidf *an_tfidf_build(const char *const *texts, size_t n, an_error *err) {
    an_tfidf *ix = calloc(1, sizeof *ix);
    size_t **doc_terms = calloc(n ? n : 1, sizeof *doc_terms);
    size_t *doc_len = calloc(n ? n : 1, sizeof *doc_len);
    size_t *df = NULL;
    size_t total = 0;
    if (!ix || !doc_terms || !doc_len) goto oom;
    ix->n_docs = n;
    for (size_t d = 0; d < n; d++) {
        an_tags t;
        if (tags_of(texts[d], &t, err)) goto fail;
        doc_terms[d] = malloc((t.n ? t.n : 1) * sizeof(size_t));
        if (!doc_terms[d]) {
            an_tags_free(&t);
            goto oom;
        }
        for (size_t i = 0; i < t.n; i++) {
            size_t *val;
            int r = an_strmap_get(&ix->vocab, t.v[i], strlen(t.v[i]), &val);
            if (r < 0) {
                an_tags_free(&t);
                goto oom;
            }
            if (r == 1) *val = ++ix->n_terms;
            doc_terms[d][i] = *val - 1;
        }
        doc_len[d] = t.n; /* an_prompt_tags drops duplicates: each term once per document */
        total += t.n;
        an_tags_free(&t);
    }
    size_t T = ix->n_terms;
    df = calloc(T + 1, sizeof *df);
    ix->idf = malloc((T + 1) * sizeof *ix->idf);
    ix->norm = calloc(n + 1, sizeof *ix->norm);
    ix->post_off = calloc(T + 2, sizeof *ix->post_off);
    ix->post = malloc((total + 1) * sizeof *ix->post);
    if (!df || !ix->idf || !ix->norm || !ix->post_off || !ix->post) goto oom;
    for (size_t d = 0; d < n; d++)
        for (size_t i = 0; i < doc_len[d]; i++) df[doc_terms[d][i]]++;
    for (size_t t = 0; t < T; t++) {
        ix->idf[t] = log((1.0 + (double)n) / (1.0 + (double)df[t])) + 1.0;
        ix->post_off[t + 1] = ix->post_off[t] + df[t];
    }
    memset(df, 0, (T + 1) * sizeof *df); /* reused as fill counters */
    for (size_t d = 0; d < n; d++) {
        double s = 0;
        for (size_t i = 0; i < doc_len[d]; i++) {
            size_t t = doc_terms[d][i];
            s += ix->idf[t] * ix->idf[t];
            ix->post[ix->post_off[t] + df[t]++] = d;
        }
        ix->norm[d] = sqrt(s);
    }
    for (size_t d = 0; d < n; d++) free(doc_terms[d]);
    free(doc_terms);
    free(doc_len);
    free(df);
    return ix;
oom:
    an_fail(err, "tf-idf: out of memory");
fail:
    for (size_t d = 0; doc_terms && d < n; d++) free(doc_terms[d]);
    free(doc_terms);
    free(doc_len);
    free(df);
    an_tfidf_free(ix);
    return NULL;
}

/* Read-only probe of the map (an_strmap_get would insert). */
static const size_t *lookup(const an_strmap *m, const char *key) {
    size_t len = strlen(key);
    if (!m->cap) return NULL;
    for (size_t j = an_hash_bytes(key, len) & (m->cap - 1); m->keys[j]; j = (j + 1) & (m->cap - 1))
        if (m->lens[j] == len && !memcmp(m->keys[j], key, len)) return &m->vals[j];
    return NULL;
}

long an_tfidf_nearest(const an_tfidf *ix, const char *query, double *score, an_error *err) {
    an_tags q;
    *score = 0;
    if (tags_of(query, &q, err)) return -2;
    double *dot = calloc(ix->n_docs + 1, sizeof *dot);
    if (!dot) {
        an_tags_free(&q);
        an_fail(err, "tf-idf: out of memory");
        return -2;
    }
    /* query terms outside the vocabulary have no idf (as in scikit-learn's transform): ignored */
    double qn = 0;
    for (size_t i = 0; i < q.n; i++) {
        const size_t *val = lookup(&ix->vocab, q.v[i]);
        if (!val) continue;
        size_t t = *val - 1;
        double w = ix->idf[t];
        qn += w * w;
        for (size_t k = ix->post_off[t]; k < ix->post_off[t + 1]; k++) dot[ix->post[k]] += w * w;
    }
    an_tags_free(&q);
    long best = -1;
    double bs = 0;
    qn = sqrt(qn);
    for (size_t d = 0; d < ix->n_docs; d++) {
        if (dot[d] <= 0) continue;
        double c = dot[d] / (qn * ix->norm[d]);
        if (c > bs) bs = c, best = (long)d;
    }
    free(dot);
    *score = bs;
    return best;
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
