#ifndef AN_MODEL_NF4_WEIGHTS_H
#define AN_MODEL_NF4_WEIGHTS_H
/* A model whose linear layers are NF4 (QLoRA), docs/qlora.md.
 *
 * Every linear weight but the output head is held as an an_nf4_tensor (kernels/nf4.h, bit-exact with
 * bitsandbytes); the float32 copy is gone: the an_param keeps its name and [out, in] shape, has
 * dtype AN_NF4, data == NULL and packed pointing at the quantized tensor (an_param_nf4), and is frozen
 * (never trainable, no gradient). Embeddings, norms, biases and the head stay float32, as PEFT's
 * prepare_model_for_kbit_training keeps them.
 *
 * Who handles an NF4 weight:
 *   linear_forward / linear_backward_input (kernels/ops.h; model/linear.c in training,
 *                      an_infer_linear in decoding)  fused dequantizing matmul, input gradient only,
 *                      the AVX2 matvec for up to 4 rows; LoRA on top
 *   an_model_save      writes bitsandbytes' serialization (uint8 weight + absmax + quant_map + nested
 *                      stats + packed quant_state JSON) and a quantization_config in config.json
 *   an_model_load      reads it back (an_nf4_from_bnb) without re-quantizing
 *   an_model_export    dequantizes (float32 values of the NF4 weight)
 *   an_lora_merge      as PEFT: dequantize, add scaling * B A, quantize again
 *   an_model_alloc_grads  refuses a trainable NF4 weight (full fine-tuning needs float weights)
 * NF4 weights run through the typed linear ops (kernels/ops.h) of a backend that supports them (the
 * CPU's, reading the tensor; CUDA's, reading the tensor's device copy, made by an_nf4_weights_finish;
 * other backends are refused), with the workspace of the plan or of the inference state: the model
 * itself holds no scratch. */
#include <stddef.h>

#include "core/error.h"
#include "kernels/nf4.h"
#include "model/model.h"
#include "model/io/safetensors.h"

/* The NF4 tensors of a model (an_model.nf4). */
typedef struct an_nf4_weights {
    an_nf4_tensor *tensors; /* n, in the order of m->params; an_param.packed points in here */
    int n, cap;
    int blocksize, double_quant; /* how this model was quantized (or what the file said) */
} an_nf4_weights;

/* Quantizes every linear weight of m but the head to NF4 (blocksize 64 and double_quant 1 are
 * QLoRA's), frees their float32 copies and freezes them. Bit-exact with bitsandbytes' quantize_4bit
 * (torch's mean computed as by one torch thread; see docs/nf4.md). A model already quantized is
 * refused. A plan made before is made again (its workspace grows for the NF4 kernels).
 * A weight that cannot be quantized (NaN or infinite values) is an error naming it; the weights
 * before it are NF4 then, the rest still float32, and the model stays usable. */
int an_model_quantize_nf4(an_model *m, int blocksize, int double_quant, an_error *err);
/* Loads a model as an_model_load does, quantizing each linear weight (but the head) as it is read,
 * so the float32 copy of the whole model never exists. A folder that already holds NF4 weights loads
 * them as they are. */
an_model *an_model_load_nf4(const char *path, const an_ops *ops, int blocksize, int double_quant, an_error *err);

/* Counts: NF4 parameters and the bytes they take (codes + scales + maps). */
size_t an_model_nf4_param_count(const an_model *m);
size_t an_model_nf4_bytes(const an_model *m);

/* ---- internal to model/ ---- */
void an_nf4_weights_free(an_nf4_weights *w, const an_ops *o); /* o: the backend of the device copies */
/* A new tensor slot for p (grows the store); p becomes AN_NF4 with packed pointing at it. */
an_nf4_tensor *an_nf4_weights_slot(an_model *m, an_param *p, an_error *err);
/* Moves the float32 parameters that are not NF4 into a new, smaller allocation (the quantized ones
 * get data NULL), and gives each NF4 tensor its copy in a device backend's memory (an_nf4_tensor.device). */
int an_nf4_weights_finish(an_model *m, an_error *err);
/* Reading: for every linear of m but the head, the bitsandbytes arrays in st (when present) or, with
 * quant_blocksize > 0, the float tensor quantized now. Makes p NF4; marks used[] tensors of st. */
int an_nf4_weights_read(an_model *m, const an_safetensors *st, const char *file, int quant_blocksize,
                        int double_quant, char *used, an_error *err);
/* Writing: adds p's bitsandbytes arrays to w; json (kept until an_st_write) receives the packed
 * quant_state, at most json_cap bytes. */
int an_nf4_weights_add(an_st_writer *w, const an_param *p, char *json, size_t json_cap, an_error *err);
/* Adds bitsandbytes' quantization_config to the config.json at path (transformers' keys). */
int an_nf4_config_patch(const an_model *m, const char *path, an_error *err);
/* W += scaling * Bt^T A (host-side dequantize, add, quantize again). a [r, in], bt [r, out]. */
int an_nf4_merge_delta(an_model *m, an_param *w, const float *a, const float *bt, int r, float scaling,
                       an_error *err);

#endif
