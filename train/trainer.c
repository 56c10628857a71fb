/* The training loop (see train/trainer.h). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/file.h"
#include "core/rng.h"
#include "infer/retrieval_pairs.h"
#include "kernels/backend.h"
#include "train/data_pipeline.h"
#include "train/eval_samples.h"
#include "train/guard.h"
#include "train/loss_svg.h"
#include "train/metrics.h"
#include "train/progress.h"
#include "train/schedule.h"
#include "train/tensorboard.h"
#include "train/trainer_impl.h"

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void an_trainer_opts_default(an_trainer_opts *o) {
    memset(o, 0, sizeof *o);
    o->progress_tty = -1;
    o->ckpt_byte_limit = -1;
}

int an_trainer_find_resume(const char *dir, char *ckpt, size_t size, an_error *err) {
    return an_ckpt_latest(dir, ckpt, size, err);
}

/* One optimizer step's micro-batches, copied out of the pipeline so the token count of the whole
 * window is known before the first forward (token normalisation needs it as the gradient scale). */
typedef struct window {
    int32_t *ids, *targets, *pos, *seg;
    int *B, *T;
    long *count;    /* this rank's trained tokens of each micro-batch */
    double *global; /* every rank's together, per micro-batch, and 2 spare values for the step's sums */
    int k, cap_rows;
    long total;     /* every rank's trained tokens of the window */
} window;

static int window_alloc(window *w, int k, int rows, int seq, an_error *err) {
    memset(w, 0, sizeof *w);
    size_t n = (size_t)k * (size_t)rows * (size_t)seq;
    w->ids = malloc(n * sizeof(int32_t));
    w->targets = malloc(n * sizeof(int32_t));
    w->pos = malloc(n * sizeof(int32_t));
    w->seg = malloc(n * sizeof(int32_t));
    w->B = malloc((size_t)k * sizeof(int));
    w->T = malloc((size_t)k * sizeof(int));
    w->count = malloc((size_t)k * sizeof(long));
    w->global = malloc(((size_t)k + 3) * sizeof(double));
    w->k = k;
    w->cap_rows = rows * seq;
    if (!w->ids || !w->targets || !w->pos || !w->seg || !w->B || !w->T || !w->count || !w->global)
        return an_fail(err, "trainer: out of memory for %d micro-batches", k);
    return 0;
}

static void window_free(window *w) {
    free(w->ids);
    free(w->targets);
    free(w->pos);
    free(w->seg);
    free(w->B);
    free(w->T);
    free(w->count);
    free(w->global);
}

/* Every rank reads the same global batches (same data, same seed) and keeps its slice of their rows
 * (an_comm_slice); the counts of trained tokens are then summed over the ranks, so each rank knows
 * the whole window's before its first forward. */
static int window_fill(window *w, an_train_data *d, an_comm *c, an_error *err) {
    for (int i = 0; i < w->k; i++) {
        an_token_rows r;
        if (an_train_data_next(d, &r, err)) return -1;
        size_t lo, rows;
        an_comm_slice((size_t)r.B, c->size, c->rank, &lo, &rows);
        size_t n = rows * (size_t)r.T, src = lo * (size_t)r.T, off = (size_t)i * (size_t)w->cap_rows;
        memcpy(w->ids + off, r.ids + src, n * sizeof(int32_t));
        memcpy(w->targets + off, r.targets + src, n * sizeof(int32_t));
        memcpy(w->pos + off, r.pos + src, n * sizeof(int32_t));
        memcpy(w->seg + off, r.seg_start + src, n * sizeof(int32_t));
        w->B[i] = (int)rows;
        w->T[i] = r.T;
        long cnt = 0;
        if (c->size == 1)
            cnt = r.n_targets;
        else
            for (size_t j = 0; j < n; j++) cnt += w->targets[off + j] != -100;
        w->count[i] = cnt;
        w->global[i] = (double)cnt;
    }
    /* token counts are far below 2^53: their sum is exact in any order */
    if (an_comm_allreduce_f64(c, w->global, (size_t)w->k, err)) return an_fail_prefix(err, "token counts");
    double total = 0;
    for (int i = 0; i < w->k; i++) total += w->global[i];
    w->total = (long)total;
    return 0;
}

static an_batch window_batch(const window *w, int i) {
    size_t off = (size_t)i * (size_t)w->cap_rows;
    an_batch b = {w->ids + off, w->pos + off, w->seg + off, w->targets + off, w->B[i], w->T[i]};
    return b;
}

/* Mean loss over the validation tokens (NaN when there are none). */
static int evaluate(an_model *m, an_train_data *d, const an_recipe *r, double *loss, long long *tokens, an_error *err) {
    double sum = 0;
    long long n = 0;
    an_train_data_val_begin(d, (size_t)r->eval.samples);
    an_token_rows rows;
    int rc;
    while ((rc = an_train_data_val_next(d, &rows, err)) == 1) {
        if (rows.n_targets == 0) continue;
        an_batch b = {rows.ids, rows.pos, rows.seg_start, rows.targets, rows.B, rows.T};
        float l;
        if (an_model_forward(m, &b, 0, 1.0f, &l, NULL, err)) return -1;
        sum += (double)l * (double)rows.n_targets;
        n += rows.n_targets;
    }
    if (rc < 0) return -1;
    *loss = n ? sum / (double)n : NAN;
    *tokens = n;
    return 0;
}

typedef struct run {
    const an_recipe *r;
    const an_trainer_opts *o;
    an_trainer_result *res;
    an_model *m;
    an_trainable ts; /* what is trained: every weight, or the LoRA adapters */
    an_optim opt;    /* AdamW over ts, with the clipping and the decay rule of train/optim.h */
    an_train_data *data;
    an_schedule sched;
    an_metrics metrics;
    int have_metrics;
    an_tb_writer tb;
    int have_tb;
    an_progress prog;
    window win;
    an_rng rng;
    long step, total, first_step;
    long long tokens, tokens_at_start;
    double t_start, t_log;
    long long tokens_at_log;
    char tok_path[1100];
    char metrics_path[1100];
    an_guard guard; /* the divergence rules of train/guard.h */
    char resume_path[1100]; /* the older checkpoint resumed from when the newest is damaged */
    int lock_fd; /* DIR/run.lock, held for the run's life (-1: not taken) */
    char created[1100]; /* the outermost folder of output.dir that this run created ("": it existed) */
    int wrote_ckpt;     /* a checkpoint of this run is on disk: the folder is worth keeping */
    int was_empty;      /* output.dir existed, empty, before this run (a folder the user made for it) */
    an_comm *comm;      /* the ranks (the single communicator for one process) */
    an_comm single;
    int rank0;          /* this rank writes the run folder, logs and evaluates */
    an_trainer_opts quiet; /* the options of a rank other than 0: no notes, no progress */
} run;

/* Negatives for eval.prompts, shown as notes and appended to DIR/samples.jsonl. */
static int log_samples(run *u, an_error *err) {
    const an_recipe *r = u->r;
    int n = r->eval.prompts.n;
    if (n == 0) return 0;
    char **texts = calloc((size_t)n, sizeof *texts);
    char **inputs = calloc((size_t)n, sizeof *inputs);
    if (!texts || !inputs) {
        free(texts);
        free(inputs);
        return an_fail(err, "eval: out of memory");
    }
    /* with retrieval the prompts get their neighbours' negatives, as autoneg generate gives them */
    const an_retrieval *retr = an_train_data_retrieval(u->data);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        long idx[AN_RETRIEVAL_MAX_K], m = 0;
        if (retr && (m = an_retrieval_neighbours(retr, r->eval.prompts.v[i], NULL, -1, retr->k, idx, NULL, err)) < 0) rc = -1;
        else if (!(inputs[i] = retr ? an_retrieval_input(retr, r->eval.prompts.v[i], idx, m, err) : strdup(r->eval.prompts.v[i])))
            rc = retr ? -1 : an_fail(err, "eval: out of memory");
    }
    if (!rc)
        rc = an_eval_samples(u->m, an_train_data_tokenizer(u->data), an_train_data_template(u->data), r->data.system,
                             (const char *const *)inputs, n, r->eval.max_new_tokens, texts, err);
    for (int i = 0; i < n; i++) free(inputs[i]);
    free(inputs);
    char path[1100];
    FILE *f = NULL;
    if (!rc && (an_path_join(path, sizeof path, r->output.dir, "samples.jsonl") || !(f = fopen(path, "ab"))))
        rc = an_fail(err, "%s: cannot append: %s", path, strerror(errno));
    for (int i = 0; i < n && !rc; i++) {
        an_trainer_note(u->o, "step %ld: %s -> %s", u->step, r->eval.prompts.v[i], texts[i]);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "step", (double)u->step);
        cJSON_AddStringToObject(o, "prompt", r->eval.prompts.v[i]);
        cJSON_AddStringToObject(o, "negative", texts[i]);
        char *line = cJSON_PrintUnformatted(o);
        if (!line || fprintf(f, "%s\n", line) < 0) rc = an_fail(err, "%s: cannot write", path);
        free(line);
        cJSON_Delete(o);
    }
    if (f && fclose(f) && !rc) rc = an_fail(err, "%s: cannot write: %s", path, strerror(errno));
    for (int i = 0; i < n; i++) free(texts[i]);
    free(texts);
    return rc;
}

static int log_eval(run *u, an_error *err) {
    if (!u->rank0) return 0; /* the other ranks go on to the next step and wait there */
    if (u->o->progress) an_progress_finish(&u->prog);
    if (an_train_data_val_samples(u->data) > 0) {
        double loss;
        long long n;
        if (evaluate(u->m, u->data, u->r, &loss, &n, err)) return -1;
        an_metrics_eval e = {u->step, loss, n, mono_now() - u->t_start};
        if (an_metrics_log_eval(&u->metrics, &e, err)) return -1;
        if (an_tb_scalar(&u->tb, AN_TB_EVAL_LOSS, u->step, (float)loss, wall_now(), err)) return -1;
        if (isnan(u->res->first_eval_loss)) u->res->first_eval_loss = loss;
        u->res->eval_loss = loss;
        an_trainer_note(u->o, "step %ld: eval loss %.4f over %lld tokens", u->step, loss, n);
    }
    return log_samples(u, err);
}

static int checkpoint(run *u, an_error *err) {
    char path[1100];
    if (an_ckpt_path(path, sizeof path, u->r->output.dir, u->step))
        return an_fail(err, "%s: path too long", u->r->output.dir);
    an_data_cursor c = an_train_data_cursor(u->data);
    an_ckpt_state st = {(uint64_t)u->step, (uint64_t)u->tokens, u->rng.state, c.epoch, c.next, c.offset,
                        u->m->lora ? u->m->lora->forwards : 0};
    if (an_trainer_save_ckpt(u->m, &u->ts, &u->opt, &st, path, u->rank0, u->o->ckpt_byte_limit, err)) {
        if (u->res->last_ckpt[0])
            an_fail_prefix(err, "step %ld: checkpoint not written; the previous checkpoint %s is kept", u->step,
                           u->res->last_ckpt);
        else
            an_fail_prefix(err, "step %ld: checkpoint not written", u->step);
        return -1;
    }
    snprintf(u->res->last_ckpt, sizeof u->res->last_ckpt, "%s", path);
    u->wrote_ckpt = 1;
    if (!u->rank0) return 0;
    /* keep the checkpoint a stop for divergence would fall back to, whatever checkpoint.keep says */
    return an_ckpt_prune(u->r->output.dir, u->r->checkpoint.keep, an_guard_safe_step(&u->guard, u->step), err);
}

/* The global L2 norm of the trained weights (the explosion rule of train/guard.h). */
static double weight_norm(const run *u) {
    double sum = 0;
    for (int k = 0; k < u->ts.n; k++) sum += u->m->ops->sum_squares(u->m->ops, u->ts.p[k]->data, u->ts.p[k]->numel);
    return sqrt(sum);
}

/* The error of a run stopped by the guard: what went wrong, the newest checkpoint from before the
 * update the trouble began with (the newer ones, which hold bad weights, are renamed *.diverged so
 * `--resume DIR` picks the good one), and the rate to try. */
static void stop_diverged(run *u, an_guard_verdict v, double loss, double norm, double wnorm_before, an_error *err) {
    const an_recipe *r = u->r;
    char why[600], ckpt[1100], tail[1600];
    if (v == AN_GUARD_NONFINITE)
        snprintf(why, sizeof why,
                 "step %ld: the training loss is %g and the gradient norm %g; stopped before applying the update", u->step,
                 loss, norm);
    else if (v == AN_GUARD_EXPLODED)
        snprintf(why, sizeof why,
                 "step %ld: the update grew the norm of the trained weights from %g to %g (more than %gx in one step): "
                 "the run is diverging",
                 u->step, wnorm_before, u->guard.wnorm, AN_GUARD_JUMP);
    else if (v == AN_GUARD_SPIKED)
        snprintf(why, sizeof why,
                 "step %ld: the loss (%g) has stayed above %gx its earlier level (%g) for %d steps in a row (since step "
                 "%ld): the run has diverged",
                 u->step, loss, AN_GUARD_SPIKE, u->guard.level, AN_GUARD_SPIKE_STEPS, u->guard.spike_from);
    else
        snprintf(why, sizeof why,
                 "step %ld: the gradient norm has been exactly 0 for %d steps in a row (since step %ld), the loss stuck "
                 "at %g: the run is dead",
                 u->step, AN_GUARD_ZERO_STEPS, u->guard.zero_from, loss);
    long bad = u->guard.bad_update;
    double try_lr = r->optim.lr / 10;
    an_error e2;
    int found = bad >= 1 ? an_ckpt_at_or_before(r->output.dir, bad - 1, ckpt, sizeof ckpt, &e2) : 0;
    if (found == 1) {
        const char *b = strrchr(ckpt, '/');
        long at = strtol(b ? b + 6 : ckpt, NULL, 10); /* ".../step-NNNNNNNN.ckpt" */
        int moved = 0;
        if (u->rank0 && an_ckpt_set_aside_after(r->output.dir, at, &moved, &e2))
            snprintf(tail, sizeof tail, " (the newer checkpoints could not be set aside: %s)", e2.msg);
        else
            snprintf(tail, sizeof tail, "%s", moved ? " (the newer ones hold bad weights and were renamed *.diverged)" : "");
        snprintf(u->res->last_ckpt, sizeof u->res->last_ckpt, "%s", ckpt);
        an_fail(err,
                "%s. The trouble began with the update of step %ld; the last checkpoint from before it is %s, kept%s. "
                "Lower optim.lr (now %g; try %g) and resume from it: autoneg train --resume %s --set optim.lr=%g",
                why, bad, ckpt, tail, r->optim.lr, try_lr, r->output.dir, try_lr);
    } else {
        u->res->last_ckpt[0] = 0;
        an_fail(err,
                "%s. The trouble began with the update of step %ld and no checkpoint predates it. Lower optim.lr (now "
                "%g; try %g) and start again",
                why, bad, r->optim.lr, try_lr);
    }
}

/* One optimizer step's gradients: the window's micro-batches forward and backward, and their global norm
 * (apply_adamw clips by it as it updates; the loop checks it is finite first). */
static int train_step(run *u, double *loss_out, double *norm_out, an_error *err) {
    an_model *m = u->m;
    const an_recipe *r = u->r;
    window *w = &u->win;
    if (window_fill(w, u->data, u->comm, err)) return -1;
    an_optim_zero_grad(&u->opt);
    int used = 0; /* micro-batches with a trained token on some rank */
    for (int i = 0; i < w->k; i++) used += w->global[i] > 0;
    double loss = 0;
    int forwards = 0;
    uint64_t mask_seeds = m->lora ? m->lora->forwards : 0;
    for (int i = 0; i < w->k; i++) {
        if (w->count[i] == 0) continue; /* nothing to learn from here: no gradient, no share of the mean */
        /* tokens: each token weighs 1 / (tokens of the window); mean_of_means: each micro-batch 1 / k.
         * A rank's loss is the mean over its own tokens, so it weighs by its share of them: the sum
         * over ranks of the scaled gradients is the step's gradient, which the optimizer sums. */
        double share = (double)w->count[i] / w->global[i];
        float scale = r->train.loss_norm == AN_LOSS_NORM_TOKENS ? (float)((double)w->count[i] / (double)w->total)
                                                                 : (float)(share / (double)used);
        an_batch b = window_batch(w, i);
        float l;
        if (an_model_forward(m, &b, 1, scale, &l, NULL, err) || an_model_backward(m, err)) return -1;
        loss += (double)scale * (double)l;
        forwards++;
    }
    /* the step's loss is the sum of the ranks' parts; LoRA's dropout counter advances as on one
     * process (once per micro-batch with tokens), also on a rank that had none of a micro-batch */
    double *sums = w->global + w->k;
    sums[0] = loss;
    sums[1] = m->lora ? (double)(m->lora->forwards - mask_seeds) : 0;
    sums[2] = forwards;
    if (an_comm_allreduce_f64(u->comm, sums, 3, err)) return an_fail_prefix(err, "step %ld: loss", u->step + 1);
    if (m->lora && sums[2] > 0) m->lora->forwards = mask_seeds + (uint64_t)(sums[1] / sums[2]) * (uint64_t)used;
    *loss_out = used ? sums[0] : NAN;
    if (an_optim_grad_norm_checked(&u->opt, norm_out, err)) return an_fail_prefix(err, "step %ld: gradients", u->step + 1);
    return 0;
}

/* The step's update at the schedule's rate, by the optimizer every training path shares. */
static int apply_adamw(run *u, double lr, double norm, an_error *err) {
    const an_recipe *r = u->r;
    an_adamw_config c = {(float)lr, (float)r->optim.betas[0], (float)r->optim.betas[1], (float)r->optim.eps,
                         (float)r->optim.weight_decay, (float)r->optim.clip};
    if (an_optim_apply_checked(&u->opt, &c, norm, err)) return an_fail_prefix(err, "step %ld: weights", u->step + 1);
    return 0;
}

/* Whether to stop now: a signal or --stop-after on any rank stops every rank at the same step (mpirun
 * hands a signal to every rank, but not at the same instant). */
static int stop_now(run *u, int *stop, an_error *err) {
    const an_trainer_opts *o = u->o;
    double s = (o->stop && *o->stop) || (o->stop_after > 0 && u->step - u->first_step >= o->stop_after);
    if (an_comm_allreduce_f64(u->comm, &s, 1, err)) return an_fail_prefix(err, "step %ld: stop flag", u->step);
    *stop = s > 0;
    return 0;
}

static int log_train(run *u, double loss, double lr, double norm, an_error *err) {
    if (!u->rank0) return 0;
    double now = mono_now();
    double dt = now - u->t_log;
    an_metrics_train t = {u->step, loss, lr, norm, u->tokens,
                          dt > 0 ? (double)(u->tokens - u->tokens_at_log) / dt : 0, now - u->t_start};
    u->t_log = now;
    u->tokens_at_log = u->tokens;
    if (an_metrics_log_train(&u->metrics, &t, err)) return -1;
    double wt = wall_now();
    if (an_tb_scalar(&u->tb, AN_TB_TRAIN_LOSS, u->step, (float)loss, wt, err) ||
        an_tb_scalar(&u->tb, AN_TB_TRAIN_LR, u->step, (float)lr, wt, err) ||
        an_tb_scalar(&u->tb, AN_TB_TRAIN_GRAD_NORM, u->step, (float)norm, wt, err))
        return -1;
    return 0;
}

static void show_progress(run *u, double loss, double lr) {
    if (!u->o->progress || !u->rank0) return;
    double el = mono_now() - u->t_start;
    double tps = el > 0 ? (double)(u->tokens - u->tokens_at_start) / el : 0;
    an_progress_info pi = {u->step, u->total, loss, lr, tps, an_progress_eta(el, u->step, u->total, u->first_step)};
    an_progress_update(&u->prog, &pi, el);
}

static void run_free(run *u) {
    if (u->have_metrics) an_metrics_close(&u->metrics, NULL);
    if (u->have_tb) an_tb_close(&u->tb, NULL);
    window_free(&u->win);
    an_train_data_free(u->data);
    an_optim_free(&u->opt);
    an_trainable_free(&u->ts);
    if (u->m) an_model_free(u->m);
    if (u->lock_fd >= 0) close(u->lock_fd); /* last: the folder is ours until everything is written */
}

static int setup(run *u, an_error *err) {
    const an_recipe *r = u->r;
    const an_trainer_opts *o = u->o;
    char path[1100];
    /* MPI's collectives take host memory, NCCL's device memory: each the backend it was made for */
    int nccl = !strcmp(u->comm->vt->name, "nccl"), on_cpu = !strcmp(r->train.device, "cpu");
    if (u->comm->size > 1 && !nccl && !on_cpu)
        return an_fail(err, "recipe: train.device %s: MPI ranks train on the CPU backend; GPU ranks need a build with "
                            "both CUDA=1 and MPI=1 (NCCL)", r->train.device);
    if (an_comm_active(u->comm) && nccl && on_cpu)
        return an_fail(err, "recipe: train.device cpu: the NCCL communicator is for GPU ranks");
    if (u->comm->size > r->train.batch_size)
        return an_fail(err, "recipe: train.batch_size %d is smaller than the %d ranks: each rank trains on its share of "
                            "the rows of every batch (the batch is the global one), so it needs at least one",
                       r->train.batch_size, u->comm->size);
    if (u->rank0) {
        /* the folder this run creates, if any: a run that fails before its first step removes it again */
        if (an_trainer_first_missing(r->output.dir, u->created, sizeof u->created, err)) return -1;
        u->was_empty = !u->created[0] && an_trainer_dir_is_empty(r->output.dir);
        if (an_trainer_mkdirs(r->output.dir, err)) return -1;
        /* before anything in the folder is written: a second run into it would interleave metrics.jsonl
         * and replace recipe.json, the caches and the checkpoints under the first */
        if ((u->lock_fd = an_trainer_lock(r->output.dir, err)) < 0) return -1;
        if (an_path_join(path, sizeof path, r->output.dir, "recipe.json") || an_recipe_save(r, path, err)) return -1;
    } else if (an_comm_barrier(u->comm, err)) {
        /* the other ranks read what rank 0 writes first: its trained tokenizer and the token caches */
        return an_fail_prefix(err, "waiting for rank 0 to prepare %s", r->output.dir);
    }
    int resuming = o->resume_ckpt != NULL;
    u->m = an_trainer_build_model(r, resuming || !u->rank0, u->tok_path, sizeof u->tok_path, o, err);
    if (!u->m) return -1;
    if (r->model.dtype != AN_RDTYPE_F32 && r->model.method == AN_METHOD_FULL)
        return an_fail(err, "recipe: model.dtype: full fine-tuning trains every weight in float32; "
                            "bf16 storage is for the frozen weights of lora and qlora");
    if (r->model.dtype == AN_RDTYPE_F16)
        return an_fail(err, "recipe: model.dtype f16: frozen weights can be stored as bf16 or f32, not f16 yet");
    an_model_set_recompute(u->m, r->train.recompute);
    if (r->train.recompute) an_trainer_note(o, "train.recompute: each layer's activations are recomputed in backward");
    if (u->m->ggml_mem) /* a GGUF base kept in its blocks (quant.gguf "keep") */
        an_trainer_note(o, "GGUF base: %s kept quantized (%.1f MiB, no float32 copy); quant.gguf \"dequantize\" or "
                           "\"nf4\" converts it", an_trainer_ggml_summary(u->m), (double)u->m->ggml_bytes / 1048576);
    else if (r->model.base[0] && an_trainer_is_gguf(r->model.base))
        an_trainer_note(o, "GGUF base: dequantized to float32 (%s)",
                        r->model.method == AN_METHOD_FULL ? "full fine-tuning trains float32 weights" : "quant.gguf");
    int to_nf4 = r->model.method == AN_METHOD_QLORA ? !u->m->ggml_mem
                                                    : r->model.method == AN_METHOD_LORA && r->quant.gguf == AN_GGUF_MODE_NF4 &&
                                                          an_trainer_is_gguf(r->model.base);
    if (to_nf4) {
        if (r->quant.block_size != 64)
            return an_fail(err, "recipe: quant.block_size %d: only bitsandbytes' 64 is implemented", r->quant.block_size);
        if (an_model_quantize_nf4(u->m, r->quant.block_size, r->quant.double_quant, err)) return -1;
        an_trainer_note(o, "QLoRA: base linear weights quantized to NF4 (blocks of 64%s)",
                        r->quant.double_quant ? ", double quantization" : "");
    }
    if (r->model.method != AN_METHOD_FULL) {
        if (an_trainer_attach_lora(u->m, r, err)) return -1;
        an_trainer_note(o, "LoRA: %d modules, %zu trainable parameters (r %d, scaling %g)", u->m->lora->n_mods,
                        an_lora_param_count(u->m->lora), r->lora.r, (double)u->m->lora->scaling);
        if (r->model.dtype == AN_RDTYPE_BF16) {
            if (an_model_store_frozen_bf16(u->m, err)) return -1;
            an_trainer_note(o, "model.dtype bf16: the frozen embedding and head are stored as bf16");
        }
    } else {
        an_model_set_all_trainable(u->m, 1);
        if (an_model_alloc_grads(u->m, err)) return -1;
    }
    if (an_trainable_init(&u->ts, u->m, err) ||
        an_optim_init_params(&u->opt, u->m->ops, u->ts.p, u->ts.n, u->ts.grad_base, u->ts.n_floats, err) ||
        an_optim_distribute(&u->opt, u->comm, r->train.zero, err))
        return -1;
    if (an_comm_active(u->comm))
        an_trainer_note(o, "data parallel: %d ranks (%s), %s", u->comm->size, u->comm->vt->name,
                        u->opt.sharded ? "ZeRO-1: each rank keeps the AdamW moments of its slice" : "all-reduce of the gradients");

    char cache[1100];
    an_data_report rep;
    if (an_path_join(cache, sizeof cache, r->output.dir, "cache")) return an_fail(err, "%s: path too long", r->output.dir);
    if (u->rank0) {
        if (an_trainer_mkdirs(cache, err)) return -1;
        if (an_path_join(path, sizeof path, r->output.dir, "checkpoints") || an_trainer_mkdirs(path, err)) return -1;
    }
    u->data = an_train_data_load(r, u->tok_path, cache, &rep, err);
    if (!u->data) return -1;
    const an_retrieval *retr = an_train_data_retrieval(u->data);
    if (retr && u->rank0) {
        /* the run folder keeps it from the start (it does not change while training); final/ gets a copy */
        if (an_retrieval_save(retr, r->output.dir, err)) return -1;
        an_trainer_note(o, "retrieval: %zu training prompts indexed (%zu distinct negatives), %d neighbours from other "
                           "sources per sample, at most %d tags each",
                        retr->n, retr->n_uniq, retr->k, retr->max_tags);
    }
    if (u->rank0 && an_comm_barrier(u->comm, err)) return an_fail_prefix(err, "rank 0 waiting for the other ranks");
    an_trainer_note(o, "data: %zu training pairs -> %zu samples (%lld tokens%s), %zu validation pairs -> %zu samples%s",
                    rep.train_pairs, rep.train_samples, rep.train_tokens, rep.cache_hit ? ", from the token cache" : "",
                    rep.val_pairs, rep.val_samples, rep.val_pairs ? "" : " (no evaluation)");
    if (rep.skipped) an_trainer_note(o, "data: %zu records skipped, first: %s", rep.skipped, rep.first_skip);
    if (rep.empty_negatives)
        an_trainer_note(o, "data: %zu pairs with an empty negative prompt left out", rep.empty_negatives);
    if (rep.dropped) an_trainer_note(o, "data: %zu samples dropped (no trained token left)", rep.dropped);
    if (rep.retrieval_fewer)
        an_trainer_note(o, "retrieval: %zu training pairs got fewer than %d neighbours, to fit data.max_length %d",
                        rep.retrieval_fewer, r->data.retrieve, r->data.max_length);

    u->total = an_recipe_total_steps(r, rep.rows_per_epoch);
    if (an_schedule_from_recipe(&u->sched, r, u->total, err)) return -1;
    /* this rank's rows of a batch: at most the first slice's; rank 0 evaluates whole batches */
    size_t row0, rows;
    an_comm_slice((size_t)r->train.batch_size, u->comm->size, 0, &row0, &rows);
    if (an_model_plan(u->m, u->rank0 ? r->train.batch_size : (int)rows, r->train.seq_len, err)) return -1;
    if (window_alloc(&u->win, r->optim.accumulation, (int)rows, r->train.seq_len, err)) return -1;
    an_rng_seed(&u->rng, (uint64_t)r->train.seed);

    if (an_path_join(u->metrics_path, sizeof u->metrics_path, r->output.dir, "metrics.jsonl"))
        return an_fail(err, "%s: path too long", r->output.dir);
    if (resuming) {
        an_ckpt_state st;
        an_ckpt c;
        const char *from = o->resume_ckpt;
        char older[1100];
        /* a damaged newest checkpoint (a crash of the disk, not of the run: the rename makes a
         * half-written one impossible) need not end the run while checkpoint.keep kept an older one */
        while (an_ckpt_read(&c, from, err)) {
            an_error e2;
            int found = an_ckpt_older(from, older, sizeof older, &e2);
            if (found != 1) return -1; /* the error of the newest tried */
            an_trainer_note(o, "%s; falling back to the older checkpoint %s", err->msg, older);
            snprintf(u->resume_path, sizeof u->resume_path, "%s", older);
            from = u->resume_path;
        }
        int bad = an_trainer_apply_ckpt(u->m, &u->ts, &u->opt, &c, &st, err);
        an_ckpt_free(&c);
        if (bad) return -1;
        u->step = (long)st.step;
        u->tokens = (long long)st.tokens;
        u->rng.state = st.rng;
        if (u->m->lora) u->m->lora->forwards = st.rng_aux;
        if (an_train_data_seek(u->data, (an_data_cursor){st.cursor_epoch, st.cursor_next, st.cursor_offset}, err))
            return an_fail_prefix(err, "%s", from);
        snprintf(u->res->last_ckpt, sizeof u->res->last_ckpt, "%s", from);
        long torn = 0;
        if (u->rank0 && an_metrics_truncate_after(u->metrics_path, u->step, &torn, err)) return -1;
        if (torn)
            an_trainer_note(o, "%s: the last line was cut off (line %ld: a crash or a full disk while writing it); "
                               "dropped it",
                            u->metrics_path, torn);
        an_trainer_note(o, "resuming from %s at step %ld of %ld", from, u->step, u->total);
    }
    u->first_step = u->step;
    u->tokens_at_start = u->tokens_at_log = u->tokens;
    /* rank 0's weights everywhere (a fresh run's random ones are the same on every rank already, as
     * they come from train.seed; this makes it so whatever initialised them) */
    if (an_optim_broadcast_params(&u->opt, 0, err)) return an_fail_prefix(err, "weights from rank 0");
    if (!u->rank0) return 0;
    if (an_metrics_open(&u->metrics, u->metrics_path, resuming, err)) return -1;
    u->have_metrics = 1;
    if (an_tb_open(&u->tb, r->output.dir, wall_now(), err)) return -1;
    u->have_tb = 1;
    if (o->progress)
        an_progress_init(&u->prog, o->progress,
                         o->progress_tty < 0 ? AN_PROGRESS_AUTO : o->progress_tty ? AN_PROGRESS_TTY : AN_PROGRESS_PLAIN,
                         5.0, 50);
    return 0;
}

static int finish_outputs(run *u, an_error *err) {
    char svg[1100];
    an_metrics_series s;
    if (an_metrics_close(&u->metrics, err)) return -1;
    u->have_metrics = 0;
    if (an_metrics_read(u->metrics_path, &s, err)) return -1;
    int have_point = 0;
    for (size_t i = 0; i < s.n_train; i++) have_point |= isfinite(s.train_loss[i]) != 0;
    int rc = 0;
    if (have_point) {
        an_path_join(svg, sizeof svg, u->r->output.dir, "loss.svg");
        rc = an_loss_svg_write(svg, &s, u->r->description[0] ? u->r->description : NULL, err);
    }
    an_metrics_series_free(&s);
    return rc;
}

int an_train_run(const an_recipe *r, const an_trainer_opts *o_in, an_trainer_result *res, an_error *err) {
    an_trainer_opts od;
    an_trainer_opts_default(&od);
    const an_trainer_opts *o = o_in ? o_in : &od;
    memset(res, 0, sizeof *res);
    res->eval_loss = res->first_eval_loss = NAN;
    if (an_recipe_validate(r, "recipe", err)) return -1;
    run u;
    memset(&u, 0, sizeof u);
    u.r = r;
    u.o = o;
    u.res = res;
    u.lock_fd = -1;
    an_comm_single(&u.single);
    u.comm = o->comm ? o->comm : &u.single;
    u.rank0 = u.comm->rank == 0;
    if (!u.rank0) {
        u.quiet = *o;
        u.quiet.note = NULL;
        u.quiet.progress = NULL;
        u.o = o = &u.quiet;
    }
    int rc = -1;
    if (setup(&u, err)) goto done;
    res->total_steps = u.total;
    u.t_start = u.t_log = mono_now();
    double comm_at_start = u.comm->seconds; /* setup's barriers wait for the other ranks' loading */
    /* a resume at step 0 kept the first run's evaluation of these weights in metrics.jsonl */
    if (u.step == 0 && !o->resume_ckpt && log_eval(&u, err)) goto done;
    long saved_at = o->resume_ckpt ? u.step : -1;
    an_guard_init(&u.guard, weight_norm(&u));
    /* the starting point as a checkpoint: a run that diverges on its first updates (an absurd rate)
     * then has one from before the trouble to resume from with a lower rate */
    if (!o->resume_ckpt && r->checkpoint.every > 0 && u.step < u.total) {
        if (checkpoint(&u, err)) goto done;
        saved_at = u.step;
    }
    while (u.step < u.total) {
        int stop = 0;
        if (stop_now(&u, &stop, err)) goto done;
        if (stop) {
            res->interrupted = 1;
            break;
        }
        double lr = an_schedule_lr(&u.sched, u.step), loss = NAN, norm = NAN;
        if (train_step(&u, &loss, &norm, err)) goto done;
        double wnorm_before = u.guard.wnorm;
        an_guard_verdict v = an_guard_before_update(&u.guard, u.step + 1, loss, norm);
        if (v == AN_GUARD_OK && apply_adamw(&u, lr, norm, err)) goto done;
        u.step++;
        if (v == AN_GUARD_OK) v = an_guard_after_update(&u.guard, u.step, weight_norm(&u));
        if (v != AN_GUARD_OK) {
            log_train(&u, loss, lr, norm, NULL);
            if (o->progress) an_progress_finish(&u.prog);
            stop_diverged(&u, v, loss, norm, wnorm_before, err);
            goto done;
        }
        u.tokens += u.win.total;
        res->last_loss = loss;
        if ((u.step % r->train.log_every == 0 || u.step == u.total) && log_train(&u, loss, lr, norm, err)) goto done;
        show_progress(&u, loss, lr);
        if (r->eval.every > 0 && u.step % r->eval.every == 0 && u.step != u.total && log_eval(&u, err)) goto done;
        if (r->checkpoint.every > 0 && u.step % r->checkpoint.every == 0) {
            if (checkpoint(&u, err)) goto done;
            saved_at = u.step;
        }
    }
    if (o->progress) an_progress_finish(&u.prog);
    res->steps_done = u.step;
    res->comm_seconds = u.comm->seconds - comm_at_start;
    res->comm_steps = u.step - u.first_step;
    if (!res->interrupted && log_eval(&u, err)) goto done;
    if (saved_at != u.step && checkpoint(&u, err)) goto done;
    if (!res->interrupted && u.rank0) {
        /* written whole into final.tmp, then put in place: a full disk or a kill mid-write leaves the
         * previous final/ (or none), never a folder missing its tokenizer or weights */
        char tmp[1100];
        an_path_join(res->final_dir, sizeof res->final_dir, r->output.dir, "final");
        if (an_path_join(tmp, sizeof tmp, r->output.dir, "final.tmp")) {
            an_fail(err, "%s: path too long", r->output.dir);
            goto done;
        }
        if (an_trainer_remove_tree(tmp, err)) goto done; /* left by a run killed while writing it */
        if (u.m->lora ? an_trainer_save_adapter(u.m, r->data.template_name, tmp, o->final_write_fail, err)
                      : an_trainer_save_final(u.m, u.tok_path, r->data.template_name, tmp, o->final_write_fail, err)) {
            an_trainer_remove_tree(tmp, NULL);
            res->final_dir[0] = 0;
            goto done;
        }
        const an_retrieval *retr = an_train_data_retrieval(u.data);
        if (retr && an_retrieval_save(retr, tmp, err)) {
            an_trainer_remove_tree(tmp, NULL);
            res->final_dir[0] = 0;
            goto done;
        }
        if (an_trainer_publish_dir(tmp, res->final_dir, err)) goto done;
    }
    rc = u.rank0 ? finish_outputs(&u, err) : 0;
    /* the job ends together: a rank 0 that failed writing its outputs ends the others (the caller's
     * an_comm_abort) while they wait here */
    if (!rc && an_comm_barrier(u.comm, err)) rc = an_fail_prefix(err, "at the end of the run");
done:
    res->steps_done = u.step;
    /* A run that failed before its first step and wrote no checkpoint leaves nothing worth keeping: a
     * folder it created itself goes again, and one that was empty is emptied again (never one that held
     * something before). The lock is still held. */
    int failed_start = rc != 0 && u.step == 0 && !u.wrote_ckpt && u.lock_fd >= 0; /* never under another run */
    int remove_created = failed_start && u.created[0];
    int empty_again = failed_start && u.was_empty;
    if (u.have_metrics) an_metrics_close(&u.metrics, NULL);
    u.have_metrics = 0;
    if (u.have_tb) an_tb_close(&u.tb, NULL);
    u.have_tb = 0;
    if (remove_created) {
        an_error rm_err;
        if (an_trainer_remove_tree(u.created, &rm_err) == 0)
            an_trainer_note(o, "removed the run folder %s, which this run had created (it failed before its first step)",
                            u.created);
        else
            an_trainer_note(o, "left the run folder %s: %s", u.created, rm_err.msg);
    }
    if (empty_again) {
        an_error rm_err;
        if (an_trainer_empty_dir(r->output.dir, &rm_err) == 0)
            an_trainer_note(o, "emptied the run folder %s again (it was empty before this run, which failed before "
                               "its first step)",
                            r->output.dir);
        else
            an_trainer_note(o, "left files in the run folder %s: %s", r->output.dir, rm_err.msg);
    }
    run_free(&u);
    return rc;
}
