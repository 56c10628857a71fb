#ifndef AN_DTYPE_H
#define AN_DTYPE_H
/* Element types: of tensors in files (safetensors' names) and of weights held by a backend.
 *
 * The element types AN_F32 .. AN_BOOL are those of safetensors. The weight types after them pack
 * blocks of values with scales and have no per-element size: AN_NF4 is QLoRA's 4-bit NormalFloat
 * (kernels/nf4.h). The GGUF quantized types (q8_0, q4_0, q4_1, k-quants) go after it. */
#include <stddef.h>

typedef enum an_dtype {
    AN_F32 = 1, AN_F16, AN_BF16, AN_F64, AN_I8, AN_U8, AN_I16, AN_I32, AN_I64, AN_BOOL,
    AN_NF4, /* a weight: an an_nf4_tensor (kernels/nf4.h) */
} an_dtype;

const char *an_dtype_name(an_dtype t); /* "F32", ... as safetensors spells them; "NF4" */
size_t an_dtype_size(an_dtype t);      /* bytes per element; 0 for the block types */

#endif
