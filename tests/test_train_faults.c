/* Fault injection on `autoneg train` through $BUILD/autoneg (issue 18): kill -9 at seeded random
 * moments with --resume after each, a real full disk (a small tmpfs), and runs that fail before their
 * first step. The reference is an uninterrupted run of the same recipe: its final weights, byte for byte.
 *
 * The other faults of issue 18 are tested where their hooks are: a damaged newest checkpoint
 * (test_damaged_newest_checkpoint_falls_back in tests/test_train_safety.c), a torn metrics line and a
 * failed final/ write (same file), a second run into a folder in use (test_two_runs_one_folder in
 * tests/test_train_cli.c), SIGINT and --resume (test_sigint_then_resume, same file). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/file.h"
#include "train/metrics.h"
#include "test.h"
#include "tests/train_fixture.h"

static const char *bin(void) {
    static char b[512];
    const char *build = getenv("BUILD");
    snprintf(b, sizeof b, "%s/autoneg", build && *build ? build : "build");
    return b;
}

static char data_path[512], tok[512];

/* Every run of the same recipe: a random 2-layer Llama of width 32, full fine-tuning, one thread. */
static const char *common =
    "--set 'model_config={\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"vocab_size\":2048,"
    "\"hidden_size\":32,\"intermediate_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
    "\"num_key_value_heads\":4,\"max_position_embeddings\":64,\"tie_word_embeddings\":true}' "
    "--method full --set data.max_length=48 --set train.seq_len=48 --set train.batch_size=2 "
    "--set train.threads=1 --set data.template=default --set eval.every=50";
#define STEPS 300

static int exists(const char *p) { return an_file_exists(p) || an_is_dir(p); }

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* metrics.jsonl of a finished run: every step once, in order. */
static void check_metrics(const char *dir) {
    char p[700];
    snprintf(p, sizeof p, "%s/metrics.jsonl", dir);
    an_metrics_series s;
    an_error err;
    CHECK_MSG(an_metrics_read(p, &s, &err) == 0, "%s", err.msg);
    CHECK_MSG(s.n_train == STEPS, "%zu train lines", s.n_train);
    for (size_t i = 0; i < s.n_train; i++) CHECK(s.train_step[i] == (long)i + 1);
    an_metrics_series_free(&s);
}

static char ref[600], ref_final[700];

/* The uninterrupted run every other run is compared with. */
static void test_reference_run(void) {
    char args[4000];
    char *e = NULL;
    snprintf(ref, sizeof ref, "%s/ref", test_tmpdir());
    snprintf(args, sizeof args, "--data %s --out %s --steps %d %s --set tokenizer.path=%s", data_path, ref, STEPS, common,
             tok);
    CHECK_MSG(test_train_cli(args, &e) == 0, "%s", e);
    free(e);
    snprintf(ref_final, sizeof ref_final, "%s/final/model.safetensors", ref);
    CHECK(an_file_exists(ref_final));
}

/* kill -9 three times at seeded random moments (a random count of logged lines, then a random delay:
 * mid-step, mid-checkpoint, mid-evaluation, mid-metrics line), `--resume auto` after each, then let it
 * finish: the final weights are the uninterrupted run's byte for byte, and metrics.jsonl has each step once. */
static void test_kill9_and_resume(void) {
    char run[600], metrics[700], args[4000], fin[700];
    snprintf(run, sizeof run, "%s/killed", test_tmpdir());
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", run);
    snprintf(args, sizeof args,
             "--data %s --out %s --steps %d %s --set tokenizer.path=%s --set checkpoint.every=7 --resume auto",
             data_path, run, STEPS, common, tok);
    unsigned seed = 18;
    int kills = 0;
    for (int attempt = 0; attempt < 3; attempt++) {
        int before = test_count_lines(metrics);
        int wait_lines = before + 1 + (int)(rand_r(&seed) % 60);
        long delay_us = (long)(rand_r(&seed) % 20000);
        pid_t pid = fork();
        if (pid == 0) {
            char cmd[4600];
            snprintf(cmd, sizeof cmd, "exec %s train %s > /dev/null 2>> %s/killed.err", bin(), args, test_tmpdir());
            execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
            _exit(127);
        }
        int st, done = 0;
        for (int i = 0; i < 20000 && test_count_lines(metrics) < wait_lines; i++) {
            if (waitpid(pid, &st, WNOHANG) == pid) {
                done = 1;
                break;
            }
            sleep_us(500);
        }
        if (!done) {
            sleep_us(delay_us);
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
        }
        if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) {
            kills++;
            printf("  kill %d: after %d metrics lines + %ld us (%d lines on disk)\n", kills, wait_lines, delay_us,
                   test_count_lines(metrics));
        } else {
            CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
        }
    }
    CHECK_MSG(kills >= 2, "only %d of 3 runs were killed before they finished", kills);
    char *e = NULL;
    CHECK_MSG(test_train_cli(args, &e) == 0, "%s", e);
    free(e);
    snprintf(fin, sizeof fin, "%s/final/model.safetensors", run);
    CHECK_MSG(test_same_file(fin, ref_final), "%s differs from the uninterrupted run's", fin);
    check_metrics(run);
}

/* A real full disk: the run writes into a 3 MiB tmpfs with every checkpoint kept until a write fails.
 * It stops with status 1 naming the file and the checkpoint it keeps; that checkpoint is whole: the
 * folder, copied to a disk with room, resumes to the uninterrupted run's final weights. Where a tmpfs
 * cannot be mounted (not root, a container without CAP_SYS_ADMIN) the test says so and leaves the case
 * to the checkpoint writer's byte limit (test_checkpoint_disk_full in tests/test_train.c). */
static void test_full_disk(void) {
    char disk[600], run[700], room[600], args[4000], cmd[2000], fin[700];
    snprintf(disk, sizeof disk, "%s/disk", test_tmpdir());
    mkdir(disk, 0755);
    if (mount("tmpfs", disk, "tmpfs", 0, "size=3m") != 0) {
        printf("  note: cannot mount a tmpfs on %s (%s): the full disk is covered only by the checkpoint writer's "
               "byte limit (tests/test_train.c)\n", disk, strerror(errno));
        return;
    }
    snprintf(run, sizeof run, "%s/run", disk);
    snprintf(args, sizeof args,
             "--data %s --out %s --steps %d %s --set tokenizer.path=%s --set checkpoint.every=1 --set checkpoint.keep=1000",
             data_path, run, STEPS, common, tok);
    char *e = NULL;
    int rc = test_train_cli(args, &e);
    CHECK_MSG(rc == 1, "status %d", rc);
    CHECK_CONTAINS(e, "No space left on device");
    CHECK_CONTAINS(e, run); /* the file that could not be written */
    CHECK_CONTAINS(e, "checkpoint not written; the previous checkpoint");
    const char *line = e ? strstr(e, "autoneg: step") : NULL;
    if (line) printf("  %s", line);
    free(e);
    /* no temporary checkpoint is left behind */
    snprintf(cmd, sizeof cmd, "ls %s/checkpoints | grep -c tmp", run);
    FILE *p = popen(cmd, "r");
    int tmps = -1;
    if (p && fscanf(p, "%d", &tmps) != 1) tmps = -1;
    if (p) pclose(p);
    CHECK_MSG(tmps == 0, "%d temporary files left", tmps);
    snprintf(room, sizeof room, "%s/room", test_tmpdir());
    snprintf(cmd, sizeof cmd, "cp -a %s %s", run, room);
    CHECK(system(cmd) == 0);
    CHECK(umount(disk) == 0);
    snprintf(args, sizeof args, "--resume %s", room);
    CHECK_MSG(test_train_cli(args, &e) == 0, "%s", e);
    CHECK_CONTAINS(e, "resuming from");
    free(e);
    snprintf(fin, sizeof fin, "%s/final/model.safetensors", room);
    CHECK_MSG(test_same_file(fin, ref_final), "%s differs from the uninterrupted run's", fin);
    check_metrics(room);
}

/* A run that fails before its first step (a data file with no pair, a base that does not exist, a
 * device not built in) removes the run folder it created, parents included, and says so; a folder that
 * existed before is left, and a previous run in it keeps its final weights. */
static void test_failed_start_leaves_no_folder(void) {
    char bad[600], args[4000], top[600], out[700];
    snprintf(bad, sizeof bad, "%s/bad.jsonl", test_tmpdir());
    FILE *f = fopen(bad, "w");
    fputs("garbage\n", f);
    fclose(f);
    const char *cases[] = {"--data %s --out %s %s --set tokenizer.path=%s", /* then the bad data */
                           "--data %s --out %s --base /nonexistent/model --method full --set data.template=default%.0s%.0s",
                           "--data %s --out %s %s --set tokenizer.path=%s --device tpu"};
    const char *why[] = {"no prompt pairs found", "/nonexistent/model", "no such backend"};
    for (int i = 0; i < 3; i++) {
        snprintf(top, sizeof top, "%s/fresh-%d", test_tmpdir(), i);
        snprintf(out, sizeof out, "%s/runs/x", top);
        snprintf(args, sizeof args, cases[i], i == 0 ? bad : data_path, out, common, tok);
        char *e = NULL;
        CHECK(test_train_cli(args, &e) == 1);
        CHECK_CONTAINS(e, why[i]);
        CHECK_MSG(!exists(top), "case %d: %s was left behind", i, top);
        CHECK_CONTAINS(e, "removed the run folder");
        free(e);
    }
    /* a folder that was there before, empty, stays, and is empty again (no recipe.json, cache or
     * run.lock left in it) */
    snprintf(top, sizeof top, "%s/existing", test_tmpdir());
    mkdir(top, 0755);
    snprintf(args, sizeof args, cases[0], bad, top, common, tok);
    char *e = NULL;
    CHECK(test_train_cli(args, &e) == 1);
    CHECK(an_is_dir(top));
    snprintf(out, sizeof out, "%s/recipe.json", top);
    CHECK_MSG(!exists(out), "%s was left behind", out);
    snprintf(out, sizeof out, "%s/run.lock", top);
    CHECK_MSG(!exists(out), "%s was left behind", out);
    CHECK_CONTAINS(e, "emptied the run folder");
    free(e);
    /* one that held something keeps it */
    snprintf(out, sizeof out, "%s/notes.txt", top);
    f = fopen(out, "w");
    fputs("mine\n", f);
    fclose(f);
    CHECK(test_train_cli(args, &e) == 1);
    CHECK(exists(out));
    free(e);
    /* and so does a previous run: the reference's final weights are untouched */
    char keep[700];
    snprintf(keep, sizeof keep, "%s/ref-final.safetensors", test_tmpdir());
    snprintf(args, sizeof args, "cp %s %s", ref_final, keep);
    CHECK(system(args) == 0);
    snprintf(args, sizeof args, cases[0], bad, ref, common, tok);
    CHECK(test_train_cli(args, &e) == 1);
    CHECK(test_same_file(ref_final, keep));
    free(e);
}

int main(void) {
    snprintf(data_path, sizeof data_path, "%s/pairs.jsonl", test_tmpdir());
    snprintf(tok, sizeof tok, "%s", test_shared("models/TinyStories-656K"));
    FILE *f = fopen(data_path, "w");
    for (int i = 0; i < 30; i++)
        fprintf(f, "{\"prompt\":\"a photo of thing %d, detailed\",\"negative_prompt\":\"blurry, %d fingers\"}\n", i, i % 7);
    fclose(f);
    RUN(test_reference_run);
    RUN(test_kill9_and_resume);
    RUN(test_full_disk);
    RUN(test_failed_start_leaves_no_folder);
    return test_finish();
}
