#ifndef AN_NF4_H
#define AN_NF4_H
/* NF4: 4-bit NormalFloat weights exactly as bitsandbytes stores them (QLoRA), plus the compute
 * kernels a frozen NF4 linear layer needs. docs/nf4.md describes the format and the numbers.
 *
 * Layout (bitsandbytes): the weight [rows, cols] is flattened row-major and cut into blocks of
 * `blocksize` (64) elements; blocks run across row ends when cols is not a multiple of it. Each
 * element is the index of the nearest of 16 NF4 code values after dividing by its block's absmax;
 * element 2k is the high nibble of byte k and element 2k+1 its low nibble. With double
 * quantization the float32 absmax of each block is itself stored as 8 bits: the mean of all absmax
 * values (offset) is subtracted and the rest is quantized with the signed 8-bit dynamic map in
 * blocks of 256 (kernels/dynamic_map.h).
 *
 * Quantization reproduces bitsandbytes 0.50's CPU path bit for bit (codes, absmax, offset, nested
 * codes and nested absmax); tests/test_nf4.c checks this against fixtures made by bitsandbytes. */
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#define AN_NF4_BLOCKSIZE 64
#define AN_NF4_NESTED_BLOCKSIZE 256

/* The 16 NF4 code values, ascending (bitsandbytes get_4bit_type("nf4")). */
extern const float an_nf4_code[16];

typedef struct an_nf4_tensor {
    int64_t rows, cols;  /* the weight [rows, cols]; a linear layer's [out, in] */
    int64_t n;           /* rows * cols */
    int blocksize;       /* elements per absmax block (64) */
    int64_t n_blocks;    /* ceil(n / blocksize) */
    uint8_t *packed;     /* (n + 1) / 2 bytes */
    /* Plain: absmax[n_blocks] holds each block's scale. Double-quantized: absmax is NULL and the
     * scale of block b is code8[qabsmax[b]] * absmax2[b / blocksize2] + offset. */
    float *absmax;
    int double_quant;
    uint8_t *qabsmax;    /* [n_blocks] */
    float *absmax2;      /* [n_blocks2] */
    int blocksize2;      /* 256 */
    int64_t n_blocks2;
    float offset;
    float code8[256];    /* the nested quant map (the signed dynamic map) */
    /* A device backend's copy (an_nf4_device_image below) in that backend's memory, or NULL (the CPU
     * reads the fields above). Its maker allocates and frees it with the backend (model/nf4_weights.c),
     * before an_nf4_tensor_free, which clears every field. */
    void *device;
} an_nf4_tensor;

/* ---- quantization of raw arrays (bitsandbytes quantize_4bit / dequantize_4bit) ---- */

/* Quantizes n floats in blocks of blocksize: packed gets (n + 1) / 2 bytes (an odd n leaves the
 * last low nibble 0), absmax gets ceil(n / blocksize) floats. Fails on NaN or infinite input, on
 * n < 1 and on a blocksize that is not a power of two in 32..4096 (bitsandbytes' choices). */
int an_nf4_quantize(const float *w, int64_t n, int blocksize, uint8_t *packed, float *absmax, an_error *err);
/* out[i] = an_nf4_code[nibble i] * absmax[i / blocksize] */
void an_nf4_dequantize(const uint8_t *packed, const float *absmax, int64_t n, int blocksize, float *out);

/* torch.mean of a float32 CPU tensor, bit for bit: torch sums with a vectorized cascade (8 lanes
 * of AVX2, 4 interleaved rows, levels of 16) and then divides by n. From 32768 elements on, torch
 * splits the sum over its threads, so the result depends on torch.get_num_threads(): the _threads
 * variant takes that number (checked against torch for 1, 2, 3, 4, 8 and 9 threads); the plain
 * one assumes a single thread. */
float an_torch_mean_f32(const float *x, int64_t n);
float an_torch_mean_f32_threads(const float *x, int64_t n, int threads);

/* ---- the tensor ---- */

/* Quantizes w[rows, cols] into t (which it allocates; free with an_nf4_tensor_free). With
 * double_quant the absmax values are quantized as bitsandbytes' compress_statistics=True does. */
int an_nf4_tensor_quantize(an_nf4_tensor *t, const float *w, int64_t rows, int64_t cols, int blocksize,
                           int double_quant, an_error *err);
/* The same, computing the double-quantization offset as torch does with torch_threads threads
 * (it matters from 32768 blocks, i.e. 2M weights, on; an_nf4_tensor_quantize uses 1). */
int an_nf4_tensor_quantize_ex(an_nf4_tensor *t, const float *w, int64_t rows, int64_t cols, int blocksize,
                              int double_quant, int torch_threads, an_error *err);
void an_nf4_tensor_free(an_nf4_tensor *t);
/* The float32 scale of block b, undoing double quantization as bitsandbytes does: the product
 * rounded to float32 first, then the offset added (two roundings, never one fused multiply-add). */
static inline float an_nf4_block_scale(const an_nf4_tensor *t, int64_t b) {
    if (!t->double_quant) return t->absmax[b];
    /* two statements: C's FP_CONTRACT (clang's default) may fuse only within one expression */
    float s = t->code8[t->qabsmax[b]] * t->absmax2[b / t->blocksize2];
    return s + t->offset;
}
/* Dequantizes elements [start, start + count) of the flattened weight into out. */
void an_nf4_tensor_dequantize_range(const an_nf4_tensor *t, int64_t start, int64_t count, float *out);
/* Dequantizes the whole weight (rows * cols floats): for tests and for merging, not for compute. */
void an_nf4_tensor_dequantize(const an_nf4_tensor *t, float *out);
/* Bytes the tensor occupies (codes + scales), and that divided by the number of parameters. */
size_t an_nf4_tensor_bytes(const an_nf4_tensor *t);
double an_nf4_bytes_per_param(const an_nf4_tensor *t);

/* ---- a device backend's copy ---- */

/* One buffer holding what dequantizing needs, each part at a byte offset that is a multiple of 256:
 * the 16 code values (floats), the packed codes, and the scales as the tensor holds them: absmax
 * (n_blocks floats), or qabsmax (n_blocks bytes), absmax2 (n_blocks2 floats) and code8 (256 floats).
 * Offsets of absent parts are 0. A device kernel computes element values exactly as
 * an_nf4_tensor_dequantize does (kernels/cuda/weights.cu). */
typedef struct an_nf4_device_layout {
    size_t code4, packed, absmax, qabsmax, absmax2, code8;
    size_t bytes;
} an_nf4_device_layout;
an_nf4_device_layout an_nf4_device_layout_of(const an_nf4_tensor *t);
/* The buffer's bytes for t, written to host memory dst (layout.bytes; padding zero), to be uploaded. */
void an_nf4_device_image(const an_nf4_tensor *t, void *dst);

/* ---- compute ---- */

/* Scratch memory: every compute function takes a workspace (work, work_bytes). With work NULL or
 * smaller than an_nf4_matmul_work_bytes(w) it allocates what it needs and frees it on return;
 * a training loop passes a workspace sized once, so a step allocates nothing. The size depends on
 * the number of OpenMP threads at the time of the call. */
size_t an_nf4_matmul_work_bytes(const an_nf4_tensor *w);

/* out[N, OC] = inp[N, C] @ W[OC, C]^T + bias[OC] (bias may be NULL); overwrites out. W is
 * dequantized a tile at a time (64 rows x up to 1024 columns) into a per-thread buffer and
 * multiplied there with sgemm, so no float copy of the whole weight ever exists. N <=
 * AN_NF4_MATVEC_MAX_N takes the matrix-vector kernel instead. */
#define AN_NF4_MATVEC_MAX_N 4
int an_nf4_matmul_forward(float *out, const float *inp, const an_nf4_tensor *w, const float *bias, int N,
                          void *work, size_t work_bytes, an_error *err);
/* dinp[N, C] += dout[N, OC] @ W[OC, C]. The gradient with respect to the input only: an NF4
 * weight is frozen, so there is never a gradient for W. */
int an_nf4_matmul_backward_input(float *dinp, const float *dout, const an_nf4_tensor *w, int N, void *work,
                                 size_t work_bytes, an_error *err);

/* Which matrix-vector kernel to run: the best the CPU was compiled for (AVX2 + FMA when
 * available), or the plain C one (for tests that compare the two). */
typedef enum an_nf4_path { AN_NF4_PATH_AUTO = 0, AN_NF4_PATH_PLAIN = 1 } an_nf4_path;
/* out[N, OC] = x[N, C] @ W^T + bias, reading each 4-bit weight once for up to 4 rows of x at a
 * time (the single-token path of generation). Overwrites out. Never fails: without scratch memory
 * it falls back to the slowest kernel. */
void an_nf4_matvec(float *out, const float *x, const an_nf4_tensor *w, const float *bias, int N, an_nf4_path path,
                   void *work, size_t work_bytes);
/* 1 when the AUTO path is vectorized (the build had AVX2 and FMA). */
int an_nf4_matvec_is_simd(void);

#endif
