#ifndef AN_TRAINER_IMPL_H
#define AN_TRAINER_IMPL_H
/* Internal to train/trainer*.c: the pieces of a run shared by setup, loop and output. */
#include "model/lora.h"
#include "model/model.h"
#include "train/checkpoint.h"
#include "train/optim.h"
#include "train/trainable.h"
#include "train/trainer.h"

/* The outermost folder of path (path itself or a parent) that does not exist yet, into out; "" when
 * path exists. A run creates it and removes it again if it fails before its first step. */
int an_trainer_first_missing(const char *path, char *out, size_t size, an_error *err);
/* Makes a folder and its parents (mkdir -p). */
int an_trainer_mkdirs(const char *path, an_error *err);

/* Locks run folder dir for this process (flock on DIR/run.lock, which holds the pid) and returns the
 * descriptor that holds the lock until it is closed or the process ends; another run holding it is an
 * error naming the folder and that run's pid. */
int an_trainer_lock(const char *dir, an_error *err);

/* The model to train and the tokenizer to train it with:
 *  - model.base set: the base model loaded; tokenizer tokenizer.path or the base folder;
 *  - from scratch: the config (model_config inline, written to DIR/config.json, or a preset) with
 *    random weights from train.seed; tokenizer tokenizer.path, or a byte-level BPE of
 *    tokenizer.train_vocab tokens trained on the training pairs into DIR (kept when resuming).
 * tok_path receives the tokenizer folder or file. */
an_model *an_trainer_build_model(const an_recipe *r, int resuming, char *tok_path, size_t tok_size,
                                 const an_trainer_opts *o, an_error *err);

/* Attaches a new LoRA adapter as the recipe's lora section says (seed train.seed). A target that
 * matches no module is an error naming it. */
int an_trainer_attach_lora(an_model *m, const an_recipe *r, an_error *err);

/* Writes the trainable tensors (weights, AdamW m and v) and the state to a checkpoint. opt was made
 * from t (an_optim_init_params with t's list), so opt's tensor k is t->p[k]. */
int an_trainer_save_ckpt(const an_model *m, const an_trainable *t, const an_optim *opt, const an_ckpt_state *st,
                         const char *path, long long byte_limit, an_error *err);
/* Restores them, and the optimizer's step count from the state's step; every trainable tensor must be
 * in the checkpoint with its size. */
int an_trainer_load_ckpt(an_model *m, const an_trainable *t, an_optim *opt, const char *path, an_ckpt_state *st,
                         an_error *err);

/* The same from a checkpoint already read and checked (an_ckpt_read); c stays the caller's. */
int an_trainer_apply_ckpt(an_model *m, const an_trainable *t, an_optim *opt, const an_ckpt *c, an_ckpt_state *st,
                          an_error *err);

/* The final full model: out_dir with config.json, model.safetensors, the tokenizer files found at
 * tok_path (a folder's tokenizer files, or the one tokenizer file) and autoneg.json naming the
 * template (built-in names hold no quotes or backslashes, so no escaping is needed). */
int an_trainer_save_final(const an_model *m, const char *tok_path, const char *template_name, const char *out_dir,
                          int fail_hook, an_error *err);

/* The final LoRA adapter: out_dir with PEFT's adapter_config.json and adapter_model.safetensors, and
 * autoneg.json naming the template (PEFT ignores files it does not know). */
int an_trainer_save_adapter(const an_model *m, const char *template_name, const char *out_dir, int fail_hook,
                            an_error *err);

/* fail_hook (an_trainer_opts.final_write_fail): after the weights file, fail as a full disk would. */

/* Deletes a folder and everything in it (rm -rf); a missing path is not an error. */
int an_trainer_remove_tree(const char *path, an_error *err);
/* Deletes everything in a folder and keeps the folder. */
int an_trainer_empty_dir(const char *path, an_error *err);
/* 1 when path is a folder with no entries. */
int an_trainer_dir_is_empty(const char *path);
/* Puts the complete folder tmp in place as dst: a rename, or for an existing dst an atomic swap
 * followed by deleting the old folder, so dst is never a half-written folder. */
int an_trainer_publish_dir(const char *tmp, const char *dst, an_error *err);

/* Formats a note and hands it to o->note. */
void an_trainer_note(const an_trainer_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
