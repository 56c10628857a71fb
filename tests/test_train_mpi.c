/* Data-parallel training over MPI (docs/distributed.md): `mpirun -np 2 autoneg train` against one
 * process with the same recipe (the batch is the global batch), for full fine-tuning, LoRA and QLoRA,
 * with and without ZeRO-1; a 2-rank resume against the uninterrupted 2-rank run; a killed rank and a
 * stopped one (AN_MPI_TIMEOUT); two hosts in two network namespaces.
 *
 * Runs only in a build with MPI=1 (make MPI=1 BUILD=build-mpi test) on a machine with mpirun;
 * otherwise it prints one line saying why and passes. Every rank runs one OpenMP thread
 * (OMP_NUM_THREADS=1), as does the one process it is compared with.
 *
 * The tolerances, from the reduction order. One process sums each weight's gradient over the 4 rows
 * of a batch inside one GEMM; two ranks sum 2 rows each and then add the two partial sums (exactly:
 * a + b is commutative, so with 2 ranks the all-reduce has one possible result). Both are float32
 * sums of the same n <= 4 x 48 = 192 products per micro-batch in another order, whose results differ
 * by at most about n u = 192 x 2^-24 = 1.1e-5 of the sum of their magnitudes, and in practice by a
 * few units in the last place. The loss of step 1 comes from identical weights and differs only by
 * the order of its float32 sums: relative 1e-6 (~16 ulp). Later losses and gradient norms come from
 * weights that differ by those rounding-level gradient differences passed through AdamW, whose
 * update m / sqrt(v) is of order lr whatever the gradient's size, so the weights differ by about lr
 * times the relative gradient difference per step: relative 1e-5 for 6 steps leaves room. The final
 * weights: at most 2 lr per step for a weight whose gradient is near zero (its update's sign can flip
 * with rounding), 2 x 6 x 1e-3; in the mean |difference|, rounding-level (below 1e-6).
 * The trained-token counts are integers summed exactly: equal. With 2 ranks and ZeRO-1 against 2
 * ranks without: the gradients are the same bits (a + b either way) and AdamW is elementwise, so only
 * the norm differs, by the order of its sum of squares (slices then all-reduce): the same tolerances.
 * A resume on 2 ranks repeats the same operations in the same order: bit for bit. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/file.h"
#include "model/io/safetensors.h"
#include "tests/test.h"
#include "tests/train_fixture.h"

#ifdef AN_MPI
#define STEPS 6
#define LR 1e-3

static const char *build_dir(void) {
    const char *b = getenv("BUILD");
    return b && *b ? b : "build";
}

/* Runs a shell command with stdout and stderr into log; the exit status (-1: did not exit). */
static int sh(const char *cmd, const char *log) {
    size_t n = strlen(cmd) + strlen(log) + 64;
    char *c = malloc(n);
    if (!c) return -1;
    snprintf(c, n, "( %s ) > %s 2>&1", cmd, log);
    int st = system(c);
    free(c);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#define MPIRUN "OMP_NUM_THREADS=1 timeout 300 mpirun --allow-run-as-root --oversubscribe"

/* The tiny Llama of the training tests on real prompt pairs: 6 steps of 2 micro-batches of 4 rows,
 * clipping at 0.5 (the gradient norms are 1 to 6: clipping acts, so a norm taken over one rank's
 * gradients alone would show), an evaluation every 3 steps, a checkpoint every 3. */
static void write_recipe(const char *path, const char *method, int zero) {
    an_recipe r;
    an_recipe_defaults(&r);
    char kv[1200];
    snprintf(kv, sizeof kv, "model.base=%s", test_shared("models/TinyStories-656K"));
    test_recipe_set(&r, kv);
    an_error err;
    if (an_recipe_list_append(&r, "data.train", test_shared("data/sdxl-prompt-styler/sdxl_styles_twri.json"), &err))
        CHECK_MSG(0, "%s", err.msg);
    const char *keys[] = {"data.max_length=128", "train.seq_len=128", "train.batch_size=4", "optim.accumulation=2",
                          "optim.clip=0.5", "optim.weight_decay=0.1", "data.val_fraction=0.1", "eval.every=3",
                          "schedule.type=constant", "lora.r=4", "checkpoint.every=3", "train.seed=7",
                          "lora.dropout=0"}; /* dropout masks follow the rows' places in the batch */
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) test_recipe_set(&r, keys[i]);
    snprintf(kv, sizeof kv, "model.method=%s", method);
    test_recipe_set(&r, kv);
    snprintf(kv, sizeof kv, "train.zero=%d", zero);
    test_recipe_set(&r, kv);
    snprintf(kv, sizeof kv, "train.steps=%d", STEPS);
    test_recipe_set(&r, kv);
    snprintf(kv, sizeof kv, "optim.lr=%g", LR);
    test_recipe_set(&r, kv);
    CHECK_MSG(an_recipe_save(&r, path, &err) == 0, "%s", err.msg);
    an_recipe_free(&r);
}

/* `autoneg train RECIPE --out DIR [extra]` on np ranks (0: one plain process); the exit status. */
static int train(int np, const char *recipe, const char *dir, const char *extra, const char *log) {
    char cmd[3000];
    if (np == 0)
        snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 %s/autoneg train %s --out %s %s", build_dir(), recipe, dir, extra);
    else
        snprintf(cmd, sizeof cmd, MPIRUN " -np %d %s/autoneg train %s --out %s %s", np, build_dir(), recipe, dir, extra);
    return sh(cmd, log);
}

typedef struct metrics {
    double loss[64], norm[64], eval[64];
    long tokens[64];
    int n, n_eval;
} metrics;

static void read_metrics(const char *dir, metrics *m) {
    memset(m, 0, sizeof *m);
    char path[700];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    an_error err;
    char *text = an_read_file(path, NULL, &err);
    CHECK_MSG(text != NULL, "%s", err.msg);
    for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        cJSON *o = cJSON_Parse(line);
        if (!o) continue;
        cJSON *l = cJSON_GetObjectItem(o, "loss"), *e = cJSON_GetObjectItem(o, "eval_loss");
        if (l && m->n < 64) {
            m->loss[m->n] = l->valuedouble;
            m->norm[m->n] = cJSON_GetObjectItem(o, "grad_norm")->valuedouble;
            m->tokens[m->n] = (long)cJSON_GetObjectItem(o, "tokens")->valuedouble;
            m->n++;
        } else if (e && m->n_eval < 64)
            m->eval[m->n_eval++] = e->valuedouble;
        cJSON_Delete(o);
    }
    free(text);
}

static double rel(double a, double b) { return fabs(a - b) / fmax(fabs(b), 1e-12); }

/* a against b: equal token counts; the first loss within 1e-6, the rest and the norms within 1e-5
 * (the header's derivation); tol 0: every value bit for bit */
static void compare_metrics(const metrics *a, const metrics *b, double tol, const char *what) {
    CHECK_MSG(a->n == STEPS && b->n == STEPS, "%s: %d and %d training lines, expected %d", what, a->n, b->n, STEPS);
    CHECK_MSG(a->n_eval == b->n_eval && a->n_eval >= 2, "%s: %d and %d evaluations", what, a->n_eval, b->n_eval);
    double worst = 0;
    for (int i = 0; i < a->n && i < b->n; i++) {
        CHECK_MSG(a->tokens[i] == b->tokens[i], "%s: step %d: %ld tokens against %ld", what, i + 1, a->tokens[i],
                  b->tokens[i]);
        double t = tol == 0 ? 0 : i == 0 ? tol / 10 : tol;
        double e = test_nan_max(rel(a->loss[i], b->loss[i]), rel(a->norm[i], b->norm[i]));
        worst = test_nan_max(worst, e);
        CHECK_MSG(!test_nan_worse(e, t), "%s: step %d: loss %.17g against %.17g, norm %.17g against %.17g (tolerance %g)",
                  what, i + 1, a->loss[i], b->loss[i], a->norm[i], b->norm[i], t);
    }
    for (int i = 0; i < a->n_eval && i < b->n_eval; i++) {
        double e = rel(a->eval[i], b->eval[i]);
        worst = test_nan_max(worst, e);
        CHECK_MSG(!test_nan_worse(e, tol), "%s: evaluation %d: %.17g against %.17g", what, i, a->eval[i], b->eval[i]);
    }
    printf("  %s: largest relative difference of losses and norms %.3g\n", what, worst);
}

/* The final weights (model.safetensors or adapter_model.safetensors of DIR/final): the same tensors,
 * each value within 2 lr x steps, the mean |difference| within 1e-6; tol 0: the same bytes */
static void compare_final(const char *a_dir, const char *b_dir, int adapter, double tol, const char *what) {
    char a[1500], b[1500];
    const char *file = adapter ? "final/adapter_model.safetensors" : "final/model.safetensors";
    snprintf(a, sizeof a, "%s/%s", a_dir, file);
    snprintf(b, sizeof b, "%s/%s", b_dir, file);
    if (tol == 0) {
        CHECK_MSG(test_same_file(a, b), "%s: %s and %s differ", what, a, b);
        return;
    }
    an_safetensors sa, sb;
    an_error err;
    if (an_st_open(&sa, a, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    if (an_st_open(&sb, b, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        an_st_close(&sa);
        return;
    }
    CHECK_MSG(sa.n_tensors == sb.n_tensors && sa.n_tensors > 0, "%s: %d and %d tensors", what, sa.n_tensors, sb.n_tensors);
    double worst = 0, sum = 0;
    size_t count = 0;
    for (int k = 0; k < sa.n_tensors; k++) {
        const an_st_tensor *ta = &sa.tensors[k], *tb = an_st_find(&sb, ta->name);
        if (!tb || an_st_numel(tb) != an_st_numel(ta)) {
            CHECK_MSG(0, "%s: %s missing or of another size in %s", what, ta->name, b);
            continue;
        }
        size_t n = (size_t)an_st_numel(ta);
        float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
        if (x && y && !an_st_to_f32(ta, x, &err) && !an_st_to_f32(tb, y, &err))
            for (size_t i = 0; i < n; i++) {
                double d = fabs((double)x[i] - (double)y[i]);
                worst = test_nan_max(worst, d);
                sum += d;
                count++;
            }
        free(x);
        free(y);
    }
    double mean = count ? sum / (double)count : NAN;
    CHECK_MSG(!test_nan_worse(worst, tol), "%s: final weights differ by up to %g (bound %g)", what, worst, tol);
    CHECK_MSG(!test_nan_worse(mean, 1e-6), "%s: final weights differ by %g on average", what, mean);
    printf("  %s: final weights: largest difference %.3g, mean %.3g over %zu values\n", what, worst, mean, count);
    an_st_close(&sa);
    an_st_close(&sb);
}

/* test_tmpdir()/NAME with NAME from fmt, a and z, into out (700 bytes) */
static const char *tmp(char *out, const char *fmt, const char *a, int z) {
    char name[200];
    snprintf(name, sizeof name, fmt, a, z);
    snprintf(out, 700, "%s/%s", test_tmpdir(), name);
    return out;
}

static void check_run(int rc, const char *log) {
    if (rc != 0) {
        char *t = an_read_file(log, NULL, &(an_error){{0}});
        CHECK_MSG(0, "exit %d: %s", rc, t ? t : "(no log)");
        free(t);
    }
}

/* one method: one process, 2 ranks, 2 ranks with ZeRO-1 */
static void same_model(const char *method) {
    int adapter = strcmp(method, "full") != 0;
    metrics one, two, zero1;
    char b1[700], b2[700], b3[700], b4[700], b5[700], b6[700];
    const char *recipe = tmp(b1, "%s-z%d.json", method, 0), *recipe1 = tmp(b2, "%s-z%d.json", method, 1);
    write_recipe(recipe, method, 0);
    write_recipe(recipe1, method, 1);
    const char *d1 = tmp(b3, "%s-one%d", method, 0), *d2 = tmp(b4, "%s-two-z%d", method, 0),
               *dz = tmp(b5, "%s-two-z%d", method, 1), *log = tmp(b6, "%s-%d.log", method, 0);
    check_run(train(0, recipe, d1, "", log), log);
    check_run(train(2, recipe, d2, "", log), log);
    check_run(train(2, recipe1, dz, "", log), log);
    char *text = an_read_file(log, NULL, &(an_error){{0}});
    CHECK_CONTAINS(text ? text : "", "ZeRO-1: each rank keeps the AdamW moments of its slice"); /* sharded, not ignored */
    free(text);
    read_metrics(d1, &one);
    read_metrics(d2, &two);
    read_metrics(dz, &zero1);
    char what[100];
    snprintf(what, sizeof what, "%s, 2 ranks vs 1 process", method);
    compare_metrics(&two, &one, 1e-5, what);
    compare_final(d2, d1, adapter, 2 * LR * STEPS, what);
    snprintf(what, sizeof what, "%s, 2 ranks ZeRO-1 vs 1 process", method);
    compare_metrics(&zero1, &one, 1e-5, what);
    compare_final(dz, d1, adapter, 2 * LR * STEPS, what);
    /* only rank 0 wrote the folder: one metrics line per step and evaluation, one final model */
    char p[800];
    snprintf(p, sizeof p, "%s/metrics.jsonl", d2);
    CHECK_MSG(test_count_lines(p) == STEPS + one.n_eval, "%s: %d lines", p, test_count_lines(p));
}

static void test_full_same_as_one_process(void) { same_model("full"); }
static void test_lora_same_as_one_process(void) { same_model("lora"); }
static void test_qlora_same_as_one_process(void) { same_model("qlora"); }

/* 3 steps, a stop, a resume on 2 ranks: every loss and the final weights bit for bit as the
 * uninterrupted 2-rank run (with ZeRO-1: the checkpoint holds the gathered moments); the same
 * checkpoint resumed on 1 process trains on (another number of ranks is supported), within the
 * tolerances of 1 against 2. */
static void test_resume_exact(void) {
    char b1[700], b2[700], b3[700], b4[700], b5[700];
    const char *recipe = tmp(b1, "%s-z%d.json", "resume", 1);
    write_recipe(recipe, "lora", 1);
    const char *whole = tmp(b2, "%s-whole%d", "resume", 1), *cut = tmp(b3, "%s-cut%d", "resume", 1),
               *log = tmp(b4, "%s-%d.log", "resume", 1);
    check_run(train(2, recipe, whole, "", log), log);
    check_run(train(2, recipe, cut, "--stop-after 3", log), log);
    char extra[800];
    snprintf(extra, sizeof extra, "--resume %s", cut);
    check_run(train(2, recipe, cut, extra, log), log);
    metrics a, b;
    read_metrics(cut, &a);
    read_metrics(whole, &b);
    compare_metrics(&a, &b, 0, "lora ZeRO-1, resumed on 2 ranks");
    compare_final(cut, whole, 1, 0, "lora ZeRO-1, resumed on 2 ranks");
    /* the 2-rank checkpoint of step 3, resumed by one process */
    const char *other = tmp(b5, "%s-one%d", "resume", 1);
    char cmd[4000];
    snprintf(cmd, sizeof cmd, "mkdir -p %s/checkpoints && cp %s/checkpoints/step-00000003.ckpt %s/checkpoints/", other, whole,
             other);
    CHECK(sh(cmd, log) == 0);
    snprintf(extra, sizeof extra, "--resume %s", other);
    check_run(train(0, recipe, other, extra, log), log);
    char *text = an_read_file(log, NULL, &(an_error){{0}});
    CHECK_CONTAINS(text ? text : "", "resuming from");
    free(text);
    read_metrics(other, &a);
    CHECK_MSG(a.n == STEPS - 3, "%d steps after the resume", a.n);
    for (int i = 0; i < a.n && i + 3 < b.n; i++)
        CHECK_MSG(rel(a.loss[i], b.loss[i + 3]) <= 1e-5, "step %d: %.17g on 1 process, %.17g on 2 ranks", i + 4, a.loss[i],
                  b.loss[i + 3]);
}

/* Starts a long 2-rank run into DIR, sends rank 1 signal sig once the run has written its checkpoints
 * of steps 0 and 5, and waits for the job; env goes in front of mpirun. The exit status; the log
 * holds "signalled rank 1" and "ended_after SECONDS" (from the signal to the job's end). Rank 1 is the
 * process of this run (its --out) with rank 1 in its environment. 20000 steps would take minutes: a
 * job that does not end is cut at 120 s by timeout. */
static int signal_rank1(const char *env, const char *sig, const char *recipe, const char *dir, const char *log) {
    char cmd[4000];
    snprintf(cmd, sizeof cmd,
             "%s OMP_NUM_THREADS=1 timeout 120 mpirun --allow-run-as-root --oversubscribe -np 2 %s/autoneg train %s "
             "--out %s --steps 20000 --set checkpoint.every=5 & mp=$!; "
             "for i in $(seq 600); do [ $(ls %s/checkpoints 2>/dev/null | grep -c ckpt$) -ge 2 ] && break; sleep 0.1; done; "
             "for p in /proc/[0-9]*; do "
             "  tr '\\0' '\\n' < $p/cmdline 2>/dev/null | grep -qx %s && tr '\\0' '\\n' < $p/environ 2>/dev/null | "
             "  grep -qx OMPI_COMM_WORLD_RANK=1 && kill -%s ${p#/proc/} && echo signalled rank 1 pid ${p#/proc/}; "
             "done; k=$(date +%%s.%%N); "
             "wait $mp; rc=$?; e=$(date +%%s.%%N); awk \"BEGIN { print \\\"ended_after\\\", $e - $k }\"; exit $rc",
             env, build_dir(), recipe, dir, dir, dir, sig);
    return sh(cmd, log);
}

/* The job ended within bound seconds of the signal with a non-zero status and the log says needle;
 * then the last checkpoint resumes on 2 ranks. */
static void check_ended(int rc, const char *log, const char *needle, double bound, const char *what, const char *recipe,
                        const char *dir) {
    char *text = an_read_file(log, NULL, &(an_error){{0}});
    const char *t = text ? text : "";
    CHECK_CONTAINS(t, "signalled rank 1");
    CHECK_MSG(rc != 0 && rc != 124, "%s: the job exited with %d: %s", what, rc, t);
    CHECK_CONTAINS(t, needle);
    const char *at = strstr(t, "ended_after ");
    double dt = at ? atof(at + 12) : NAN;
    CHECK_MSG(!test_nan_worse(dt, bound), "%s: the job ended %.1f s after the signal (bound %g s)", what, dt, bound);
    printf("  %s: the job ended with exit %d, %.2f s after the signal\n", what, rc, dt);
    free(text);
    char extra[800];
    snprintf(extra, sizeof extra, "--resume %s --stop-after 1", dir);
    check_run(train(2, recipe, dir, extra, log), log);
    text = an_read_file(log, NULL, &(an_error){{0}});
    CHECK_CONTAINS(text ? text : "", "resuming from");
    free(text);
}

/* A rank killed with SIGKILL mid-run: mpirun ends the job within a bound, names the rank, and the
 * last checkpoint resumes. The bound: mpirun sees the child die at once and sends the others SIGTERM
 * then SIGKILL; 60 s is far above the 2 s it takes here and far below a hang. */
static void test_killed_rank(void) {
    char b1[700], b2[700], b3[700];
    const char *recipe = tmp(b1, "%s-z%d.json", "kill", 0), *dir = tmp(b2, "%s-run%d", "kill", 0),
               *log = tmp(b3, "%s-%d.log", "kill", 0);
    write_recipe(recipe, "full", 0);
    int rc = signal_rank1("", "KILL", recipe, dir, log);
    /* OpenMPI's words: "mpirun noticed that process rank 1 with PID ... exited on signal 9" */
    check_ended(rc, log, "process rank 1", 60, "killed rank 1", recipe, dir);
}

/* A rank that stops (SIGSTOP: a hung process, or a host cut off) kills nobody, and MPI waits for it
 * forever; with AN_MPI_TIMEOUT=5 the watchdog of rank 0 ends the job when its collective has waited
 * 5 s. Bound: 5 s plus the watchdog's 0.2 s tick plus mpirun's cleanup, within 60 s. */
static void test_stopped_rank(void) {
    char b1[700], b2[700], b3[700];
    const char *recipe = tmp(b1, "%s-z%d.json", "stop", 1), *dir = tmp(b2, "%s-run%d", "stop", 1),
               *log = tmp(b3, "%s-%d.log", "stop", 1);
    write_recipe(recipe, "lora", 1);
    int rc = signal_rank1("AN_MPI_TIMEOUT=5", "STOP", recipe, dir, log);
    /* "autoneg: rank 0: the all-reduce (or reduce-scatter, where rank 1 stopped) has waited ..." */
    check_ended(rc, log, "has waited more than 5 s for the other ranks", 60,
                "stopped rank 1, AN_MPI_TIMEOUT=5", recipe, dir);
}

/* GPU ranks need the NCCL communicator: in a build without both CUDA=1 and MPI=1 (this test's), two
 * ranks asked for --device cuda stop before their first step with a message naming the build, and no
 * run folder is left. (With both, tools/cuda_emu/nccl.sh runs them under the host emulation.) */
static void test_gpu_ranks_need_nccl(void) {
#if defined(AN_CUDA)
    printf("  skipped: this build has the NCCL communicator\n");
#else
    char b1[700], b2[700], b3[700];
    const char *recipe = tmp(b1, "%s-z%d.json", "gpu", 0), *dir = tmp(b2, "%s-run%d", "gpu", 0),
               *log = tmp(b3, "%s-%d.log", "gpu", 0);
    write_recipe(recipe, "lora", 0);
    int rc = train(2, recipe, dir, "--device cuda", log);
    an_error err;
    char *text = an_read_file(log, NULL, &err);
    CHECK_MSG(rc != 0, "two GPU ranks without NCCL exited 0");
    CHECK_MSG(text && strstr(text, "GPU ranks need a build with both CUDA=1 and MPI=1"), "log: %s", text ? text : err.msg);
    CHECK_MSG(!an_file_exists(dir), "%s is left behind", dir);
    free(text);
#endif
}

/* Two hosts for real (tests/mpi_two_hosts.sh): one rank in each of two network namespaces, OpenMPI
 * over TCP across a veth pair; the same losses as one process, within the tolerances above. Skips
 * with the script's message without the privilege for namespaces. */
static void test_two_hosts(void) {
    char b1[700], b2[700], b3[700], b4[700];
    const char *recipe = tmp(b1, "%s-z%d.json", "hosts", 0), *one = tmp(b2, "%s-one%d", "hosts", 0),
               *two = tmp(b3, "%s-two%d", "hosts", 0), *log = tmp(b4, "%s-%d.log", "hosts", 0);
    write_recipe(recipe, "full", 0);
    char cmd[3000];
    snprintf(cmd, sizeof cmd, "sh tests/mpi_two_hosts.sh %s/autoneg %s %s", build_dir(), recipe, two);
    int rc = sh(cmd, log);
    char *text = an_read_file(log, NULL, &(an_error){{0}});
    const char *t = text ? text : "";
    if (rc == 77) {
        printf("  two hosts: skipped: %s", t);
        free(text);
        return;
    }
    CHECK_MSG(rc == 0, "exit %d: %s", rc, t);
    CHECK_CONTAINS(t, "rank 0 on 10.199.0.1");
    CHECK_CONTAINS(t, "rank 1 on 10.199.0.2");
    free(text);
    check_run(train(0, recipe, one, "", log), log);
    metrics a, b;
    read_metrics(two, &a);
    read_metrics(one, &b);
    compare_metrics(&a, &b, 1e-5, "full, 2 hosts over TCP vs 1 process");
    compare_final(two, one, 0, 2 * LR * STEPS, "full, 2 hosts over TCP vs 1 process");
}
#endif

int main(void) {
#ifndef AN_MPI
    printf("test_train_mpi: skipped: built without MPI (make MPI=1 BUILD=build-mpi test runs it)\n");
    return test_finish();
#else
    if (system("command -v mpirun > /dev/null 2>&1") != 0) {
        printf("test_train_mpi: skipped: no mpirun on PATH (Debian: openmpi-bin)\n");
        return test_finish();
    }
    const char *only = getenv("AN_TEST_ONLY");
    if (!only || strstr(only, "full")) RUN(test_full_same_as_one_process);
    if (!only || strstr(only, "qlora")) RUN(test_qlora_same_as_one_process);
    if (!only || strstr(only, "lora")) RUN(test_lora_same_as_one_process);
    if (!only || strstr(only, "resume")) RUN(test_resume_exact);
    if (!only || strstr(only, "kill")) RUN(test_killed_rank);
    if (!only || strstr(only, "stop")) RUN(test_stopped_rank);
    if (!only || strstr(only, "hosts")) RUN(test_two_hosts);
    if (!only || strstr(only, "gpu")) RUN(test_gpu_ranks_need_nccl);
    return test_finish();
#endif
}
