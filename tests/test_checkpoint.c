/* Checkpoint files: round trip, damage detection, the folder (latest, prune), failed writes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/file.h"
#include "test.h"
#include "train/checkpoint.h"

static const an_ckpt_state state = {12, 3456, 0x123456789abcdef0ull, 2, 17, 5, 0};

/* Two tensors of 3 parts with values i + 0.25 * part (exact in float32). */
static int write_sample(const char *path, long long limit, an_error *err) {
    const char *names[2] = {"model.embed_tokens.weight", "model.norm.weight"};
    uint64_t numels[2] = {6, 3};
    uint32_t parts[2] = {3, 3};
    an_ckpt_writer w;
    if (an_ckpt_write_begin(&w, path, &state, 2, names, numels, parts, limit, err)) return -1;
    for (int t = 0; t < 2; t++)
        for (int p = 0; p < 3; p++) {
            float v[6];
            for (uint64_t i = 0; i < numels[t]; i++) v[i] = (float)i + 0.25f * (float)p + 10.0f * (float)t;
            if (an_ckpt_write_floats(&w, v, numels[t], err)) return -1;
        }
    return an_ckpt_write_commit(&w, err);
}

/* Plain write, no fsync: the damage loop writes hundreds of files. */
static void write_raw(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static void test_round_trip(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/rt.ckpt", test_tmpdir());
    an_error err;
    CHECK_MSG(write_sample(path, -1, &err) == 0, "%s", err.msg);
    an_ckpt c;
    CHECK_MSG(an_ckpt_read(&c, path, &err) == 0, "%s", err.msg);
    CHECK(memcmp(&c.state, &state, sizeof state) == 0);
    CHECK(c.n_tensors == 2);
    float v[6];
    CHECK(an_ckpt_get(&c, "model.norm.weight", 2, v, 3, &err) == 0);
    CHECK(v[0] == 10.5f && v[2] == 12.5f);
    CHECK(an_ckpt_get(&c, "model.embed_tokens.weight", 1, v, 6, &err) == 0);
    CHECK(v[5] == 5.25f);
    CHECK(an_ckpt_get(&c, "lm_head.weight", 0, v, 6, &err) == -1);
    CHECK_CONTAINS(err.msg, "rt.ckpt: tensor lm_head.weight is missing");
    CHECK(an_ckpt_get(&c, "model.norm.weight", 0, v, 4, &err) == -1);
    CHECK_CONTAINS(err.msg, "model.norm.weight has 3 values, the model has 4");
    an_ckpt_free(&c);
}

/* Every single-byte change and every truncation is refused with a message naming the file. */
static void test_damage_is_detected(void) {
    char path[512], bad[600];
    snprintf(path, sizeof path, "%s/dmg.ckpt", test_tmpdir());
    snprintf(bad, sizeof bad, "%s/dmg-bad.ckpt", test_tmpdir());
    an_error err;
    CHECK(write_sample(path, -1, &err) == 0);
    size_t n;
    unsigned char *data = (unsigned char *)an_read_file(path, &n, &err);
    CHECK(data != NULL);
    int refused = 0;
    for (size_t i = 0; data && i < n; i++) {
        data[i] ^= 0x40;
        write_raw(bad, data, n);
        data[i] ^= 0x40;
        an_ckpt c;
        if (an_ckpt_read(&c, bad, &err) == 0) {
            an_ckpt_free(&c);
            continue;
        }
        refused++;
        CHECK_CONTAINS(err.msg, "dmg-bad.ckpt");
    }
    CHECK(refused == (int)n);
    for (size_t len = 0; data && len < n; len += 7) {
        write_raw(bad, data, len);
        an_ckpt c;
        CHECK(an_ckpt_read(&c, bad, &err) == -1);
        CHECK_CONTAINS(err.msg, "dmg-bad.ckpt");
    }
    free(data);
}

/* A write that runs out of space (the byte-limit hook: write(2)'s ENOSPC, simulated) leaves no
 * temporary file and does not touch an earlier checkpoint under the same name. */
static void test_failed_write_keeps_old_file(void) {
    char path[512], tmp[600];
    snprintf(path, sizeof path, "%s/keep.ckpt", test_tmpdir());
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    an_error err;
    CHECK(write_sample(path, -1, &err) == 0);
    size_t n0;
    char *before = an_read_file(path, &n0, &err);
    for (long long limit = 0; limit < (long long)n0; limit += 13) {
        CHECK(write_sample(path, limit, &err) == -1);
        CHECK_CONTAINS(err.msg, "keep.ckpt.tmp: cannot write the checkpoint: No space left on device");
        CHECK(!an_file_exists(tmp));
    }
    size_t n1;
    char *after = an_read_file(path, &n1, &err);
    CHECK(before && after && n0 == n1 && memcmp(before, after, n0) == 0);
    free(before);
    free(after);
    /* a folder that does not exist: the error names the temporary file */
    char missing[600];
    snprintf(missing, sizeof missing, "%s/no/such/dir/x.ckpt", test_tmpdir());
    CHECK(write_sample(missing, -1, &err) == -1);
    CHECK_CONTAINS(err.msg, "x.ckpt.tmp: cannot create the checkpoint");
}

static void test_folder_latest_and_prune(void) {
    char run[512], dir[600], p[1200];
    snprintf(run, sizeof run, "%s/run", test_tmpdir());
    snprintf(dir, sizeof dir, "%s/checkpoints", run);
    mkdir(run, 0755);
    an_error err;
    CHECK(an_ckpt_latest(run, p, sizeof p, &err) == 0); /* no folder yet: none */
    mkdir(dir, 0755);
    long steps[] = {5, 100, 20, 1000};
    for (int i = 0; i < 4; i++) {
        CHECK(an_ckpt_path(p, sizeof p, run, steps[i]) == 0);
        CHECK(write_sample(p, -1, &err) == 0);
    }
    snprintf(p, sizeof p, "%s/step-00000999.ckpt.tmp", dir); /* a crashed write is not a checkpoint */
    an_write_file_atomic(p, "x", 1, &err);
    CHECK(an_ckpt_latest(run, p, sizeof p, &err) == 1);
    CHECK_CONTAINS(p, "checkpoints/step-00001000.ckpt");
    CHECK(an_ckpt_prune(run, 2, -1, &err) == 0);
    for (int i = 0; i < 4; i++) {
        an_ckpt_path(p, sizeof p, run, steps[i]);
        CHECK_MSG(an_file_exists(p) == (steps[i] >= 100), "step %ld", steps[i]);
    }
    CHECK(an_ckpt_prune(run, 0, -1, &err) == 0); /* keep 0: keep all */
    an_ckpt_path(p, sizeof p, run, 100);
    CHECK(an_file_exists(p));
    /* protect: keep 1 and the newest at or before step 150 (100), not 1000's predecessors beyond it */
    long more[] = {5, 20, 200};
    for (int i = 0; i < 3; i++) {
        an_ckpt_path(p, sizeof p, run, more[i]);
        CHECK(write_sample(p, -1, &err) == 0);
    }
    CHECK(an_ckpt_prune(run, 1, 150, &err) == 0);
    long all[] = {5, 20, 100, 200, 1000};
    for (int i = 0; i < 5; i++) {
        an_ckpt_path(p, sizeof p, run, all[i]);
        CHECK_MSG(an_file_exists(p) == (all[i] == 100 || all[i] == 1000), "step %ld", all[i]);
    }
    CHECK(an_ckpt_at_or_before(run, 999, p, sizeof p, &err) == 1);
    CHECK_CONTAINS(p, "step-00000100.ckpt");
    CHECK(an_ckpt_at_or_before(run, 99, p, sizeof p, &err) == 0);
    /* setting aside the checkpoints after 100: 1000 is renamed, so the newest is 100 */
    int moved = 0;
    CHECK(an_ckpt_set_aside_after(run, 100, &moved, &err) == 0 && moved == 1);
    CHECK(an_ckpt_latest(run, p, sizeof p, &err) == 1);
    CHECK_CONTAINS(p, "step-00000100.ckpt");
    snprintf(p, sizeof p, "%s/step-00001000.ckpt.diverged", dir);
    CHECK(an_file_exists(p));
    /* the older-than lookup behind the damaged-checkpoint fallback */
    char newest[1200];
    an_ckpt_path(newest, sizeof newest, run, 100);
    CHECK(an_ckpt_older(newest, p, sizeof p, &err) == 0); /* nothing older is left */
    an_ckpt_path(p, sizeof p, run, 7);
    CHECK(write_sample(p, -1, &err) == 0);
    CHECK(an_ckpt_older(newest, p, sizeof p, &err) == 1);
    CHECK_CONTAINS(p, "step-00000007.ckpt");
    CHECK(an_ckpt_older("elsewhere.ckpt", p, sizeof p, &err) == 0);
}

int main(void) {
    RUN(test_round_trip);
    RUN(test_damage_is_detected);
    RUN(test_failed_write_keeps_old_file);
    RUN(test_folder_latest_and_prune);
    return test_finish();
}
