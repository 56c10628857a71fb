#ifndef AN_MODEL_QLORA_PLAN_H
#define AN_MODEL_QLORA_PLAN_H
/* The memory a training step needs, computed from a model config alone (nothing of the model's
 * size is allocated): base weights, adapters, their gradients, AdamW state, activations with and
 * without per-layer recomputation, and the workspace of the ops (the typed linear ops of an NF4 base
 * or a bf16 head, attention) (docs/qlora.md, `autoneg bench memory`). The workspace is sized for the
 * thread count of the call.
 *
 * Both activation figures are exactly what an_model_plan allocates (the same buffers in the same
 * 64-byte rounding; tests/test_qlora_plan.c and tests/test_recompute.c check them against real
 * plans): without recomputation, and with it (an_model_set_recompute: every layer's input, one
 * layer's activations and adapter u's refilled during backward, and the shared scratch). The ops'
 * workspace, which the plan also carves, is reported separately. */
#include <stddef.h>

#include "core/error.h"
#include "model/io/config.h"

struct an_ops;

typedef enum an_train_method { AN_METHOD_FULL = 0, AN_METHOD_LORA, AN_METHOD_QLORA } an_train_method;

typedef struct an_memory_opts {
    int B, T;
    an_train_method method;
    int r;                /* LoRA rank (lora, qlora) */
    int lora_head;        /* the adapter also on the output head (PEFT "all-linear" leaves it out) */
    int dropout;          /* LoRA dropout > 0 (two [N, largest in] buffers) */
    int other_bytes;      /* bytes per non-quantized parameter: 4 (float32, what autoneg holds) or 2 (bf16) */
    int frozen_bf16;      /* embedding and head stored in bf16 (an_model_store_frozen_bf16; lora/qlora only) */
    int blocksize, double_quant; /* NF4 (qlora) */
    const struct an_ops *ops; /* the backend whose memory is planned: its workspace sizes, and on a device
                               * backend the NF4 weights' device copies (kernels/nf4.h); NULL: the CPU */
} an_memory_opts;

typedef struct an_memory_plan {
    size_t n_linear, n_other;       /* parameters: linear weights (quantized under qlora) and the rest */
    size_t n_adapter;               /* LoRA parameters */
    size_t base_linear, base_other; /* bytes */
    double linear_bytes_per_param;
    size_t adapters, grads, optimizer;
    size_t activations, activations_recompute;
    size_t workspace;               /* the ops' scratch the plan carves: linear_work_bytes (typed weights)
                                     * and attention_work_bytes (kernels/ops.h), in 64-byte pieces */
    size_t n_frozen_bf16;           /* embedding + head parameters held in bf16 (frozen_bf16) */
    size_t total, total_recompute;  /* everything above, without / with recomputation */
    /* base_other counts the embedding/head at 2 bytes under frozen_bf16, the rest at other_bytes */
} an_memory_plan;

an_memory_opts an_memory_opts_default(void); /* qlora, B 1, T 2048, r 64, f32, NF4 64 + double quant, CPU */
int an_memory_plan_compute(const an_model_config *cfg, const an_memory_opts *o, an_memory_plan *out, an_error *err);

#endif
