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
/* Fills dst (tq_bytes) with random blocks; wide (rows * cols floats, or NULL) gets their values. */
void tq_random(an_dtype t, int64_t rows, int64_t cols, an_rng *r, uint8_t *dst, float *wide);

#endif
