#ifndef AN_DYNAMIC_MAP_H
#define AN_DYNAMIC_MAP_H
/* bitsandbytes' signed 8-bit "dynamic" quantization map and the blockwise 8-bit quantization that
 * NF4 double quantization applies to the absmax values (bitsandbytes quantize_blockwise on CPU). */
#include <stdint.h>

/* create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), bit for bit: for i = 0..6,
 * the 2^i interval means of linspace(0.1, 1, 2^i + 1) (float32, computed as torch does, with fused
 * multiply-adds) times 10^(i-6), with both signs; then 0 and 1; sorted ascending. */
void an_dynamic_map_signed8(float code[256]);

/* Blockwise 8-bit quantization of x[n] with code (ascending, 256 values in [-1, 1]), as
 * bitsandbytes 0.50's CPU kernel does it: per block absmax = max |x|; x * (1 / absmax); rounded to
 * the nearest of 65536 even steps over [-1, 1]; each step maps to the code index whose midpoints
 * enclose it (a step exactly on a midpoint takes the lower code). This is not always the nearest
 * code: a value within 1.5e-5 of a midpoint may land on the other side. An all-zero block gets
 * absmax 0 and index 0. q gets n codes, absmax ceil(n / blocksize) floats. Returns -1 only when
 * the 64 KB step table cannot be allocated. */
int an_quantize_blockwise8(const float *x, int64_t n, int blocksize, const float code[256], uint8_t *q,
                           float *absmax);
/* out[i] = code[q[i]] * absmax[i / blocksize] */
void an_dequantize_blockwise8(const uint8_t *q, const float *absmax, int64_t n, int blocksize,
                              const float code[256], float *out);

#endif
