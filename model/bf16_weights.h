#ifndef AN_MODEL_BF16_WEIGHTS_H
#define AN_MODEL_BF16_WEIGHTS_H
/* Sizes of the bf16 storage of frozen embedding/head (an_model_store_frozen_bf16 in model/model.h),
 * shared by model/bf16_weights.c and the memory plan (model/qlora_plan.c). */
#include <stddef.h>

/* The bf16 matmuls widen at most this many bytes of weight rows at a time (256 rows of a 4096-wide
 * head: the GEMMs stay large). */
#define AN_BF16_TILE_BYTES (4u << 20)

/* Floats of the tile workspace for weights whose widest row has `widest` columns. */
static inline size_t an_bf16_work_floats(size_t widest) {
    size_t rows = AN_BF16_TILE_BYTES / sizeof(float) / (widest ? widest : 1);
    return (rows < 1 ? 1 : rows) * widest;
}

#endif
