/* The tf-idf retrieval index (infer/retrieval.h) on a hand-made set: exact neighbours and cosines,
 * source exclusion, ties by index, the file round trip and damaged files; and the consensus pick
 * (infer/eval.h an_eval_consensus_pick) with similarity-weighted tag F1s worked out by hand. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stdint.h>
#include <zlib.h>

#include "core/file.h"
#include "data/pairs/stats_strmap.h"
#include "infer/eval.h"
#include "infer/retrieval.h"
#include "tests/test.h"

/* Four prompts, N = 4: d0 {a cat, garden, sunny} (source p1), d1 {a dog, garden} (p2),
 * d2 {a cat, night} (p1), d3 {a dog, garden} (p3, the same tags as d1).
 * idf = ln(5 / (1 + df)) + 1: df 1 (sunny, night) 1.916291, df 2 (a cat, a dog) 1.510826,
 * df 3 (garden) 1.223144.
 * Query {a cat, garden}: |q| = sqrt(1.510826^2 + 1.223144^2) = 1.943894
 *   d0: (1.510826^2 + 1.223144^2) / (|q| sqrt(1.510826^2 + 1.223144^2 + 1.916291^2)) = 0.712143
 *   d2: 1.510826^2 / (|q| sqrt(1.510826^2 + 1.916291^2)) = 0.481201
 *   d1, d3: 1.223144^2 / (|q| sqrt(1.510826^2 + 1.223144^2)) = 0.395927
 * Query {garden}: d1 = d3 = 1.223144 / 1.943894 = 0.629228, d0 1.223144 / 2.729629 = 0.448100.
 * Query {a dog, night, zebra} (zebra is unknown: left out): d2 0.616678, d1 = d3 0.481201. */
static const char *texts[4] = {"a cat, garden, sunny", "A dog, (garden:1.2)", "a cat, [night]", "a dog, garden"};
static const char *srcs[4] = {"p1", "p2", "p1", "p3"};

static an_tfidf *build4(void) {
    an_error e;
    an_tfidf *ix = an_tfidf_build_src(texts, srcs, 4, &e);
    CHECK(ix != NULL);
    return ix;
}

static void test_topk_exact(void) {
    an_tfidf *ix = build4();
    if (!ix) return;
    an_error e;
    long idx[8];
    double sc[8];
    CHECK(an_tfidf_n_docs(ix) == 4 && an_tfidf_n_terms(ix) == 5);
    CHECK(an_tfidf_topk(ix, "a cat, ((garden))", NULL, 8, idx, sc, &e) == 4);
    CHECK(idx[0] == 0 && idx[1] == 2 && idx[2] == 1 && idx[3] == 3);
    CHECK_NEAR(sc[0], 0.712143, 1e-6);
    CHECK_NEAR(sc[1], 0.481201, 1e-6);
    CHECK_NEAR(sc[2], 0.395927, 1e-6);
    CHECK(sc[2] == sc[3]); /* d1 and d3 have the same tags: the same cosine to the bit */
    /* k cuts the list; the tie between d1 and d3 keeps the lower index */
    CHECK(an_tfidf_topk(ix, "a cat, garden", NULL, 3, idx, sc, &e) == 3);
    CHECK(idx[2] == 1);
    CHECK(an_tfidf_topk(ix, "garden", NULL, 2, idx, sc, &e) == 2);
    CHECK(idx[0] == 1 && idx[1] == 3);
    CHECK_NEAR(sc[0], 0.629228, 1e-6);
    CHECK(an_tfidf_topk(ix, "garden", NULL, 8, idx, sc, &e) == 3); /* d2 shares nothing: not returned */
    CHECK(idx[2] == 0);
    CHECK_NEAR(sc[2], 0.448100, 1e-6);
    CHECK(an_tfidf_topk(ix, "a dog, night, zebra", NULL, 8, idx, sc, &e) == 3);
    CHECK(idx[0] == 2 && idx[1] == 1 && idx[2] == 3);
    CHECK_NEAR(sc[0], 0.616678, 1e-6);
    CHECK_NEAR(sc[1], 0.481201, 1e-6);
    CHECK(an_tfidf_topk(ix, "zebra", NULL, 8, idx, sc, &e) == 0);
    CHECK(an_tfidf_topk(ix, "", NULL, 8, idx, sc, &e) == 0);
    CHECK(an_tfidf_topk(ix, "garden", NULL, 0, idx, sc, &e) == 0);
    double s1;
    CHECK(an_tfidf_nearest(ix, "garden", &s1, &e) == 1);
    CHECK(s1 == sc[0] || fabs(s1 - 0.629228) < 1e-6);
    CHECK(an_tfidf_nearest(ix, "zebra", &s1, &e) == -1 && s1 == 0);
    an_tfidf_free(ix);
}

static void test_topk_exclude_source(void) {
    an_tfidf *ix = build4();
    if (!ix) return;
    an_error e;
    long idx[8];
    double sc[8];
    /* without p1 (d0, d2), {a cat, garden} finds only d1 and d3, with the same cosines as before */
    CHECK(an_tfidf_topk(ix, "a cat, garden", "p1", 8, idx, sc, &e) == 2);
    CHECK(idx[0] == 1 && idx[1] == 3);
    CHECK_NEAR(sc[0], 0.395927, 1e-6);
    CHECK(an_tfidf_topk(ix, "garden", "p2", 8, idx, sc, &e) == 2);
    CHECK(idx[0] == 3 && idx[1] == 0);
    /* a source the index does not know excludes nothing */
    CHECK(an_tfidf_topk(ix, "garden", "elsewhere", 8, idx, sc, &e) == 3);
    /* every row queried with its own source: none of its neighbours shares it (d2's only neighbour, d0,
     * is its own source's: it has none left) */
    for (int d = 0; d < 4; d++) {
        long m = an_tfidf_topk(ix, texts[d], srcs[d], 8, idx, sc, &e);
        CHECK(d == 2 ? m == 0 : m >= 1);
        for (long j = 0; j < m; j++) CHECK(strcmp(srcs[idx[j]], srcs[d]) != 0);
    }
    an_tfidf_free(ix);
    /* an index without sources, or with some NULL: those are never excluded */
    const char *some[4] = {"p1", NULL, "p1", NULL};
    ix = an_tfidf_build_src(texts, some, 4, &e);
    CHECK(ix != NULL);
    if (!ix) return;
    CHECK(an_tfidf_topk(ix, "a cat, garden", "p1", 8, idx, sc, &e) == 2);
    an_tfidf_free(ix);
}

static int same_answers(const an_tfidf *a, const an_tfidf *b) {
    const char *queries[] = {"a cat, garden", "garden", "a dog, night, zebra", "sunny", "zebra"};
    const char *ex[] = {NULL, "p1", "p2", "p3", "nowhere"};
    an_error e;
    for (int q = 0; q < 5; q++)
        for (int x = 0; x < 5; x++) {
            long ia[8], ib[8];
            double sa[8], sb[8];
            long ma = an_tfidf_topk(a, queries[q], ex[x], 8, ia, sa, &e);
            long mb = an_tfidf_topk(b, queries[q], ex[x], 8, ib, sb, &e);
            if (ma != mb || ma < 0) return 0;
            for (long j = 0; j < ma; j++)
                if (ia[j] != ib[j] || memcmp(&sa[j], &sb[j], sizeof sa[j])) return 0;
        }
    return 1;
}

static void test_save_load(void) {
    an_tfidf *ix = build4();
    if (!ix) return;
    an_error e;
    const char *path = test_tmp_path("index.antfidf");
    const char *path2 = test_tmp_path("index2.antfidf");
    CHECK(an_tfidf_save(ix, path, &e) == 0);
    an_tfidf *back = an_tfidf_load(path, &e);
    CHECK_MSG(back != NULL, "%s", e.msg);
    if (!back) {
        an_tfidf_free(ix);
        return;
    }
    CHECK(an_tfidf_n_docs(back) == 4 && an_tfidf_n_terms(back) == 5);
    CHECK(same_answers(ix, back)); /* the same neighbours and the same cosines to the bit */
    /* saving what was loaded gives the same bytes */
    CHECK(an_tfidf_save(back, path2, &e) == 0);
    size_t n1, n2;
    char *b1 = an_read_file(path, &n1, &e), *b2 = an_read_file(path2, &n2, &e);
    CHECK(b1 && b2 && n1 == n2 && !memcmp(b1, b2, n1));
    an_tfidf_free(back);

    /* damaged copies: each refused with an error naming the file */
    const char *bad = test_tmp_path("damaged.antfidf");
    for (int kind = 0; b1 && kind < 5; kind++) {
        char *c = malloc(n1);
        memcpy(c, b1, n1);
        size_t n = n1;
        const char *want = "";
        if (kind == 0) c[n1 - 3] ^= 0x20, want = "checksum"; /* a flipped bit in the postings */
        if (kind == 1) n = n1 - 5, want = "payload bytes";      /* cut short */
        if (kind == 2) c[0] = 'X', want = "not an autoneg tf-idf index";
        if (kind == 3) c[8] = 9, want = "version 9";
        if (kind == 4) n = 20, want = "not an autoneg tf-idf index"; /* shorter than the header */
        CHECK(an_write_file_atomic(bad, c, n, &e) == 0);
        e.msg[0] = 0;
        an_tfidf *d = an_tfidf_load(bad, &e);
        CHECK_MSG(d == NULL, "damage %d accepted", kind);
        an_tfidf_free(d);
        CHECK_MSG(strstr(e.msg, bad) != NULL, "damage %d: %s", kind, e.msg);
        CHECK_MSG(strstr(e.msg, want) != NULL, "damage %d: %s", kind, e.msg);
        free(c);
    }
    CHECK(an_tfidf_load(test_tmp_path("missing.antfidf"), &e) == NULL);
    CHECK_CONTAINS(e.msg, "missing.antfidf");
    free(b1);
    free(b2);
    an_tfidf_free(ix);
}

/* A file with a correct header, checksum and deflate stream around a payload that is wrong inside:
 * the decoder's own bounds checks must refuse it, naming the file. */
static void write_crafted(const char *path, uint64_t nd, uint64_t nt, uint64_t ns, const unsigned char *raw,
                          size_t n) {
    unsigned char f[512] = {'A', 'N', 'T', 'F', 'I', 'D', 'F', 0, 1};
    uLongf packed = sizeof f - 64;
    CHECK(compress2(f + 64, &packed, raw, (uLong)n, 6) == Z_OK);
    uint64_t v[6] = {nd, nt, ns, n, packed, an_hash_bytes(f + 64, packed)};
    for (int i = 0; i < 6; i++)
        for (int b = 0; b < 8; b++) f[16 + 8 * i + b] = (unsigned char)(v[i] >> (8 * b));
    an_error e;
    CHECK(an_write_file_atomic(path, f, 64 + packed, &e) == 0);
}

static void test_load_bounds(void) {
    const char *path = test_tmp_path("crafted.antfidf");
    struct {
        uint64_t nd, nt, ns;
        unsigned char raw[16];
        size_t n;
        const char *want;
    } cases[] = {
        /* one document, one term "a" in it: valid */
        {1, 1, 0, {1, 'a', 0, 1, 0}, 5, NULL},
        /* the posting names document 5 of 1 */
        {1, 1, 0, {1, 'a', 0, 1, 5}, 5, "document ids out of range"},
        /* the term "a" twice */
        {1, 2, 0, {1, 'a', 1, 'a', 0, 1, 0, 1, 0}, 9, "term 1 appears twice"},
        /* a term length past the end */
        {1, 1, 0, {9, 'a'}, 2, "term 0: length runs past the end"},
        /* source id 2 of 1 */
        {1, 1, 1, {1, 'a', 1, 's', 2, 1, 0}, 7, "document 0: bad source id"},
        /* df 2 of 1 document */
        {1, 1, 0, {1, 'a', 0, 2, 0, 0}, 6, "term 0: bad document count"},
        /* bytes left over */
        {1, 1, 0, {1, 'a', 0, 1, 0, 7}, 6, "left over"},
        /* a count larger than the payload */
        {1000, 1, 0, {1, 'a', 0, 1, 0}, 5, "larger than the file"},
        /* a varint that never ends */
        {1, 1, 0, {1, 'a', 0x80, 0x80}, 4, "bad source id"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        write_crafted(path, cases[c].nd, cases[c].nt, cases[c].ns, cases[c].raw, cases[c].n);
        an_error e;
        e.msg[0] = 0;
        an_tfidf *ix = an_tfidf_load(path, &e);
        if (!cases[c].want) {
            CHECK_MSG(ix != NULL, "case %zu: %s", c, e.msg);
            long idx[2];
            CHECK(ix && an_tfidf_topk(ix, "a", NULL, 2, idx, NULL, &e) == 1 && idx[0] == 0);
        } else {
            CHECK_MSG(ix == NULL, "case %zu accepted", c);
            CHECK_MSG(strstr(e.msg, path) && strstr(e.msg, cases[c].want), "case %zu: %s", c, e.msg);
        }
        an_tfidf_free(ix);
    }
}

/* Neighbours' negatives (tags) and similarities: N0 {a, b} 0.2, N1 {a, b, c} 0.3, N2 {x} 1.0,
 * N3 {c, x} 0.9. Tag F1s: (N0,N1) 2*1*(2/3)/(5/3) = 0.8, (N1,N3) 2*(1/3)(1/2)/(5/6) = 0.4,
 * (N2,N3) 2*1*(1/2)/(3/2) = 2/3, the others 0. Agreement, sum over the others of sim * F1:
 *   N0: 0.3*0.8 = 0.24;  N1: 0.2*0.8 + 0.9*0.4 = 0.52;  N2: 0.9*(2/3) = 0.6;
 *   N3: 0.3*0.4 + 1.0*(2/3) = 0.786667
 * so N3, where unweighted sums (N1 1.2, N3 1.0667) would have picked N1. */
static void test_consensus_pick(void) {
    an_error e;
    int best = -1;
    double agree = -1;
    const char *negs[4] = {"a, b", "(a:1.2), b, c", "x", "C, x"};
    double sims[4] = {0.2, 0.3, 1.0, 0.9};
    CHECK(an_eval_consensus_pick(negs, sims, 4, &best, &agree, &e) == 0);
    CHECK(best == 3);
    CHECK_NEAR(agree, 0.3 * 0.4 + 2.0 / 3.0, 1e-12);
    /* equal similarities: N1 (1.2) over N3 (1.0667) */
    double flat[4] = {1, 1, 1, 1};
    CHECK(an_eval_consensus_pick(negs, flat, 4, &best, &agree, &e) == 0);
    CHECK(best == 1);
    CHECK_NEAR(agree, 1.2, 1e-12);
    /* nobody agrees with anybody: a tie at 0, the nearest (index 0) stays */
    const char *apart[3] = {"a", "b", "c"};
    CHECK(an_eval_consensus_pick(apart, flat, 3, &best, &agree, &e) == 0);
    CHECK(best == 0 && agree == 0);
    CHECK(an_eval_consensus_pick(apart, flat, 1, &best, &agree, &e) == 0 && best == 0);
    CHECK(an_eval_consensus_pick(apart, flat, 0, &best, &agree, &e) != 0);
    /* a NaN, negative or infinite similarity weighs nothing and never makes the agreement NaN:
     * {a} {a} {b}: N0 gets 1 * F1(a,a) = 1 from N1 (N0's own NaN is not used for N0), N1 gets 0 */
    const char *two[3] = {"a", "a", "b"};
    double odd[3] = {NAN, 1, INFINITY};
    CHECK(an_eval_consensus_pick(two, odd, 3, &best, &agree, &e) == 0);
    CHECK(best == 0 && agree == 1);
    double neg[3] = {1, -1, 1};
    CHECK(an_eval_consensus_pick(two, neg, 3, &best, &agree, &e) == 0);
    CHECK(best == 1 && agree == 1); /* N0 0 (N1 weighs nothing), N1 1 from N0 */
}

int main(void) {
    RUN(test_topk_exact);
    RUN(test_topk_exclude_source);
    RUN(test_save_load);
    RUN(test_load_bounds);
    RUN(test_consensus_pick);
    return test_finish();
}
