#ifndef AN_MODEL_RECOMPUTE_H
#define AN_MODEL_RECOMPUTE_H
/* Internal to model/: gradient checkpointing per layer (an_model_set_recompute, docs/models.md).
 *
 * A plan made with m->recompute keeps every layer's input (p->layers[l].res_in) and one shared set
 * of the other activations. Forward runs the blocks as usual, each overwriting the shared set;
 * backward calls an_block_forward(m, l, NULL, ...) for layer l just before that layer's backward,
 * which redoes the same op calls on the same input -- so the same bits -- with the LoRA dropout
 * masks regenerated from the same seed and counters (the seed of a training forward stays in
 * an_lora.mask_seed until the next one). */
#include "model/model.h"

/* One block: p->layers[l].res_in -> out (the next block's res_in, or res_out after the last).
 * out == NULL: the recomputation in backward; everything but the block's output is refilled. */
void an_block_forward(an_model *m, int l, float *out, int B, int T, int train);

#endif
