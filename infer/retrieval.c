/* The tf-idf index over prompt tags: build, top-k queries with source exclusion (see retrieval.h).
 * Saving and loading are in retrieval_io.c. */
#include "infer/retrieval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/prompts/prompt_syntax.h"
#include "infer/retrieval_impl.h"

static int tags_of(const char *text, an_tags *out, an_error *err) {
    return an_prompt_tags(text ? text : "", AN_PROMPT_A1111, NULL, out, err);
}

void an_tfidf_free(an_tfidf *ix) {
    if (!ix) return;
    an_strmap_free(&ix->vocab);
    an_strmap_free(&ix->srcmap);
    free(ix->terms);
    free(ix->sources);
    free(ix->doc_src);
    free(ix->idf);
    free(ix->norm);
    free(ix->post_off);
    free(ix->post);
    free(ix);
}

size_t an_tfidf_n_docs(const an_tfidf *ix) { return ix->n_docs; }
size_t an_tfidf_n_terms(const an_tfidf *ix) { return ix->n_terms; }

/* Names in id order from a map (the map owns the strings). */
static const char **names_of(const an_strmap *m, size_t n) {
    const char **v = calloc(n ? n : 1, sizeof *v);
    if (!v) return NULL;
    for (size_t j = 0; j < m->cap; j++)
        if (m->keys[j]) v[m->vals[j] - 1] = m->keys[j];
    return v;
}

int an_tfidf_finish(an_tfidf *ix) {
    size_t T = ix->n_terms, N = ix->n_docs;
    ix->idf = malloc((T + 1) * sizeof *ix->idf);
    ix->norm = calloc(N + 1, sizeof *ix->norm);
    ix->terms = names_of(&ix->vocab, T);
    ix->sources = names_of(&ix->srcmap, ix->n_sources);
    if (!ix->idf || !ix->norm || !ix->terms || !ix->sources) return -1;
    /* one order for the sums, terms ascending then documents ascending, at build and load alike */
    for (size_t t = 0; t < T; t++) {
        double df = (double)(ix->post_off[t + 1] - ix->post_off[t]);
        double w = log((1.0 + (double)N) / (1.0 + df)) + 1.0;
        ix->idf[t] = w;
        for (size_t k = ix->post_off[t]; k < ix->post_off[t + 1]; k++) ix->norm[ix->post[k]] += w * w;
    }
    for (size_t d = 0; d < N; d++) ix->norm[d] = sqrt(ix->norm[d]);
    return 0;
}

an_tfidf *an_tfidf_build(const char *const *texts, size_t n, an_error *err) {
    return an_tfidf_build_src(texts, NULL, n, err);
}

an_tfidf *an_tfidf_build_src(const char *const *texts, const char *const *sources, size_t n, an_error *err) {
    an_tfidf *ix = calloc(1, sizeof *ix);
    size_t **doc_terms = calloc(n ? n : 1, sizeof *doc_terms);
    size_t *doc_len = calloc(n ? n : 1, sizeof *doc_len);
    size_t *fill = NULL;
    size_t total = 0;
    if (!ix || !doc_terms || !doc_len) goto oom;
    ix->n_docs = n;
    ix->doc_src = calloc(n ? n : 1, sizeof *ix->doc_src);
    if (!ix->doc_src) goto oom;
    for (size_t d = 0; d < n; d++) {
        if (sources && sources[d]) {
            size_t *val;
            int r = an_strmap_get(&ix->srcmap, sources[d], strlen(sources[d]), &val);
            if (r < 0) goto oom;
            if (r == 1) *val = ++ix->n_sources;
            ix->doc_src[d] = *val;
        }
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
    fill = calloc(T + 1, sizeof *fill);
    ix->post_off = calloc(T + 2, sizeof *ix->post_off);
    ix->post = malloc((total + 1) * sizeof *ix->post);
    if (!fill || !ix->post_off || !ix->post) goto oom;
    for (size_t d = 0; d < n; d++)
        for (size_t i = 0; i < doc_len[d]; i++) ix->post_off[doc_terms[d][i] + 1]++;
    for (size_t t = 0; t < T; t++) ix->post_off[t + 1] += ix->post_off[t];
    for (size_t d = 0; d < n; d++) /* documents ascending: each posting list comes out sorted */
        for (size_t i = 0; i < doc_len[d]; i++) {
            size_t t = doc_terms[d][i];
            ix->post[ix->post_off[t] + fill[t]++] = d;
        }
    if (an_tfidf_finish(ix)) goto oom;
    for (size_t d = 0; d < n; d++) free(doc_terms[d]);
    free(doc_terms);
    free(doc_len);
    free(fill);
    return ix;
oom:
    an_fail(err, "tf-idf: out of memory");
fail:
    for (size_t d = 0; doc_terms && d < n; d++) free(doc_terms[d]);
    free(doc_terms);
    free(doc_len);
    free(fill);
    an_tfidf_free(ix);
    return NULL;
}

/* Read-only probe of a map (an_strmap_get would insert); its value or 0 when absent. */
static size_t lookup(const an_strmap *m, const char *key) {
    size_t len = strlen(key);
    if (!m->cap) return 0;
    for (size_t j = an_hash_bytes(key, len) & (m->cap - 1); m->keys[j]; j = (j + 1) & (m->cap - 1))
        if (m->lens[j] == len && !memcmp(m->keys[j], key, len)) return m->vals[j];
    return 0;
}

long an_tfidf_topk(const an_tfidf *ix, const char *query, const char *exclude_source, size_t k, long *idx,
                   double *score, an_error *err) {
    if (k == 0) return 0;
    an_tags q;
    if (tags_of(query, &q, err)) return -1;
    double *dot = calloc(ix->n_docs + 1, sizeof *dot);
    double *top = malloc(k * sizeof *top);
    if (!dot || !top) {
        an_tags_free(&q);
        free(dot);
        free(top);
        an_fail(err, "tf-idf: out of memory");
        return -1;
    }
    /* query terms outside the vocabulary have no idf (as in scikit-learn's transform): ignored */
    double qn = 0;
    for (size_t i = 0; i < q.n; i++) {
        size_t val = lookup(&ix->vocab, q.v[i]);
        if (!val) continue;
        size_t t = val - 1;
        double w = ix->idf[t];
        qn += w * w;
        for (size_t p = ix->post_off[t]; p < ix->post_off[t + 1]; p++) dot[ix->post[p]] += w * w;
    }
    an_tags_free(&q);
    /* the excluded source's id; SIZE_MAX (matches nothing) when it is not in the index */
    size_t ex = exclude_source ? lookup(&ix->srcmap, exclude_source) : 0;
    if (exclude_source && !ex) ex = (size_t)-1;
    qn = sqrt(qn);
    size_t m = 0; /* kept so far, top[0..m) descending; documents arrive ascending, so an equal score
                     lands after the ones kept before it and ties stay ordered by index */
    for (size_t d = 0; d < ix->n_docs; d++) {
        if (!(dot[d] > 0)) continue;
        if (exclude_source && ix->doc_src[d] == ex) continue;
        double c = dot[d] / (qn * ix->norm[d]);
        if (!(c > 0)) continue;
        if (m == k && !(c > top[k - 1])) continue;
        size_t pos = m < k ? m : k - 1;
        while (pos > 0 && c > top[pos - 1]) {
            top[pos] = top[pos - 1];
            idx[pos] = idx[pos - 1];
            pos--;
        }
        top[pos] = c;
        idx[pos] = (long)d;
        if (m < k) m++;
    }
    if (score)
        for (size_t i = 0; i < m; i++) score[i] = top[i];
    free(dot);
    free(top);
    return (long)m;
}

long an_tfidf_nearest(const an_tfidf *ix, const char *query, double *score, an_error *err) {
    long best;
    *score = 0;
    long m = an_tfidf_topk(ix, query, NULL, 1, &best, score, err);
    if (m < 0) return -2;
    if (m == 0) {
        *score = 0;
        return -1;
    }
    return best;
}
