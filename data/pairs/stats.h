#ifndef AN_STATS_H
#define AN_STATS_H
/* `autoneg data stats`: counts, length percentiles and the most common negative tags. */
#include <stddef.h>

#include "core/error.h"
#include "data/pairs/pairs.h"

/* Nearest-rank percentiles: pXX is the smallest length with at least XX % of the rows at or below
 * it (sorted[ceil(XX/100 * n) - 1]), so every reported value is a real length. */
typedef struct an_len_summary {
    size_t p50, p90, p99, max;
} an_len_summary;

typedef struct an_tag_count {
    char *tag;
    size_t rows; /* negatives that hold the tag (once per row) */
} an_tag_count;

/* Measures a text in some unit (tokens); 0 or -1 with err filled. */
typedef int (*an_measure_fn)(void *ctx, const char *text, size_t len, size_t *out, an_error *err);

typedef struct an_stats_opts {
    an_measure_fn tokens; /* NULL: no token lengths */
    void *tokens_ctx;
    size_t top_k;         /* 0: 20 */
} an_stats_opts;

typedef struct an_stats {
    size_t pairs, distinct_prompts, distinct_negatives, distinct_tags;
    size_t distinct_sources, without_source; /* the groups data split would use */
    an_len_summary prompt_words, negative_words, prompt_chars, negative_chars;
    int has_tokens;
    an_len_summary prompt_tokens, negative_tokens;
    an_tag_count *top;
    size_t n_top;
} an_stats;

int an_pairs_stats(const an_pairs *p, const an_stats_opts *opts, an_stats *st, an_error *err);
void an_stats_free(an_stats *st);

/* Sorts v[0..n) in place and summarises it (all zero when n == 0). */
an_len_summary an_len_summarise(size_t *v, size_t n);
/* Nearest-rank percentile of sorted[0..n), n > 0, pct in (0, 100]. */
size_t an_percentile(const size_t *sorted, size_t n, double pct);

#endif
