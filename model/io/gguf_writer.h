#ifndef AN_GGUF_WRITER_H
#define AN_GGUF_WRITER_H
/* Internal to model/io: the byte-level GGUF v3 writer the model and adapter writers share
 * (gguf_write.c, gguf_write_lora.c). Little-endian output; the first write error sticks in `failed`
 * and is reported once by an_gguf_out_finish, which fsyncs path.tmp and renames it into place, so an
 * existing file is only ever replaced by a complete one. */
#include <stdint.h>
#include <stdio.h>

#include "core/error.h"
#include "model/io/gguf.h"

#define AN_GGUF_ALIGN 32 /* GGUF's default alignment; written as general.alignment too */

typedef struct an_gguf_out {
    FILE *f;
    uint64_t pos;
    int failed;          /* errno of the first failed write (EINVAL: a copied value could not be read) */
    const char *path;
    char tmp_path[4096];
} an_gguf_out;

/* One tensor's entry: name, ggml shape (ne[0] is the row length), type, offset in the data section. */
typedef struct an_gguf_wtensor {
    char name[96];
    int n_dims;
    int64_t ne[2];
    uint32_t type;
    uint64_t offset;
    size_t nbytes;
} an_gguf_wtensor;

int an_gguf_out_open(an_gguf_out *w, const char *path, an_error *err);
/* Closes and renames into place (0), or removes path.tmp and fails naming path (-1). */
int an_gguf_out_finish(an_gguf_out *w, an_error *err);
/* Closes and removes path.tmp (after an error of the caller's). */
void an_gguf_out_abort(an_gguf_out *w);

void an_gguf_put(an_gguf_out *w, const void *p, size_t n);
void an_gguf_put_le(an_gguf_out *w, uint64_t v, int bytes);
/* The header: magic, version 3, tensor and key counts. */
void an_gguf_put_header(an_gguf_out *w, uint64_t n_tensors, uint64_t n_kv);
void an_gguf_kv_u32(an_gguf_out *w, const char *key, uint32_t v);
void an_gguf_kv_f32(an_gguf_out *w, const char *key, float v);
void an_gguf_kv_str(an_gguf_out *w, const char *key, const char *s);
/* A key copied from a file that an_gguf_open read, re-encoded from the reader's checked values. */
void an_gguf_kv_copy(an_gguf_out *w, const an_gguf_kv *kv);

/* Sets each tensor's offset (aligned) and returns the data section's size. */
uint64_t an_gguf_layout(an_gguf_wtensor *ts, int n);
/* The tensor infos, then the padding up to the data section. */
void an_gguf_put_tensor_infos(an_gguf_out *w, const an_gguf_wtensor *ts, int n);
/* One tensor's bytes, then the padding up to the next. */
void an_gguf_put_tensor_data(an_gguf_out *w, const void *bytes, size_t nbytes);

#endif
