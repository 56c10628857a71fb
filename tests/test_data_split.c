/* data split: same seed same split, groups never straddle, the validation share is near --val. */
#include <stdlib.h>
#include <string.h>

#include "data/pairs/split.h"
#include "tests/test.h"

/* 100 sources x 10 rows, interleaved so that a source's rows are far apart in the input. */
static void make_rows(an_pairs *p) {
    char prompt[64], neg[64], src[32];
    for (int r = 0; r < 10; r++)
        for (int s = 0; s < 100; s++) {
            snprintf(prompt, sizeof prompt, "prompt %d of %d", r, s);
            snprintf(neg, sizeof neg, "negative %d", s % 7);
            snprintf(src, sizeof src, "author-%d", s);
            an_pairs_add(p, prompt, neg, src);
        }
}

static int side_of(const an_pairs *val, const char *prompt) {
    for (size_t i = 0; i < val->n; i++)
        if (!strcmp(val->v[i].prompt, prompt)) return 1;
    return 0;
}

static void test_groups_stay_together_and_repeat(void) {
    an_pairs in = {0}, tr = {0}, va = {0}, tr2 = {0}, va2 = {0};
    an_error e;
    make_rows(&in);
    CHECK(an_pairs_split(&in, 0.2, AN_SPLIT_BY_SOURCE, 7, &tr, &va, &e) == 0);
    CHECK(tr.n + va.n == 1000 && va.n > 0 && tr.n > 0);
    /* every source entirely on one side */
    for (int s = 0; s < 100; s++) {
        char src[32];
        snprintf(src, sizeof src, "author-%d", s);
        size_t in_val = 0, in_train = 0;
        for (size_t i = 0; i < va.n; i++) in_val += !strcmp(va.v[i].source, src);
        for (size_t i = 0; i < tr.n; i++) in_train += !strcmp(tr.v[i].source, src);
        CHECK_MSG((in_val == 10 && in_train == 0) || (in_val == 0 && in_train == 10), "%s: %zu val, %zu train", src,
                  in_val, in_train);
    }
    CHECK(va.n % 10 == 0);
    /* same seed: the same rows in the same order */
    CHECK(an_pairs_split(&in, 0.2, AN_SPLIT_BY_SOURCE, 7, &tr2, &va2, &e) == 0);
    CHECK(va2.n == va.n);
    for (size_t i = 0; i < va.n && i < va2.n; i++) CHECK_STR(va2.v[i].prompt, va.v[i].prompt);
    an_pairs_free(&tr2);
    an_pairs_free(&va2);
    /* another seed: another split (for 100 groups a repeat has probability far below 1e-20) */
    CHECK(an_pairs_split(&in, 0.2, AN_SPLIT_BY_SOURCE, 8, &tr2, &va2, &e) == 0);
    int differs = va2.n != va.n;
    for (size_t i = 0; !differs && i < va.n; i++) differs = strcmp(va2.v[i].prompt, va.v[i].prompt) != 0;
    CHECK(differs);
    an_pairs_free(&in);
    an_pairs_free(&tr);
    an_pairs_free(&va);
    an_pairs_free(&tr2);
    an_pairs_free(&va2);
}

static void test_by_negative_and_fallback(void) {
    an_pairs in = {0}, tr = {0}, va = {0};
    an_error e;
    make_rows(&in);
    /* sources removed: the split falls back to the negative, so equal negatives stay together */
    for (size_t i = 0; i < in.n; i++) {
        free(in.v[i].source);
        in.v[i].source = NULL;
    }
    CHECK(an_pairs_split(&in, 0.5, AN_SPLIT_BY_SOURCE, 3, &tr, &va, &e) == 0);
    for (size_t i = 0; i < va.n; i++)
        for (size_t j = 0; j < tr.n; j++) CHECK(strcmp(va.v[i].negative, tr.v[j].negative) != 0);
    CHECK(side_of(&va, "prompt 0 of 0") == side_of(&va, "prompt 9 of 7")); /* both "negative 0" */
    an_pairs_free(&in);
    an_pairs_free(&tr);
    an_pairs_free(&va);
}

static void test_share_and_edges(void) {
    /* 4000 distinct groups at val = 0.1: the count is Binomial(4000, 0.1) if the hash is uniform, mean
     * 400, sd 19; 5 sd either side is a bound a good hash passes and a broken one (all or none) fails */
    size_t n_val = 0;
    for (int g = 0; g < 4000; g++) {
        char name[32];
        snprintf(name, sizeof name, "group %d", g);
        n_val += (size_t)an_split_is_val(name, strlen(name), 0.1, 1234);
    }
    CHECK_MSG(n_val >= 305 && n_val <= 495, "%zu of 4000 in val", n_val);
    CHECK(an_split_is_val("x", 1, 0.0, 1) == 0);
    CHECK(an_split_is_val("x", 1, 1.0, 1) == 1);
    an_pairs in = {0}, tr = {0}, va = {0};
    an_error e;
    CHECK(an_pairs_split(&in, 1.5, AN_SPLIT_BY_SOURCE, 1, &tr, &va, &e) == -1);
    CHECK_CONTAINS(e.msg, "--val");
}

static void test_civitai_sources_never_straddle(void) {
    an_pairs in = {0}, tr = {0}, va = {0};
    an_error e;
    if (an_pairs_read(&in, test_shared("data/real-pairs/civitai-sfw/train.jsonl.gz"), NULL, NULL, &e)) {
        CHECK_MSG(0, "%s", e.msg);
        return;
    }
    CHECK(an_pairs_split(&in, 0.1, AN_SPLIT_BY_SOURCE, 0, &tr, &va, &e) == 0);
    CHECK(tr.n + va.n == 53093);
    /* 10511 distinct sources (Python); rows per source vary, so only a loose share check: 3%..20% */
    CHECK(va.n > 53093 * 3 / 100 && va.n < 53093 * 20 / 100);
    for (size_t i = 0; i < va.n; i++) CHECK(an_split_is_val(va.v[i].source, strlen(va.v[i].source), 0.1, 0));
    for (size_t i = 0; i < tr.n; i++) CHECK(!an_split_is_val(tr.v[i].source, strlen(tr.v[i].source), 0.1, 0));
    an_pairs_free(&in);
    an_pairs_free(&tr);
    an_pairs_free(&va);
}

int main(void) {
    RUN(test_groups_stay_together_and_repeat);
    RUN(test_by_negative_and_fallback);
    RUN(test_share_and_edges);
    RUN(test_civitai_sources_never_straddle);
    return test_finish();
}
