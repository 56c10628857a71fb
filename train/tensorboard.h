#ifndef AN_TENSORBOARD_H
#define AN_TENSORBOARD_H
/* TensorBoard event files, written and read directly (no TensorFlow, no protobuf library).
 *
 * A file is a TFRecord stream: each record is uint64 length (little-endian), uint32 masked CRC-32C of
 * those 8 bytes, the data, uint32 masked CRC-32C of the data. Each record's data is a serialized
 * tensorflow.Event (tensorflow/core/util/event.proto): wall_time = 1 (double), step = 2 (int64),
 * file_version = 3 (string), summary = 5 (Summary). Summary (summary.proto): repeated Value value = 1;
 * Value: tag = 1 (string), simple_value = 2 (float). The first record holds only wall_time and
 * file_version "brain.Event:2"; every scalar after it is one Event with one Value. */
#include <stddef.h>
#include <stdio.h>
#include "core/error.h"

#define AN_TB_TRAIN_LOSS "train/loss"
#define AN_TB_TRAIN_LR "train/lr"
#define AN_TB_TRAIN_GRAD_NORM "train/grad_norm"
#define AN_TB_EVAL_LOSS "eval/loss"

typedef struct an_tb_writer {
    FILE *f;
    char path[1024];
} an_tb_writer;

/* Creates dir/events.out.tfevents.<unix time>.<hostname> (dir must exist) and writes the version
 * record. wall_time is seconds since the epoch (the caller's clock, so runs are testable). */
int an_tb_open(an_tb_writer *w, const char *dir, double wall_time, an_error *err);
/* Same, at an explicit path. */
int an_tb_open_path(an_tb_writer *w, const char *path, double wall_time, an_error *err);
/* Appends one scalar and flushes, so a crash loses nothing written before it. */
int an_tb_scalar(an_tb_writer *w, const char *tag, long long step, float value, double wall_time, an_error *err);
int an_tb_close(an_tb_writer *w, an_error *err);

/* Serializes one Event into buf (returns its length, or -1 when bufsz is too small). tag == NULL
 * gives the file-version event. Exposed for tests. */
long an_tb_encode_event(unsigned char *buf, size_t bufsz, double wall_time, long long step, const char *file_version,
                        const char *tag, float value);

/* ---- reading ---- */

/* One Value of one Event, or one Event without values (the version record). */
typedef struct an_tb_entry {
    double wall_time;
    long long step;
    char file_version[32]; /* "" when absent */
    char tag[128];         /* "" when the event has no summary value */
    float value;
    int has_value; /* 1 when the Value held a simple_value */
} an_tb_entry;

typedef struct an_tb_entries {
    an_tb_entry *v;
    size_t n, cap;
} an_tb_entries;

/* Reads every record, checking both CRCs of each and decoding Events (unknown fields are skipped,
 * as protobuf readers do). Errors name the file, the byte offset and the problem. */
int an_tb_read(const char *path, an_tb_entries *out, an_error *err);
void an_tb_entries_free(an_tb_entries *e);

#endif
