/* autoneg data stats|clean|split end to end through build/autoneg (the binary of this build,
 * $BUILD/autoneg as tests/run.sh sets it). Expected outputs worked out by hand from tests/data. */
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "tests/cli_run.h"
#include "tests/test.h"

static void test_clean_stats_split(void) {
    const char *d = test_tmpdir();
    char out[512], err[512], clean[512], args[2048], split[512];
    snprintf(out, sizeof out, "%s/cli.out", d);
    snprintf(err, sizeof err, "%s/cli.err", d);
    snprintf(clean, sizeof clean, "%s/clean.jsonl", d);
    snprintf(split, sizeof split, "%s/split", d);

    /* tests/data/negopt.csv: "a cat, cute"/"ugly" and "a dog"/"blurry, low quality"; the duplicate
     * read of the same file is dropped as exact duplicates */
    snprintf(args, sizeof args, "data clean tests/data/negopt.csv tests/data/negopt.csv --out %s", clean);
    CHECK(test_autoneg(NULL, args, out, err) == 0);
    char *s = test_slurp(clean);
    CHECK_STR(s, "{\"prompt\": \"a cat, cute\", \"negative_prompt\": \"ugly\"}\n"
                 "{\"prompt\": \"a dog\", \"negative_prompt\": \"blurry, low quality\"}\n");
    free(s);
    s = test_slurp(out);
    CHECK_CONTAINS(s, "dropped: exact duplicate  2");
    CHECK_CONTAINS(s, "rows out                  2");
    free(s);

    CHECK(test_autoneg(NULL, "data stats tests/data/pairs.jsonl", out, err) == 0);
    s = test_slurp(out);
    CHECK_CONTAINS(s, "pairs               3");
    CHECK_CONTAINS(s, "distinct negatives  3");
    free(s);

    snprintf(args, sizeof args, "data split tests/data/pairs.jsonl --out-dir %s --val 0.5 --seed 1", split);
    CHECK(test_autoneg(NULL, args, out, err) == 0);
    char tp[600], vp[600];
    snprintf(tp, sizeof tp, "%s/train.jsonl", split);
    snprintf(vp, sizeof vp, "%s/val.jsonl", split);
    char *t = test_slurp(tp), *v = test_slurp(vp);
    size_t lines = 0;
    for (char *c = t; *c; c++) lines += *c == '\n';
    for (char *c = v; *c; c++) lines += *c == '\n';
    CHECK(lines == 3);
    free(t);
    free(v);
}

static void test_errors_reach_the_user(void) {
    const char *d = test_tmpdir();
    char out[512], err[512];
    snprintf(out, sizeof out, "%s/e.out", d);
    snprintf(err, sizeof err, "%s/e.err", d);
    CHECK(test_autoneg(NULL, "data stats tests/data/empty.jsonl", out, err) == 1);
    char *s = test_slurp(err);
    CHECK_CONTAINS(s, "autoneg: tests/data/empty.jsonl: file is empty");
    free(s);
    CHECK(test_autoneg(NULL, "data clean tests/data/pairs.jsonl", out, err) == 1);
    s = test_slurp(err);
    CHECK_CONTAINS(s, "--out");
    free(s);
    CHECK(test_autoneg(NULL, "data stats tests/data/pairs.jsonl --tokenizer /nonexistent", out, err) == 1);
    CHECK(test_autoneg(NULL, "data frobnicate x", out, err) == 1);
}

int main(void) {
    RUN(test_clean_stats_split);
    RUN(test_errors_reach_the_user);
    return test_finish();
}
