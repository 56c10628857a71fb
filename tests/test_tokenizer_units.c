/* Tokenizer pieces checked by hand: GPT-2 pre-tokenization (splits worked out from the regex),
 * special ids from the published files, BOS rules, and the streaming decoder's UTF-8 handling. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/tokenizers/tokenizer.h"
#include "data/tokenizers/tokenizer_impl.h"
#include "data/tokenizers/unicode.h"
#include "tests/test.h"

/* Joins the GPT-2 pieces of s with '|'. */
static void split(const char *s, char *out) {
    size_t n = strlen(s), k = 0;
    for (size_t i = 0; i < n;) {
        size_t j = an_gpt2_piece_end((const unsigned char *)s, n, i);
        if (i) out[k++] = '|';
        memcpy(out + k, s + i, j - i);
        k += j - i;
        i = j;
    }
    out[k] = 0;
}

static void test_gpt2_pretokenizer_by_hand(void) {
    /* each expectation follows the regex alternative by alternative */
    static const char *cases[][2] = {
        {"Hello world", "Hello| world"},
        {"Hello  world", "Hello| | world"},       /* \s+(?!\S) leaves the last space to " world" */
        {"a   b", "a|  | b"},
        {"a\tb", "a|\t|b"},                       /* a tab is not the optional " " */
        {"a \tb", "a| |\t|b"},                    /* " " then "\t": \s+(?!\S) takes " ", \s+ takes "\t" */
        {"a  ", "a|  "},                          /* trailing spaces: one piece at the end */
        {"it's", "it|'s"},
        {"IT'S", "IT|'|S"},                       /* contractions are case sensitive */
        {"x''s", "x|''|s"},                       /* the punctuation run eats the apostrophes */
        {" 's", " '|s"},                          /* no optional space before a contraction */
        {"abc123def", "abc|123|def"},
        {"(masterpiece:1.2)", "(|masterpiece|:|1|.|2|)"},
        {"日本語 テスト", "日本語| テスト"},      /* \p{L} covers CJK and katakana */
        {"x٣٤y", "x|٣٤|y"},                       /* Arabic-Indic digits are \p{N} */
        {"a\xc2\xa0" "b", "a|\xc2\xa0|b"},        /* NBSP is White_Space but not the optional " " */
        {"e\xcc\x81", "e|\xcc\x81"},              /* a combining mark (Mn) is neither L nor N */
        {"!!! ??", "!!!| ??"},
        {"\n\nx", "\n|\n|x"},
    };
    char got[256];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        split(cases[i][0], got);
        CHECK_STR(got, cases[i][1]);
    }
}

static void test_unicode_classes(void) {
    CHECK(an_unicode_is_letter('a') && an_unicode_is_letter(0x65E5) && an_unicode_is_letter(0x0416));
    CHECK(!an_unicode_is_letter('1') && !an_unicode_is_letter(0x0301) && !an_unicode_is_letter(0x1F600));
    CHECK(an_unicode_is_number(0x0663) && an_unicode_is_number(0x2160) && an_unicode_is_number(0x00BD));
    CHECK(an_unicode_is_space(0x00A0) && an_unicode_is_space(0x3000) && an_unicode_is_space(0x85));
    CHECK(!an_unicode_is_space(0x200B) && !an_unicode_is_space(0x1C)); /* not White_Space */
    uint32_t cp;
    CHECK(an_utf8_decode((const unsigned char *)"\xf0\x9f\x98\x80", 4, &cp) == 4 && cp == 0x1F600);
    CHECK(an_utf8_decode((const unsigned char *)"\xe6\x97", 2, &cp) == 1 && cp == 0xFFFD); /* truncated */
    CHECK(an_utf8_decode((const unsigned char *)"\xc0\x80", 2, &cp) == 1 && cp == 0xFFFD); /* overlong */
}

static an_tokenizer *load(const char *rel) {
    an_error err;
    an_tokenizer *t = an_tokenizer_load(test_shared(rel), &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    return t;
}

static void test_special_ids_and_bos_rules(void) {
    an_tokenizer *g = load("data/tokenizers/gpt2"), *l = load("data/tokenizers/llama2/tokenizer.model"),
                 *ts = load("models/TinyStories-656K"), *b = load("models/stories260K/tok512.bin");
    if (!g || !l || !ts || !b) goto done;
    /* GPT-2: 50,257 tokens, <|endoftext|> = 50256 (SOURCES.md); HF adds no BOS for GPT-2 */
    CHECK(an_tokenizer_vocab_size(g) == 50257 && an_tokenizer_token_id(g, "<|endoftext|>") == 50256);
    CHECK(an_tokenizer_eos(g) == 50256 && !an_tokenizer_adds_bos(g));
    CHECK_STR(an_tokenizer_piece(g, 50256), "<|endoftext|>");
    CHECK_STR(an_tokenizer_piece(g, 262), "\xc4\xa0the"); /* "Ġthe", id 262 in encoder.json */
    CHECK(an_tokenizer_piece(g, 50257) == NULL && an_tokenizer_piece(g, -1) == NULL);
    CHECK(an_tokenizer_is_special(l, 1) && an_tokenizer_is_special(l, 2) && !an_tokenizer_is_special(l, 13));
    CHECK(an_tokenizer_is_special(ts, 2) && !an_tokenizer_is_special(ts, 80));
    CHECK(an_tokenizer_is_special(g, 50256) && !an_tokenizer_is_special(g, 262));
    /* Llama 2: 32,000 pieces, <s> = 1, </s> = 2, BOS added (LlamaTokenizer default) */
    CHECK(an_tokenizer_vocab_size(l) == 32000 && an_tokenizer_bos(l) == 1 && an_tokenizer_eos(l) == 2);
    CHECK(an_tokenizer_adds_bos(l) && an_tokenizer_token_id(l, "<0x0A>") == 13);
    /* TinyStories: config.json says bos 1, eos 2; tokenizer.json's TemplateProcessing adds BOS */
    CHECK(an_tokenizer_vocab_size(ts) == 2048 && an_tokenizer_bos(ts) == 1 && an_tokenizer_eos(ts) == 2);
    CHECK(an_tokenizer_adds_bos(ts) && an_tokenizer_token_id(ts, "<|end_story|>") == 2);
    /* llama2.c: 512 tokens, BOS 1, EOS 2 */
    CHECK(an_tokenizer_vocab_size(b) == 512 && an_tokenizer_bos(b) == 1 && an_tokenizer_adds_bos(b));
done:
    an_tokenizer_free(g);
    an_tokenizer_free(l);
    an_tokenizer_free(ts);
    an_tokenizer_free(b);
}

/* Whether s[0..n) is complete, well-formed UTF-8. */
static int utf8_complete(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int l = an_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (cp == 0xFFFD && l == 1) return 0;
        i += (size_t)l;
    }
    return 1;
}

static void test_streaming_never_splits_a_character(void) {
    an_tokenizer *l = load("data/tokenizers/llama2/tokenizer.model");
    if (!l) return;
    an_error err;
    /* 𝔘 and 🏳️‍🌈 are not Llama 2 pieces: byte fallback gives one token per byte */
    const char *s = "x𝔘 🏳️‍🌈 ok";
    an_ids ids = {0};
    CHECK(an_tokenizer_encode(l, s, strlen(s), &ids, &err) == 0);
    CHECK(ids.n > 10);
    an_detok d;
    an_detok_init(&d, l);
    char out[64], all[128] = "";
    int empty_feeds = 0;
    for (size_t i = 0; i < ids.n; i++) {
        int n = an_detok_feed(&d, ids.v[i], out, sizeof out);
        CHECK(n >= 0 && utf8_complete(out, (size_t)n));
        empty_feeds += n == 0;
        strcat(all, out);
    }
    CHECK(empty_feeds >= 3); /* the first 3 bytes of 𝔘 wait for the 4th */
    CHECK(an_detok_flush(&d, out, sizeof out) == 0);
    CHECK_STR(all, s);
    /* an incomplete character at the end becomes U+FFFD on flush; BOS decodes to nothing */
    int32_t part[] = {1, an_tokenizer_token_id(l, "<0xF0>"), an_tokenizer_token_id(l, "<0x9F>")};
    an_detok_init(&d, l);
    for (int i = 0; i < 3; i++) CHECK(an_detok_feed(&d, part[i], out, sizeof out) == 0);
    CHECK(an_detok_flush(&d, out, sizeof out) == 3);
    CHECK_STR(out, "\xEF\xBF\xBD");
    /* whole decode: BOS gives nothing and the dummy-prefix space goes */
    an_ids hi = {0};
    an_ids_push(&hi, 1);
    CHECK(an_tokenizer_encode(l, "Hello world", 11, &hi, &err) == 0);
    char *txt = an_tokenizer_decode(l, hi.v, hi.n, &err);
    CHECK_STR(txt, "Hello world");
    free(txt);
    an_ids_free(&hi);
    an_ids_free(&ids);
    an_tokenizer_free(l);
}

/* Random bytes (valid UTF-8 or not) never crash an encoder, give ids inside the vocabulary, and
 * valid UTF-8 comes back from byte-level and byte-fallback tokenizers exactly; random ids (even out
 * of range) always decode to well-formed UTF-8. */
static void test_random_inputs(void) {
    static const char *paths[] = {"data/tokenizers/gpt2", "data/tokenizers/llama2/tokenizer.model",
                                  "models/TinyStories-656K", "models/stories260K/tok512.bin"};
    static const char *alphabet[] = {"a", " ", "  ", "\t", "\n", "'s", "1", "\xc3\xa9", "\xe6\x97\xa5", "\xf0\x9f\x98\x80",
                                     "\xe2\x96\x81", "<", "|", "<|end_story|>", "\xcc\x81", "\xc2\xa0"};
    uint64_t seed = 42;
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        an_tokenizer *t = load(paths[p]);
        if (!t) continue;
        int vocab = an_tokenizer_vocab_size(t), bad_range = 0, bad_rt = 0, bad_utf8 = 0;
        size_t total_ids = 0;
        for (int iter = 0; iter < 300; iter++) {
            char s[512];
            size_t n = 0;
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            int valid = iter % 2 == 0, len = (int)((seed >> 33) % 40);
            for (int k = 0; k < len; k++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                if (valid) {
                    const char *a = alphabet[(seed >> 40) % (sizeof alphabet / sizeof alphabet[0])];
                    memcpy(s + n, a, strlen(a)), n += strlen(a);
                } else {
                    s[n++] = (char)(seed >> 56);
                }
            }
            an_ids ids = {0};
            an_error err;
            CHECK(an_tokenizer_encode(t, s, n, &ids, &err) == 0);
            for (size_t k = 0; k < ids.n; k++) bad_range += ids.v[k] < 0 || ids.v[k] >= vocab;
            total_ids += ids.n;
            size_t dl;
            char *d = an_tokenizer_decode_len(t, ids.v, ids.n, &dl, &err);
            if (valid && p != 2 && (dl != n || memcmp(d, s, n)) && (p == 0 || !memmem(s, n, "\xe2\x96\x81", 3)))
                bad_rt++;
            free(d);
            /* random ids */
            for (size_t k = 0; k < ids.n; k++) ids.v[k] = (int32_t)((seed >> (k % 20)) % (uint64_t)(vocab + 10)) - 5;
            d = an_tokenizer_decode_len(t, ids.v, ids.n, &dl, &err);
            bad_utf8 += !utf8_complete(d, dl);
            free(d);
            an_ids_free(&ids);
        }
        CHECK(total_ids > 1000); /* the inputs were not all empty */
        CHECK_MSG(bad_range == 0, "%s: %d ids outside the vocabulary", paths[p], bad_range);
        CHECK_MSG(bad_rt == 0, "%s: %d valid texts did not round-trip", paths[p], bad_rt);
        CHECK_MSG(bad_utf8 == 0, "%s: %d decodes of random ids were not well-formed UTF-8", paths[p], bad_utf8);
        an_tokenizer_free(t);
    }
}

/* A corpus with few pairs stops early and says how many tokens it made: "abab abab" has the byte
 * pairs (a,b), (b,a), (space,a): merges ab, then abab... counted by hand below. */
static void test_training_runs_out_of_pairs(void) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/tiny-train", test_tmpdir());
    mkdir(dir, 0755);
    const char *texts[] = {"abab abab"};
    size_t lens[] = {9};
    an_error err;
    /* words "abab" and " abab": merges (a,b) -> ab [count 4], then (ab,ab) -> abab [2], then
     * (" ", abab) -> " abab" [1]; then no pair is left: 256 + 3 + <|endoftext|> = 260 */
    int n = an_tokenizer_train_bytelevel(texts, lens, 1, 1000, dir, &err);
    CHECK_MSG(n == 260, "got %d (%s)", n, n < 0 ? err.msg : "");
    an_tokenizer *t = an_tokenizer_load(dir, &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    if (!t) return;
    an_ids ids = {0};
    CHECK(an_tokenizer_encode(t, "abab abab<|endoftext|>", 22, &ids, &err) == 0);
    CHECK(ids.n == 3 && ids.v[0] == 257 && ids.v[1] == 258 && ids.v[2] == 259);
    CHECK(an_tokenizer_vocab_size(t) == 260);
    an_ids_free(&ids);
    an_tokenizer_free(t);
    CHECK(an_tokenizer_train_bytelevel(texts, lens, 1, 100, dir, &err) == -1);
    CHECK_CONTAINS(err.msg, "vocabulary size 100");
}

int main(void) {
    RUN(test_gpt2_pretokenizer_by_hand);
    RUN(test_unicode_classes);
    RUN(test_special_ids_and_bos_rules);
    RUN(test_streaming_never_splits_a_character);
    RUN(test_random_inputs);
    RUN(test_training_runs_out_of_pairs);
    return test_finish();
}
