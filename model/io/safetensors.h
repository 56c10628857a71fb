#ifndef AN_SAFETENSORS_H
#define AN_SAFETENSORS_H
/* safetensors: an 8-byte little-endian header length, a JSON header
 * {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then the bytes.
 * Reading maps the file(s); a folder with model.safetensors.index.json reads every shard. */
#include <stddef.h>
#include <stdint.h>
#include "core/error.h"
#include "core/file.h"
#include "kernels/dtype.h"


#define AN_MAX_DIMS 8

typedef struct an_st_tensor {
    char *name;
    an_dtype dtype;
    int ndim;
    int64_t shape[AN_MAX_DIMS];
    const void *data; /* inside the mapped file; naturally aligned when the header is padded to 8 bytes as
                       * the spec and the Python library do, otherwise possibly not (an_st_to_f32 copes) */
    size_t nbytes;
    int shard;        /* which mapped file it lives in */
} an_st_tensor;

typedef struct an_safetensors {
    an_st_tensor *tensors;
    int n_tensors;
    an_mapped_file *files;
    int n_files;
    char **meta_keys, **meta_values; /* "__metadata__" string pairs of the first file */
    int n_meta;
    char **paths; /* paths[shard]: the file each shard was mapped from (added; for error messages) */
} an_safetensors;

/* path is a .safetensors file, a model.safetensors.index.json, or a folder holding either.
 * The tensor table is sorted by name (an_st_find is a binary search). Every header is fully checked
 * (see docs/formats.md); on failure st is left empty and nothing needs closing. */
int an_st_open(an_safetensors *st, const char *path, an_error *err);
void an_st_close(an_safetensors *st);
/* Maps path as one more shard of st (no tensors added): for readers of other formats (llama2.c) that
 * present their weights as an an_safetensors view. */
int an_st_add_file(an_safetensors *st, const char *path, an_error *err);
const an_st_tensor *an_st_find(const an_safetensors *st, const char *name);
const char *an_st_meta(const an_safetensors *st, const char *key);
int64_t an_st_numel(const an_st_tensor *t);
/* Converts any float dtype (F32, F16, BF16, F64) to float32 into dst (numel floats). */
int an_st_to_f32(const an_st_tensor *t, float *dst, an_error *err);
/* After an_st_to_f32: -1 with "file: tensor NAME holds a NaN or infinite value (first at element K)"
 * (K in the file's order) when one of its values is not a finite number. Every loader runs it on
 * every float tensor, so bad weights fail at load rather than as nll=nan or a diverged run later. */
int an_st_check_finite(const an_st_tensor *t, const float *v, const char *file, an_error *err);
/* Finds name and checks its shape (ndim entries): "path: tensor \"name\" is missing" or
 * "path: tensor \"name\" has shape [a, b] but [c, d] was expected", path being the file that holds it
 * (or the first file when it is missing). For model loaders. */
const an_st_tensor *an_st_expect(const an_safetensors *st, const char *name, int ndim, const int64_t *shape,
                                 an_error *err);

/* Writing: collect tensors (data is borrowed until an_st_write), then write atomically, streaming to
 * path.tmp + fsync + rename. Layout as the Python library's: ordered by dtype then name, header padded
 * to 8 bytes, "__metadata__" = {"format": "pt", ...given pairs}. */
typedef struct an_st_writer {
    struct an_st_wentry *entries;
    int n, cap;
    char **meta_keys, **meta_values;
    int n_meta;
} an_st_writer;

void an_st_writer_init(an_st_writer *w);
int an_st_writer_add(an_st_writer *w, const char *name, an_dtype dtype, int ndim, const int64_t *shape,
                     const void *data, an_error *err);
int an_st_writer_meta(an_st_writer *w, const char *key, const char *value, an_error *err);
int an_st_write(const an_st_writer *w, const char *path, an_error *err);
void an_st_writer_free(an_st_writer *w);

/* Half-precision conversions (round to nearest even). */
float an_f16_to_f32(uint16_t h);
uint16_t an_f32_to_f16(float f);
float an_bf16_to_f32(uint16_t h);
uint16_t an_f32_to_bf16(float f);
/* The same over arrays (added; written so the compiler can vectorize them). src and dst must not overlap. */
void an_f16_to_f32_n(float *dst, const uint16_t *src, size_t n);
void an_f32_to_f16_n(uint16_t *dst, const float *src, size_t n);
void an_bf16_to_f32_n(float *dst, const uint16_t *src, size_t n);
void an_f32_to_bf16_n(uint16_t *dst, const float *src, size_t n);

#endif
