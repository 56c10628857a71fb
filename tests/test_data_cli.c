/* autoneg data stats|clean|split end to end through build/autoneg (the binary of this build,
 * $BUILD/autoneg as tests/run.sh sets it). Expected outputs worked out by hand from tests/data. */
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "tests/test.h"

static char cmd[4096];

/* Runs `autoneg ARGS > out 2> err` and returns the exit status. */
static int run(const char *args, const char *out, const char *err) {
    const char *build = getenv("BUILD");
    snprintf(cmd, sizeof cmd, "%s/autoneg %s > %s 2> %s", build && *build ? build : "build", args, out, err);
    int st = system(cmd);
    return st == -1 ? -1 : (st >> 8) & 0xff;
}

static char *slurp(const char *path) {
    an_error e;
    char *s = an_read_file(path, NULL, &e);
    return s ? s : strdup("");
}

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
    CHECK(run(args, out, err) == 0);
    char *s = slurp(clean);
    CHECK_STR(s, "{\"prompt\": \"a cat, cute\", \"negative_prompt\": \"ugly\"}\n"
                 "{\"prompt\": \"a dog\", \"negative_prompt\": \"blurry, low quality\"}\n");
    free(s);
    s = slurp(out);
    CHECK_CONTAINS(s, "dropped: exact duplicate  2");
    CHECK_CONTAINS(s, "rows out                  2");
    free(s);

    CHECK(run("data stats tests/data/pairs.jsonl", out, err) == 0);
    s = slurp(out);
    CHECK_CONTAINS(s, "pairs               3");
    CHECK_CONTAINS(s, "distinct negatives  3");
    free(s);

    snprintf(args, sizeof args, "data split tests/data/pairs.jsonl --out-dir %s --val 0.5 --seed 1", split);
    CHECK(run(args, out, err) == 0);
    char tp[600], vp[600];
    snprintf(tp, sizeof tp, "%s/train.jsonl", split);
    snprintf(vp, sizeof vp, "%s/val.jsonl", split);
    char *t = slurp(tp), *v = slurp(vp);
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
    CHECK(run("data stats tests/data/empty.jsonl", out, err) == 1);
    char *s = slurp(err);
    CHECK_CONTAINS(s, "autoneg: tests/data/empty.jsonl: file is empty");
    free(s);
    CHECK(run("data clean tests/data/pairs.jsonl", out, err) == 1);
    s = slurp(err);
    CHECK_CONTAINS(s, "--out");
    free(s);
    CHECK(run("data stats tests/data/pairs.jsonl --tokenizer /nonexistent", out, err) == 1);
    CHECK(run("data frobnicate x", out, err) == 1);
}

int main(void) {
    RUN(test_clean_stats_split);
    RUN(test_errors_reach_the_user);
    return test_finish();
}
