#ifndef AN_BATCH_H
#define AN_BATCH_H
/* Batches of samples for training: B rows of T tokens as int32 arrays
 *   ids[B*T]        token ids (pad_id in padding)
 *   targets[B*T]    already shifted: targets[t] = label of token t+1 of the same sample, -100 at a
 *                   sample's last token and in padding, so the loss is logits[t] against targets[t]
 *   positions[B*T]  rotary/learned position of each token
 *   seg_start[B*T]  index within the row of the first token of the token's sample: the attention op
 *                   lets token t see tokens seg_start[t]..t (a block-diagonal causal mask)
 * Three layouts:
 *   AN_BATCH_PACK (default): whole samples placed one after another in a row while they fit; positions
 *       restart at 0 for each sample; rows end with padding.
 *   AN_BATCH_PAD: one sample per row, T = the longest sample of this batch (at most opts.seq_len),
 *       positions 0..T-1, seg_start 0.
 *   AN_BATCH_PACK_XTUNER: XTuner's Packer: the samples concatenated and cut into exact T-token rows
 *       (a sample may be split across rows), positions 0..T-1, seg_start 0, so packed samples see each
 *       other as they do in XTuner with use_varlen_attn=False.
 * The sample order of each epoch is a shuffle from (seed, epoch), optionally grouped by length. A batch
 * never crosses an epoch: the last batch of an epoch is filled up with padding rows. */
#include <stddef.h>
#include <stdint.h>
#include "core/error.h"
#include "data/batching/sample.h"

typedef enum an_batch_mode {
    AN_BATCH_PACK = 0,
    AN_BATCH_PAD = 1,
    AN_BATCH_PACK_XTUNER = 2,
} an_batch_mode;

typedef struct an_batch_opts {
    an_batch_mode mode;
    int rows;        /* B */
    int seq_len;     /* T (the most for AN_BATCH_PAD) */
    int32_t pad_id;
    uint64_t seed;
    int shuffle;         /* shuffle each epoch (else the samples' own order) */
    int group_by_length; /* sort by length, longest first, within mega-batches of the shuffled order */
    int mega_batch;      /* samples per mega-batch (0: 64) */
} an_batch_opts;

typedef struct an_token_batch {
    int B, T; /* T of this batch (AN_BATCH_PAD: the longest sample) */
    int32_t *ids, *targets, *positions, *seg_start; /* room for rows * seq_len each */
    size_t n_samples;   /* samples (or pieces of samples, for XTuner packing) that start in this batch */
    size_t n_targets;   /* targets != -100 */
    size_t n_tokens;    /* tokens that are not padding */
    uint64_t epoch;
    int epoch_end;      /* this was the last batch of its epoch */
} an_token_batch;

/* Where the batcher stands: plain numbers, so a checkpoint can store them and a resumed run goes on
 * with exactly the batches the first run would have produced. */
typedef struct an_batch_cursor {
    uint64_t epoch;
    uint64_t next;   /* index into the epoch's order of the next sample */
    uint64_t offset; /* tokens of that sample already used (XTuner packing only) */
} an_batch_cursor;

typedef struct an_batcher {
    const an_samples *s;
    an_batch_opts o;
    size_t *order;
    uint64_t order_epoch;
    int have_order;
    an_batch_cursor cur;
} an_batcher;

int an_batch_alloc(an_token_batch *b, const an_batch_opts *o, an_error *err);
void an_batch_free(an_token_batch *b);

int an_batcher_init(an_batcher *bt, const an_samples *s, const an_batch_opts *o, an_error *err);
void an_batcher_free(an_batcher *bt);
int an_batcher_next(an_batcher *bt, an_token_batch *b, an_error *err);
an_batch_cursor an_batcher_cursor(const an_batcher *bt);
int an_batcher_seek(an_batcher *bt, an_batch_cursor c, an_error *err);

/* The order of the samples in an epoch (n entries): a permutation from (seed, epoch) when shuffling,
 * then sorted by length within mega-batches when grouping. */
int an_epoch_order(const an_samples *s, const an_batch_opts *o, uint64_t epoch, size_t *order, an_error *err);

#endif
