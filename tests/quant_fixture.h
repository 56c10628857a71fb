#ifndef AN_TESTS_QUANT_FIXTURE_H
#define AN_TESTS_QUANT_FIXTURE_H
/* GGUF-quantized test weights: blocks of random bytes (every bit pattern a file may hold, Q8_0's -128
 * included) with their f16 scales replaced by random finite ones of a size that keeps the values
 * within about [-2, 2]; and the values they stand for, by the reference dequantization of
 * model/io/gguf_quants.c (which tests/test_gguf.c checks bit for bit against the gguf package). */
#include <stddef.h>
#include <stdint.h>

#include "core/rng.h"
#include "kernels/dtype.h"

/* Bytes of a [rows, cols] weight of GGUF block type t (cols a multiple of its block). */
size_t tq_bytes(an_dtype t, int64_t rows, int64_t cols);
/* Fills dst (tq_bytes) with random blocks; wide (rows * cols floats, or NULL) gets their values and
 * mag (or NULL) the magnitudes of the parts the kernels sum for each (Q4_1: |d| q + |m|; Q4_K:
 * |d| sc q + |dmin| mn; the others |value|), on which float32 rounding bounds are taken. */
void tq_random(an_dtype t, int64_t rows, int64_t cols, an_rng *r, uint8_t *dst, float *wide, float *mag);
/* The bound on |sum_i w_i x_i - the kernels' product| from quantizing x to 8 bits per block (32, or
 * 256 for the k-quants) with d = max|x| / 127 of the block (tests/test_quant_kernels.c derives it):
 * sum over blocks of d (1/2 + 300u) sum |w_i|, plus float32 rounding (nb + 19) u sum mag_i (|x_i| + d),
 * for one row w (wide values, mag as above) of n = cols values against x. */
double tq_act_bound(an_dtype t, const float *wide, const float *mag, const float *x, int n);

#endif
