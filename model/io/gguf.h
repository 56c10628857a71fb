#ifndef AN_GGUF_H
#define AN_GGUF_H
/* GGUF (llama.cpp's model file), versions 2 and 3, little-endian:
 *   "GGUF", u32 version, i64 n_tensors, i64 n_kv,
 *   n_kv x (string key, u32 value type, value),
 *   n_tensors x (string name, u32 n_dims, i64 ne[n_dims], u32 ggml type, u64 offset),
 *   padding to general.alignment (default 32), then the tensor data (offsets are relative to it).
 * A string is u64 length + bytes (no NUL); an array is u32 element type, u64 count, elements.
 * Reading maps the file and checks every length, count, type and offset against the file before
 * anything is used; values point into the mapping (nothing is copied but the keys and tensor names). */
#include <stddef.h>
#include <stdint.h>
#include "core/error.h"
#include "core/file.h"
#include "model/io/gguf_quants.h"

typedef enum an_gguf_type {
    AN_GGUF_U8 = 0,
    AN_GGUF_I8 = 1,
    AN_GGUF_U16 = 2,
    AN_GGUF_I16 = 3,
    AN_GGUF_U32 = 4,
    AN_GGUF_I32 = 5,
    AN_GGUF_F32 = 6,
    AN_GGUF_BOOL = 7,
    AN_GGUF_STRING = 8,
    AN_GGUF_ARRAY = 9,
    AN_GGUF_U64 = 10,
    AN_GGUF_I64 = 11,
    AN_GGUF_F64 = 12,
} an_gguf_type;

/* One metadata value. Scalars are decoded; strings and arrays point into the mapped file. */
typedef struct an_gguf_value {
    an_gguf_type type;
    union {
        uint64_t u; /* U8, U16, U32, U64, BOOL (0 or 1) */
        int64_t i;  /* I8, I16, I32, I64 */
        double f;   /* F32 (widened exactly), F64 */
        struct {
            const char *ptr; /* not NUL-terminated */
            uint64_t len;
        } str;
        struct {
            an_gguf_type elem;
            uint64_t n;
            const unsigned char *data; /* the first element's bytes */
            const unsigned char *end;  /* end of the file: element decoding stays inside it */
            const uint64_t *index;     /* for top-level string / array arrays: each element's offset
                                        * from data (so token i is O(1)); NULL otherwise */
        } arr;
    } v;
} an_gguf_value;

typedef struct an_gguf_kv {
    char *key;
    an_gguf_value value;
} an_gguf_kv;

#define AN_GGUF_MAX_DIMS 4

typedef struct an_gguf_tensor {
    char *name;
    int n_dims;
    int64_t ne[AN_GGUF_MAX_DIMS]; /* ne[0] is the contiguous dimension (ggml order: a numpy (rows, cols)
                                   * matrix has ne = [cols, rows]); unused ones are 1 */
    uint32_t type;                /* an_ggml_type */
    uint64_t offset;              /* from the start of the data section */
    const void *data;             /* inside the mapping, aligned to the file's alignment */
    size_t nbytes;
    int64_t numel;
} an_gguf_tensor;

typedef struct an_gguf {
    char *path;
    an_mapped_file file;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset; /* where the data section starts in the file */
    an_gguf_kv *kvs;      /* in file order */
    int64_t n_kv;
    an_gguf_tensor *tensors; /* in file order */
    int64_t n_tensors;
    int64_t *by_name; /* tensor indices sorted by name, for an_gguf_find_tensor */
} an_gguf;

/* Byte size of a fixed-size value type; 0 for string, array and unknown types. */
int an_gguf_scalar_size(uint64_t t);

/* On failure g is left empty (nothing to close) and err says "path: what is wrong". */
int an_gguf_open(an_gguf *g, const char *path, an_error *err);
void an_gguf_close(an_gguf *g);

const an_gguf_kv *an_gguf_find_key(const an_gguf *g, const char *key);
const an_gguf_tensor *an_gguf_find_tensor(const an_gguf *g, const char *name);
const char *an_gguf_type_name(an_gguf_type t);

/* Typed getters: "path: key \"k\" is missing" or "path: key \"k\" is a string, not an integer".
 * get_int takes any integer type (a U64 above INT64_MAX is an error); get_float takes F32 or F64;
 * get_str gives a pointer into the file and its length; get_array checks the element type unless
 * elem is -1. */
int an_gguf_get_int(const an_gguf *g, const char *key, int64_t *out, an_error *err);
int an_gguf_get_float(const an_gguf *g, const char *key, double *out, an_error *err);
int an_gguf_get_bool(const an_gguf *g, const char *key, int *out, an_error *err);
int an_gguf_get_str(const an_gguf *g, const char *key, const char **s, uint64_t *len, an_error *err);
int an_gguf_get_array(const an_gguf *g, const char *key, int elem, const an_gguf_value **arr, an_error *err);

/* Element i of an array value (the file was checked at open, so this fails only for i out of range). */
int an_gguf_array_get(const an_gguf_value *arr, uint64_t i, an_gguf_value *out);

/* The tensor's values as float32 (numel floats), for the types an_ggml_dequantize handles. */
int an_gguf_tensor_to_f32(const an_gguf *g, const an_gguf_tensor *t, float *dst, an_error *err);

#endif
