/* autoneg train end to end through $BUILD/autoneg: recipe errors, SIGINT with a checkpoint and
 * --resume to the end, --resume of a folder with no checkpoint, two runs into one folder. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static char data_path[512];

static void test_recipe_errors(void) {
    char r1[600], r2[600], args[2000];
    char *e = NULL;
    snprintf(r1, sizeof r1, "%s/unknown.json", test_tmpdir());
    write_text(r1, "{\"optim\": {\"lrr\": 0.001}}");
    snprintf(args, sizeof args, "%s", r1);
    CHECK(test_train_cli(args, &e) == 1);
    CHECK_CONTAINS(e, "unknown.json: optim.lrr: unknown key (did you mean optim.lr?)");
    free(e);
    snprintf(r2, sizeof r2, "%s/type.json", test_tmpdir());
    write_text(r2, "{\"lora\": {\"r\": \"eight\"}}");
    snprintf(args, sizeof args, "%s", r2);
    CHECK(test_train_cli(args, &e) == 1);
    CHECK_CONTAINS(e, "type.json: lora.r: expected an integer, found a string");
    free(e);
    /* a --set with a bad value names the argument */
    snprintf(args, sizeof args, "%s --set optim.lr=-1", r1);
    write_text(r1, "{}");
    CHECK(test_train_cli(args, &e) == 1);
    CHECK_CONTAINS(e, "optim.lr: must be > 0");
    free(e);
    CHECK(test_train_cli("--steps 2 --epochs 1", &e) == 1);
    CHECK_CONTAINS(e, "--steps or --epochs, not both");
    free(e);
    char run[600];
    snprintf(run, sizeof run, "%s/no-ckpt", test_tmpdir());
    mkdir(run, 0755);
    snprintf(args, sizeof args, "--resume %s", run);
    CHECK(test_train_cli(args, &e) == 1);
    CHECK_CONTAINS(e, "no-ckpt/recipe.json");
    free(e);
}

static const char *common =
    "--set 'model_config={\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"vocab_size\":2048,"
    "\"hidden_size\":32,\"intermediate_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
    "\"num_key_value_heads\":4,\"max_position_embeddings\":64,\"tie_word_embeddings\":true}' "
    "--method full --set data.max_length=48 --set train.seq_len=48 --set train.batch_size=2 "
    "--set train.threads=1 --set data.template=default";

/* SIGINT while training: the run checkpoints and exits 130; --resume DIR finishes it, and the losses
 * of the steps after the checkpoint are those of an uninterrupted run. */
static void test_sigint_then_resume(void) {
    char run[600], ref[600], args[4000], metrics[700];
    snprintf(run, sizeof run, "%s/sigint", test_tmpdir());
    snprintf(ref, sizeof ref, "%s/sigint-ref", test_tmpdir());
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", run);
    const char *tok = test_shared("models/TinyStories-656K");
    pid_t pid = fork();
    if (pid == 0) {
        char cmd[4096];
        snprintf(cmd, sizeof cmd,
                 "exec %s train --data %s --out %s --steps 400 %s --set tokenizer.path=%s > /dev/null 2> %s/sigint.err",
                 bin(), data_path, run, common, tok, test_tmpdir());
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    /* wait until a few steps are logged, then interrupt */
    for (int i = 0; i < 600; i++) {
        an_error e;
        size_t n = 0;
        char *m = an_file_exists(metrics) ? an_read_file(metrics, &n, &e) : NULL;
        int lines = 0;
        for (size_t k = 0; m && k < n; k++) lines += m[k] == '\n';
        free(m);
        if (lines >= 3) break;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGINT);
    int st;
    waitpid(pid, &st, 0);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 130, "status %d", st);
    char ckpt_dir[700];
    snprintf(ckpt_dir, sizeof ckpt_dir, "%s/checkpoints", run);
    CHECK(an_is_dir(ckpt_dir));
    char *e = NULL;
    /* the run would take long to finish at 400 steps: resume with a shorter schedule is a different run,
     * so finish it as it is, stopping the resumed run early with --stop-after */
    snprintf(args, sizeof args, "--resume %s --stop-after 2", run);
    CHECK(test_train_cli(args, &e) == 0);
    CHECK_CONTAINS(e, "resuming from");
    CHECK_CONTAINS(e, "continue with: autoneg train --resume");
    free(e);
    /* the reference: the same recipe uninterrupted, as far as the resumed run got */
    an_error err;
    size_t n;
    char *m = an_read_file(metrics, &n, &err);
    long last = 0;
    for (char *p = m; p && (p = strstr(p, "{\"step\":")); p++) last = strtol(p + 8, NULL, 10);
    free(m);
    CHECK(last >= 3);
    snprintf(args, sizeof args, "--data %s --out %s --steps 400 %s --set tokenizer.path=%s --stop-after %ld", data_path,
             ref, common, tok, last);
    CHECK(test_train_cli(args, &e) == 0);
    free(e);
    char refm[700];
    snprintf(refm, sizeof refm, "%s/metrics.jsonl", ref);
    char *a = an_read_file(metrics, NULL, &err), *b = an_read_file(refm, NULL, &err);
    /* identical lines but for timing fields: compare the "loss" values step by step */
    for (long s = 1; a && b && s <= last; s++) {
        char key[64];
        snprintf(key, sizeof key, "{\"step\":%ld,\"loss\":", s);
        char *pa = strstr(a, key), *pb = strstr(b, key);
        CHECK_MSG(pa && pb, "step %ld missing", s);
        if (!pa || !pb) break;
        char *ea = strchr(pa + strlen(key), ','), *eb = strchr(pb + strlen(key), ',');
        CHECK_MSG(ea - pa == eb - pb && !strncmp(pa, pb, (size_t)(ea - pa)), "step %ld: %.60s vs %.60s", s, pa, pb);
    }
    free(a);
    free(b);
}

/* --resume auto: a fresh folder starts a new run; a folder with a checkpoint continues from it. */
static void test_resume_auto(void) {
    char run[600], args[4000];
    char *e = NULL;
    snprintf(run, sizeof run, "%s/auto", test_tmpdir());
    const char *tok = test_shared("models/TinyStories-656K");
    snprintf(args, sizeof args, "--data %s --out %s --steps 4 %s --set tokenizer.path=%s --resume auto --stop-after 2",
             data_path, run, common, tok);
    CHECK(test_train_cli(args, &e) == 0);
    CHECK_CONTAINS(e, "no checkpoint in");
    CHECK_CONTAINS(e, "stopped at step 2 of 4");
    free(e);
    CHECK(test_train_cli(args, &e) == 0); /* the same command again picks up where it stopped */
    CHECK_CONTAINS(e, "resuming from");
    CHECK_CONTAINS(e, "step-00000002.ckpt at step 2 of 4");
    CHECK_CONTAINS(e, "done: 4 steps");
    free(e);
}

/* A second run into the folder of a run still going is refused, naming the folder and the first
 * run's pid; the first is untouched: interrupted, it resumes and its metrics read back whole. */
static void test_two_runs_one_folder(void) {
    char run[600], args[4000], metrics[700], pidtext[32];
    snprintf(run, sizeof run, "%s/locked", test_tmpdir());
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", run);
    const char *tok = test_shared("models/TinyStories-656K");
    pid_t pid = fork();
    if (pid == 0) {
        char cmd[4096];
        snprintf(cmd, sizeof cmd,
                 "exec %s train --data %s --out %s --steps 400 %s --set tokenizer.path=%s --set checkpoint.every=2 "
                 "> /dev/null 2> %s/locked.err",
                 bin(), data_path, run, common, tok, test_tmpdir());
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 600 && test_count_lines(metrics) < 3; i++) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    char *e = NULL;
    snprintf(args, sizeof args, "--data %s --out %s --steps 400 %s --set tokenizer.path=%s --stop-after 2", data_path,
             run, common, tok);
    int second = test_train_cli(args, &e);
    CHECK_MSG(second == 1, "the second run exited with %d", second);
    CHECK_CONTAINS(e, run);
    snprintf(pidtext, sizeof pidtext, "pid %ld", (long)pid);
    CHECK_CONTAINS(e, pidtext);
    free(e);
    kill(pid, SIGINT);
    int st;
    waitpid(pid, &st, 0);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 130, "status %d", st);
    /* the folder is the first run's alone: its metrics read back and it resumes */
    an_metrics_series s;
    an_error err;
    CHECK_MSG(an_metrics_read(metrics, &s, &err) == 0, "%s", err.msg);
    for (size_t i = 0; i < s.n_train; i++) CHECK(s.train_step[i] == (long)i + 1);
    an_metrics_series_free(&s);
    snprintf(args, sizeof args, "--resume %s --stop-after 2", run);
    CHECK(test_train_cli(args, &e) == 0);
    CHECK_CONTAINS(e, "resuming from");
    free(e);
    CHECK_MSG(an_metrics_read(metrics, &s, &err) == 0, "%s", err.msg);
    for (size_t i = 0; i < s.n_train; i++) CHECK(s.train_step[i] == (long)i + 1);
    an_metrics_series_free(&s);
}

int main(void) {
    snprintf(data_path, sizeof data_path, "%s/pairs.jsonl", test_tmpdir());
    FILE *f = fopen(data_path, "w");
    for (int i = 0; i < 30; i++)
        fprintf(f, "{\"prompt\":\"a photo of thing %d, detailed\",\"negative_prompt\":\"blurry, %d fingers\"}\n", i, i % 7);
    fclose(f);
    RUN(test_recipe_errors);
    RUN(test_sigint_then_resume);
    RUN(test_resume_auto);
    RUN(test_two_runs_one_folder);
    return test_finish();
}
