#ifndef AN_RECIPE_H
#define AN_RECIPE_H
/* A training recipe: everything `autoneg train` needs to repeat a run, as one typed struct.
 *
 * A recipe is a JSON file (in configs/recipes/) of nested sections ("model", "lora", "optim",
 * ...). Loading starts from the defaults and applies the file on top; command-line flags and
 * `--set a.b=c` then override single keys through the same type and range checks. The resolved
 * recipe (every key, defaults included) is written into the run folder, and loading that file gives
 * back an identical struct. Every key, its type, range and default is documented in docs/recipes.md.
 *
 * Errors name the file (or the --set argument), the key path and the problem:
 *   "configs/recipes/x.json: optim.lrr: unknown key (did you mean optim.lr?)"
 *   "configs/recipes/x.json: lora.r: expected an integer, found a string"
 *   "configs/recipes/x.json: lora.dropout: must be < 1, found 1.5"
 * Keys that start with '_' are comments and are ignored (they are not written back).
 * A call that fails leaves the recipe as it was: no override is half applied. */
#include <stddef.h>
#include "core/error.h"

#define AN_RECIPE_STR 1024 /* longest path or text a string key holds, NUL included */
#define AN_RECIPE_NAME 64  /* longest short name (data.format, data.template, ...) */

typedef enum an_train_method { AN_METHOD_FULL, AN_METHOD_LORA, AN_METHOD_QLORA } an_train_method;
typedef enum an_recipe_dtype { AN_RDTYPE_F32, AN_RDTYPE_BF16, AN_RDTYPE_F16 } an_recipe_dtype;
typedef enum an_quant_type { AN_QUANT_NF4 } an_quant_type;
/* A GGUF base's quantized weights for lora / qlora: kept in their blocks, dequantized to float32, or
 * dequantized and quantized to NF4 (full fine-tuning always dequantizes). */
typedef enum an_gguf_mode { AN_GGUF_MODE_KEEP, AN_GGUF_MODE_DEQUANTIZE, AN_GGUF_MODE_NF4 } an_gguf_mode;
/* segments: samples packed into rows, each attending only to itself (block-diagonal mask);
 * xtuner: XTuner's Packer (concatenate, cut at seq_len, samples may split, attend across);
 * pad: one sample per row, padded. */
typedef enum an_pack_mode { AN_PACK_SEGMENTS, AN_PACK_XTUNER, AN_PACK_PAD } an_pack_mode;
typedef enum an_schedule_type { AN_SCHED_CONSTANT, AN_SCHED_LINEAR, AN_SCHED_COSINE } an_schedule_type;
/* tokens: one mean over every trained token of the optimizer step (micro-batches weighted by their
 * token counts); mean_of_means: the mean of each micro-batch's own token mean (HF + mmengine, XTuner). */
typedef enum an_loss_norm { AN_LOSS_NORM_TOKENS, AN_LOSS_NORM_MEAN_OF_MEANS } an_loss_norm;

/* Input format of data files (auto: from the file name, as `autoneg data` does). */
typedef enum an_recipe_data_format { AN_DATA_AUTO, AN_DATA_JSONL, AN_DATA_JSON, AN_DATA_CSV } an_recipe_data_format;
/* What keeps pairs together on one side of the validation split (`autoneg data split --by`). */
typedef enum an_recipe_group_by { AN_GROUP_SOURCE, AN_GROUP_NEGATIVE, AN_GROUP_PROMPT, AN_GROUP_PAIR } an_recipe_group_by;

/* A list of malloc'd strings owned by the recipe. */
typedef struct an_strlist {
    char **v;
    int n;
} an_strlist;

typedef struct an_recipe {
    char description[AN_RECIPE_STR];
    struct {
        char base[AN_RECIPE_STR]; /* HF folder, autoneg run folder or llama2.c .bin; "" = from scratch */
        an_train_method method;
        an_recipe_dtype dtype; /* storage of frozen weights that are not quantized */
    } model;
    struct {
        int r;
        double alpha;
        double dropout;
        an_strlist target_modules; /* module names, or "all-linear" */
        int use_rslora;            /* scaling alpha/sqrt(r) instead of alpha/r */
    } lora;
    struct {
        an_quant_type type;
        int block_size;
        int double_quant;
        an_gguf_mode gguf;
    } quant;
    struct {
        an_strlist train;
        char val[AN_RECIPE_STR];
        an_recipe_data_format format;
        char template_name[AN_RECIPE_NAME]; /* JSON key data.template */
        char system[AN_RECIPE_STR];
        int max_length;
        an_pack_mode pack;
        double val_fraction;
        an_recipe_group_by group_by;
        int shuffle_seed;
        char subjects[AN_RECIPE_STR]; /* "" or a subject list filling style-template placeholders */
        int subjects_per_pair;
        int retrieve;          /* > 0: the negatives of this many similar training prompts go in front of
                                  the model (infer/retrieval_pairs.h); 0 = off */
        int retrieve_max_tags; /* tags shown of each neighbour's negative */
        double retrieve_dropout; /* share of the training pairs shown without neighbours, so that the model
                                    also answers a prompt that finds none */
    } data;
    struct {
        double lr;
        double betas[2];
        double eps;
        double weight_decay;
        double clip; /* max global gradient norm; 0 = no clipping */
        int accumulation;
    } optim;
    struct {
        an_schedule_type type;
        double warmup_ratio;
        int warmup_steps; /* > 0 overrides warmup_ratio */
        double warmup_start_factor;
        double min_lr_ratio;
        int per_micro_batch; /* step the schedule every micro-batch, as mmengine does */
    } schedule;
    struct {
        int batch_size;
        int seq_len;
        int steps;     /* optimizer steps; 0 = derived from epochs */
        double epochs; /* used when steps == 0 */
        int seed;
        int threads;   /* 0 = all cores */
        char device[AN_RECIPE_NAME]; /* the backend: "cpu" or "cuda" (kernels/backend.h) */
        int recompute; /* gradient checkpointing */
        int zero;      /* data parallel: 0 all-reduce, 1 ZeRO stage 1 (train/optim.h) */
        an_loss_norm loss_norm;
        int log_every;
    } train;
    struct {
        int every; /* steps between evaluations; 0 = only at the end */
        int samples;
        an_strlist prompts;
        int max_new_tokens;
    } eval;
    struct {
        int every; /* steps between checkpoints; 0 = only at the end */
        int keep;  /* checkpoints kept; 0 = all */
    } checkpoint;
    struct {
        char dir[AN_RECIPE_STR];
    } output;
    struct {
        char path[AN_RECIPE_STR];
        int train_vocab; /* > 0: train a byte-level BPE of this size on data.train */
        int add_prefix_space; /* the trained BPE puts a space before each text (HF ByteLevel) */
    } tokenizer;
    /* For training from scratch: a preset name/path (model_config_preset) or an inline Hugging Face
     * config.json object (model_config_json, compact JSON text, malloc'd); both empty when unset. */
    char model_config_preset[AN_RECIPE_STR];
    char *model_config_json;
} an_recipe;

/* The defaults (docs/recipes.md). Call an_recipe_free when done. */
void an_recipe_defaults(an_recipe *r);
void an_recipe_free(an_recipe *r);
/* Deep copy into dst (which must not hold allocations: a fresh struct or one that was freed). */
int an_recipe_copy(an_recipe *dst, const an_recipe *src, an_error *err);

/* Defaults, then the JSON file on top. On error r holds defaults only (nothing to leak). */
int an_recipe_load(an_recipe *r, const char *path, an_error *err);
/* Applies JSON text (an object) over what r holds; source names it in errors. */
int an_recipe_apply_json(an_recipe *r, const char *json, const char *source, an_error *err);
/* Applies one `key=value` override. The value is parsed as JSON when it parses, else taken as a
 * string. String keys also take bare text (`output.dir=2024` is the string "2024"); string-list keys
 * take a JSON array or comma-separated text; a section key takes a JSON object. */
int an_recipe_set(an_recipe *r, const char *assignment, an_error *err);
/* Same, with key and value apart (command-line flags: --base M is ("model.base", M)). */
int an_recipe_set_key(an_recipe *r, const char *key, const char *value, const char *source, an_error *err);
/* Appends one string to a string-list key (--data F). */
int an_recipe_list_append(an_recipe *r, const char *key, const char *item, an_error *err);
/* Empties a string-list key. */
int an_recipe_list_clear(an_recipe *r, const char *key, an_error *err);

/* Checks that belong to the whole recipe rather than one key, for after all overrides: a base model
 * or a model_config (not both), training data, a positive step or epoch count, max_length <= seq_len,
 * method full when training from scratch, a tokenizer to train when from scratch without one. */
int an_recipe_validate(const an_recipe *r, const char *source, an_error *err);

/* The resolved recipe as pretty JSON (every key, defaults included), malloc'd. */
char *an_recipe_to_json(const an_recipe *r, an_error *err);
/* Writes an_recipe_to_json to path atomically. */
int an_recipe_save(const an_recipe *r, const char *path, an_error *err);

/* 1 when every key holds the same value (strings, lists, numbers bit for bit); otherwise 0 and the
 * first differing key path in diff_key (when given). */
int an_recipe_equal(const an_recipe *a, const an_recipe *b, char *diff_key, size_t diff_size);

/* The key table, for docs and tests: path ("optim.lr"), type ("number", "integer", "boolean",
 * "string", "one of ...", "list of strings", ...) and the default as JSON text. */
int an_recipe_key_count(void);
int an_recipe_key_info(int i, const char **path, const char **type, const char **default_json);
/* The upper bound of numeric key i in *hi (1 when it has one, 0 for keys that are not numbers), so a
 * test can check that docs/recipes.md states every bound. */
int an_recipe_key_upper_bound(int i, double *hi);

/* Optimizer steps of the run: train.steps when > 0, else ceil(epochs * rows / (batch_size *
 * accumulation)) for an epoch of rows_per_epoch rows (packed rows or samples), at least 1. */
long an_recipe_total_steps(const an_recipe *r, long rows_per_epoch);

/* Values derived from the recipe. */
double an_recipe_lora_scaling(const an_recipe *r); /* alpha/r, or alpha/sqrt(r) with use_rslora */
const char *an_train_method_name(an_train_method m);
const char *an_pack_mode_name(an_pack_mode m);
const char *an_schedule_type_name(an_schedule_type t);

#endif
