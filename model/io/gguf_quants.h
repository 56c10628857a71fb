#ifndef AN_GGUF_QUANTS_H
#define AN_GGUF_QUANTS_H
/* ggml's tensor types as GGUF files store them: the type ids, block sizes and byte sizes of every type
 * the format defines (so a reader can size and skip any tensor), and dequantization to float32 for the
 * types autoneg reads today. Block layouts are documented next to each dequantizer in gguf_quants.c. */
#include <stddef.h>
#include <stdint.h>
#include "core/error.h"
#include "kernels/dtype.h"

/* ggml_type ids as written in a GGUF tensor info (fixed by the format; gaps are retired types). */
typedef enum an_ggml_type {
    AN_GGML_F32 = 0,
    AN_GGML_F16 = 1,
    AN_GGML_Q4_0 = 2,
    AN_GGML_Q4_1 = 3,
    AN_GGML_Q5_0 = 6,
    AN_GGML_Q5_1 = 7,
    AN_GGML_Q8_0 = 8,
    AN_GGML_Q8_1 = 9,
    AN_GGML_Q2_K = 10,
    AN_GGML_Q3_K = 11,
    AN_GGML_Q4_K = 12,
    AN_GGML_Q5_K = 13,
    AN_GGML_Q6_K = 14,
    AN_GGML_Q8_K = 15,
    AN_GGML_BF16 = 30,
} an_ggml_type;

typedef struct an_ggml_type_info {
    const char *name;  /* as ggml spells it: "F32", "Q4_K", "IQ2_XXS", ... */
    int block;         /* elements per block (1 for plain types) */
    int block_bytes;   /* bytes per block */
    int dequantizes;   /* an_ggml_dequantize handles it */
} an_ggml_type_info;

/* NULL for an id the format does not define (or a retired one). */
const an_ggml_type_info *an_ggml_type_get(uint32_t type);

/* Converts n elements (a whole number of blocks) of type from src to float32, giving the same bits
 * as ggml's reference dequantization (and the gguf Python package's). Fails for a type it does not
 * handle or an n that is not a whole number of blocks. src may be unaligned. */
int an_ggml_dequantize(uint32_t type, const void *src, float *dst, int64_t n, an_error *err);

/* The backend dtype that holds a ggml type's blocks as they are (kernels/dtype.h: AN_Q8_0 .. AN_Q6_K),
 * 0 for a type that is not kept quantized; and back (0 for a dtype that is not a GGUF block type). */
an_dtype an_ggml_type_dtype(uint32_t type);
uint32_t an_dtype_ggml_type(an_dtype t);

/* The writer's side: n float32 values (a whole number of blocks) as type F32, F16 (rounded to nearest
 * even), Q8_0 or Q4_0, bit for bit as the gguf Python package's numpy quantize (and ggml's reference
 * quantize_row_*_ref) writes them; dst holds n / block * block_bytes bytes. Other types are an error. */
int an_ggml_quantize(uint32_t type, const float *src, void *dst, int64_t n, an_error *err);

#endif
