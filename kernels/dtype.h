#ifndef AN_DTYPE_H
#define AN_DTYPE_H
/* Element types: of tensors in files (safetensors' names) and of weights held by a backend.
 *
 * The element types AN_F32 .. AN_BOOL are those of safetensors. The weight types after them pack
 * blocks of values with scales and have no per-element size: AN_NF4 is QLoRA's 4-bit NormalFloat
 * (kernels/nf4.h). The GGUF quantized types after it are ggml's blocks exactly as a GGUF file stores
 * them (kernels/cpu_quant.h has the layouts): a weight's data is rows * (cols / block) blocks, row after
 * row, each row a whole number of blocks. */
#include <stddef.h>

typedef enum an_dtype {
    AN_F32 = 1, AN_F16, AN_BF16, AN_F64, AN_I8, AN_U8, AN_I16, AN_I32, AN_I64, AN_BOOL,
    AN_NF4, /* a weight: an an_nf4_tensor (kernels/nf4.h) */
    AN_Q8_0, /* ggml Q8_0: 32 values in 34 bytes (f16 scale, 32 int8) */
    AN_Q4_0, /* ggml Q4_0: 32 values in 18 bytes (f16 scale, 32 nibbles, value d * (q - 8)) */
    AN_Q4_1, /* ggml Q4_1: 32 values in 20 bytes (f16 scale and min, 32 nibbles, value d * q + m) */
    AN_Q4_K, /* ggml Q4_K: 256 values in 144 bytes (8 sub-blocks with 6-bit scales and mins) */
    AN_Q6_K, /* ggml Q6_K: 256 values in 210 bytes (16 sub-blocks with int8 scales, 6-bit values) */
    /* The same blocks with eight rows interleaved, block by block (kernels/quant_x8.h): the CPU's
     * layout for decoding, made when a GGUF model is loaded; rows a multiple of 8. */
    AN_Q8_0_X8, AN_Q4_0_X8, AN_Q4_1_X8,
    /* A GGUF float32 matrix with 32 rows interleaved column by column (kernels/f32x32.h): the CPU's
     * layout for a frozen float32 weight, made when a GGUF model is loaded; rows a multiple of 32. */
    AN_F32_X32,
} an_dtype;

/* The weights kept as a GGUF file gives them, in ggml's layout or the CPU's interleaved ones (frozen,
 * held in an_param.packed): 1 for AN_Q8_0 .. AN_F32_X32. */
static inline int an_dtype_is_ggml(an_dtype t) { return t >= AN_Q8_0 && t <= AN_F32_X32; }
/* An interleaved type's ggml type (AN_Q8_0_X8 -> AN_Q8_0); any other type itself. */
static inline an_dtype an_dtype_x8_base(an_dtype t) {
    return t == AN_Q8_0_X8 ? AN_Q8_0 : t == AN_Q4_0_X8 ? AN_Q4_0 : t == AN_Q4_1_X8 ? AN_Q4_1 : t;
}
/* The interleaved type of a ggml type, or 0 where there is none. */
static inline an_dtype an_dtype_x8_of(an_dtype t) {
    return t == AN_Q8_0 ? AN_Q8_0_X8 : t == AN_Q4_0 ? AN_Q4_0_X8 : t == AN_Q4_1 ? AN_Q4_1_X8 : (an_dtype)0;
}

const char *an_dtype_name(an_dtype t); /* "F32", ... as safetensors spells them; "NF4" */
size_t an_dtype_size(an_dtype t);      /* bytes per element; 0 for the block types */
/* The GGUF block types' values per block and bytes per block (0 for every other type; an interleaved
 * type's are its ggml type's, so a weight takes the same bytes either way; AN_F32_X32's are 1 and 4). */
int an_dtype_block(an_dtype t);
int an_dtype_block_bytes(an_dtype t);

#endif
