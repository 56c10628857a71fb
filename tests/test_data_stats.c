/* data stats: nearest-rank percentiles, distinct counts and tag counts on hand-computed inputs, and
 * the civitai pairs against numpy (method="inverted_cdf", which is the nearest-rank definition). */
#include <stdlib.h>
#include <string.h>

#include "data/pairs/stats.h"
#include "tests/test.h"

static void test_percentiles_by_hand(void) {
    size_t v[10] = {7, 3, 10, 1, 9, 2, 8, 4, 6, 5};
    an_len_summary s = an_len_summarise(v, 10);
    /* nearest rank: p50 -> rank ceil(5) = 5 -> 5; p90 -> rank 9 -> 9; p99 -> rank ceil(9.9) = 10 -> 10 */
    CHECK(s.p50 == 5 && s.p90 == 9 && s.p99 == 10 && s.max == 10);
    size_t one[1] = {42};
    s = an_len_summarise(one, 1);
    CHECK(s.p50 == 42 && s.p90 == 42 && s.p99 == 42 && s.max == 42);
    size_t two[2] = {1, 100};
    s = an_len_summarise(two, 2);
    CHECK(s.p50 == 1 && s.p90 == 100); /* rank ceil(1.0) = 1, rank ceil(1.8) = 2 */
    s = an_len_summarise(NULL, 0);
    CHECK(s.p50 == 0 && s.max == 0);
}

/* A stand-in for a tokenizer: one "token" per byte, so token lengths must equal byte lengths. */
static int bytes_as_tokens(void *ctx, const char *text, size_t len, size_t *out, an_error *err) {
    (void)err;
    (void)text;
    (*(int *)ctx)++;
    *out = len;
    return 0;
}

static void test_counts_tags_and_token_hook(void) {
    an_pairs p = {0};
    an_pairs_add(&p, "cat", "a, b", "s1");
    an_pairs_add(&p, "dog", "b, (c:1.2)", "s1");
    an_pairs_add(&p, "cat", "b, B", "s2");
    an_pairs_add(&p, "owl", "a, b", NULL);
    int calls = 0;
    an_stats_opts o = {bytes_as_tokens, &calls, 2};
    an_stats st;
    an_error e;
    CHECK(an_pairs_stats(&p, &o, &st, &e) == 0);
    CHECK(st.pairs == 4 && st.distinct_prompts == 3 && st.distinct_negatives == 3 && st.distinct_tags == 3);
    CHECK(st.distinct_sources == 2 && st.without_source == 1);
    /* rows holding each tag: b in all 4 ("b, B" counts once), a in 2, c in 1; top 2 kept */
    CHECK(st.n_top == 2);
    if (st.n_top == 2) {
        CHECK_STR(st.top[0].tag, "b");
        CHECK(st.top[0].rows == 4);
        CHECK_STR(st.top[1].tag, "a");
        CHECK(st.top[1].rows == 2);
    }
    CHECK(calls == 8 && st.has_tokens);
    /* negative byte lengths 4, 10, 4, 4 -> p50 4, p90 10, max 10; prompts all 3 bytes */
    CHECK(st.negative_tokens.p50 == 4 && st.negative_tokens.p90 == 10 && st.negative_tokens.max == 10);
    CHECK(st.prompt_tokens.max == 3);
    CHECK(st.negative_words.p50 == 2 && st.negative_chars.max == 10);
    an_stats_free(&st);
    an_pairs_free(&p);
}

static void test_civitai_against_numpy(void) {
    an_pairs p = {0};
    an_error e;
    if (an_pairs_read(&p, test_shared("data/real-pairs/civitai-sfw/train.jsonl.gz"), NULL, NULL, &e)) {
        CHECK_MSG(0, "%s", e.msg);
        return;
    }
    an_stats st;
    CHECK(an_pairs_stats(&p, NULL, &st, &e) == 0);
    /* Python: len(set(...)) over the 53093 rows; words are re.findall(r"[^ \t\n\r\v\f,]+"), characters
     * len(str); percentiles np.percentile(v, q, method="inverted_cdf") */
    CHECK(st.pairs == 53093 && st.distinct_prompts == 51740 && st.distinct_negatives == 16604);
    CHECK(st.distinct_sources == 10511 && st.without_source == 0);
    CHECK(st.prompt_words.p50 == 25 && st.prompt_words.p90 == 59 && st.prompt_words.p99 == 110 && st.prompt_words.max == 430);
    CHECK(st.negative_words.p50 == 25 && st.negative_words.p90 == 106 && st.negative_words.p99 == 363 &&
          st.negative_words.max == 3158);
    CHECK(st.prompt_chars.p50 == 202 && st.prompt_chars.p90 == 469 && st.prompt_chars.p99 == 865 &&
          st.prompt_chars.max == 2892);
    CHECK(st.negative_chars.p50 == 205 && st.negative_chars.p90 == 827 && st.negative_chars.p99 == 2746 &&
          st.negative_chars.max == 21337);
    CHECK(st.n_top == 20 && !st.has_tokens);
    an_stats_free(&st);
    an_pairs_free(&p);
}

int main(void) {
    RUN(test_percentiles_by_hand);
    RUN(test_counts_tags_and_token_hook);
    RUN(test_civitai_against_numpy);
    return test_finish();
}
