/* Bad tokenizer files give errors that name the file and the problem, never a crash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/file.h"
#include "data/tokenizers/tokenizer.h"
#include "tests/test.h"

static const char *tmp_file(const char *name, const void *data, size_t n) {
    static char path[4][512];
    static int slot;
    char *p = path[slot++ & 3];
    snprintf(p, sizeof path[0], "%s/%s", test_tmpdir(), name);
    an_error err;
    if (an_write_file_atomic(p, data, n, &err)) fprintf(stderr, "%s\n", err.msg);
    return p;
}

static void expect_error(const char *path, const char *what) {
    an_error err = {{0}};
    an_tokenizer *t = an_tokenizer_load(path, &err);
    CHECK_MSG(t == NULL, "%s loaded although it is bad (%s)", path, what);
    an_tokenizer_free(t);
    CHECK_CONTAINS(err.msg, path);
    CHECK_CONTAINS(err.msg, what);
}

static void test_tokenizer_json_without_vocab(void) {
    const char *j = "{\"model\": {\"type\": \"BPE\", \"merges\": []}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}";
    expect_error(tmp_file("novocab.json", j, strlen(j)), "model.vocab is missing");
}

static void test_tokenizer_json_without_merges(void) {
    const char *j = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}}";
    expect_error(tmp_file("nomerges.json", j, strlen(j)), "model.merges is missing");
}

static void test_tokenizer_json_not_json(void) {
    const char *j = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0";
    expect_error(tmp_file("broken.json", j, strlen(j)), "not valid JSON");
}

static void test_tokenizer_json_unsupported_model(void) {
    const char *j = "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}";
    expect_error(tmp_file("unigram.json", j, strlen(j)), "model type \"Unigram\" is not supported");
}

static void test_tokenizer_json_unsupported_options(void) {
    const char *j = "{\"model\": {\"type\": \"BPE\", \"ignore_merges\": true, \"vocab\": {}, \"merges\": []}}";
    expect_error(tmp_file("ignore.json", j, strlen(j)), "ignore_merges");
    const char *k = "{\"pre_tokenizer\": {\"type\": \"Split\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}";
    expect_error(tmp_file("split.json", k, strlen(k)), "pre_tokenizer type \"Split\" is not supported");
}

static void test_tokenizer_json_vocab_gap(void) {
    const char *j = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 5}, \"merges\": []}}";
    expect_error(tmp_file("gap.json", j, strlen(j)), "\"b\" has id 5");
}

static void test_merge_names_unknown_token(void) {
    /* a byte-level vocabulary of the 256 byte tokens plus "ab", and a merge naming "zz" */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/badmerge", test_tmpdir());
    mkdir(dir, 0755);
    char *json = malloc(65536);
    size_t n = 0;
    n += (size_t)sprintf(json + n, "{\"a\\u0062\": 256");
    for (int b = 0, extra = 0; b < 256; b++) {
        /* GPT-2 byte alphabet: printable bytes stand for themselves, the rest map to U+0100.. */
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        int cp = printable ? b : 256 + extra++;
        n += (size_t)sprintf(json + n, ", \"\\u%04x\": %d", cp, b);
    }
    n += (size_t)sprintf(json + n, "}");
    char vp[600], mp[600];
    snprintf(vp, sizeof vp, "%s/vocab.json", dir);
    snprintf(mp, sizeof mp, "%s/merges.txt", dir);
    an_error err;
    CHECK(an_write_file_atomic(vp, json, n, &err) == 0);
    const char *merges = "#version: 0.2\na b\nzz q\n";
    CHECK(an_write_file_atomic(mp, merges, strlen(merges), &err) == 0);
    free(json);
    an_tokenizer *t = an_tokenizer_load(dir, &err);
    CHECK(t == NULL);
    an_tokenizer_free(t);
    CHECK_CONTAINS(err.msg, mp);
    CHECK_CONTAINS(err.msg, "merge 2");
    CHECK_CONTAINS(err.msg, "unknown token \"zz\"");
    /* both tokens known, but their concatenation is not a token */
    const char *m2 = "#version: 0.2\na b\nq z\n";
    CHECK(an_write_file_atomic(mp, m2, strlen(m2), &err) == 0);
    t = an_tokenizer_load(dir, &err);
    CHECK(t == NULL);
    an_tokenizer_free(t);
    CHECK_CONTAINS(err.msg, "merge 2 (\"q\" \"z\") makes a token that is not in the vocabulary");
    /* the good pair alone loads, and "ab" becomes one token (id 256, by hand) */
    const char *m3 = "#version: 0.2\na b\n";
    CHECK(an_write_file_atomic(mp, m3, strlen(m3), &err) == 0);
    t = an_tokenizer_load(dir, &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    if (t) {
        an_ids ids = {0};
        CHECK(an_tokenizer_encode(t, "abc ab", 6, &ids, &err) == 0);
        /* "abc" -> ab + c, " ab" -> " " + ab: the byte tokens are ids 0..255 in the file's order */
        CHECK(ids.n == 4 && ids.v[0] == 256 && ids.v[1] == 'c' && ids.v[2] == ' ' && ids.v[3] == 256);
        an_ids_free(&ids);
        an_tokenizer_free(t);
    }
}

/* A 100 KB bad line in a tokenizer file: the error quotes its first 80 bytes and gives the length,
 * instead of echoing the line (up to the 1 KB message limit, which still buried the reason). */
static void test_long_bad_line_is_cut(void) {
    enum { N = 100000 };
    char *big = malloc(N + 64);
    memset(big, 'z', N);
    char want[200];
    snprintf(want, sizeof want, "\"%.80s...\" (100000 bytes)", big);
    /* merges.txt: the second merge names a 100 KB token */
    char dir[512], vp[600], mp[600];
    snprintf(dir, sizeof dir, "%s/longmerge", test_tmpdir());
    mkdir(dir, 0755);
    snprintf(vp, sizeof vp, "%s/vocab.json", dir);
    snprintf(mp, sizeof mp, "%s/merges.txt", dir);
    char *json = malloc(65536);
    size_t n = (size_t)sprintf(json, "{\"a\\u0062\": 256");
    for (int b = 0, extra = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        n += (size_t)sprintf(json + n, ", \"\\u%04x\": %d", printable ? b : 256 + extra++, b);
    }
    n += (size_t)sprintf(json + n, "}");
    an_error err;
    CHECK(an_write_file_atomic(vp, json, n, &err) == 0);
    free(json);
    char *merges = malloc(N + 64);
    n = (size_t)sprintf(merges, "#version: 0.2\na b\nq ");
    memcpy(merges + n, big, N);
    n += N;
    merges[n++] = '\n';
    CHECK(an_write_file_atomic(mp, merges, n, &err) == 0);
    an_tokenizer *t = an_tokenizer_load(dir, &err);
    CHECK(t == NULL);
    an_tokenizer_free(t);
    CHECK_CONTAINS(err.msg, "merge 2");
    CHECK_CONTAINS(err.msg, want);
    CHECK_MSG(strlen(err.msg) < 400, "%zu-byte message", strlen(err.msg));
    /* a line without a space: no token to quote, but still a short message */
    n = (size_t)sprintf(merges, "#version: 0.2\n");
    memcpy(merges + n, big, N);
    n += N;
    CHECK(an_write_file_atomic(mp, merges, n, &err) == 0);
    t = an_tokenizer_load(dir, &err);
    CHECK(t == NULL);
    an_tokenizer_free(t);
    CHECK_CONTAINS(err.msg, "line 2: expected two tokens separated by a space");
    CHECK_MSG(strlen(err.msg) < 400, "%zu-byte message", strlen(err.msg));
    free(merges);
    /* tokenizer.json: a 100 KB merge string without a space */
    char *tj = malloc(N + 256);
    n = (size_t)sprintf(tj, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"");
    memcpy(tj + n, big, N);
    n += N;
    n += (size_t)sprintf(tj + n, "\"]}}");
    expect_error(tmp_file("longmerge.json", tj, n), want);
    CHECK_MSG(strlen(err.msg) < 400, "%zu-byte message", strlen(err.msg));
    /* tokenizer.json: a 100 KB token with an id past the vocabulary */
    n = (size_t)sprintf(tj, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"");
    memcpy(tj + n, big, N);
    n += N;
    n += (size_t)sprintf(tj + n, "\": 7}, \"merges\": []}}");
    expect_error(tmp_file("longtoken.json", tj, n), want);
    free(tj);
    free(big);
}

static void test_truncated_sentencepiece_model(void) {
    an_error err;
    size_t n;
    char *m = an_read_file(test_shared("data/tokenizers/llama2/tokenizer.model"), &n, &err);
    CHECK_MSG(m != NULL, "%s", err.msg);
    if (!m) return;
    /* cut in the middle of the pieces: the last length-delimited field runs past the end */
    expect_error(tmp_file("cut.model", m, n / 2 + 3), "truncated");
    /* cut inside the first piece's header */
    expect_error(tmp_file("cut2.model", m, 3), "truncated");
    free(m);
}

static void test_sentencepiece_model_that_is_not_one(void) {
    const char *junk = "this is not a protobuf at all, just text\n";
    expect_error(tmp_file("junk.model", junk, strlen(junk)), "protobuf");
}

static void test_truncated_llama2c_tokenizer(void) {
    an_error err;
    size_t n;
    char *m = an_read_file(test_shared("models/stories260K/tok512.bin"), &n, &err);
    CHECK_MSG(m != NULL, "%s", err.msg);
    if (!m) return;
    expect_error(tmp_file("cut.bin", m, n - 2), "truncated");
    expect_error(tmp_file("cut2.bin", m, 2), "too short");
    free(m);
}

static void test_missing_and_empty_folder(void) {
    expect_error("/nonexistent/tokenizer", "no such file");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/empty", test_tmpdir());
    mkdir(dir, 0755);
    expect_error(dir, "no tokenizer files");
}

static void test_detok_small_buffer_keeps_state(void) {
    an_error err;
    an_tokenizer *t = an_tokenizer_load(test_shared("data/tokenizers/gpt2"), &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    if (!t) return;
    an_ids ids = {0};
    CHECK(an_tokenizer_encode(t, " masterpiece", 12, &ids, &err) == 0);
    an_detok d;
    an_detok_init(&d, t);
    char small[2], big[64];
    CHECK(an_detok_feed(&d, ids.v[0], small, sizeof small) == -1);
    int n = an_detok_feed(&d, ids.v[0], big, sizeof big);
    CHECK(n > 0 && big[0] == ' ');
    an_ids_free(&ids);
    an_tokenizer_free(t);
}

int main(void) {
    RUN(test_tokenizer_json_without_vocab);
    RUN(test_tokenizer_json_without_merges);
    RUN(test_tokenizer_json_not_json);
    RUN(test_tokenizer_json_unsupported_model);
    RUN(test_tokenizer_json_vocab_gap);
    RUN(test_tokenizer_json_unsupported_options);
    RUN(test_merge_names_unknown_token);
    RUN(test_long_bad_line_is_cut);
    RUN(test_truncated_sentencepiece_model);
    RUN(test_sentencepiece_model_that_is_not_one);
    RUN(test_truncated_llama2c_tokenizer);
    RUN(test_missing_and_empty_folder);
    RUN(test_detok_small_buffer_keeps_state);
    return test_finish();
}
