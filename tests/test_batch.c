/* Batches: packing, padding and XTuner packing on five small samples whose layouts are written out
 * by hand below; shuffle determinism; cursor save and restore; the token cache. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/file.h"
#include "data/batching/batch.h"
#include "data/prompts/template.h"
#include "data/batching/token_cache.h"
#include "tests/test.h"

#define M (-100)
#define P 7 /* pad id */

static void five_samples(an_samples *s) {
    an_error err;
    memset(s, 0, sizeof *s);
    const int32_t i0[] = {100, 101, 102, 103}, l0[] = {M, M, 102, 103};
    const int32_t i1[] = {200, 201, 202}, l1[] = {M, 201, 202};
    const int32_t i2[] = {300, 301, 302, 303, 304, 305}, l2[] = {M, M, M, 303, 304, 305};
    const int32_t i3[] = {400, 401}, l3[] = {M, 401};
    const int32_t i4[] = {500, 501, 502, 503, 504}, l4[] = {M, M, 502, 503, 504};
    an_samples_add(s, i0, l0, 4, &err);
    an_samples_add(s, i1, l1, 3, &err);
    an_samples_add(s, i2, l2, 6, &err);
    an_samples_add(s, i3, l3, 2, &err);
    an_samples_add(s, i4, l4, 5, &err);
}

static void check_row(const an_token_batch *b, int row, const int32_t *ids, const int32_t *tg, const int32_t *pos,
                      const int32_t *seg, const char *what) {
    for (int t = 0; t < b->T; t++) {
        size_t k = (size_t)row * b->T + t;
        CHECK_MSG(b->ids[k] == ids[t], "%s row %d ids[%d] = %d, expected %d", what, row, t, b->ids[k], ids[t]);
        CHECK_MSG(b->targets[k] == tg[t], "%s row %d targets[%d] = %d, expected %d", what, row, t, b->targets[k], tg[t]);
        CHECK_MSG(b->positions[k] == pos[t], "%s row %d positions[%d] = %d, expected %d", what, row, t, b->positions[k],
                  pos[t]);
        CHECK_MSG(b->seg_start[k] == seg[t], "%s row %d seg_start[%d] = %d, expected %d", what, row, t, b->seg_start[k],
                  seg[t]);
    }
}

static void test_pack(void) {
    an_samples s;
    five_samples(&s);
    an_batch_opts o = {.mode = AN_BATCH_PACK, .rows = 2, .seq_len = 8, .pad_id = P};
    an_batcher bt;
    an_token_batch b;
    an_error err;
    CHECK(an_batcher_init(&bt, &s, &o, &err) == 0 && an_batch_alloc(&b, &o, &err) == 0);
    CHECK(an_batcher_next(&bt, &b, &err) == 0);
    CHECK(b.B == 2 && b.T == 8 && b.n_samples == 4 && b.n_targets == 8 && b.n_tokens == 15 && !b.epoch_end);
    /* row 0: s0 + s1, then one pad (s2 does not fit); row 1: s2 + s3 exactly */
    check_row(&b, 0, (const int32_t[]){100, 101, 102, 103, 200, 201, 202, P},
              (const int32_t[]){M, 102, 103, M, 201, 202, M, M}, (const int32_t[]){0, 1, 2, 3, 0, 1, 2, 0},
              (const int32_t[]){0, 0, 0, 0, 4, 4, 4, 7}, "pack");
    check_row(&b, 1, (const int32_t[]){300, 301, 302, 303, 304, 305, 400, 401},
              (const int32_t[]){M, M, 303, 304, 305, M, 401, M}, (const int32_t[]){0, 1, 2, 3, 4, 5, 0, 1},
              (const int32_t[]){0, 0, 0, 0, 0, 0, 6, 6}, "pack");
    CHECK(an_batcher_next(&bt, &b, &err) == 0);
    CHECK(b.n_samples == 1 && b.n_targets == 3 && b.n_tokens == 5 && b.epoch_end && b.epoch == 0);
    check_row(&b, 0, (const int32_t[]){500, 501, 502, 503, 504, P, P, P}, (const int32_t[]){M, 502, 503, 504, M, M, M, M},
              (const int32_t[]){0, 1, 2, 3, 4, 0, 1, 2}, (const int32_t[]){0, 0, 0, 0, 0, 5, 5, 5}, "pack");
    check_row(&b, 1, (const int32_t[]){P, P, P, P, P, P, P, P}, (const int32_t[]){M, M, M, M, M, M, M, M},
              (const int32_t[]){0, 1, 2, 3, 4, 5, 6, 7}, (const int32_t[]){0, 0, 0, 0, 0, 0, 0, 0}, "pack");
    /* the next epoch starts over */
    CHECK(an_batcher_next(&bt, &b, &err) == 0);
    CHECK(b.epoch == 1 && b.ids[0] == 100);
    an_batch_free(&b);
    an_batcher_free(&bt);
    an_samples_free(&s);
}

static void test_pad(void) {
    an_samples s;
    five_samples(&s);
    an_batch_opts o = {.mode = AN_BATCH_PAD, .rows = 2, .seq_len = 5, .pad_id = P};
    an_batcher bt;
    an_token_batch b;
    an_error err;
    CHECK(an_batcher_init(&bt, &s, &o, &err) == 0 && an_batch_alloc(&b, &o, &err) == 0);
    CHECK(an_batcher_next(&bt, &b, &err) == 0);
    CHECK(b.T == 4 && b.n_samples == 2 && b.n_targets == 4 && b.n_tokens == 7); /* the longest of s0, s1 */
    check_row(&b, 0, (const int32_t[]){100, 101, 102, 103}, (const int32_t[]){M, 102, 103, M},
              (const int32_t[]){0, 1, 2, 3}, (const int32_t[]){0, 0, 0, 0}, "pad");
    check_row(&b, 1, (const int32_t[]){200, 201, 202, P}, (const int32_t[]){201, 202, M, M},
              (const int32_t[]){0, 1, 2, 3}, (const int32_t[]){0, 0, 0, 0}, "pad");
    CHECK(an_batcher_next(&bt, &b, &err) == 0);
    CHECK(b.T == 5); /* s2 has 6 tokens: cut to seq_len 5 */
    check_row(&b, 0, (const int32_t[]){300, 301, 302, 303, 304}, (const int32_t[]){M, M, 303, 304, M},
              (const int32_t[]){0, 1, 2, 3, 4}, (const int32_t[]){0, 0, 0, 0, 0}, "pad");
    check_row(&b, 1, (const int32_t[]){400, 401, P, P, P}, (const int32_t[]){401, M, M, M, M},
              (const int32_t[]){0, 1, 2, 3, 4}, (const int32_t[]){0, 0, 0, 0, 0}, "pad");
    CHECK(an_batcher_next(&bt, &b, &err) == 0);
    CHECK(b.T == 5 && b.epoch_end && b.n_samples == 1);
    check_row(&b, 1, (const int32_t[]){P, P, P, P, P}, (const int32_t[]){M, M, M, M, M},
              (const int32_t[]){0, 1, 2, 3, 4}, (const int32_t[]){0, 0, 0, 0, 0}, "pad");
    an_batch_free(&b);
    an_batcher_free(&bt);
    an_samples_free(&s);
}

static void test_xtuner_pack(void) {
    an_samples s;
    five_samples(&s);
    an_batch_opts o = {.mode = AN_BATCH_PACK_XTUNER, .rows = 1, .seq_len = 8, .pad_id = P};
    an_batcher bt;
    an_token_batch b;
    an_error err;
    const int32_t pos[] = {0, 1, 2, 3, 4, 5, 6, 7}, zero[8] = {0};
    CHECK(an_batcher_init(&bt, &s, &o, &err) == 0 && an_batch_alloc(&b, &o, &err) == 0);
    /* the stream s0 s1 s2 s3 s4 (20 tokens) cut every 8; s2 and s4 are split across rows */
    CHECK(an_batcher_next(&bt, &b, &err) == 0);
    CHECK(b.n_samples == 3 && !b.epoch_end);
    check_row(&b, 0, (const int32_t[]){100, 101, 102, 103, 200, 201, 202, 300},
              (const int32_t[]){M, 102, 103, M, 201, 202, M, M}, pos, zero, "xtuner");
    an_batch_cursor c = an_batcher_cursor(&bt);
    CHECK(c.epoch == 0 && c.next == 2 && c.offset == 1);
    CHECK(an_batcher_next(&bt, &b, &err) == 0);
    CHECK(b.n_samples == 2);
    check_row(&b, 0, (const int32_t[]){301, 302, 303, 304, 305, 400, 401, 500},
              (const int32_t[]){M, 303, 304, 305, M, 401, M, M}, pos, zero, "xtuner");
    CHECK(an_batcher_next(&bt, &b, &err) == 0);
    CHECK(b.epoch_end && b.n_samples == 0 && b.n_targets == 3 && b.n_tokens == 4);
    check_row(&b, 0, (const int32_t[]){501, 502, 503, 504, P, P, P, P}, (const int32_t[]){502, 503, 504, M, M, M, M, M},
              pos, zero, "xtuner");

    /* resuming from the cursor saved after the first row gives the second row again */
    an_batcher bt2;
    CHECK(an_batcher_init(&bt2, &s, &o, &err) == 0);
    CHECK(an_batcher_seek(&bt2, c, &err) == 0);
    CHECK(an_batcher_next(&bt2, &b, &err) == 0);
    CHECK(b.ids[0] == 301 && b.ids[7] == 500);
    /* a cursor past a sample's end is refused */
    CHECK(an_batcher_seek(&bt2, (an_batch_cursor){0, 3, 2}, &err) == -1);
    CHECK_CONTAINS(err.msg, "does not fit");
    an_batcher_free(&bt2);
    an_batch_free(&b);
    an_batcher_free(&bt);
    an_samples_free(&s);
}

static void many_samples(an_samples *s, size_t n) {
    an_error err;
    memset(s, 0, sizeof *s);
    int32_t ids[64], labels[64];
    for (size_t i = 0; i < n; i++) {
        size_t len = 2 + (i * 7919) % 30;
        for (size_t k = 0; k < len; k++) ids[k] = (int32_t)(i * 100 + k), labels[k] = k ? (int32_t)(i * 100 + k) : M;
        an_samples_add(s, ids, labels, len, &err);
    }
}

static void test_shuffle(void) {
    an_samples s;
    many_samples(&s, 100);
    an_batch_opts o = {.rows = 2, .seq_len = 64, .seed = 7, .shuffle = 1};
    size_t a[100], b[100], c[100];
    an_error err;
    CHECK(an_epoch_order(&s, &o, 0, a, &err) == 0);
    CHECK(an_epoch_order(&s, &o, 0, b, &err) == 0);
    CHECK(!memcmp(a, b, sizeof a)); /* same seed and epoch, same order */
    int seen[100] = {0}, moved = 0;
    for (int i = 0; i < 100; i++) seen[a[i]]++, moved += a[i] != (size_t)i;
    for (int i = 0; i < 100; i++) CHECK(seen[i] == 1); /* a permutation */
    CHECK(moved > 50);
    CHECK(an_epoch_order(&s, &o, 1, b, &err) == 0);
    CHECK(memcmp(a, b, sizeof a) != 0); /* another epoch, another order */
    o.seed = 8;
    CHECK(an_epoch_order(&s, &o, 0, b, &err) == 0);
    CHECK(memcmp(a, b, sizeof a) != 0);
    o.seed = 7;
    o.group_by_length = 1;
    o.mega_batch = 16;
    CHECK(an_epoch_order(&s, &o, 0, c, &err) == 0);
    for (size_t start = 0; start < 100; start += 16) {
        size_t m = 100 - start < 16 ? 100 - start : 16;
        for (size_t k = 1; k < m; k++) CHECK(an_sample_len(&s, c[start + k - 1]) >= an_sample_len(&s, c[start + k]));
        /* the same samples as the shuffled mega-batch */
        for (size_t k = 0; k < m; k++) {
            int found = 0;
            for (size_t q = 0; q < m; q++) found |= c[start + q] == a[start + k];
            CHECK(found);
        }
    }
    o.shuffle = 0;
    o.group_by_length = 0;
    CHECK(an_epoch_order(&s, &o, 3, b, &err) == 0);
    for (int i = 0; i < 100; i++) CHECK(b[i] == (size_t)i);
    an_samples_free(&s);
}

static void copy_batch(const an_token_batch *b, int32_t *dst) {
    size_t n = (size_t)b->B * b->T;
    memcpy(dst, b->ids, n * 4);
    memcpy(dst + n, b->targets, n * 4);
    memcpy(dst + 2 * n, b->positions, n * 4);
    memcpy(dst + 3 * n, b->seg_start, n * 4);
}

/* A run interrupted after k batches and resumed from its cursor produces the same batches as an
 * uninterrupted run, across epoch boundaries, in every mode. */
static void test_cursor_resume(void) {
    an_samples s;
    many_samples(&s, 40);
    for (int mode = 0; mode < 3; mode++) {
        an_batch_opts o = {.mode = (an_batch_mode)mode, .rows = 3, .seq_len = 48, .pad_id = P, .seed = 11,
                           .shuffle = 1, .group_by_length = mode == 1, .mega_batch = 8};
        enum { N = 30, K = 13 };
        size_t words = (size_t)4 * 3 * 48;
        int32_t *ref = calloc(N * words, 4), *got = calloc(words, 4);
        an_batcher bt;
        an_token_batch b;
        an_error err;
        CHECK(an_batcher_init(&bt, &s, &o, &err) == 0 && an_batch_alloc(&b, &o, &err) == 0);
        an_batch_cursor saved = {0, 0, 0};
        int epochs_seen = 0;
        for (int i = 0; i < N; i++) {
            if (i == K) saved = an_batcher_cursor(&bt);
            CHECK(an_batcher_next(&bt, &b, &err) == 0);
            epochs_seen += b.epoch_end;
            copy_batch(&b, ref + i * words);
        }
        CHECK(epochs_seen >= 2);
        an_batcher bt2;
        CHECK(an_batcher_init(&bt2, &s, &o, &err) == 0);
        CHECK(an_batcher_seek(&bt2, saved, &err) == 0);
        for (int i = K; i < N; i++) {
            memset(got, 0, words * 4);
            CHECK(an_batcher_next(&bt2, &b, &err) == 0);
            copy_batch(&b, got);
            CHECK_MSG(!memcmp(got, ref + i * words, words * 4), "mode %d: batch %d differs after resume", mode, i);
        }
        an_batcher_free(&bt2);
        an_batcher_free(&bt);
        an_batch_free(&b);
        free(ref);
        free(got);
    }
    an_samples_free(&s);
}

static void test_bad_options(void) {
    an_samples s = {0};
    an_batch_opts o = {.rows = 2, .seq_len = 8};
    an_batcher bt;
    an_error err;
    CHECK(an_batcher_init(&bt, &s, &o, &err) == -1);
    CHECK_CONTAINS(err.msg, "no samples");
    five_samples(&s);
    o.seq_len = 0;
    CHECK(an_batcher_init(&bt, &s, &o, &err) == -1);
    CHECK_CONTAINS(err.msg, "seq_len 0");
    an_samples_free(&s);
}

/* ---------- token cache ---------- */

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
}

static void test_cache_key(void) {
    char data[512], tokdir[512], tokfile[512];
    snprintf(data, sizeof data, "%s/pairs.jsonl", test_tmpdir());
    snprintf(tokdir, sizeof tokdir, "%s/tok", test_tmpdir());
    snprintf(tokfile, sizeof tokfile, "%s/tok/tokenizer.json", test_tmpdir());
    mkdir(tokdir, 0755);
    write_text(data, "{\"prompt\":\"a\",\"negative\":\"b\"}\n");
    write_text(tokfile, "{\"model\":{}}");
    an_template t1, t2;
    an_error err;
    an_template_builtin("internlm2_chat", &t1, &err);
    an_template_builtin("default", &t2, &err);
    const char *files[] = {data};
    an_cache_inputs in = {files, 1, &t1, tokdir, 2048, NULL};
    uint64_t k0, k;
    CHECK(an_token_cache_key(&in, &k0, &err) == 0);
    CHECK(an_token_cache_key(&in, &k, &err) == 0 && k == k0);
    in.tmpl = &t2;
    CHECK(an_token_cache_key(&in, &k, &err) == 0 && k != k0);
    in.tmpl = &t1;
    in.max_len = 1024;
    CHECK(an_token_cache_key(&in, &k, &err) == 0 && k != k0);
    in.max_len = 2048;
    in.system = "be brief";
    CHECK(an_token_cache_key(&in, &k, &err) == 0 && k != k0);
    in.system = NULL;
    write_text(tokfile, "{\"model\":{ }}");
    CHECK(an_token_cache_key(&in, &k, &err) == 0 && k != k0);
    write_text(tokfile, "{\"model\":{}}");
    write_text(data, "{\"prompt\":\"a\",\"negative\":\"c\"}\n"); /* same size, other content */
    CHECK(an_token_cache_key(&in, &k, &err) == 0 && k != k0);
    write_text(data, "{\"prompt\":\"a\",\"negative\":\"b\"}\n");
    CHECK(an_token_cache_key(&in, &k, &err) == 0 && k == k0);
    const char *missing[] = {"/nonexistent/pairs.jsonl"};
    in.data_files = missing;
    CHECK(an_token_cache_key(&in, &k, &err) == -1);
    CHECK_CONTAINS(err.msg, "/nonexistent/pairs.jsonl");
    an_template_free(&t1);
    an_template_free(&t2);
}

static void test_cache_file(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/tokens.cache", test_tmpdir());
    an_samples s, r;
    an_error err;
    many_samples(&s, 25);
    CHECK(an_token_cache_load(path, 42, &r, &err) == 0); /* no file: a miss */
    CHECK(an_token_cache_save(path, 42, &s, &err) == 0);
    CHECK(an_token_cache_load(path, 42, &r, &err) == 1);
    CHECK(r.n == s.n && r.n_tokens == s.n_tokens);
    CHECK(r.n == s.n && !memcmp(r.off, s.off, (s.n + 1) * 8) && !memcmp(r.ids, s.ids, s.n_tokens * 4) &&
          !memcmp(r.labels, s.labels, s.n_tokens * 4));
    an_samples_free(&r);
    CHECK(an_token_cache_load(path, 43, &r, &err) == 0); /* other inputs: a miss, rebuild */

    size_t size;
    char *bytes = an_read_file(path, &size, &err);
    CHECK(bytes != NULL);
    char bad[512];
    snprintf(bad, sizeof bad, "%s/bad.cache", test_tmpdir());
    /* one flipped bit in the payload */
    bytes[size - 5] ^= 1;
    an_write_file_atomic(bad, bytes, size, &err);
    CHECK(an_token_cache_load(bad, 42, &r, &err) == -1);
    CHECK_CONTAINS(err.msg, bad);
    CHECK_CONTAINS(err.msg, "checksum mismatch");
    bytes[size - 5] ^= 1;
    /* truncated */
    an_write_file_atomic(bad, bytes, size - 4, &err);
    CHECK(an_token_cache_load(bad, 42, &r, &err) == -1);
    CHECK_CONTAINS(err.msg, "does not match");
    /* another version */
    bytes[8] = 99;
    an_write_file_atomic(bad, bytes, size, &err);
    CHECK(an_token_cache_load(bad, 42, &r, &err) == -1);
    CHECK_CONTAINS(err.msg, "version 99");
    /* not a cache */
    an_write_file_atomic(bad, "hello", 5, &err);
    CHECK(an_token_cache_load(bad, 42, &r, &err) == -1);
    CHECK_CONTAINS(err.msg, "not an autoneg token cache");
    free(bytes);

    an_samples empty = {0};
    CHECK(an_token_cache_save(path, 1, &empty, &err) == 0);
    CHECK(an_token_cache_load(path, 1, &r, &err) == 1 && r.n == 0);
    an_samples_free(&r);
    an_samples_free(&s);
}

static int byte_encode(const void *ctx, const char *text, size_t len, an_ids *out, an_error *err) {
    (void)ctx;
    (void)err;
    for (size_t i = 0; i < len; i++) an_ids_push(out, (unsigned char)text[i]);
    return 0;
}

static void test_load_or_build(void) {
    char data[512], cache[512];
    snprintf(data, sizeof data, "%s/lob.jsonl", test_tmpdir());
    snprintf(cache, sizeof cache, "%s/lob.cache", test_tmpdir());
    write_text(data, "pairs v1");
    an_pair pv[2] = {{"cat", "ugly", NULL}, {"dog", "blurry", NULL}};
    an_pairs pairs = {pv, 2, 2};
    an_template t;
    an_error err;
    an_template_builtin("infotext", &t, &err);
    const an_encoder enc = {byte_encode, NULL, NULL, 1, 2};
    const char *files[] = {data};
    an_cache_inputs in = {files, 1, &t, NULL, 64, NULL};
    an_samples a, b;
    int hit = -1;
    size_t dropped;
    CHECK(an_samples_load_or_build(cache, &in, &enc, &pairs, &a, &hit, &dropped, &err) == 0);
    CHECK(hit == 0 && a.n == 2 && an_file_exists(cache));
    /* "cat\nNegative prompt: " is 21 bytes: BOS + 21 + "ugly" + EOS */
    CHECK(a.n == 2 && an_sample_len(&a, 0) == 27);
    CHECK(an_samples_load_or_build(cache, &in, &enc, &pairs, &b, &hit, &dropped, &err) == 0);
    CHECK(hit == 1 && b.n == a.n && b.n_tokens == a.n_tokens && !memcmp(a.ids, b.ids, a.n_tokens * 4) &&
          !memcmp(a.labels, b.labels, a.n_tokens * 4));
    an_samples_free(&b);
    /* the data file changed: rebuilt (the pairs passed in are what counts) */
    write_text(data, "pairs v2");
    pairs.n = 1;
    CHECK(an_samples_load_or_build(cache, &in, &enc, &pairs, &b, &hit, &dropped, &err) == 0);
    CHECK(hit == 0 && b.n == 1);
    an_samples_free(&b);
    CHECK(an_samples_load_or_build(cache, &in, &enc, &pairs, &b, &hit, &dropped, &err) == 0);
    CHECK(hit == 1 && b.n == 1);
    an_samples_free(&b);
    /* a damaged cache stops the run with the file named */
    write_text(cache, "ANTOKCCH garbage that is no cache at all, long enough to hold a header.....");
    CHECK(an_samples_load_or_build(cache, &in, &enc, &pairs, &b, &hit, &dropped, &err) == -1);
    CHECK_CONTAINS(err.msg, cache);
    an_samples_free(&a);
    an_template_free(&t);
}

int main(void) {
    RUN(test_load_or_build);
    RUN(test_pack);
    RUN(test_pad);
    RUN(test_xtuner_pack);
    RUN(test_shuffle);
    RUN(test_cursor_resume);
    RUN(test_bad_options);
    RUN(test_cache_key);
    RUN(test_cache_file);
    return test_finish();
}
