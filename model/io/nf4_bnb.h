#ifndef AN_MODEL_IO_NF4_BNB_H
#define AN_MODEL_IO_NF4_BNB_H
/* bitsandbytes' serialization of an NF4 weight (QuantState.as_dict(packed=True)) into an
 * an_nf4_tensor (kernels/nf4.h): the file format, checked field by field. */
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "kernels/nf4.h"

/* The arrays bitsandbytes writes for one Linear4bit weight W (QuantState.as_dict(packed=True)),
 * already read from the file by the caller (floats converted to float32). Nested arrays are NULL
 * for a weight saved without double quantization. */
typedef struct an_nf4_bnb_arrays {
    const char *name;              /* "model.layers.0.attention.wqkv.weight", for messages */
    const uint8_t *weight;         /* W: packed codes, as raw bytes whatever dtype it was stored as
                                      (bitsandbytes' quant_storage) */
    int64_t weight_bytes;
    const float *absmax_f32;       /* W.absmax when not nested (float32) ... */
    const uint8_t *absmax_u8;      /* ... or W.absmax when nested (uint8 codes) */
    int64_t absmax_count;
    const float *quant_map;        /* W.quant_map: the 16 NF4 values */
    int64_t quant_map_count;
    const float *nested_absmax;    /* W.nested_absmax */
    int64_t nested_absmax_count;
    const float *nested_quant_map; /* W.nested_quant_map: 256 values */
    int64_t nested_quant_map_count;
    const char *quant_state_json;  /* W.quant_state.bitsandbytes__nf4: packed JSON bytes */
    size_t quant_state_len;
} an_nf4_bnb_arrays;

/* Checks the arrays against each other and against the JSON, then copies them into t (owned).
 * Errors name the tensor and the problem: counts that do not match the shape and blocksize, a
 * quant_type other than nf4, a quant map that is not NF4, NaN or infinite scales, nested stats
 * missing or present without the other half. An all-zero block (absmax 0) is legal. */
int an_nf4_from_bnb(an_nf4_tensor *t, const an_nf4_bnb_arrays *a, an_error *err);

#endif
