#ifndef AN_TRAINER_H
#define AN_TRAINER_H
/* `autoneg train` as a library call: a resolved recipe in, a trained model (and its run folder) out.
 *
 * The run folder (output.dir) holds:
 *   recipe.json                 the resolved recipe (autoneg train DIR/recipe.json repeats the run)
 *   config.json                 training from scratch: the model config
 *   tokenizer.json, tokenizer_config.json   training from scratch with tokenizer.train_vocab
 *   metrics.jsonl, events.out.tfevents.*, loss.svg
 *   run.lock                    flock'd by the run writing the folder (holds its pid)
 *   checkpoints/step-NNNNNNNN.ckpt          the last checkpoint.keep checkpoints (and the one a
 *                               diverging run falls back to; step 0 when checkpoint.every is set)
 *   cache/tokens-{train,val}.bin            the token caches
 *   final/                      full fine-tuning: a Hugging Face model folder (config.json,
 *                               model.safetensors, tokenizer files, autoneg.json);
 *                               LoRA, QLoRA: a PEFT adapter folder (adapter_config.json,
 *                               adapter_model.safetensors)
 * docs/training.md describes it for users.
 *
 * The loop: the recipe's schedule, optim.accumulation micro-batches per step, the loss normalised over
 * all trained tokens of the step (train.loss_norm tokens) or the mean of micro-batch means
 * (mean_of_means), then the optimizer of train/optim.h (clipping by global norm, AdamW over float32
 * weights with weight decay on matrices, not on norm weights and biases), evaluation, checkpoints,
 * metrics. The library never prints: lines for the user go through
 * opts->note, and the progress line to opts->progress. */
#include <signal.h>
#include <stdio.h>

#include "core/error.h"
#include "train/comm.h"
#include "train/recipe.h"

typedef struct an_trainer_opts {
    /* Continue from this checkpoint file (NULL: a fresh run). See an_trainer_find_resume. */
    const char *resume_ckpt;
    /* Set by a signal handler (cli/): the loop checkpoints after the current step and returns. */
    volatile sig_atomic_t *stop;
    /* > 0: stop after this many optimizer steps in this call, exactly as an interrupt would (a
     * checkpoint, no final model). For time-limited jobs and the resume test. */
    long stop_after;
    FILE *progress;   /* progress line (NULL: none) */
    int progress_tty; /* -1: ask isatty, 0: plain lines, 1: redraw in place */
    void (*note)(void *ctx, const char *line); /* informational lines (NULL: none) */
    void *note_ctx;
    /* Test hook: checkpoint writes fail with ENOSPC past this many bytes (< 0: none). */
    long long ckpt_byte_limit;
    /* Test hook: writing final/ fails with ENOSPC after its weights file (0: never). */
    int final_write_fail;
    /* Data parallelism (docs/distributed.md): the ranks of the job (NULL: one process). Each rank
     * trains on its slice of the rows of every batch of the recipe (the global batch), so 1 or N
     * ranks train the same model. Rank 0 alone writes the run folder (lock, recipe, metrics,
     * TensorBoard events, checkpoints, final model), evaluates and calls note and progress; the other
     * ranks wait for its files (the trained tokenizer, the token caches) before reading them. An
     * error on one rank leaves the others waiting in a collective: the caller ends the job
     * (an_comm_abort). */
    an_comm *comm;
} an_trainer_opts;

void an_trainer_opts_default(an_trainer_opts *o);

typedef struct an_trainer_result {
    long steps_done;    /* optimizer steps done in total (resumed ones included) */
    long total_steps;
    int interrupted;    /* stopped early by opts->stop or stop_after; a checkpoint was written */
    double last_loss;   /* training loss of the last step */
    double eval_loss;   /* last evaluation, NaN when there was none */
    double first_eval_loss; /* first evaluation of this call (before any step for a fresh run), NaN when none */
    char last_ckpt[1100];   /* the newest checkpoint written or resumed from, "" when none */
    char final_dir[1100];   /* the final model folder, "" when interrupted */
    double comm_seconds;    /* time this rank spent in collectives during the steps (waits for slower ranks included) */
    long comm_steps;        /* the steps of this call it was measured over */
} an_trainer_result;

/* Runs the recipe. Errors name the file or step and the problem. A run that diverges or dies (the
 * rules of train/guard.h) stops with a message naming the checkpoint from before the trouble (which
 * is kept; newer ones are renamed *.diverged) and the rate to try. Another run holding the folder's
 * lock (DIR/run.lock) is an error naming its pid. A damaged resume checkpoint falls back to the
 * newest older one in its folder, with a note naming both. */
int an_train_run(const an_recipe *r, const an_trainer_opts *opts, an_trainer_result *res, an_error *err);

/* `--resume DIR|auto`: the newest checkpoint of run folder dir. 1 found, 0 none, -1 error. */
int an_trainer_find_resume(const char *dir, char *ckpt, size_t size, an_error *err);

#endif
