#ifndef AN_KERNELS_F32X32_H
#define AN_KERNELS_F32X32_H
/* Float32 weights with 32 rows interleaved (AN_F32_X32, kernels/cpu_f32x32.c): the CPU's layout for a
 * frozen float32 matrix of a GGUF model, made when it is loaded (rows a multiple of 32).
 *
 * Rows 32p .. 32p+31 of a [rows, cols] matrix w form panel p, stored column after column:
 *   x32[(p * cols + k) * 32 + j] = w[32p + j][k]
 * so the 32 outputs a panel gives are 32 contiguous floats at every k, and a product walks each panel
 * from its first byte to its last. */
#include <stdint.h>

enum { AN_X32_ROWS = 32 };

/* Row `row` of w into its panel, and back out. */
void an_f32x32_put_row(float *x32, int64_t cols, int64_t row, const float *y);
void an_f32x32_row(const float *x32, int64_t cols, int64_t row, float *y);

/* out[N, OC] = inp[N, C] @ w[OC, C]^T + bias (bias may be NULL), w in panels (OC a multiple of 32), any
 * N. Each output is bias (or 0) plus its C products added in column order, one multiply-add at a time:
 * the same bits whatever N, the row's place in the batch, or the thread count. */
void an_f32x32_forward(float *out, const float *inp, const float *x32, const float *bias, int N, int C, int OC);

#endif
