/* data clean: each rule on inputs whose expected output was worked out by hand. */
#include <stdlib.h>
#include <string.h>

#include "data/pairs/clean.h"
#include "tests/test.h"

static void check_norm(const char *in, const char *want) {
    char *got = an_clean_normalise(in);
    CHECK_STR(got, want);
    free(got);
}

static void test_normalise_commas_and_whitespace(void) {
    check_norm("a ,b,,  c", "a, b, c");
    check_norm("(x:1.2),  [y]", "(x:1.2), [y]");
    check_norm("  ,leading, trailing,  ", "leading, trailing");
    check_norm("line\nbreak\t tab", "line break tab");
    check_norm("a\xEF\xBC\x8C" "b", "a, b"); /* full-width comma U+FF0C */
    check_norm("(red hair,blue eyes:1.2), ((masterpiece))", "(red hair, blue eyes:1.2), ((masterpiece))");
    check_norm("", "");
    check_norm(" , ,, ", "");
}

static void check_cut(const char *in, const char *want) {
    size_t n = an_clean_infotext_start(in);
    CHECK_MSG(n == strlen(want) && !strncmp(in, want, n), "cut \"%s\" at %zu, expected \"%s\"", in, n, want);
}

static void test_infotext_tails(void) {
    /* the shapes seen in the civitai negatives (see docs/data.md) */
    check_cut("ugly, blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: ab12",
              "ugly, blurry");
    check_cut("x, Hires upscale: 2, Hires upscaler: 4x-UltraSharp", "x");
    check_cut("tags\n\nDenoising strength: 0.25, Ultimate SD upscale upscaler: Lanczos", "tags");
    check_cut("a, b\", Unprompted Negative Prompt: \"c, d\", Unprompted Seed: 5", "a, b\"");
    check_cut("dirty,\nENSD: 31337, Size: 512x768, Seed: 3392303156", "dirty");
    /* one key-like tag alone is a tag, not infotext */
    check_cut("bad hands, Size: small", "bad hands, Size: small");
    check_cut("Steps: 30", "");
    check_cut("1 girl, pink lips Negative prompt: 2girl, grid", "1 girl, pink lips");
    check_cut("no tail here", "no tail here");
}

static void check_tag(const char *in, const char *want) {
    char buf[256];
    const char *next;
    an_simple_tag(in, buf, &next);
    CHECK_STR(buf, want);
}

static void test_simple_tags(void) {
    check_tag("(worst quality:1.4)", "worst quality");
    check_tag(" ((Masterpiece)) ", "masterpiece");
    check_tag("[bad  hands]", "bad hands");
    check_tag("<lora:x:0.8>", "<lora:x:0.8>");
    check_tag("EasyNegative", "easynegative");
    check_tag("blue eyes:1.2)", "blue eyes");
    char buf[64];
    const char *next;
    an_simple_tag("a, (b:1.1)", buf, &next);
    CHECK(next && !strcmp(next, " (b:1.1)"));
    an_simple_tag(next, buf, &next);
    CHECK_STR(buf, "b");
    CHECK(next == NULL);
}

static void test_clean_rules_and_counts(void) {
    an_pairs in = {0}, out = {0};
    an_pairs_add(&in, "a ,b", "x,,y", "s1");                      /* kept, normalised */
    an_pairs_add(&in, "a ,b", "x,,y", "s2");                      /* exact duplicate of row 0 */
    an_pairs_add(&in, "A, B", "X, Y", "s3");                      /* duplicate once normalised (case too) */
    an_pairs_add(&in, "p", "   ", "s4");                          /* empty negative */
    an_pairs_add(&in, "one two three four", "n\nSteps: 20, Sampler: Euler", "s5"); /* tail cut, kept */
    an_pairs_add(&in, "nsfw photo", "bad", "s6");                 /* word list: nsfw */
    an_pairs_add(&in, "fine prompt", "(banned thing:1.2)", "s7"); /* word list: phrase in a tag */
    an_pairs_add(&in, "nsfwx art", "unbanned", NULL);             /* no whole-word match: kept */
    const char *words[] = {"nsfw", "banned thing"};
    an_clean_opts o = {0, 0, 0, words, 2};
    an_clean_report r;
    an_error e;
    CHECK(an_pairs_clean(&in, &out, &o, &r, &e) == 0);
    CHECK(r.in == 8 && r.out == 3 && out.n == 3);
    CHECK(r.infotext == 1);
    CHECK(r.normalised == 3); /* rows 0, 1 and 3 */
    CHECK(r.empty == 1 && r.word_list == 2 && r.exact_dup == 1 && r.normalised_dup == 1);
    CHECK(r.too_few_words == 0 && r.too_many_words == 0 && r.too_many_chars == 0);
    if (out.n == 3) {
        CHECK_STR(out.v[0].prompt, "a, b");
        CHECK_STR(out.v[0].negative, "x, y");
        CHECK_STR(out.v[0].source, "s1");
        CHECK_STR(out.v[1].negative, "n");
        CHECK_STR(out.v[2].prompt, "nsfwx art");
        CHECK(out.v[2].source == NULL);
    }
    an_pairs_free(&in);
    an_pairs_free(&out);
}

static void test_length_limits(void) {
    an_pairs in = {0}, out = {0};
    an_pairs_add(&in, "a", "b c", NULL);             /* prompt has 1 word < 2 */
    an_pairs_add(&in, "a b c d", "x y", NULL);       /* prompt has 4 words > 3 */
    an_pairs_add(&in, "h\xC3\xA9llo!", "ab", NULL);  /* 6 characters (7 bytes) > 5 */
    an_pairs_add(&in, "h\xC3\xA9llo", "ab cd", NULL); /* 5 characters (6 bytes): kept */
    an_pairs_add(&in, "a b", "x,y", NULL);           /* "x, y" after normalising: 2 words, 4 characters */
    an_clean_opts o = {2, 3, 5, NULL, 0};
    an_clean_report r;
    an_error e;
    o.min_words = 1;
    CHECK(an_pairs_clean(&in, &out, &o, &r, &e) == 0);
    CHECK(r.too_few_words == 0 && r.too_many_words == 1 && r.too_many_chars == 1 && out.n == 3);
    an_pairs_free(&out);
    o.min_words = 2;
    CHECK(an_pairs_clean(&in, &out, &o, &r, &e) == 0);
    /* now "a", "héllo!" and "héllo" (1 word each) fall under the minimum, which is checked first */
    CHECK(r.too_few_words == 3 && r.too_many_words == 1 && r.too_many_chars == 0 && out.n == 1);
    if (out.n == 1) CHECK_STR(out.v[0].negative, "x, y");
    an_pairs_free(&in);
    an_pairs_free(&out);
}

static void test_word_counts(void) {
    CHECK(an_count_words("a ,b,,  c") == 3);
    CHECK(an_count_words("(worst quality:1.4), bad") == 3);
    CHECK(an_count_words("") == 0);
    CHECK(an_count_chars("h\xC3\xA9llo \xE4\xB8\xAD") == 7);
}

static void test_word_list_file(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/words.txt", test_tmpdir());
    FILE *f = fopen(path, "wb");
    fputs("# banned\nNSFW\n  Bad Thing  \n\n(weighted:1.3)\n", f);
    fclose(f);
    char **w;
    size_t n;
    an_error e;
    CHECK(an_word_list_read(path, &w, &n, &e) == 0);
    CHECK(n == 3);
    if (n == 3) {
        CHECK_STR(w[0], "nsfw");
        CHECK_STR(w[1], "bad thing");
        CHECK_STR(w[2], "weighted");
    }
    an_word_list_free(w, n);
    CHECK(an_word_list_read("tests/data/no-such-list.txt", &w, &n, &e) == -1);
    CHECK_CONTAINS(e.msg, "no-such-list.txt");
}

int main(void) {
    RUN(test_normalise_commas_and_whitespace);
    RUN(test_infotext_tails);
    RUN(test_simple_tags);
    RUN(test_clean_rules_and_counts);
    RUN(test_length_limits);
    RUN(test_word_counts);
    RUN(test_word_list_file);
    return test_finish();
}
