#ifndef AN_METRICS_H
#define AN_METRICS_H
/* metrics.jsonl: one JSON object per line, flushed as it is written so a crash loses nothing.
 *
 *   {"step":120,"loss":2.3456,"lr":0.00012,"grad_norm":0.81,"tokens":245760,"tokens_per_s":1534.2,"elapsed_s":160.2}
 *   {"step":500,"eval_loss":2.1034,"eval_tokens":8192,"elapsed_s":655.1}
 *
 * Numbers are written with the fewest digits that read back to the same double; a value that is not
 * finite (a diverged loss) is written as null. docs/metrics.md describes every field. */
#include <stddef.h>
#include <stdio.h>
#include "core/error.h"

typedef struct an_metrics_train {
    long step;           /* optimizer steps done (1 after the first) */
    double loss;         /* training loss of this step */
    double lr;           /* learning rate used by this step */
    double grad_norm;    /* global gradient norm before clipping */
    long long tokens;    /* trained tokens so far */
    double tokens_per_s; /* trained tokens per second over the last logging interval */
    double elapsed_s;    /* wall-clock seconds since the run (or its resume) started */
} an_metrics_train;

typedef struct an_metrics_eval {
    long step;
    double eval_loss;
    long long eval_tokens;
    double elapsed_s;
} an_metrics_eval;

typedef struct an_metrics {
    FILE *f;
    char path[1024];
} an_metrics;

/* append: keep what the file holds (a resumed run); else start it empty. */
int an_metrics_open(an_metrics *m, const char *path, int append, an_error *err);
int an_metrics_log_train(an_metrics *m, const an_metrics_train *t, an_error *err);
int an_metrics_log_eval(an_metrics *m, const an_metrics_eval *e, an_error *err);
int an_metrics_close(an_metrics *m, an_error *err);

/* Formats one line (with its '\n') into buf; returns its length or -1 when it does not fit. */
int an_metrics_format_train(char *buf, size_t size, const an_metrics_train *t);
int an_metrics_format_eval(char *buf, size_t size, const an_metrics_eval *e);

/* ---- reading back (the loss curve, resumes) ---- */

typedef struct an_metrics_series {
    long *train_step;
    double *train_loss; /* NaN where the file held null */
    size_t n_train;
    long *eval_step;
    double *eval_loss;
    size_t n_eval;
} an_metrics_series;

/* Reads metrics.jsonl. Lines with "eval_loss" are evaluation points, lines with "loss" training
 * points; other fields are ignored. A malformed line is an error naming the file and line, except a
 * torn last line (no newline: a crash or a full disk mid-write), which is skipped. */
int an_metrics_read(const char *path, an_metrics_series *s, an_error *err);
void an_metrics_series_free(an_metrics_series *s);

/* For a resume from a checkpoint at `step`: rewrites the file (atomically) without the lines of
 * later steps, which the resumed run will log again, and without a torn last line, whose number goes
 * to *torn (0: none) so the caller can say so. A missing file is not an error. */
int an_metrics_truncate_after(const char *path, long step, long *torn, an_error *err);

#endif
