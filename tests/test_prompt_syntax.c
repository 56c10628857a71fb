/* Prompt syntax: weights hand-computed from A1111's documented rules ((x) = 1.1, [x] = 1/1.1, unclosed
 * brackets apply to the end, stray closers are text), the docstring examples of parse_prompt_attention,
 * and tests/ref/a1111_attention.py, which restates the algorithm in Python and gave the same values. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/rng.h"

#include "data/prompts/prompt_syntax.h"
#include "tests/test.h"

/* Weights are products of a few doubles, multiplied in A1111's order here and in the parser, so they
 * agree to the last bit in practice; 1e-12 allows for a different association without hiding a
 * wrong multiplier (the smallest difference between two bracket depths is 5%). */
#define WTOL 1e-12

typedef struct exp_chunk {
    const char *text;
    double w;
} exp_chunk;

static void check_chunks(const char *prompt, an_prompt_mode mode, const exp_chunk *e, size_t n) {
    an_attn_chunks c;
    an_error err;
    CHECK(an_prompt_attention(prompt, mode, &c, &err) == 0);
    CHECK_MSG(c.n == n, "%s: %zu chunks, expected %zu", prompt, c.n, n);
    for (size_t i = 0; i < n && i < c.n; i++) {
        CHECK_STR(c.v[i].text, e[i].text);
        CHECK_NEAR(c.v[i].weight, e[i].w, WTOL);
    }
    an_attn_chunks_free(&c);
}
#define CHUNKS(prompt, mode, ...)                                                                  \
    do {                                                                                           \
        const exp_chunk e_[] = {__VA_ARGS__};                                                      \
        check_chunks(prompt, mode, e_, sizeof e_ / sizeof e_[0]);                                  \
    } while (0)

static void test_a1111_docstring(void) {
    CHUNKS("normal text", AN_PROMPT_A1111, {"normal text", 1.0});
    CHUNKS("an (important) word", AN_PROMPT_A1111, {"an ", 1.0}, {"important", 1.1}, {" word", 1.0});
    CHUNKS("(unbalanced", AN_PROMPT_A1111, {"unbalanced", 1.1});
    CHUNKS("\\(literal\\]", AN_PROMPT_A1111, {"(literal]", 1.0});
    CHUNKS("(unnecessary)(parens)", AN_PROMPT_A1111, {"unnecessaryparens", 1.1});
    /* the first "(" never closes, so everything after it is also multiplied by 1.1 */
    CHUNKS("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).", AN_PROMPT_A1111, {"a ", 1.0},
           {"house", 1.3 * 1.1 * 1.1}, {" ", 1.1}, {"on", 1 / 1.1 * 1.1}, {" a ", 1.1}, {"hill", 0.5 * 1.1},
           {", sun, ", 1.1}, {"sky", 1.1 * 1.1 * 1.1 * 1.1}, {".", 1.1});
}

static void test_a1111_nesting_and_strays(void) {
    CHUNKS("((x))", AN_PROMPT_A1111, {"x", 1.1 * 1.1});
    CHUNKS("(((x)))", AN_PROMPT_A1111, {"x", 1.1 * 1.1 * 1.1});
    CHUNKS("[x]", AN_PROMPT_A1111, {"x", 1 / 1.1});
    CHUNKS("[[x]]", AN_PROMPT_A1111, {"x", (1 / 1.1) * (1 / 1.1)});
    CHUNKS("((a), b)", AN_PROMPT_A1111, {"a", 1.1 * 1.1}, {", b", 1.1});
    CHUNKS("[(a:1.5)]", AN_PROMPT_A1111, {"a", 1.5 / 1.1});
    CHUNKS("(a [b (c:0.5)])", AN_PROMPT_A1111, {"a ", 1.1}, {"b ", 1.0}, {"c", 0.5});
    CHUNKS("(x: 1.25 )", AN_PROMPT_A1111, {"x", 1.25});
    CHUNKS("(x:-0.5)", AN_PROMPT_A1111, {"x", -0.5});
    /* stray closers and a weight with no open bracket are text */
    CHUNKS("(a:1.2), [b], c)", AN_PROMPT_A1111, {"a", 1.2}, {", ", 1.0}, {"b", 1 / 1.1}, {", c)", 1.0});
    CHUNKS("a]b", AN_PROMPT_A1111, {"a]b", 1.0});
    CHUNKS("x:1.5)", AN_PROMPT_A1111, {"x:1.5)", 1.0});
    /* unclosed: round brackets first, then square, each to the end */
    CHUNKS("[a (b", AN_PROMPT_A1111, {"a ", 1 / 1.1}, {"b", 1.1 / 1.1});
    /* (x:y) with a non-number is text inside a 1.1 bracket */
    CHUNKS("(x:y)", AN_PROMPT_A1111, {"x:y", 1.1});
    /* "1.2.3" is not a number: A1111 raises; here the colon stays text */
    CHUNKS("(x:1.2.3)", AN_PROMPT_A1111, {"x:1.2.3", 1.1});
}

static void test_a1111_escapes_empty_break(void) {
    CHUNKS("", AN_PROMPT_A1111, {"", 1.0});
    CHUNKS("\\", AN_PROMPT_A1111, {"", 1.0});
    CHUNKS("a\\b", AN_PROMPT_A1111, {"ab", 1.0});
    CHUNKS("(a\\\\b)", AN_PROMPT_A1111, {"a\\b", 1.1});
    CHUNKS("artist \\(style\\), (x)", AN_PROMPT_A1111, {"artist (style), ", 1.0}, {"x", 1.1});
    CHUNKS("a BREAK b", AN_PROMPT_A1111, {"a", 1.0}, {"BREAK", -1.0}, {"b", 1.0});
    /* the BREAK marker is multiplied like any chunk */
    CHUNKS("(a BREAK b)", AN_PROMPT_A1111, {"a", 1.1}, {"BREAK", -1.1}, {"b", 1.1});
    CHUNKS("BREAKfast, a BREAK", AN_PROMPT_A1111, {"BREAKfast, a", 1.0}, {"BREAK", -1.0}, {"", 1.0});
    /* networks are not special in the A1111 attention layer (A1111 strips them before) */
    CHUNKS("(<lora:x:0.5>)", AN_PROMPT_A1111, {"<lora:x:0.5>", 1.1});
}

static void test_novelai(void) {
    CHUNKS("{x}", AN_PROMPT_NOVELAI, {"x", 1.05});
    CHUNKS("{{x}}", AN_PROMPT_NOVELAI, {"x", 1.05 * 1.05});
    CHUNKS("[x]", AN_PROMPT_NOVELAI, {"x", 1 / 1.05});
    CHUNKS("(x), {y", AN_PROMPT_NOVELAI, {"(x), ", 1.0}, {"y", 1.05});
    /* 1.05 * (1/1.05) rounds to exactly 1.0, so "a" merges with the text after it */
    CHUNKS("[{a}] b}", AN_PROMPT_NOVELAI, {"a b}", 1.0});
    CHUNKS("{a} [b]} c", AN_PROMPT_NOVELAI, {"a", 1.05}, {" ", 1.0}, {"b", 1 / 1.05}, {"} c", 1.0});
    CHUNKS("(x:1.5)", AN_PROMPT_NOVELAI, {"(x:1.5)", 1.0});
    CHUNKS("\\{x\\}", AN_PROMPT_NOVELAI, {"{x}", 1.0});
}

static void check_item(const an_prompt *p, size_t i, const char *text, double w, an_prompt_kind kind,
                       an_prompt_join join) {
    CHECK_MSG(i < p->n, "item %zu missing (have %zu)", i, p->n);
    if (i >= p->n) return;
    CHECK_STR(p->v[i].text, text);
    CHECK_NEAR(p->v[i].weight, w, WTOL);
    CHECK_MSG(p->v[i].kind == kind, "item %zu kind %d, expected %d", i, (int)p->v[i].kind, (int)kind);
    CHECK_MSG(p->v[i].join == join, "item %zu join %d, expected %d", i, (int)p->v[i].join, (int)join);
}

static void test_items(void) {
    an_prompt p;
    an_error err;
    CHECK(an_prompt_parse("  masterpiece,best   quality , ((1girl)), [lowres:1.2], ", AN_PROMPT_A1111, NULL, &p,
                          &err) == 0);
    CHECK(p.n == 4);
    check_item(&p, 0, "masterpiece", 1.0, AN_ITEM_TAG, AN_JOIN_NEW);
    check_item(&p, 1, "best quality", 1.0, AN_ITEM_TAG, AN_JOIN_NEW);
    check_item(&p, 2, "1girl", 1.1 * 1.1, AN_ITEM_TAG, AN_JOIN_NEW);
    /* [x:1.2] is no A1111 weight: the text "lowres:1.2" at 1/1.1 */
    check_item(&p, 3, "lowres:1.2", 1 / 1.1, AN_ITEM_TAG, AN_JOIN_NEW);
    an_prompt_free(&p);

    CHECK(an_prompt_parse("a (b) c,d(e)", AN_PROMPT_A1111, NULL, &p, &err) == 0);
    CHECK(p.n == 5);
    check_item(&p, 0, "a", 1.0, AN_ITEM_TAG, AN_JOIN_NEW);
    check_item(&p, 1, "b", 1.1, AN_ITEM_TAG, AN_JOIN_SPACE);
    check_item(&p, 2, "c", 1.0, AN_ITEM_TAG, AN_JOIN_SPACE);
    check_item(&p, 3, "d", 1.0, AN_ITEM_TAG, AN_JOIN_NEW);
    check_item(&p, 4, "e", 1.1, AN_ITEM_TAG, AN_JOIN_TIGHT);
    an_prompt_free(&p);

    CHECK(an_prompt_parse("(EasyNegative:1.2), badhandv4, (worst quality:1.4), embedding:bad-artist.pt, "
                          "<lora:add_detail:0.6>, <hypernet:anime:1>, ([<lyco:x>]) BREAK ng_deepnegative_v1_75t, "
                          "easynegative face",
                          AN_PROMPT_A1111, NULL, &p, &err) == 0);
    CHECK(p.n == 10);
    check_item(&p, 0, "EasyNegative", 1.2, AN_ITEM_EMBEDDING, AN_JOIN_NEW);
    check_item(&p, 1, "badhandv4", 1.0, AN_ITEM_EMBEDDING, AN_JOIN_NEW);
    check_item(&p, 2, "worst quality", 1.4, AN_ITEM_TAG, AN_JOIN_NEW);
    check_item(&p, 3, "bad-artist", 1.0, AN_ITEM_EMBEDDING, AN_JOIN_NEW);
    check_item(&p, 4, "add_detail", 0.6, AN_ITEM_NETWORK, AN_JOIN_NEW);
    check_item(&p, 5, "anime", 1.0, AN_ITEM_NETWORK, AN_JOIN_NEW);
    /* brackets never weight a network; no multiplier means 1 */
    check_item(&p, 6, "x", 1.0, AN_ITEM_NETWORK, AN_JOIN_NEW);
    check_item(&p, 7, "BREAK", 1.0, AN_ITEM_BREAK, AN_JOIN_NEW);
    check_item(&p, 8, "ng_deepnegative_v1_75t", 1.0, AN_ITEM_EMBEDDING, AN_JOIN_NEW);
    /* an embedding name inside a longer tag is just text */
    check_item(&p, 9, "easynegative face", 1.0, AN_ITEM_TAG, AN_JOIN_NEW);
    CHECK_STR(p.v[4].net_type, "lora");
    CHECK_STR(p.v[5].net_type, "hypernet");
    CHECK_STR(p.v[6].net_type, "lyco");
    an_prompt_free(&p);

    const char *extra[] = {"myneg", NULL};
    CHECK(an_prompt_parse("MyNeg, other", AN_PROMPT_A1111, extra, &p, &err) == 0);
    CHECK(p.n == 2 && p.v[0].kind == AN_ITEM_EMBEDDING && p.v[1].kind == AN_ITEM_TAG);
    an_prompt_free(&p);

    CHECK(an_prompt_parse("", AN_PROMPT_A1111, NULL, &p, &err) == 0);
    CHECK(p.n == 0);
    an_prompt_free(&p);
    CHECK(an_prompt_parse(" , ,( ), [] ,", AN_PROMPT_A1111, NULL, &p, &err) == 0);
    CHECK(p.n == 0);
    an_prompt_free(&p);
}

static void check_rewrite(const char *in, an_prompt_mode in_mode, an_prompt_mode out_mode, const char *expect) {
    an_prompt p;
    an_error err;
    CHECK(an_prompt_parse(in, in_mode, NULL, &p, &err) == 0);
    char *s = an_prompt_write(&p, out_mode, &err);
    CHECK_STR(s, expect);
    free(s);
    an_prompt_free(&p);
}

static void test_write(void) {
    char buf[64];
    an_prompt_format_weight(1.1 * 1.1, buf, sizeof buf);
    CHECK_STR(buf, "1.21");
    an_prompt_format_weight(1 / 1.1, buf, sizeof buf);
    CHECK_STR(buf, "0.909090909091");
    an_prompt_format_weight(2.0, buf, sizeof buf);
    CHECK_STR(buf, "2.0");
    an_prompt_format_weight(0.0, buf, sizeof buf);
    CHECK_STR(buf, "0.0");
    an_prompt_format_weight(1e-7, buf, sizeof buf);
    CHECK_STR(buf, "0.0000001");

    check_rewrite("((masterpiece)),  best_quality,[blurry], \\(sic\\) , (bad:0)", AN_PROMPT_A1111, AN_PROMPT_A1111,
                  "(masterpiece:1.21), best_quality, (blurry:0.909090909091), \\(sic\\), (bad:0.0)");
    check_rewrite("a (b) c BREAK <lora:x:0.5:0.2> d", AN_PROMPT_A1111, AN_PROMPT_A1111,
                  "a (b:1.1) c BREAK <lora:x:0.5:0.2> d");
    /* NovelAI: weights to the nearest power of 1.05: 1.21 = 1.05^3.9 -> 4; 1/1.1 = 1.05^-1.95 -> -2;
     * braces are plain text in A1111 prompts, so they come out escaped */
    check_rewrite("((a)), [b], (c:1.05), {d}", AN_PROMPT_A1111, AN_PROMPT_NOVELAI,
                  "{{{{a}}}}, [[b]], {c}, \\{d\\}");
    check_rewrite("{{a}}, [b], {x\\}y}", AN_PROMPT_NOVELAI, AN_PROMPT_NOVELAI, "{{a}}, [b], {x\\}y}");
    check_rewrite("{{a}}, [b]", AN_PROMPT_NOVELAI, AN_PROMPT_A1111, "(a:1.1025), (b:0.952380952381)");

    /* written A1111 text reads back to the same weights (to the 12 digits the writer keeps) */
    const char *in = "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))). \\[x\\]:1.5)";
    an_prompt p1, p2;
    an_error err;
    CHECK(an_prompt_parse(in, AN_PROMPT_A1111, NULL, &p1, &err) == 0);
    char *s = an_prompt_write(&p1, AN_PROMPT_A1111, &err);
    CHECK(s && an_prompt_parse(s, AN_PROMPT_A1111, NULL, &p2, &err) == 0);
    CHECK(p1.n == p2.n);
    for (size_t i = 0; i < p1.n && i < p2.n; i++) {
        CHECK_STR(p2.v[i].text, p1.v[i].text);
        CHECK_NEAR(p2.v[i].weight, p1.v[i].weight, 1e-11); /* 12 significant digits written */
        CHECK(p2.v[i].join == p1.v[i].join);
    }
    free(s);
    an_prompt_free(&p1);
    an_prompt_free(&p2);
}

static void test_tags(void) {
    an_tags t;
    an_error err;
    an_tag_opts o = {.underscores_to_spaces = 1};
    CHECK(an_prompt_tags("(Worst_Quality:1.4), worst quality, [[LowRes]],\n EasyNegative, <lora:x:1>, a (b) c BREAK "
                         "\\(sic\\)",
                         AN_PROMPT_A1111, &o, &t, &err) == 0);
    const char *expect[] = {"worst quality", "lowres", "easynegative", "a b c", "(sic)"};
    CHECK(t.n == 5);
    for (size_t i = 0; i < 5 && i < t.n; i++) CHECK_STR(t.v[i], expect[i]);
    an_tags_free(&t);

    o.underscores_to_spaces = 0;
    o.keep_networks = 1;
    CHECK(an_prompt_tags("long_hair, <lora:Foo:0.5>", AN_PROMPT_A1111, &o, &t, &err) == 0);
    CHECK(t.n == 2);
    if (t.n == 2) {
        CHECK_STR(t.v[0], "long_hair");
        CHECK_STR(t.v[1], "lora:foo");
    }
    an_tags_free(&t);
    CHECK(an_prompt_tags("", AN_PROMPT_A1111, NULL, &t, &err) == 0);
    CHECK(t.n == 0);
    an_tags_free(&t);
}

/* 400 random prompts over the characters that matter (brackets, escapes, weights, BREAK, commas),
 * with the chunks tests/ref/a1111_attention.py gives for them. Weights are compared to 1e-15 relative:
 * the same products in the same order, printed by Python's repr, which reads back exactly. */
static void test_a1111_random_fixture(void) {
    an_error err;
    char *text = an_read_file("tests/ref/a1111_random.txt", NULL, &err);
    CHECK_MSG(text != NULL, "%s", err.msg);
    if (!text) return;
    int n_cases = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[64];
        int nf = 0;
        for (char *p = line; nf < 64;) {
            f[nf++] = p;
            char *tab = strchr(p, '\t');
            if (!tab) break;
            *tab = 0;
            p = tab + 1;
        }
        cJSON *prompt = cJSON_Parse(f[0]);
        CHECK(cJSON_IsString(prompt));
        if (!cJSON_IsString(prompt)) continue;
        an_attn_chunks c;
        CHECK(an_prompt_attention(prompt->valuestring, AN_PROMPT_A1111, &c, &err) == 0);
        int same = (int)c.n == (nf - 1) / 2;
        for (int i = 0; same && i < (int)c.n; i++) {
            cJSON *t = cJSON_Parse(f[1 + 2 * i]);
            double w = strtod(f[2 + 2 * i], NULL);
            same = cJSON_IsString(t) && !strcmp(t->valuestring, c.v[i].text) &&
                   fabs(c.v[i].weight - w) <= 1e-15 * fabs(w);
            cJSON_Delete(t);
        }
        CHECK_MSG(same, "prompt %s: %zu chunks differ from the reference (%d)", f[0], c.n, (nf - 1) / 2);
        an_attn_chunks_free(&c);
        cJSON_Delete(prompt);
        n_cases++;
    }
    CHECK(n_cases == 400);
    free(text);
}

/* Writing is stable: parse(write(parse(x))) writes back the same text, for random byte strings that
 * lean on the syntax characters (also a crash test under ASan). */
static void test_write_is_stable(void) {
    static const char alphabet[] = "()[]{}\\:<>,. abBREAK1.5_|\n\xc3\xa9lora";
    an_rng r;
    an_rng_seed(&r, 99);
    for (int iter = 0; iter < 2000; iter++) {
        char s[48];
        size_t n = (size_t)an_rng_below(&r, sizeof s);
        for (size_t i = 0; i < n; i++) s[i] = alphabet[an_rng_below(&r, sizeof alphabet - 1)];
        s[n] = 0;
        for (int mode = 0; mode < 2; mode++) {
            an_prompt p1, p2;
            an_error err;
            CHECK(an_prompt_parse(s, (an_prompt_mode)mode, NULL, &p1, &err) == 0);
            char *w1 = an_prompt_write(&p1, (an_prompt_mode)mode, &err);
            CHECK(w1 && an_prompt_parse(w1, (an_prompt_mode)mode, NULL, &p2, &err) == 0);
            char *w2 = an_prompt_write(&p2, (an_prompt_mode)mode, &err);
            CHECK_MSG(w1 && w2 && !strcmp(w1, w2), "mode %d: \"%s\" -> \"%s\" -> \"%s\"", mode, s, w1, w2);
            free(w1);
            free(w2);
            an_prompt_free(&p1);
            an_prompt_free(&p2);
        }
    }
}

int main(void) {
    RUN(test_a1111_random_fixture);
    RUN(test_write_is_stable);
    RUN(test_a1111_docstring);
    RUN(test_a1111_nesting_and_strays);
    RUN(test_a1111_escapes_empty_break);
    RUN(test_novelai);
    RUN(test_items);
    RUN(test_write);
    RUN(test_tags);
    return test_finish();
}
