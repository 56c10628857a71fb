/* autoneg train [RECIPE.json] [--base M] [--data F]... [--method full|lora|qlora] [--out DIR]
 *               [--steps N | --epochs E] [--resume DIR|auto] [--set key=value]... [--stop-after N]
 *               [--device cpu|cuda|cuda-bf16]
 *
 * Resolves the recipe (file, then flags, then --set, as docs/recipes.md says), installs the SIGINT /
 * SIGTERM handler that asks the loop to checkpoint and stop, and runs train/trainer.h.
 * Built with MPI=1 and started by mpirun or srun, it is one rank of a data-parallel job
 * (docs/distributed.md): an error on any rank ends every rank (MPI_Abort), naming the rank. */
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/help.h"
#include "core/file.h"
#include "train/comm.h"
#include "train/recipe.h"
#include "train/trainer.h"

/* The only state a signal handler may touch; the loop reads it through an_trainer_opts.stop. */
static volatile sig_atomic_t train_stop_requested;

static void on_signal(int sig) {
    (void)sig;
    train_stop_requested = 1;
}

static void print_note(void *ctx, const char *line) {
    (void)ctx;
    fprintf(stderr, "autoneg: %s\n", line);
}

static const cli_opt train_opts[] = {
    {"--base", "M", "base model: Hugging Face folder, GGUF or llama2.c .bin (recipe key model.base)"},
    {"--data", "F", "training pairs; repeat for several files, replacing the recipe's data.train"},
    {"--method", "full|lora|qlora", "what is trained (model.method; default: the recipe's, else lora)"},
    {"--out", "DIR", "run folder: checkpoints, metrics, final model (output.dir)"},
    {"--steps", "N", "optimizer steps (train.steps)"},
    {"--epochs", "E", "passes over the data instead of --steps (train.epochs)"},
    {"--resume", "DIR|auto", "continue a run from its last checkpoint; auto: if the run folder has one"},
    {"--set", "key=value", "any recipe key, e.g. --set optim.lr=2e-4 (docs/recipes.md); repeatable"},
    {"--stop-after", "N", "checkpoint and stop after N steps of this invocation, as Ctrl-C does"},
    {"--device", "cpu|cuda|cuda-bf16", "backend to train on (train.device; default: cpu)"},
    {NULL, NULL, NULL},
};

const cli_help cli_help_train = {
    "train [RECIPE.json] [--base M] [--data F]... [--method full|lora|qlora] [--out DIR]\n"
    "train [RECIPE.json] [--steps N | --epochs E] [--resume DIR|auto] [--set key=value]... [--device cpu|cuda|cuda-bf16]",
    "Fine-tunes a model on prompt pairs. The recipe file comes first, then the flags, then --set\n"
    "(docs/recipes.md); without a recipe the defaults apply. Progress and the final summary go to\n"
    "stderr; Ctrl-C writes a checkpoint and stops, and --resume continues the exact same run.\n"
    "Built with make MPI=1, `mpirun -np N autoneg train ...` trains on N data-parallel ranks\n"
    "(docs/distributed.md).",
    train_opts, NULL, NULL,
    "train configs/recipes/tiny-from-scratch.json --out runs/tiny --steps 200",
};

typedef struct train_args {
    const char *recipe, *base, *method, *device, *out, *steps, *epochs, *resume, *stop_after;
    const char **data, **sets;
    int n_data, n_sets;
} train_args;

static int parse_args(int argc, char **argv, train_args *a) {
    memset(a, 0, sizeof *a);
    a->data = calloc((size_t)argc, sizeof *a->data);
    a->sets = calloc((size_t)argc, sizeof *a->sets);
    if (!a->data || !a->sets) return cli_fail("out of memory");
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        const char **slot = NULL;
        if (f[0] != '-') {
            if (a->recipe) return cli_help_fail(&cli_help_train, "train: a second recipe '%s' (the first was '%s')", f, a->recipe);
            a->recipe = f;
            continue;
        }
        if (i + 1 >= argc) return cli_help_fail(&cli_help_train, "train: %s needs a value", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--base")) slot = &a->base;
        else if (!strcmp(f, "--method")) slot = &a->method;
        else if (!strcmp(f, "--device")) slot = &a->device;
        else if (!strcmp(f, "--out")) slot = &a->out;
        else if (!strcmp(f, "--steps")) slot = &a->steps;
        else if (!strcmp(f, "--epochs")) slot = &a->epochs;
        else if (!strcmp(f, "--resume")) slot = &a->resume;
        else if (!strcmp(f, "--stop-after")) slot = &a->stop_after;
        else if (!strcmp(f, "--data")) a->data[a->n_data++] = v;
        else if (!strcmp(f, "--set")) a->sets[a->n_sets++] = v;
        else return cli_help_fail(&cli_help_train, "train: unknown option '%s'", f);
        if (slot) *slot = v;
    }
    if (a->steps && a->epochs) return cli_fail("train: give --steps or --epochs, not both");
    return 0;
}

/* The recipe: the file (or the run folder's recipe.json for --resume DIR), flags, then --set. */
static int resolve(const train_args *a, an_recipe *r, an_error *err) {
    char from_run[1100];
    const char *file = a->recipe;
    if (!file && a->resume && strcmp(a->resume, "auto")) {
        if (an_path_join(from_run, sizeof from_run, a->resume, "recipe.json"))
            return an_fail(err, "%s: path too long", a->resume);
        file = from_run;
    }
    if (file) {
        if (an_recipe_load(r, file, err)) return -1;
    } else {
        an_recipe_defaults(r);
    }
    if (a->base && an_recipe_set_key(r, "model.base", a->base, "--base", err)) return -1;
    if (a->n_data) {
        if (an_recipe_list_clear(r, "data.train", err)) return -1;
        for (int i = 0; i < a->n_data; i++)
            if (an_recipe_list_append(r, "data.train", a->data[i], err)) return -1;
    }
    if (a->method && an_recipe_set_key(r, "model.method", a->method, "--method", err)) return -1;
    if (a->device && an_recipe_set_key(r, "train.device", a->device, "--device", err)) return -1;
    const char *out = a->out ? a->out : (a->resume && strcmp(a->resume, "auto") ? a->resume : NULL);
    if (out && an_recipe_set_key(r, "output.dir", out, a->out ? "--out" : "--resume", err)) return -1;
    if (a->steps && an_recipe_set_key(r, "train.steps", a->steps, "--steps", err)) return -1;
    if (a->epochs &&
        (an_recipe_set_key(r, "train.epochs", a->epochs, "--epochs", err) || an_recipe_set_key(r, "train.steps", "0", "--epochs", err)))
        return -1;
    for (int i = 0; i < a->n_sets; i++)
        if (an_recipe_set(r, a->sets[i], err)) return -1;
    return an_recipe_validate(r, file ? file : "recipe", err);
}

int an_cmd_train(int argc, char **argv) {
    int rc;
    if (cli_help_check(&cli_help_train, argc, argv, 1, &rc)) return rc;
    train_args a;
    rc = parse_args(argc, argv, &a);
    an_recipe r;
    an_error err;
    memset(&r, 0, sizeof r);
    if (rc) goto out_args;
    if (resolve(&a, &r, &err)) {
        rc = cli_error(&err);
        goto out;
    }
    an_trainer_opts o;
    an_trainer_opts_default(&o);
    char ckpt[1100];
    if (a.resume) {
        const char *dir = strcmp(a.resume, "auto") ? a.resume : r.output.dir;
        int found = an_trainer_find_resume(dir, ckpt, sizeof ckpt, &err);
        if (found < 0) {
            rc = cli_error(&err);
            goto out;
        }
        if (found)
            o.resume_ckpt = ckpt;
        else if (strcmp(a.resume, "auto")) {
            rc = cli_fail("%s: no checkpoint to resume from (looked in %s/checkpoints)", dir, dir);
            goto out;
        } else
            fprintf(stderr, "autoneg: --resume auto: no checkpoint in %s, starting a new run\n", dir);
    }
    if (a.stop_after) {
        char *end;
        o.stop_after = strtol(a.stop_after, &end, 10);
        if (*end || o.stop_after < 1) {
            rc = cli_fail("train: --stop-after '%s' is not a positive integer", a.stop_after);
            goto out;
        }
    }
    if (r.train.threads > 0) omp_set_num_threads(r.train.threads);
    o.stop = &train_stop_requested;
    o.progress = stderr;
    o.note = print_note;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND; /* a second Ctrl-C ends the process at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    an_comm comm;
    an_comm_single(&comm);
#ifdef AN_MPI
    if (an_comm_mpi_launched()) {
        /* AN_MPI_TIMEOUT=S: end the job when a collective waits longer than S seconds (0: never) */
        const char *t = getenv("AN_MPI_TIMEOUT");
        char *end = NULL;
        double timeout = t && *t ? strtod(t, &end) : 0;
        if (t && *t && (*end || !(timeout >= 0))) {
            rc = cli_fail("AN_MPI_TIMEOUT '%s' is not a number of seconds", t);
            goto out;
        }
        if (an_comm_mpi_init(&comm, NULL, NULL, timeout, &err)) {
            rc = cli_error(&err);
            goto out;
        }
#ifdef AN_CUDA
        /* GPU ranks: NCCL between their devices, one GPU each (set before the backend opens).
         * AN_COMM_ONE_RANK=1 under mpirun -np 1: one GPU whose collectives still go through NCCL, to
         * time that path on a machine with one GPU */
        const char *one = getenv("AN_COMM_ONE_RANK");
        int alone = comm.size == 1 && one && !strcmp(one, "1");
        if ((comm.size > 1 || alone) && !strncmp(r.train.device, "cuda", 4) && an_comm_nccl_init(&comm, timeout, &err)) {
            an_fail_prefix(&err, "rank %d of %d", comm.rank, comm.size);
            rc = cli_error(&err);
            fflush(stderr);
            an_comm_abort(&comm, 1); /* the others may wait for it in the set-up */
            an_comm_free(&comm);
            goto out;
        }
        comm.alone = alone && !strcmp(comm.vt->name, "nccl");
#endif
    }
#endif
    o.comm = &comm;
    an_trainer_result res;
    if (an_train_run(&r, &o, &res, &err)) {
        if (comm.size > 1) {
            /* the other ranks wait for this one in a collective: end them all */
            an_fail_prefix(&err, "rank %d of %d", comm.rank, comm.size);
            cli_error(&err);
            fflush(stderr);
            an_comm_abort(&comm, 1);
        }
        rc = cli_error(&err);
        an_comm_free(&comm);
        goto out;
    }
    an_comm_free(&comm);
    if (comm.rank != 0) goto out; /* rank 0 reports */
    if (res.interrupted) {
        fprintf(stderr, "autoneg: stopped at step %ld of %ld; checkpoint %s\nautoneg: continue with: autoneg train --resume %s\n",
                res.steps_done, res.total_steps, res.last_ckpt, r.output.dir);
        rc = train_stop_requested ? 130 : 0;
    } else {
        if (an_comm_active(&comm))
            fprintf(stderr, "autoneg: %d ranks; rank 0 spent %.3f s per step in collectives (%.2f s over %ld steps)\n",
                    comm.size, res.comm_steps ? res.comm_seconds / (double)res.comm_steps : 0.0, res.comm_seconds,
                    res.comm_steps);
        fprintf(stderr, "autoneg: done: %ld steps, last loss %.4f", res.steps_done, res.last_loss);
        if (res.eval_loss == res.eval_loss) fprintf(stderr, ", eval loss %.4f", res.eval_loss);
        fprintf(stderr, "\nautoneg: model in %s\n", res.final_dir);
    }
out:
    an_recipe_free(&r);
out_args:
    free(a.data);
    free(a.sets);
    return rc < 0 ? 0 : rc;
}
