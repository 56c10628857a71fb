/* Training that fails safe (issue 18): a torn last line of metrics.jsonl, a final/ folder whose write
 * fails, a damaged newest checkpoint, and runs that diverge or die. The references are runs done here:
 * an uninterrupted run's final weights byte for byte, and the checkpoint files on disk. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/file.h"
#include "test.h"
#include "tests/train_fixture.h"
#include "train/checkpoint.h"
#include "train/guard.h"
#include "train/metrics.h"
#include "train/recipe.h"
#include "train/trainer.h"

static char data_path[512];

static void write_pairs(const char *path, int n) {
    static const char *tags[] = {"blurry", "text", "watermark", "signature", "deformed hands", "extra fingers"};
    FILE *f = fopen(path, "w");
    for (int i = 0; i < n; i++) {
        fprintf(f, "{\"prompt\":\"a photo of thing %d, detailed\",\"negative_prompt\":\"", i);
        for (int t = 0; t < 1 + i % 5; t++) fprintf(f, "%s%s", t ? ", " : "", tags[(i + t) % 6]);
        fprintf(f, "\"}\n");
    }
    fclose(f);
}

/* The notes of a run, one per line. */
static char notes[16384];
static void take_note(void *ctx, const char *line) {
    (void)ctx;
    size_t n = strlen(notes);
    snprintf(notes + n, sizeof notes - n, "%s\n", line);
}

static void opts_with_notes(an_trainer_opts *o) {
    an_trainer_opts_default(o);
    notes[0] = 0;
    o->note = take_note;
}

static void path2(char *out, size_t n, const char *a, const char *b) { snprintf(out, n, "%s/%s", a, b); }

/* A file or a folder. */
static int exists(const char *p) { return an_file_exists(p) || an_is_dir(p); }

static void append_text(const char *path, const char *text) {
    FILE *f = fopen(path, "ab");
    fputs(text, f);
    fclose(f);
}

/* A full disk while appending to metrics.jsonl leaves its last line cut ({"step":5,"los). --resume
 * drops that line with a note and finishes the run; a damaged line in the middle stays an error. */
static void test_torn_metrics_line(void) {
    char dir[512], metrics[600];
    path2(dir, sizeof dir, test_tmpdir(), "torn");
    path2(metrics, sizeof metrics, dir, "metrics.jsonl");
    an_recipe r;
    an_error err;
    an_trainer_opts o;
    an_trainer_result res;
    opts_with_notes(&o);
    test_tiny_recipe(&r, dir, data_path);
    test_recipe_set(&r, "eval.every=0");
    o.stop_after = 4;
    CHECK_MSG(an_train_run(&r, &o, &res, &err) == 0, "%s", err.msg);
    append_text(metrics, "{\"step\":5,\"los");
    char ckpt[1100];
    CHECK(an_trainer_find_resume(dir, ckpt, sizeof ckpt, &err) == 1);
    opts_with_notes(&o);
    o.resume_ckpt = ckpt;
    CHECK_MSG(an_train_run(&r, &o, &res, &err) == 0, "%s", err.msg);
    CHECK_CONTAINS(notes, "metrics.jsonl: the last line was cut off");
    an_metrics_series s;
    CHECK_MSG(an_metrics_read(metrics, &s, &err) == 0, "%s", err.msg);
    CHECK(s.n_train == 8);
    for (size_t i = 0; i < s.n_train; i++) CHECK(s.train_step[i] == (long)i + 1 && isfinite(s.train_loss[i]));
    CHECK(strstr(notes, "the last line was cut off (line 6") != NULL); /* eval at 0, steps 1-4, the cut line */
    an_metrics_series_free(&s);

    o.stop_after = 0;
    /* a damaged line with complete lines after it is not a torn end: an error naming the line */
    size_t n;
    char *text = an_read_file(metrics, &n, &err);
    FILE *f = fopen(metrics, "wb");
    fputs("{\"step\":1,\"lo\n", f);
    fwrite(text, 1, n, f);
    fclose(f);
    free(text);
    CHECK(an_trainer_find_resume(dir, ckpt, sizeof ckpt, &err) == 1);
    o.resume_ckpt = ckpt;
    CHECK(an_train_run(&r, &o, &res, &err) == -1);
    CHECK_CONTAINS(err.msg, "metrics.jsonl: line 1: not a JSON object");
    an_recipe_free(&r);
}

/* A full disk while writing final/ (the test hook fails the write after the weights file): no partial
 * final/ is left, an existing final/ stays as it was until a new one is complete, and no temporary
 * folder remains. */
static void test_final_write_failure(void) {
    char dir[512], fin[600], tmp[600], p[700], ckpt[1100];
    path2(dir, sizeof dir, test_tmpdir(), "final-fail");
    path2(fin, sizeof fin, dir, "final");
    path2(tmp, sizeof tmp, dir, "final.tmp");
    an_recipe r;
    an_error err;
    an_trainer_opts o;
    an_trainer_result res;
    an_trainer_opts_default(&o);
    test_tiny_recipe(&r, dir, data_path);
    test_recipe_set(&r, "train.steps=2");
    test_recipe_set(&r, "eval.every=0");
    o.final_write_fail = 1;
    CHECK(an_train_run(&r, &o, &res, &err) == -1);
    CHECK_CONTAINS(err.msg, "No space left on device");
    CHECK_MSG(!exists(fin), "%s exists after a failed write", fin);
    CHECK(!exists(tmp));

    /* the run resumes from its last checkpoint and writes final/ whole */
    o.final_write_fail = 0;
    CHECK(an_trainer_find_resume(dir, ckpt, sizeof ckpt, &err) == 1);
    o.resume_ckpt = ckpt;
    CHECK_MSG(an_train_run(&r, &o, &res, &err) == 0, "%s", err.msg);
    const char *files[] = {"config.json", "model.safetensors", "tokenizer.json", "autoneg.json"};
    for (int i = 0; i < 4; i++) {
        path2(p, sizeof p, fin, files[i]);
        CHECK_MSG(an_file_exists(p), "%s missing", p);
    }
    char keep[700], marker[700];
    path2(keep, sizeof keep, dir, "model-before.safetensors");
    path2(p, sizeof p, fin, "model.safetensors");
    size_t n;
    char *w = an_read_file(p, &n, &err);
    CHECK(w && an_write_file_atomic(keep, w, n, &err) == 0);
    free(w);
    path2(marker, sizeof marker, fin, "marker");
    append_text(marker, "old final\n");

    /* a failed rewrite leaves the old final/ as it was */
    o.final_write_fail = 1;
    CHECK(an_train_run(&r, &o, &res, &err) == -1);
    CHECK(an_file_exists(marker));
    CHECK(test_same_file(p, keep));
    CHECK(!exists(tmp));
    /* a rewrite that succeeds replaces it whole */
    o.final_write_fail = 0;
    CHECK_MSG(an_train_run(&r, &o, &res, &err) == 0, "%s", err.msg);
    CHECK(!an_file_exists(marker));
    for (int i = 0; i < 4; i++) {
        path2(p, sizeof p, fin, files[i]);
        CHECK_MSG(an_file_exists(p), "%s missing", p);
    }
    CHECK(!exists(tmp));
    an_recipe_free(&r);
}

/* Two checkpoints kept, the newest damaged (one byte flipped, which the checksum catches): the resume
 * says so, names both, continues from the older one, and ends with the weights of an uninterrupted
 * run byte for byte. */
static void test_damaged_newest_checkpoint_falls_back(void) {
    char ref[512], dir[512], p[700], q[700], ckpt[1100];
    path2(ref, sizeof ref, test_tmpdir(), "fallback-ref");
    path2(dir, sizeof dir, test_tmpdir(), "fallback");
    an_recipe r;
    an_error err;
    an_trainer_opts o;
    an_trainer_result res;
    an_trainer_opts_default(&o);
    test_tiny_recipe(&r, ref, data_path);
    test_recipe_set(&r, "optim.accumulation=2");
    CHECK_MSG(an_train_run(&r, &o, &res, &err) == 0, "%s", err.msg);
    an_recipe_free(&r);

    test_tiny_recipe(&r, dir, data_path);
    test_recipe_set(&r, "optim.accumulation=2");
    test_recipe_set(&r, "checkpoint.every=2");
    test_recipe_set(&r, "checkpoint.keep=2");
    o.stop_after = 6;
    CHECK_MSG(an_train_run(&r, &o, &res, &err) == 0, "%s", err.msg);
    CHECK(an_trainer_find_resume(dir, ckpt, sizeof ckpt, &err) == 1);
    CHECK_CONTAINS(ckpt, "step-00000006.ckpt");
    snprintf(p, sizeof p, "%s/checkpoints/step-00000004.ckpt", dir);
    CHECK(an_file_exists(p));
    /* flip one byte in the middle of the tensor data */
    size_t n;
    unsigned char *b = (unsigned char *)an_read_file(ckpt, &n, &err);
    CHECK(b && n > 1000);
    b[n / 2] ^= 0x10;
    CHECK(an_write_file_atomic(ckpt, b, n, &err) == 0);
    free(b);

    opts_with_notes(&o);
    o.resume_ckpt = ckpt;
    CHECK_MSG(an_train_run(&r, &o, &res, &err) == 0, "%s", err.msg);
    CHECK(res.steps_done == 8);
    CHECK_CONTAINS(notes, "step-00000006.ckpt: checkpoint checksum mismatch (the file is damaged)");
    CHECK_CONTAINS(notes, "falling back to the older checkpoint");
    CHECK_CONTAINS(notes, "resuming from ");
    CHECK_CONTAINS(notes, "step-00000004.ckpt at step 4 of 8");
    path2(p, sizeof p, ref, "final/model.safetensors");
    path2(q, sizeof q, dir, "final/model.safetensors");
    CHECK_MSG(test_same_file(p, q), "%s differs from the uninterrupted run's", q);
    an_metrics_series s;
    path2(p, sizeof p, dir, "metrics.jsonl");
    CHECK(an_metrics_read(p, &s, &err) == 0 && s.n_train == 8);
    an_metrics_series_free(&s);
    an_recipe_free(&r);
}

/* The step N of "DIR/checkpoints/step-N.ckpt" named in a message, or -1. */
static long named_step(const char *msg, char *path, size_t size) {
    const char *s = strstr(msg, "step-");
    if (!s) return -1;
    const char *start = s;
    while (start > msg && start[-1] != ' ') start--;
    const char *end = strstr(s, ".ckpt");
    if (!end) return -1;
    end += 5;
    snprintf(path, size, "%.*s", (int)(end - start), start);
    return strtol(s + 5, NULL, 10);
}

/* After a stop for divergence: the named checkpoint exists and predates the first bad update, and a
 * resume from it at a sane rate trains (finite losses; the final evaluation below the first). */
static void resume_sanely(an_recipe *r, const char *dir, const char *msg, const char *lr) {
    char ckpt[1100], kv[64];
    long step = named_step(msg, ckpt, sizeof ckpt);
    CHECK_MSG(step == 0, "the named checkpoint is at step %ld; the first update (step 1) was the bad one", step);
    if (step < 0) return;
    CHECK_MSG(an_file_exists(ckpt), "%s was deleted", ckpt);
    /* the newer checkpoints hold bad weights: --resume DIR must pick the named one */
    char latest[1100];
    an_error e0;
    CHECK(an_trainer_find_resume(dir, latest, sizeof latest, &e0) == 1);
    CHECK_STR(latest, ckpt);
    an_trainer_opts o;
    an_trainer_result res;
    an_error err;
    an_trainer_opts_default(&o);
    o.resume_ckpt = ckpt;
    snprintf(kv, sizeof kv, "optim.lr=%s", lr);
    test_recipe_set(r, kv);
    CHECK_MSG(an_train_run(r, &o, &res, &err) == 0, "%s", err.msg);
    an_metrics_series s;
    char p[700];
    path2(p, sizeof p, dir, "metrics.jsonl");
    CHECK_MSG(an_metrics_read(p, &s, &err) == 0, "%s", err.msg);
    CHECK(s.n_train == (size_t)r->train.steps);
    for (size_t i = 0; i < s.n_train; i++) CHECK_MSG(isfinite(s.train_loss[i]), "step %ld: loss %g", s.train_step[i], s.train_loss[i]);
    CHECK(s.n_eval >= 2);
    if (s.n_eval >= 2)
        CHECK_MSG(s.eval_loss[s.n_eval - 1] < s.eval_loss[0] - 0.3, "eval loss %g -> %g", s.eval_loss[0],
                  s.eval_loss[s.n_eval - 1]);
    an_metrics_series_free(&s);
}

/* The learning rate from the first step on (constant, no warm-up) and a checkpoint after every step,
 * one kept: the setting in which a blown-up update must be caught before it is checkpointed. */
static void full_rate_every_step(an_recipe *r) {
    test_recipe_set(r, "schedule.type=constant");
    test_recipe_set(r, "schedule.warmup_steps=0");
    test_recipe_set(r, "schedule.warmup_ratio=0");
    test_recipe_set(r, "checkpoint.every=1");
    test_recipe_set(r, "checkpoint.keep=1");
}

/* optim.lr=1e30 with a checkpoint every step and checkpoint.keep=1: step 1's update makes the weights
 * huge but finite, so the loss only overflows at step 2. The run must stop naming a checkpoint from
 * before step 1's update (step 0), keep it, and say what rate to try. */
static void test_exploding_full_run(void) {
    char dir[512];
    path2(dir, sizeof dir, test_tmpdir(), "explode");
    an_recipe r;
    an_error err;
    an_trainer_opts o;
    an_trainer_result res;
    an_trainer_opts_default(&o);
    test_tiny_recipe(&r, dir, data_path);
    r.optim.lr = 1e30; /* past the recipe's bound (optim.lr <= 1): the trainer's guard is what is tested */
    test_recipe_set(&r, "optim.clip=0");
    full_rate_every_step(&r);
    CHECK(an_train_run(&r, &o, &res, &err) == -1);
    CHECK_CONTAINS(err.msg, "optim.lr");
    CHECK_CONTAINS(err.msg, "1e+29"); /* the advice: a tenth of the rate */
    char fin[600];
    path2(fin, sizeof fin, dir, "final");
    CHECK(!exists(fin));
    resume_sanely(&r, dir, err.msg, "0.003");
    an_recipe_free(&r);
}

/* LoRA at optim.lr=1e6 on the real TinyStories-656K: the first update wrecks the adapters and the
 * loss freezes with a gradient norm of 0. The run must stop (not exit 0 as if it had trained), name
 * a checkpoint from before the trouble, and a resume from it at a sane rate trains. */
static void test_dead_lora_run(void) {
    char dir[512], kv[1200];
    path2(dir, sizeof dir, test_tmpdir(), "dead-lora");
    an_recipe r;
    an_error err;
    an_trainer_opts o;
    an_trainer_result res;
    an_trainer_opts_default(&o);
    an_recipe_defaults(&r);
    snprintf(kv, sizeof kv, "model.base=%s", test_shared("models/TinyStories-656K"));
    test_recipe_set(&r, kv);
    test_recipe_set(&r, "model.method=lora");
    an_recipe_list_append(&r, "data.train", test_shared("data/comfyui-promptstylers/sdxl_styles_horror.json"), &err);
    snprintf(kv, sizeof kv, "output.dir=%s", dir);
    test_recipe_set(&r, kv);
    test_recipe_set(&r, "data.template=default");
    test_recipe_set(&r, "data.max_length=64");
    test_recipe_set(&r, "train.seq_len=64");
    test_recipe_set(&r, "train.batch_size=4");
    test_recipe_set(&r, "data.val_fraction=0.1");
    test_recipe_set(&r, "eval.samples=24");
    test_recipe_set(&r, "train.steps=30");
    r.optim.lr = 1e6; /* past the recipe's bound (optim.lr <= 1): the trainer's guard is what is tested */
    full_rate_every_step(&r);
    test_recipe_set(&r, "eval.every=0");
    CHECK(an_train_run(&r, &o, &res, &err) == -1);
    CHECK_CONTAINS(err.msg, "optim.lr");
    char fin[600];
    path2(fin, sizeof fin, dir, "final");
    CHECK(!exists(fin));
    test_recipe_set(&r, "train.steps=8");
    resume_sanely(&r, dir, err.msg, "0.01");
    an_recipe_free(&r);
}

/* The rules of train/guard.h on made-up sequences: a run of exactly-zero gradient norms trips after
 * AN_GUARD_ZERO_STEPS steps and blames the update before its first step; a shorter run does not; a
 * tenfold weight-norm growth trips, a ninefold one does not; non-finite values blame the update before. */
static void test_guard_rules(void) {
    an_guard g;
    an_guard_init(&g, 5.0);
    for (long k = 1; k <= 3; k++) CHECK(an_guard_before_update(&g, k, 2.0, 0.5) == AN_GUARD_OK);
    for (long k = 4; k < 4 + AN_GUARD_ZERO_STEPS - 1; k++) CHECK(an_guard_before_update(&g, k, 2.0, 0.0) == AN_GUARD_OK);
    CHECK(an_guard_safe_step(&g, 12) == 2); /* the zero run began at step 4: update 3 is suspect */
    CHECK(an_guard_before_update(&g, 13, 2.0, 0.1) == AN_GUARD_OK); /* one nonzero step ends the run */
    CHECK(an_guard_safe_step(&g, 13) == 12);
    for (long k = 14; k < 14 + AN_GUARD_ZERO_STEPS - 1; k++) CHECK(an_guard_before_update(&g, k, 2.0, 0.0) == AN_GUARD_OK);
    CHECK(an_guard_before_update(&g, 14 + AN_GUARD_ZERO_STEPS - 1, 2.0, 0.0) == AN_GUARD_DEAD);
    CHECK(g.bad_update == 13);
    an_guard_init(&g, 5.0);
    CHECK(an_guard_after_update(&g, 1, 5.0 * 9.9) == AN_GUARD_OK);
    CHECK(an_guard_after_update(&g, 2, 5.0 * 9.9 * 10.01) == AN_GUARD_EXPLODED && g.bad_update == 2);
    an_guard_init(&g, 5.0);
    CHECK(an_guard_after_update(&g, 1, NAN) == AN_GUARD_EXPLODED && g.bad_update == 1);
    an_guard_init(&g, 5.0);
    CHECK(an_guard_before_update(&g, 7, INFINITY, 1.0) == AN_GUARD_NONFINITE && g.bad_update == 6);
    an_guard_init(&g, 5.0);
    CHECK(an_guard_before_update(&g, 7, 1.0, NAN) == AN_GUARD_NONFINITE && g.bad_update == 6);
    an_guard_init(&g, 0.0); /* no starting norm (all zero): the growth rule cannot judge */
    CHECK(an_guard_after_update(&g, 1, 1.0) == AN_GUARD_OK);
}

/* The loss-spike rule on a made-up sequence, levels computed by hand: ten warm-up steps alternating 3
 * and 2 give the level 2.5; 4.9 is under twice it (level 0.9 * 2.5 + 0.1 * 4.9 = 2.74); 5.6 is over
 * 5.48, a spike from step 12, during which the checkpoint of step 10 is the safe one; 2.0 ends it
 * (level 0.9 * 2.74 + 0.1 * 2 = 2.666); then 6.0 (over 5.332) for AN_GUARD_SPIKE_STEPS steps from
 * step 14 stops the run at step 33, blaming update 13, with the level frozen at 2.666. */
static void test_guard_spike(void) {
    CHECK(AN_GUARD_SPIKE == 2.0 && AN_GUARD_SPIKE_WARMUP == 10 && AN_GUARD_SPIKE_STEPS == 20);
    an_guard g;
    an_guard_init(&g, 5.0);
    for (long k = 1; k <= 10; k++) CHECK(an_guard_before_update(&g, k, k % 2 ? 3.0 : 2.0, 0.5) == AN_GUARD_OK);
    CHECK(fabs(g.level - 2.5) < 1e-12);
    CHECK(an_guard_before_update(&g, 11, 4.9, 0.5) == AN_GUARD_OK && g.spike_run == 0);
    CHECK(fabs(g.level - 2.74) < 1e-12);
    CHECK(an_guard_before_update(&g, 12, 5.6, 0.5) == AN_GUARD_OK && g.spike_run == 1);
    CHECK(an_guard_safe_step(&g, 12) == 10);
    CHECK(an_guard_before_update(&g, 13, 2.0, 0.5) == AN_GUARD_OK && g.spike_run == 0);
    CHECK(an_guard_safe_step(&g, 13) == 12);
    CHECK(fabs(g.level - 2.666) < 1e-12);
    for (long k = 14; k < 14 + AN_GUARD_SPIKE_STEPS - 1; k++) CHECK(an_guard_before_update(&g, k, 6.0, 0.5) == AN_GUARD_OK);
    CHECK(an_guard_safe_step(&g, 32) == 12);
    CHECK(an_guard_before_update(&g, 33, 6.0, 0.5) == AN_GUARD_SPIKED && g.bad_update == 13);
    CHECK(fabs(g.level - 2.666) < 1e-12);
    /* no rule before the warm-up is over: a falling loss from a random start is not compared */
    an_guard_init(&g, 5.0);
    for (long k = 1; k <= 9; k++) CHECK(an_guard_before_update(&g, k, 1.0, 0.5) == AN_GUARD_OK);
    CHECK(an_guard_before_update(&g, 10, 50.0, 0.5) == AN_GUARD_OK && g.spike_run == 0);
}

int main(void) {
    omp_set_num_threads(1); /* same seed, same bits needs a fixed thread count */
    path2(data_path, sizeof data_path, test_tmpdir(), "pairs.jsonl");
    write_pairs(data_path, 40);
    RUN(test_guard_rules);
    RUN(test_guard_spike);
    RUN(test_torn_metrics_line);
    RUN(test_final_write_failure);
    RUN(test_damaged_newest_checkpoint_falls_back);
    RUN(test_exploding_full_run);
    RUN(test_dead_lora_run);
    return test_finish();
}
