#ifndef AN_CHECKPOINT_H
#define AN_CHECKPOINT_H
/* Training checkpoints: everything a run needs to continue bit for bit, in one file.
 *
 *   DIR/checkpoints/step-00000120.ckpt
 *
 * Layout (little-endian):
 *   "ANCKPT\0\1"  u32 version (1)  u32 0x01020304
 *   an_ckpt_state as 7 u64 fields (step, tokens, rng, cursor epoch/next/offset, rng_aux), then
 *   u64 n_tensors, and per tensor: u32 name length, name bytes, u64 numel, u32 parts
 *   then the data of each tensor: parts x numel float32 (the weights, then AdamW's m and v)
 *   u64 checksum of everything before it (an_hasher)
 * The file is written as NAME.tmp, flushed, fsync'd and renamed, so a crash or a full disk never
 * leaves a half-written checkpoint under the real name, and the previous checkpoint stays. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/error.h"
#include "data/batching/token_cache.h" /* an_hasher */

#define AN_CKPT_VERSION 1u

typedef struct an_ckpt_state {
    uint64_t step;          /* optimizer steps done */
    uint64_t tokens;        /* trained tokens so far */
    uint64_t rng;           /* the run's random generator state (an_rng) */
    uint64_t cursor_epoch, cursor_next, cursor_offset; /* the training batcher's position */
    uint64_t rng_aux;       /* LoRA: training forwards so far, which seed the dropout masks; else 0 */
} an_ckpt_state;

typedef struct an_ckpt_tensor_info {
    char name[128];
    uint64_t numel;
    uint32_t parts;
    uint64_t offset; /* byte offset of its data in the file */
} an_ckpt_tensor_info;

/* ---- writing: open, one call per tensor in the order announced, commit ---- */
typedef struct an_ckpt_writer {
    FILE *f;
    char path[1024], tmp[1040];
    an_hasher hash;
    uint64_t written;
    long long byte_limit; /* test hook: writes fail with ENOSPC past this many bytes; < 0: none */
    int failed;
} an_ckpt_writer;

/* names/numels/parts: the tensor table. byte_limit < 0 for real use (a test hook that simulates a
 * full disk: every write past the limit fails as write(2) does with ENOSPC). */
int an_ckpt_write_begin(an_ckpt_writer *w, const char *path, const an_ckpt_state *st, int n_tensors,
                        const char *const *names, const uint64_t *numels, const uint32_t *parts, long long byte_limit,
                        an_error *err);
/* The data of the next tensor part (numel floats, host memory). */
int an_ckpt_write_floats(an_ckpt_writer *w, const float *data, uint64_t numel, an_error *err);
/* Writes the checksum, flushes, fsyncs, renames into place. On failure the temporary file is removed
 * and nothing under the real name changes. */
int an_ckpt_write_commit(an_ckpt_writer *w, an_error *err);
/* Gives up: closes and removes the temporary file. */
void an_ckpt_write_abort(an_ckpt_writer *w);

/* ---- reading ---- */
typedef struct an_ckpt {
    char path[1024];
    an_ckpt_state state;
    an_ckpt_tensor_info *tensors;
    int n_tensors;
    unsigned char *data; /* the whole file */
    size_t size;
} an_ckpt;

/* Reads and checks the whole file (magic, version, sizes, checksum); errors name the file. */
int an_ckpt_read(an_ckpt *c, const char *path, an_error *err);
void an_ckpt_free(an_ckpt *c);
/* Part `part` of tensor `name` (numel floats) copied into out; an absent tensor or a size that
 * differs is an error naming the file and tensor. */
int an_ckpt_get(const an_ckpt *c, const char *name, uint32_t part, float *out, uint64_t numel, an_error *err);

/* ---- the checkpoint folder ---- */
/* DIR/checkpoints/step-%08ld.ckpt */
int an_ckpt_path(char *out, size_t size, const char *run_dir, long step);
/* The newest checkpoint in run_dir/checkpoints (highest step): 1 found (path in out), 0 none, -1 error. */
int an_ckpt_latest(const char *run_dir, char *out, size_t size, an_error *err);
/* The newest checkpoint older than ckpt (a DIR/checkpoints/step-N.ckpt path) in the same folder: for a
 * resume whose newest checkpoint is damaged. 1 found, 0 none, -1 error. */
int an_ckpt_older(const char *ckpt, char *out, size_t size, an_error *err);
/* Deletes all but the `keep` newest checkpoints (keep <= 0: deletes none), and never the newest one
 * at or before step `protect` (< 0: none), the one a diverging run falls back to. */
int an_ckpt_prune(const char *run_dir, int keep, long protect, an_error *err);
/* The newest checkpoint at or before `step`. 1 found, 0 none, -1 error. */
int an_ckpt_at_or_before(const char *run_dir, long step, char *out, size_t size, an_error *err);
/* Renames the checkpoints after `step` to NAME.diverged (which no resume or prune looks at): they hold
 * weights from after a run went bad, and `--resume DIR` must not pick them. *n gets their count. */
int an_ckpt_set_aside_after(const char *run_dir, long step, int *n, an_error *err);

#endif
