#ifndef AN_LLAMA2C_H
#define AN_LLAMA2C_H
/* llama2.c checkpoints (.bin): the legacy version-0 layout (a 7 x int32 header, then fp32 tensors) and
 * the version-1 "ak42" fp32 layout. The weights are presented as an an_safetensors view with Hugging
 * Face Llama names (model.embed_tokens.weight, model.layers.N.self_attn.q_proj.weight, ...,
 * lm_head.weight only when the classifier is not shared), all F32, pointing into the mapped file
 * (no copies), so a model loader treats both sources the same. Close it with an_st_close.
 *
 * The q/k rows stay in llama2.c's (Meta's) order, which pairs dimensions (2i, 2i+1) for RoPE, so the
 * config says rope_interleaved = 1; Hugging Face checkpoints permute those rows to rotate-half order. */
#include "model/io/config.h"
#include "model/io/safetensors.h"

/* Fills c (arch LLAMA, rope_interleaved 1, norm_eps 1e-5, rope_theta 10000, head_dim = dim / n_heads,
 * bos 1, eos 2, the llama2.c tokenizer's ids) and st. The file size must match the header exactly. */
int an_llama2c_open(an_model_config *c, an_safetensors *st, const char *path, an_error *err);

/* Reorders the rows of a llama2.c q or k projection ([n_heads * head_dim, cols], row-major) from
 * interleaved RoPE pairs (2i, 2i+1) to Hugging Face rotate-half order (i, i + head_dim/2) within each head,
 * the permutation transformers' Llama conversion applies. Needed to export a llama2.c model as a
 * Hugging Face checkpoint (then rope_interleaved = 0). dst and src must not overlap. */
void an_llama2c_permute_qk(float *dst, const float *src, int n_heads, int head_dim, int cols);

#endif
