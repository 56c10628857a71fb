/* The host emulation's cuda_bf16.h (tools/cuda_emu/README.md): the bf16 type as the tensor-core
 * fragments (mma.h) read it; the kernels themselves handle bf16 as its 16 bits. */
#ifndef AN_CUDA_EMU_BF16_H
#define AN_CUDA_EMU_BF16_H
#include <stdint.h>

struct __nv_bfloat16 {
    uint16_t x;
};
#endif
