#ifndef AN_LINEAR_H
#define AN_LINEAR_H
/* Internal to model/: a linear layer with its LoRA adapter (if any) in the training forward and
 * backward (model/forward.c, model/backward.c), with the plan's scratch. Decoding has its own form,
 * an_infer_linear (infer/infer.h), with the inference state's.
 *
 * train: a training forward (dropout on the LoRA input when the adapter has any).
 * counter: where this call's rows start in the dropout counter space (0 for whole-batch layers;
 * the LM head, which runs in row chunks, passes the first row times its input width), so forward
 * and backward of a chunk draw the same mask. */
#include <stdint.h>

#include "model/model.h"

void an_linear_forward(an_model *m, const an_param *w, const an_param *b, float *out, const float *inp, int N,
                   int train, uint64_t counter);
/* out = gelu(pre), pre = the layer's output as an_linear_forward's (GPT-2's MLP): one op where the weight
 * is float32 without an adapter (matmul_gelu_forward: a GPU may put the GELU in the GEMM's epilogue). */
void an_linear_gelu_forward(an_model *m, const an_param *w, const an_param *b, float *out, float *pre, const float *inp,
                            int N, int train);
/* The backward of a layer whose input is h = gelu(pre) (GPT-2's MLP down-projection): dpre = the input
 * gradient through the GELU (overwrites; dh is scratch for it where the op is not one), the weight's and
 * adapter's gradients as an_linear_backward's. */
void an_linear_gelu_backward(an_model *m, const an_param *w, const an_param *b, float *dpre, float *dh, const float *dout,
                             const float *h, const float *pre, int N);
/* dinp += dout @ W (+ the adapter's path); the base weight and bias get gradients only when they have
 * grad buffers; the adapter's A and B always do. Must follow the an_linear_forward of the same rows. */
void an_linear_backward(an_model *m, const an_param *w, const an_param *b, float *dinp, const float *dout,
                   const float *inp, int N, uint64_t counter);

#endif
