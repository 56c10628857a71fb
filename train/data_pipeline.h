#ifndef AN_DATA_PIPELINE_H
#define AN_DATA_PIPELINE_H
/* The trainer's data: prompt pairs read from the recipe's files, the validation split, the tokenizer,
 * the template, tokenised samples (through the token cache) and batchers for training and evaluation.
 * The trainer sees batches through an_token_rows (plain arrays), so its loop depends on the model's
 * an_batch view and not on the batcher's buffers (data/batching/batch.h an_token_batch). */
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "train/recipe.h"

struct an_tokenizer;
struct an_template;
struct an_retrieval;
typedef struct an_train_data an_train_data; /* opaque */

/* One batch as the model wants it: B rows of T tokens (host memory owned by the pipeline, valid
 * until the next call). */
typedef struct an_token_rows {
    const int32_t *ids, *targets, *pos, *seg_start;
    int B, T;
    long n_targets;  /* trained tokens (targets != -100) */
    size_t n_samples;
    int epoch_end;
} an_token_rows;

/* Where the training batcher stands (data/batching/batch.h's an_batch_cursor, as plain numbers). */
typedef struct an_data_cursor {
    uint64_t epoch, next, offset;
} an_data_cursor;

/* What happened while loading, for the caller to show. */
typedef struct an_data_report {
    size_t train_pairs, val_pairs;     /* after the split */
    size_t train_samples, val_samples; /* after the template (samples with no trained token dropped) */
    size_t dropped;                    /* samples dropped for having no trained token */
    size_t skipped;                    /* records the readers skipped (bad rows) */
    size_t empty_negatives;            /* pairs left out for an empty negative prompt */
    long long train_tokens;            /* tokens in the training samples */
    long rows_per_epoch;               /* training batch rows of one epoch (packed rows or samples) */
    int cache_hit;                     /* the training samples came from the token cache */
    size_t retrieval_fewer;            /* training pairs given fewer neighbours than data.retrieve so that
                                          the sample fits data.max_length (0 on a cache hit: not recounted) */
    char first_skip[320];              /* the first reader skip reason, "" when none */
} an_data_report;

/* Loads everything for recipe r. tokenizer_path: a tokenizer folder or file (the caller decides:
 * the base model's folder, tokenizer.path, or a freshly trained one). cache_dir: where the token
 * caches live (NULL: no cache). Errors name the file and the problem; a data file whose rows all fail,
 * or data that gives no trainable sample, is an error. */
an_train_data *an_train_data_load(const an_recipe *r, const char *tokenizer_path, const char *cache_dir,
                                  an_data_report *rep, an_error *err);
void an_train_data_free(an_train_data *d);

const struct an_tokenizer *an_train_data_tokenizer(const an_train_data *d);
const struct an_template *an_train_data_template(const an_train_data *d);
size_t an_train_data_val_samples(const an_train_data *d);
/* With data.retrieve > 0: the index of the training pairs and their negatives (the run folder and
 * final/ store it, see infer/retrieval_pairs.h); else NULL. */
const struct an_retrieval *an_train_data_retrieval(const an_train_data *d);

/* The next training batch (epochs roll over by themselves). */
int an_train_data_next(an_train_data *d, an_token_rows *out, an_error *err);
an_data_cursor an_train_data_cursor(const an_train_data *d);
int an_train_data_seek(an_train_data *d, an_data_cursor c, an_error *err);

/* Validation batches in file order: call an_train_data_val_begin, then an_train_data_val_next until
 * it returns 0 (1: a batch in out, -1: error). max_samples 0: all of them. */
void an_train_data_val_begin(an_train_data *d, size_t max_samples);
int an_train_data_val_next(an_train_data *d, an_token_rows *out, an_error *err);

/* The texts a tokenizer is trained on for training from scratch: the prompt and the negative of
 * every training pair (validation pairs excluded, so they stay unseen), in file order. Returns the
 * number of texts; *texts and *lens are malloc'd arrays of pointers into pairs the caller frees with
 * an_train_texts_free. */
typedef struct an_train_texts {
    char **text;
    size_t *len;
    size_t n;
    void *pairs; /* owner of the strings */
} an_train_texts;
int an_train_texts_load(const an_recipe *r, an_train_texts *out, an_error *err);
void an_train_texts_free(an_train_texts *t);

#endif
