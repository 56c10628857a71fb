/* Retrieval-augmented negatives (infer/retrieval_pairs.h) on a hand-made set: neighbours without the
 * row itself or its source, ties by index, the shown negatives and the input text written out by hand,
 * the template at the token level (the neighbours' bytes where the template puts {input}, loss mask 0
 * on them and 1 on the target), K = 0 giving today's tokens, and the two files' round trip and damage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/file.h"
#include "data/prompts/template.h"
#include "data/tokenizers/tokenizer.h"
#include "infer/retrieval_pairs.h"
#include "tests/test.h"

/* The set of tests/test_retrieval.c (its cosines are worked out there): d1 and d3 have the same tags. */
static const char *prompts[4] = {"a cat, garden, sunny", "A dog, (garden:1.2)", "a cat, [night]", "a dog, garden"};
static const char *negs[4] = {"blurry, lowres", "(worst quality:1.4), bad hands, text", "blurry, lowres",
                              "cartoon,\nsketch, (ugly, deformed), watermark"};
static const char *srcs[4] = {"p1", "p2", "p1", "p3"};

static an_retrieval *build(const char *const *sources, int max_tags) {
    an_error e;
    an_retrieval *r = an_retrieval_build(prompts, negs, sources, 4, 2, max_tags, &e);
    CHECK_MSG(r != NULL, "%s", e.msg);
    return r;
}

static void test_neighbours(void) {
    an_error e;
    long idx[8];
    double sc[8];
    an_retrieval *r = build(NULL, 2);
    if (!r) return;
    CHECK(r->n == 4 && r->n_uniq == 3 && r->neg[0] == r->neg[2]); /* d0 and d2 share one stored negative */
    /* {a cat, garden}: d0 0.712143, d2 0.481201, d1 = d3 0.395927 (test_retrieval.c); without the row
     * itself (self 0) the order of the rest stays, the d1/d3 tie by index */
    CHECK(an_retrieval_neighbours(r, "a cat, garden", NULL, 0, 3, idx, sc, &e) == 3);
    CHECK(idx[0] == 2 && idx[1] == 1 && idx[2] == 3);
    CHECK_NEAR(sc[0], 0.481201, 1e-6);
    CHECK(sc[1] == sc[2]);
    /* no row is its own neighbour, with or without a source */
    for (long d = 0; d < 4; d++) {
        long m = an_retrieval_neighbours(r, prompts[d], NULL, d, 8, idx, NULL, &e);
        CHECK(m >= 1);
        for (long j = 0; j < m; j++) CHECK(idx[j] != d);
    }
    CHECK(an_retrieval_neighbours(r, prompts[0], NULL, 0, 0, idx, sc, &e) == 0);
    CHECK(an_retrieval_neighbours(r, prompts[0], NULL, 0, AN_RETRIEVAL_MAX_K + 1, idx, sc, &e) == -1);
    an_retrieval_free(r);
    /* with sources: no training row gets a neighbour of its own source (d2's only one, d0, is p1's too) */
    r = build(srcs, 2);
    if (!r) return;
    for (long d = 0; d < 4; d++) {
        long m = an_retrieval_neighbours(r, prompts[d], srcs[d], d, 8, idx, NULL, &e);
        CHECK(d == 2 ? m == 0 : m >= 1);
        for (long j = 0; j < m; j++) CHECK(idx[j] != d && strcmp(srcs[idx[j]], srcs[d]) != 0);
    }
    CHECK(an_retrieval_neighbours(r, prompts[0], srcs[0], 0, 8, idx, NULL, &e) == 2);
    CHECK(idx[0] == 1 && idx[1] == 3);
    an_retrieval_free(r);
    CHECK(an_retrieval_build(prompts, negs, srcs, 4, 0, 2, &e) == NULL);
    CHECK_CONTAINS(e.msg, "must be in [1, 64]");
    CHECK(an_retrieval_build(prompts, negs, srcs, 4, 2, 0, &e) == NULL);
}

static void test_shown_and_input(void) {
    char *s;
    /* commas inside brackets do not count; newlines become spaces; trailing commas and spaces go */
    CHECK_STR((s = an_retrieval_shown("cartoon,\nsketch, (ugly, deformed), watermark", 3)), "cartoon, sketch, (ugly, deformed)");
    free(s);
    CHECK_STR((s = an_retrieval_shown("  a, b,  ", 5)), "a, b");
    free(s);
    CHECK_STR((s = an_retrieval_shown("a, b, c", 1)), "a");
    free(s);
    CHECK_STR((s = an_retrieval_shown("", 4)), "");
    free(s);
    an_retrieval *r = build(srcs, 2);
    if (!r) return;
    an_error e;
    long idx[2] = {1, 3};
    char *in = an_retrieval_input(r, "a cat, garden", idx, 2, &e);
    CHECK_STR(in, "Negative prompts of similar prompts:\n- (worst quality:1.4), bad hands\n- cartoon, sketch\nPrompt: a cat, garden");
    free(in);
    in = an_retrieval_input(r, "a cat, garden", idx, 0, &e); /* no neighbour: the prompt as it is */
    CHECK_STR(in, "a cat, garden");
    free(in);
    long bad = 4;
    CHECK(an_retrieval_input(r, "x", &bad, 1, &e) == NULL);
    CHECK_CONTAINS(e.msg, "not a training pair");
    an_retrieval_free(r);
}

/* One token per byte (id = byte + 3; BOS 1, EOS 2): token positions are byte offsets, so where a
 * text lands among the ids can be computed without any tokenizer. */
static int byte_encode(const void *ctx, const char *text, size_t len, an_ids *out, an_error *err) {
    (void)ctx;
    for (size_t i = 0; i < len; i++)
        if (an_ids_push(out, (int32_t)(unsigned char)text[i] + 3)) return an_fail(err, "out of memory");
    return 0;
}
static int32_t no_piece(const void *ctx, const char *piece) {
    (void)ctx, (void)piece;
    return -1;
}

/* ids[at..] are the bytes of s with the given label rule: masked (-100) or trained (= the id) */
static int bytes_at(const an_ids *ids, const an_ids *lab, size_t at, const char *s, int trained) {
    size_t n = strlen(s);
    if (at + n > ids->n) return 0;
    for (size_t i = 0; i < n; i++) {
        int32_t want = (int32_t)(unsigned char)s[i] + 3;
        if (ids->v[at + i] != want || lab->v[at + i] != (trained ? want : AN_IGNORE_INDEX)) return 0;
    }
    return 1;
}

static void test_template_tokens(void) {
    an_retrieval *r = build(srcs, 2);
    if (!r) return;
    an_error e;
    an_encoder enc = {byte_encode, no_piece, NULL, 1, 2};
    const char *names[2] = {"infotext", "chatml"};
    for (int t = 0; t < 2; t++) {
        an_template tpl;
        CHECK(an_template_builtin(names[t], &tpl, &e) == 0);
        long idx[2] = {1, 3};
        char *in = an_retrieval_input(r, "a cat, garden", idx, 2, &e);
        an_ids ids = {0}, lab = {0};
        CHECK(an_template_encode_sample(&tpl, &enc, in, "blurry, lowres", NULL, 0, &ids, &lab, &e) == 0);
        /* infotext: BOS, "{input}\nNegative prompt: ", the target, EOS (trained).
         * chatml: BOS, "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n", the target and
         * "<|im_end|>" (trained, it ends the answer), then the separator "\n" (masked). */
        const char *before = t == 0 ? "" : "<|im_start|>user\n";
        const char *after = t == 0 ? "\nNegative prompt: " : "<|im_end|>\n<|im_start|>assistant\n";
        size_t at = 1 + strlen(before);
        CHECK(ids.v[0] == 1 && lab.v[0] == AN_IGNORE_INDEX);
        CHECK(bytes_at(&ids, &lab, 1, before, 0));
        /* the neighbours' negatives, as shown, where the input starts, all masked */
        CHECK(bytes_at(&ids, &lab, at, "Negative prompts of similar prompts:\n- ", 0));
        at += strlen("Negative prompts of similar prompts:\n- ");
        CHECK(bytes_at(&ids, &lab, at, "(worst quality:1.4), bad hands", 0));
        at += strlen("(worst quality:1.4), bad hands");
        CHECK(bytes_at(&ids, &lab, at, "\n- cartoon, sketch\nPrompt: a cat, garden", 0));
        at += strlen("\n- cartoon, sketch\nPrompt: a cat, garden");
        CHECK(bytes_at(&ids, &lab, at, after, 0));
        at += strlen(after);
        /* the target: trained, and nothing else is */
        CHECK(bytes_at(&ids, &lab, at, "blurry, lowres", 1));
        at += strlen("blurry, lowres");
        if (t == 0) {
            CHECK(at + 1 == ids.n && ids.v[at] == 2 && lab.v[at] == 2);
        } else {
            CHECK(bytes_at(&ids, &lab, at, "<|im_end|>", 1));
            at += strlen("<|im_end|>");
            CHECK(at + 1 == ids.n && bytes_at(&ids, &lab, at, "\n", 0));
        }
        size_t trained = 0;
        for (size_t i = 0; i < lab.n; i++) trained += lab.v[i] != AN_IGNORE_INDEX;
        CHECK(trained == strlen("blurry, lowres") + (t == 0 ? 1 : strlen("<|im_end|>")));
        free(in);
        an_ids_free(&ids);
        an_ids_free(&lab);
        an_template_free(&tpl);
    }
    an_retrieval_free(r);
}

/* With a real tokenizer (TinyStories-656K's BPE): the augmented sample trains exactly the tokens the
 * plain one trains, and K = 0 (no neighbour) gives the plain sample's ids token for token. */
static void test_template_real_tokenizer(void) {
    an_error e;
    an_tokenizer *tok = an_tokenizer_load(test_shared("models/TinyStories-656K"), &e);
    CHECK_MSG(tok != NULL, "%s", e.msg);
    an_retrieval *r = build(srcs, 2);
    if (!tok || !r) {
        an_tokenizer_free(tok);
        an_retrieval_free(r);
        return;
    }
    an_encoder enc = an_encoder_of(tok);
    an_template tpl;
    CHECK(an_template_builtin("infotext", &tpl, &e) == 0);
    long idx[2];
    long m = an_retrieval_neighbours(r, "a cat, garden", "p1", -1, 2, idx, NULL, &e);
    CHECK(m == 2);
    char *aug = an_retrieval_input(r, "a cat, garden", idx, m, &e), *none = an_retrieval_input(r, "a cat, garden", idx, 0, &e);
    an_ids pi = {0}, pl = {0}, ai = {0}, al = {0}, ni = {0}, nl = {0};
    CHECK(an_template_encode_sample(&tpl, &enc, "a cat, garden", "blurry, lowres", NULL, 0, &pi, &pl, &e) == 0);
    CHECK(an_template_encode_sample(&tpl, &enc, aug, "blurry, lowres", NULL, 0, &ai, &al, &e) == 0);
    CHECK(an_template_encode_sample(&tpl, &enc, none, "blurry, lowres", NULL, 0, &ni, &nl, &e) == 0);
    CHECK(ai.n > pi.n);
    /* the trained tail is the same tokens; everything before it is masked */
    size_t tail = 0;
    while (tail < pl.n && pl.v[pl.n - 1 - tail] != AN_IGNORE_INDEX) tail++;
    CHECK(tail > 0);
    int same = 1;
    for (size_t i = 0; i < tail; i++) same &= al.v[al.n - 1 - i] == pl.v[pl.n - 1 - i];
    for (size_t i = 0; i + tail < al.n; i++) same &= al.v[i] == AN_IGNORE_INDEX;
    CHECK(same);
    /* no neighbour: today's sample exactly */
    CHECK(ni.n == pi.n && memcmp(ni.v, pi.v, pi.n * sizeof *pi.v) == 0 && memcmp(nl.v, pl.v, pl.n * sizeof *pl.v) == 0);
    free(aug);
    free(none);
    an_ids_free(&pi), an_ids_free(&pl), an_ids_free(&ai), an_ids_free(&al), an_ids_free(&ni), an_ids_free(&nl);
    an_template_free(&tpl);
    an_tokenizer_free(tok);
    an_retrieval_free(r);
}

static void write_bytes(const char *path, const char *data, size_t n) {
    an_error e;
    CHECK(an_write_file_atomic(path, data, n, &e) == 0);
}

static void test_save_load(void) {
    an_retrieval *r = build(srcs, 3);
    if (!r) return;
    an_error e;
    const char *dir = test_tmp_path("run");
    char d[512], p[600];
    snprintf(d, sizeof d, "%s", dir);
    CHECK(an_retrieval_in_dir(d) == 0);
    CHECK(mkdir(d, 0755) == 0);
    CHECK(an_retrieval_save(r, d, &e) == 0);
    CHECK(an_retrieval_in_dir(d) == 1);
    an_retrieval *b = an_retrieval_load(d, &e);
    CHECK_MSG(b != NULL, "%s", e.msg);
    if (b) {
        CHECK(b->n == 4 && b->n_uniq == 3 && b->k == 2 && b->max_tags == 3);
        for (size_t i = 0; i < 4; i++) CHECK_STR(b->neg[i], negs[i]);
        /* the same neighbours, scores to the bit, and the same input text */
        for (int q = 0; q < 4; q++) {
            long ia[8], ib[8];
            double sa[8], sb[8];
            long ma = an_retrieval_neighbours(r, prompts[q], srcs[q], q, 8, ia, sa, &e);
            long mb = an_retrieval_neighbours(b, prompts[q], srcs[q], q, 8, ib, sb, &e);
            CHECK(ma == mb && ma >= 0);
            for (long j = 0; j < ma && ma == mb; j++) CHECK(ia[j] == ib[j] && memcmp(&sa[j], &sb[j], sizeof sa[j]) == 0);
            char *ta = an_retrieval_input(r, prompts[q], ia, ma, &e), *tb = an_retrieval_input(b, prompts[q], ib, mb, &e);
            CHECK_STR(ta, tb);
            free(ta);
            free(tb);
        }
        an_retrieval_free(b);
    }
    /* damage: a flipped payload byte, a cut file, a foreign file, the negatives file missing */
    snprintf(p, sizeof p, "%s/%s", d, AN_RETRIEVAL_NEGATIVES);
    size_t n;
    char *good = an_read_file(p, &n, &e);
    CHECK(good != NULL && n > 64);
    if (good) {
        good[n - 1] ^= 0x5a;
        write_bytes(p, good, n);
        CHECK(an_retrieval_load(d, &e) == NULL);
        CHECK_CONTAINS(e.msg, "checksum mismatch");
        CHECK_CONTAINS(e.msg, AN_RETRIEVAL_NEGATIVES);
        good[n - 1] ^= 0x5a;
        write_bytes(p, good, n - 3);
        CHECK(an_retrieval_load(d, &e) == NULL);
        CHECK_CONTAINS(e.msg, "cut short");
        write_bytes(p, "hello", 5);
        CHECK(an_retrieval_load(d, &e) == NULL);
        CHECK_CONTAINS(e.msg, "no ANRNEGS header");
        /* the negatives of another index (3 pairs) beside this one (4 prompts) */
        an_retrieval *three = an_retrieval_build(prompts, negs, srcs, 3, 1, 2, &e);
        char other[600];
        snprintf(other, sizeof other, "%s/other", test_tmpdir());
        CHECK(mkdir(other, 0755) == 0);
        CHECK(three && an_retrieval_save(three, other, &e) == 0);
        char op[700];
        snprintf(op, sizeof op, "%s/%s", other, AN_RETRIEVAL_NEGATIVES);
        size_t on;
        char *ob = an_read_file(op, &on, &e);
        if (ob) write_bytes(p, ob, on);
        free(ob);
        an_retrieval_free(three);
        CHECK(an_retrieval_load(d, &e) == NULL);
        CHECK_CONTAINS(e.msg, "do not belong together");
        remove(p);
        CHECK(an_retrieval_load(d, &e) == NULL);
        CHECK_CONTAINS(e.msg, "missing");
        free(good);
    }
    an_retrieval_free(r);
}

int main(void) {
    RUN(test_neighbours);
    RUN(test_shown_and_input);
    RUN(test_template_tokens);
    RUN(test_template_real_tokenizer);
    RUN(test_save_load);
    return test_finish();
}
