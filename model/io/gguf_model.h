#ifndef AN_GGUF_MODEL_H
#define AN_GGUF_MODEL_H
/* A GGUF file (model/io/gguf.h) as an an_model: the config from the "<arch>.*" keys and the weights
 * from llama.cpp's tensor names. general.architecture "llama" (Llama, SmolLM2, TinyLlama, Mistral-style
 * files), "qwen2" (q/k/v biases, rows not permuted) and "gpt2" (position_embd, fused attn_qkv, every bias,
 * output.weight the converter's copy of token_embd); docs/formats.md has the keys and tensors.
 *
 * Linear and embedding weights of types Q8_0, Q4_0, Q4_1, Q4_K and Q6_K stay in their blocks (the
 * default of an_model_load: an_gguf_model_keep_quantized), frozen, run by the CPU's fused kernels
 * (kernels/cpu_quant.h) or CUDA's (kernels/cuda/weights.cu), and on the CPU float32 ones of whole 32-row panels are kept frozen in the CPU's panel
 * layout (AN_F32_X32, kernels/f32x32.h); everything else, and every weight when the file is loaded dequantized
 * (AN_GGUF_DEQUANTIZE: full fine-tuning, merging, NF4), is float32. llama.cpp's converter permutes the rows of attn_q / attn_k so that ggml's rope
 * pairs dimensions (2i, 2i+1); the loader undoes it, so the model is an ordinary Hugging Face-layout
 * Llama with rotate-half RoPE (rope_interleaved 0): it saves, takes LoRA adapters and quantizes to NF4
 * exactly like one loaded from safetensors, and its logits match transformers' GGUF loader, which
 * undoes the same permutation. */
#include "model/io/config.h"
#include "model/io/gguf.h"
#include "model/model.h"

/* Fills c from g's metadata (and token_embd's shape for the vocabulary). Errors name the file: an
 * architecture other than llama / qwen2 / gpt2, a missing or absurd key, partial RoPE, RoPE scaling, experts. */
int an_gguf_model_config(const an_gguf *g, an_model_config *c, an_error *err);

/* Before the parameters are allocated: every 2-D parameter whose tensor is of a type the backend runs
 * as it is kept (kernels/dtype.h) becomes that dtype, its blocks (or, on the CPU, a float32 matrix's
 * panels) copied into m->ggml_mem (q/k rows un-permuted a row of blocks at a time; in the backend's
 * memory: on a device backend they are built on the host, then uploaded) and frozen; read_weights then
 * skips it. The CPU's interleaved layouts are made only for the CPU.
 * Values that are NaN or infinite are an error naming the tensor, as for float tensors. */
int an_gguf_model_keep_quantized(an_model *m, const an_gguf *g, an_error *err);

/* Reads every parameter of m (built from an_gguf_model_config's config, parameters allocated) from g.
 * A missing tensor, a wrong shape, a type that cannot be dequantized, a NaN or infinity, or a tensor
 * that is not part of the model is an error naming the file and tensor. */
int an_gguf_model_read_weights(an_model *m, const an_gguf *g, an_error *err);

#endif
