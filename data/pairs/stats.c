/* an_pairs_stats. Tags come from the simple comma split in clean_text.c for now. */
#include "data/pairs/stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/pairs/clean.h"
#include "data/prompts/prompt_syntax.h"
#include "data/pairs/stats_strmap.h"

static int cmp_size(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

size_t an_percentile(const size_t *sorted, size_t n, double pct) {
    /* the small epsilon keeps 0.9 * 10 from rounding up to rank 10 through 9.000000000000002 */
    double r = ceil(pct / 100.0 * (double)n - 1e-9);
    size_t rank = r < 1 ? 1 : (size_t)r;
    if (rank > n) rank = n;
    return sorted[rank - 1];
}

an_len_summary an_len_summarise(size_t *v, size_t n) {
    an_len_summary s = {0, 0, 0, 0};
    if (!n) return s;
    qsort(v, n, sizeof *v, cmp_size);
    s.p50 = an_percentile(v, n, 50);
    s.p90 = an_percentile(v, n, 90);
    s.p99 = an_percentile(v, n, 99);
    s.max = v[n - 1];
    return s;
}

static int cmp_tag(const void *a, const void *b) {
    const an_tag_count *x = a, *y = b;
    if (x->rows != y->rows) return x->rows > y->rows ? -1 : 1;
    return strcmp(x->tag, y->tag);
}

void an_stats_free(an_stats *st) {
    for (size_t i = 0; i < st->n_top; i++) free(st->top[i].tag);
    free(st->top);
    st->top = NULL;
    st->n_top = 0;
}

/* Counts each distinct tag of one negative once, tags as the prompt-syntax parser normalises them
 * (weights, brackets and case removed), so "(bad hands:1.4)" and "bad hands" are one tag. */
static int count_tags(an_strmap *tags, const char *neg) {
    an_tags t = {0};
    if (an_prompt_tags(neg, AN_PROMPT_A1111, NULL, &t, NULL)) return -1;
    int rc = 0;
    for (size_t i = 0; i < t.n && rc == 0; i++) {
        size_t *v;
        if (an_strmap_get(tags, t.v[i], strlen(t.v[i]), &v) < 0) rc = -1;
        else (*v)++;
    }
    an_tags_free(&t);
    return rc;
}

int an_pairs_stats(const an_pairs *p, const an_stats_opts *opts, an_stats *st, an_error *err) {
    static const an_stats_opts none = {0};
    if (!opts) opts = &none;
    memset(st, 0, sizeof *st);
    st->pairs = p->n;
    size_t n = p->n ? p->n : 1, top_k = opts->top_k ? opts->top_k : 20;
    size_t *len[6];
    for (int k = 0; k < 6; k++) len[k] = calloc(n, sizeof(size_t));
    an_strmap prompts = {0}, negs = {0}, tags = {0}, sources = {0};
    int rc = 0;
    for (int k = 0; k < 6; k++)
        if (!len[k]) rc = an_fail(err, "data stats: out of memory");
    for (size_t i = 0; i < p->n && !rc; i++) {
        const an_pair *e = &p->v[i];
        size_t *v, pl = strlen(e->prompt), nl = strlen(e->negative);
        if (an_strmap_get(&prompts, e->prompt, pl, &v) < 0 || an_strmap_get(&negs, e->negative, nl, &v) < 0) {
            rc = an_fail(err, "data stats: out of memory");
            break;
        }
        if (!e->source) st->without_source++;
        else if (an_strmap_get(&sources, e->source, strlen(e->source), &v) < 0) {
            rc = an_fail(err, "data stats: out of memory");
            break;
        }
        len[0][i] = an_count_words(e->prompt);
        len[1][i] = an_count_words(e->negative);
        len[2][i] = an_count_chars(e->prompt);
        len[3][i] = an_count_chars(e->negative);
        if (opts->tokens && (opts->tokens(opts->tokens_ctx, e->prompt, pl, &len[4][i], err) ||
                             opts->tokens(opts->tokens_ctx, e->negative, nl, &len[5][i], err))) {
            rc = -1;
            break;
        }
        if (count_tags(&tags, e->negative)) rc = an_fail(err, "data stats: out of memory");
    }
    if (!rc) {
        st->distinct_prompts = prompts.n;
        st->distinct_negatives = negs.n;
        st->distinct_tags = tags.n;
        st->distinct_sources = sources.n;
        st->prompt_words = an_len_summarise(len[0], p->n);
        st->negative_words = an_len_summarise(len[1], p->n);
        st->prompt_chars = an_len_summarise(len[2], p->n);
        st->negative_chars = an_len_summarise(len[3], p->n);
        if (opts->tokens) {
            st->has_tokens = 1;
            st->prompt_tokens = an_len_summarise(len[4], p->n);
            st->negative_tokens = an_len_summarise(len[5], p->n);
        }
        an_tag_count *all = calloc(tags.n ? tags.n : 1, sizeof *all);
        if (!all) rc = an_fail(err, "data stats: out of memory");
        size_t k = 0;
        for (size_t i = 0; all && i < tags.cap; i++)
            if (tags.keys[i]) all[k++] = (an_tag_count){tags.keys[i], tags.vals[i]};
        if (all) {
            qsort(all, k, sizeof *all, cmp_tag);
            st->n_top = k < top_k ? k : top_k;
            st->top = calloc(st->n_top ? st->n_top : 1, sizeof *st->top);
            for (size_t i = 0; st->top && i < st->n_top; i++) {
                st->top[i].rows = all[i].rows;
                if (!(st->top[i].tag = strdup(all[i].tag))) rc = an_fail(err, "data stats: out of memory");
            }
            if (!st->top) st->n_top = 0, rc = an_fail(err, "data stats: out of memory");
            free(all);
        }
    }
    for (int k = 0; k < 6; k++) free(len[k]);

    an_strmap_free(&prompts);
    an_strmap_free(&negs);
    an_strmap_free(&tags);
    an_strmap_free(&sources);
    if (rc) an_stats_free(st);
    return rc;
}
