#ifndef AN_GGUF_WRITE_H
#define AN_GGUF_WRITE_H
/* Writing an an_model as a GGUF v3 file the way llama.cpp's convert_hf_to_gguf.py writes a Llama, so
 * llama.cpp (and autoneg's own reader, model/io/gguf_model.h) loads it:
 *   general.architecture "llama", general.type "model", general.name, the llama.* hyperparameters,
 *   general.file_type, general.quantization_version 2, general.alignment 32, then the tokenizer keys
 *   (tokenizer.ggml.*, tokenizer.chat_template) copied from a source GGUF when one is given;
 *   tensors under llama.cpp's names (token_embd, blk.N.attn_norm / attn_q / attn_k / attn_v /
 *   attn_output / ffn_norm / ffn_gate / ffn_up / ffn_down, output_norm, output; output is left out when
 *   the head is tied to the embeddings), with the rows of attn_q / attn_k permuted for ggml's rope as
 *   the converter permutes them (gguf_model.c undoes it on reading).
 * Only the llama family (Llama, Mistral, SmolLM2, TinyLlama shapes: separate q/k/v, no biases) for now;
 * GPT-2, Qwen2 (biases), InternLM2 (fused wqkv) are refused with an error naming the family. */
#include "model/io/gguf_quants.h"
#include "model/model.h"

typedef struct an_gguf_write_opts {
    uint32_t type;          /* AN_GGML_F32, F16, Q8_0 or Q4_0: the type of the 2-D tensors. 1-D tensors
                             * (the norms) stay F32 as llama.cpp keeps them; a matrix whose rows are not
                             * a whole number of blocks falls back to F16, as the converter does */
    const char *name;       /* general.name; NULL: "autoneg export" */
    const char *tokenizer;  /* a GGUF file whose tokenizer.ggml.* keys and tokenizer.chat_template are
                             * copied (the model's source file); NULL: no tokenizer keys */
} an_gguf_write_opts;

/* "q8_0" -> AN_GGML_Q8_0 (f32, f16, q8_0, q4_0, any case); -1 for anything else. */
int an_gguf_write_type(const char *name);

/* Streams the file to path.tmp, fsyncs it and renames it into place (an existing file is replaced only
 * by a complete one). Errors: "path: what is wrong" (a model family that cannot be written, a folder
 * that does not exist, a tokenizer file that cannot be read). */
int an_gguf_write_model(const an_model *m, const char *path, const an_gguf_write_opts *o, an_error *err);

/* Writes the adapter l (opened for m, a llama-family model) as llama.cpp's LoRA adapter GGUF, as its
 * convert_lora_to_gguf.py does: general.architecture llama, general.type "adapter", adapter.type "lora",
 * adapter.lora.alpha (llama.cpp scales by alpha / r; an rsLoRA adapter's alpha / sqrt(r) is written as
 * alpha * sqrt(r)), and for each adapted weight "<base tensor>.lora_a" (PEFT's lora_A [r, in]) and
 * "<base tensor>.lora_b" ([out, r], rows of attn_q / attn_k permuted as the base's are). o->type: f32 or
 * f16; o->tokenizer is not used. A head tied to the embeddings has no tensor to adapt in llama.cpp:
 * refused, naming the module. */
struct an_lora;
int an_gguf_write_lora(const an_model *m, const struct an_lora *l, const char *path, const an_gguf_write_opts *o,
                       an_error *err);

/* Refuses, naming the family, a model this writer cannot express as a llama GGUF. */
int an_gguf_check_llama_family(const an_model *m, const char *path, an_error *err);
/* Hugging Face rotate-half rows -> ggml's adjacent pairs: row (h, j * half + i) goes to row (h, 2i + j)
 * (convert_hf_to_gguf.py's LlamaModel.permute; the inverse of an_llama2c_permute_qk). */
void an_gguf_permute_rope_rows(float *dst, const float *src, int n_heads, int head_dim, int64_t cols);

#endif
