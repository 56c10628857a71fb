/* Tag metrics and the tf-idf retrieval baseline on cases worked out by hand, and autoneg eval end to
 * end on a tiny data set. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "infer/eval.h"
#include "infer/retrieval.h"
#include "tests/cli_run.h"
#include "tests/test.h"

/* pred tags {lowres, bad hands, blurry, text}, ref {blurry, bad hands, watermark}: 2 in common, so
 * P = 2/4, R = 2/3, F1 = 2 * 0.5 * 0.666667 / 1.166667 = 0.571429 (weights, brackets, case dropped). */
static void test_tag_scores(void) {
    an_tag_score s;
    an_error e;
    CHECK(an_eval_score("lowres, (bad hands:1.2), Blurry, [text]", "blurry, bad hands, ((watermark))", &s, &e) == 0);
    CHECK(s.n_pred == 4 && s.n_ref == 3 && s.n_common == 2);
    CHECK_NEAR(s.precision, 0.5, 1e-12);
    CHECK_NEAR(s.recall, 2.0 / 3.0, 1e-12);
    CHECK_NEAR(s.f1, 0.571429, 1e-6);
    /* duplicates count once: "blurry, BLURRY" is one tag */
    CHECK(an_eval_score("blurry, BLURRY", "blurry", &s, &e) == 0);
    CHECK_NEAR(s.precision, 1, 1e-12);
    CHECK_NEAR(s.f1, 1, 1e-12);
    CHECK(an_eval_score("", "blurry", &s, &e) == 0);
    CHECK(s.precision == 0 && s.recall == 0 && s.f1 == 0);
    CHECK(an_eval_score("", "", &s, &e) == 0);
    CHECK(s.f1 == 1);
    CHECK(an_eval_score("a, b", "c", &s, &e) == 0);
    CHECK(s.f1 == 0);
}

/* Three training prompts: d0 {a cat, garden, sunny}, d1 {a dog, garden}, d2 {a cat, night}.
 * idf = ln(4 / (1 + df)) + 1: df 2 -> 1.287682, df 1 -> 1.693147. Query {a cat, garden}:
 *   d0: 2 * 1.287682^2 / (1.287682 sqrt2 * sqrt(2 * 1.287682^2 + 1.693147^2)) = 0.732359
 *   d1, d2: 1.287682^2 / (1.287682 sqrt2 * sqrt(1.287682^2 + 1.693147^2)) = 0.428046
 * Query {garden}: d0 1.287682 / 2.486563 = 0.517856, d1 1.287682 / 2.127174 = 0.605349: the shorter d1. */
static void test_tfidf_nearest(void) {
    const char *train[3] = {"a cat, garden, sunny", "A dog, (garden:1.2)", "a cat, night"};
    an_error e;
    an_tfidf *ix = an_tfidf_build(train, 3, &e);
    CHECK(ix != NULL);
    if (!ix) return;
    double sc;
    CHECK(an_tfidf_nearest(ix, "A cat, ((garden))", &sc, &e) == 0);
    CHECK_NEAR(sc, 0.732359, 1e-6);
    CHECK(an_tfidf_nearest(ix, "garden", &sc, &e) == 1);
    CHECK_NEAR(sc, 0.605349, 1e-6);
    CHECK(an_tfidf_nearest(ix, "night, unknown tag", &sc, &e) == 2);
    /* a tag no training prompt has is left out of the query vector (as scikit-learn's transform does):
     * cos = 1.693147^2 / (1.693147 * 2.127174) = 0.795961 */
    CHECK_NEAR(sc, 0.795961, 1e-6);
    CHECK(an_tfidf_nearest(ix, "nothing shared", &sc, &e) == -1);
    CHECK(sc == 0);
    an_tfidf_free(ix);
}

/* autoneg eval on two rows: the baselines' scores are known by hand. Row 1's reference is exactly the
 * general negative (F1 1); row 2's reference {blurry, watermark} shares 2 of the general negative's
 * 18 tags: P = 2/18, R = 1, F1 = 0.2. Mean F1 of the general negative: 0.6. With --train the nearest
 * training prompt of row 2 ("a dog, park" -> "blurry, watermark") scores F1 1. */
static void test_eval_cli(void) {
    const char *d = test_tmpdir();
    char data[512], train[512], out[512], err[512], pred[512], args[4096];
    snprintf(data, sizeof data, "%s/val.jsonl", d);
    snprintf(train, sizeof train, "%s/train.jsonl", d);
    snprintf(out, sizeof out, "%s/out", d);
    snprintf(err, sizeof err, "%s/err", d);
    snprintf(pred, sizeof pred, "%s/pred.jsonl", d);
    char rows[2048];
    snprintf(rows, sizeof rows, "{\"prompt\": \"a cat\", \"negative_prompt\": \"%s\"}\n"
                                "{\"prompt\": \"a dog in the park, park\", \"negative_prompt\": \"blurry, watermark\"}\n",
             an_eval_general_negative);
    an_error e;
    CHECK(an_write_file_atomic(data, rows, strlen(rows), &e) == 0);
    const char *tr = "{\"prompt\": \"a dog, park\", \"negative_prompt\": \"Blurry, (watermark:1.3)\"}\n"
                     "{\"prompt\": \"a cat\", \"negative_prompt\": \"lowres\"}\n";
    CHECK(an_write_file_atomic(train, tr, strlen(tr), &e) == 0);
    snprintf(args, sizeof args, "eval --model %s --data %s --train %s --out %s --max-tokens 8",
             test_shared("models/TinyStories-656K"), data, train, pred);
    CHECK(test_autoneg("OMP_NUM_THREADS=1", args, out, err) == 0);
    char *s = test_slurp(out);
    CHECK_CONTAINS(s, "negatives from");
    CHECK_CONTAINS(s, "general negative          0.5556    1.0000    0.6000      2");
    /* nearest: row 1 "a cat" -> "lowres" (P 1, R 1/18, F1 2/19 = 0.105263), row 2 -> F1 1 */
    CHECK_CONTAINS(s, "nearest train prompt      1.0000    0.5278    0.5526      2");
    CHECK_CONTAINS(s, "model ");
    free(s);
    s = test_slurp(pred);
    size_t lines = 0;
    for (char *c = s; *c; c++) lines += *c == '\n';
    CHECK(lines == 2);
    /* the reference and the model's text under names that cannot be confused */
    CHECK_CONTAINS(s, "\"predicted_negative\":");
    CHECK_CONTAINS(s, "\"reference_negative\":\"blurry, watermark\"");
    CHECK(strstr(s, "\"negative_prompt\"") == NULL && strstr(s, "\"prediction\"") == NULL);
    CHECK_CONTAINS(s, "\"nearest_train_negative\":\"Blurry, (watermark:1.3)\"");
    free(s);
    /* a data file without the reference negatives */
    const char *bad = "{\"text\": \"a cat\"}\n";
    CHECK(an_write_file_atomic(data, bad, strlen(bad), &e) == 0);
    CHECK(test_autoneg("OMP_NUM_THREADS=1", args, out, err) == 1);
    s = test_slurp(err);
    CHECK_CONTAINS(s, data);
    free(s);
}

/* autoneg with the formatted arguments on one thread: its exit status checked, then the text of its
 * stdout (from_err: its stderr) file, malloc'd */
static char *eval_text(const char *out, const char *err, int status, int from_err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static char *eval_text(const char *out, const char *err, int status, int from_err, const char *fmt, ...) {
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    CHECK_MSG(test_autoneg("OMP_NUM_THREADS=1", args, out, err) == status, "autoneg %s: exit status other than %d",
              args, status);
    return test_slurp(from_err ? err : out);
}

/* autoneg eval --baselines-only with the consensus row, no model. The row {cat, garden} -> {blurry,
 * lowres} (source q); training rows t0 {cat, garden} (source q: the row's own, left out), t1 {cat,
 * garden} -> watermark, t2 {cat} -> {blurry, lowres}, t3 {garden} -> {blurry, lowres, text}. Both
 * tags have df 3 of 4, so one weight w: cosines t0 = t1 = 1, t2 = t3 = w^2 / (w sqrt2 w) = 0.707107.
 * Nearest (t0 left out): t1, F1 0. Consensus of t1, t2, t3: F1(t2, t3) = 0.8, t1 agrees with none:
 * t1 0, t2 = t3 = 0.707107 * 0.8: a tie, t2 comes first: "blurry, lowres", F1 1. General: 2 of 18
 * tags, P 0.1111, R 1, F1 0.2. With --consensus-k 1 the consensus is the nearest. --ceiling: the
 * neighbours score 0 (t1), 1 (t2) and F1(t3) = 2 * (2/3) * 1 / (2/3 + 1) = 0.8 (P 2/3, R 1): the best
 * of K=5 is t2, 1; of K=1 it is t1, 0. Tag vote of t1, t2, t3: weights cos^2 = 1, 0.5, 0.5 (sum 2);
 * votes watermark 0.5, blurry 0.5, lowres 0.5, text 0.25 (in order of first appearance, t1 first);
 * E = (1 * 1 + 0.5 * 2 + 0.5 * 3) / 2 = 1.75; 2 sum p / (k + E) for k = 1..4: 0.364, 0.533, 0.632,
 * 0.609: "watermark, blurry, lowres", P 2/3, R 1, F1 0.8. */
static void test_eval_baselines_only(void) {
    char data[512], train[512], out[512], err[512], pred[512], args[4096];
    snprintf(data, sizeof data, "%s", test_tmp_path("b_val.jsonl"));
    snprintf(train, sizeof train, "%s", test_tmp_path("b_train.jsonl"));
    snprintf(out, sizeof out, "%s", test_tmp_path("b_out"));
    snprintf(err, sizeof err, "%s", test_tmp_path("b_err"));
    snprintf(pred, sizeof pred, "%s", test_tmp_path("b_pred.jsonl"));
    an_error e;
    const char *rows = "{\"prompt\": \"cat, garden\", \"negative_prompt\": \"blurry, lowres\", \"source\": \"q\"}\n";
    const char *tr = "{\"prompt\": \"cat, garden\", \"negative_prompt\": \"jpeg artifacts\", \"source\": \"q\"}\n"
                     "{\"prompt\": \"cat, garden\", \"negative_prompt\": \"watermark\", \"source\": \"s1\"}\n"
                     "{\"prompt\": \"cat\", \"negative_prompt\": \"blurry, lowres\", \"source\": \"s2\"}\n"
                     "{\"prompt\": \"garden\", \"negative_prompt\": \"blurry, lowres, text\", \"source\": \"s3\"}\n";
    CHECK(an_write_file_atomic(data, rows, strlen(rows), &e) == 0);
    CHECK(an_write_file_atomic(train, tr, strlen(tr), &e) == 0);
    char *s = eval_text(out, err, 0, 0, "eval --baselines-only --data %s --train %s --out %s", data, train, pred);
    CHECK(strstr(s, "model ") == NULL);
    CHECK_CONTAINS(s, "general negative          0.1111    1.0000    0.2000      1");
    CHECK_CONTAINS(s, "nearest train prompt      0.0000    0.0000    0.0000      1");
    CHECK_CONTAINS(s, "consensus of K=5          1.0000    1.0000    1.0000      1");
    CHECK_CONTAINS(s, "tag vote of K=20          0.6667    1.0000    0.8000      1");
    CHECK(strstr(s, "ceiling") == NULL);
    free(s);
    s = test_slurp(pred);
    CHECK_CONTAINS(s, "\"vote_negative\":\"watermark, blurry, lowres\"");
    CHECK_CONTAINS(s, "\"nearest_train_negative\":\"watermark\"");
    CHECK_CONTAINS(s, "\"consensus_train_negative\":\"blurry, lowres\"");
    CHECK_CONTAINS(s, "\"consensus_f1\":1");
    CHECK(strstr(s, "predicted_negative") == NULL);
    CHECK(strstr(s, "best_of_k_f1") == NULL);
    free(s);
    s = eval_text(out, err, 0, 0, "eval --baselines-only --data %s --train %s --ceiling --out %s", data, train, pred);
    CHECK_CONTAINS(s, "best of K=5 (ceiling)     1.0000    1.0000    1.0000      1");
    free(s);
    s = test_slurp(pred);
    CHECK_CONTAINS(s, "\"best_of_k_f1\":1");
    free(s);
    s = eval_text(out, err, 0, 0, "eval --baselines-only --data %s --train %s --consensus-k 1 --ceiling", data, train);
    CHECK_CONTAINS(s, "consensus of K=1          0.0000    0.0000    0.0000      1");
    CHECK_CONTAINS(s, "best of K=1 (ceiling)     0.0000    0.0000    0.0000      1");
    free(s);
    /* the ceiling needs neighbours */
    s = eval_text(out, err, 1, 1, "eval --baselines-only --data %s --ceiling", data);
    CHECK_CONTAINS(s, "--ceiling");
    free(s);
    /* one neighbour votes alone: its own tags (t1) */
    s = eval_text(out, err, 0, 0, "eval --baselines-only --data %s --train %s --vote-k 1", data, train);
    CHECK_CONTAINS(s, "tag vote of K=1           0.0000    0.0000    0.0000      1");
    free(s);
    s = eval_text(out, err, 1, 1, "eval --baselines-only --data %s --train %s --vote-k 65", data, train);
    CHECK_CONTAINS(s, "--vote-k 65");
    free(s);
    /* a bad K, and no model without --baselines-only */
    s = eval_text(out, err, 1, 1, "eval --baselines-only --data %s --train %s --consensus-k 0", data, train);
    CHECK_CONTAINS(s, "--consensus-k 0");
    free(s);
    snprintf(args, sizeof args, "eval --data %s --train %s", data, train);
    CHECK(test_autoneg("OMP_NUM_THREADS=1", args, out, err) != 0);
}

/* Minimum Bayes risk by tag F1, worked out by hand. Candidates (tags): A = {a, b}, B = {a, b, c},
 * C = {x}. F1(A,B) = 2*1*(2/3)/(1+2/3) = 0.8, F1(A,C) = F1(B,C) = 0. Sums: A 0.8, B 0.8, C 0: A and B
 * tie, the lower index wins. With D = {a, b, c, d} added: F1(B,D) = 2*1*(3/4)/(1+3/4) = 6/7,
 * F1(A,D) = 2*1*(2/4)/(1+2/4) = 2/3; sums A 0.8+2/3 = 1.467, B 0.8+6/7 = 1.657, D 2/3+6/7 = 1.524:
 * B. */
static void test_mbr_pick(void) {
    an_error err;
    int best = -1;
    const char *three[] = {"a, b", "(b:1.2), a, c", "x"};
    CHECK(an_eval_mbr_pick(three, 3, &best, &err) == 0 && best == 0);
    const char *four[] = {"a, b", "(b:1.2), a, c", "x", "A, b, c, d"};
    CHECK(an_eval_mbr_pick(four, 4, &best, &err) == 0 && best == 1);
    const char *one[] = {"only"};
    CHECK(an_eval_mbr_pick(one, 1, &best, &err) == 0 && best == 0);
    CHECK(an_eval_mbr_pick(one, 0, &best, &err) != 0);
}

/* The tag vote, worked out by hand (an_eval_tag_vote in infer/eval.h). Negatives (normalised tags)
 * A = {a, b, c}, B = {b, a}, C = {a, d}.
 * Similarities 1, 1, 1: weights 1 each; votes a 1, b 2/3, c 1/3, d 1/3 (c appeared first); E = 7/3;
 * 2 sum p / (k + E) for k = 1..4: 0.6, 0.769, 0.75, 0.737: "a, b".
 * Similarities 2, 1, 1: weights 4, 1, 1 (sum 6); votes a 1, b 5/6, c 4/6, d 1/6; E = 16/6;
 * k = 1..4: 0.545, 0.786, 0.882, 0.8: "a, b, c".
 * No usable similarity (NaN, -1, 0): every neighbour weighs 1, as the first case. Equal votes keep the
 * order of first appearance: {x, y} and {y, x} give "x, y" (k = 2: 2 * 2 / (2 + 2) = 1). */
static void test_tag_vote(void) {
    an_error err;
    const char *negs[] = {"a, b, c", "(b:1.2), a", "A, d"};
    char *out = NULL;
    CHECK(an_eval_tag_vote(negs, (const double[]){1, 1, 1}, 3, &out, &err) == 0 && out && !strcmp(out, "a, b"));
    free(out);
    CHECK(an_eval_tag_vote(negs, (const double[]){2, 1, 1}, 3, &out, &err) == 0 && out && !strcmp(out, "a, b, c"));
    free(out);
    CHECK(an_eval_tag_vote(negs, (const double[]){NAN, -1, 0}, 3, &out, &err) == 0 && out && !strcmp(out, "a, b"));
    free(out);
    const char *swapped[] = {"x, y", "y, x"};
    CHECK(an_eval_tag_vote(swapped, (const double[]){1, 1}, 2, &out, &err) == 0 && out && !strcmp(out, "x, y"));
    free(out);
    const char *empty[] = {"", "()"};
    CHECK(an_eval_tag_vote(empty, (const double[]){1, 1}, 2, &out, &err) == 0 && out && !strcmp(out, ""));
    free(out);
    CHECK(an_eval_tag_vote(negs, (const double[]){1}, 0, &out, &err) != 0 && out == NULL);
}

int main(void) {
    RUN(test_tag_scores);
    RUN(test_tfidf_nearest);
    RUN(test_eval_cli);
    RUN(test_mbr_pick);
    RUN(test_tag_vote);
    RUN(test_eval_baselines_only);
    return test_finish();
}
