#ifndef AN_QUANT_X8_H
#define AN_QUANT_X8_H
/* The interleaved layout of Q8_0, Q4_0 and Q4_1 weights (AN_Q8_0_X8 .. AN_Q4_1_X8, kernels/dtype.h):
 * a weight of rows (a multiple of 8) x nb blocks is rows / 8 groups, each nb group blocks of 8 times
 * the ggml block's bytes (so the weight takes the bytes it took in ggml's layout). A group block holds
 * its eight rows' scales, then their quants interleaved so that one vector lane is one row
 * (kernels/cpu_quant_x8.c draws it). GGUF models loaded for the CPU keep their Q8_0 / Q4_0 / Q4_1
 * matrices this way (model/io/gguf_model.c); these two functions go between the layouts, exactly. */
#include <stdint.h>

#include "kernels/dtype.h"

/* Eight rows of nb ggml blocks of type base (AN_Q8_0, AN_Q4_0 or AN_Q4_1), row after row, into one
 * group's nb group blocks at dst. */
void an_q_x8_repack(an_dtype base, const uint8_t *rows, int nb, uint8_t *dst);
/* Row `row` of an interleaved weight (data: its first group) back into nb ggml blocks at dst. */
void an_q_x8_row_blocks(an_dtype base, const uint8_t *data, int64_t row, int nb, uint8_t *dst);

#endif
