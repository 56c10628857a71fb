#ifndef AN_CONFIG_H
#define AN_CONFIG_H
/* The shape and conventions of a transformer, read from a Hugging Face config.json
 * (or a llama2.c header) and written back as one. */
#include "core/error.h"

typedef enum an_arch {
    AN_ARCH_GPT2 = 1,  /* GPT2LMHeadModel: learned positions, LayerNorm, GELU, fused c_attn, tied head */
    AN_ARCH_LLAMA,     /* LlamaForCausalLM and relatives (Qwen2, Mistral, TinyLlama): RMSNorm, RoPE, SwiGLU */
    AN_ARCH_INTERNLM2, /* InternLM2ForCausalLM: Llama-like with fused wqkv grouped per kv head */
} an_arch;

typedef struct an_model_config {
    an_arch arch;
    char architecture[64]; /* as in config.json "architectures"[0], e.g. "Qwen2ForCausalLM" */
    char model_type[32];   /* "gpt2", "llama", "qwen2", "mistral", "internlm2" */
    int vocab_size;
    int dim;        /* hidden_size / n_embd */
    int n_layers;
    int n_heads;
    int n_kv_heads; /* == n_heads without grouped-query attention */
    int head_dim;
    int ffn_dim;    /* intermediate_size / n_inner (4 * dim when null) */
    int max_seq;    /* max_position_embeddings / n_positions */
    float norm_eps;
    float rope_theta;
    int rope_interleaved; /* 1 for llama2.c checkpoints, 0 for Hugging Face rotate-half */
    int tie_embeddings;
    int qkv_bias;  /* Qwen2, GPT-2 */
    int proj_bias; /* bias on the attention output and MLP linears (GPT-2) */
    int bos_id, eos_id, pad_id; /* -1 when absent */
} an_model_config;

/* Parses and validates config.json: an unknown architecture, a missing field or an absurd value
 * (negative sizes, heads that do not divide the dimension, ...) is an error naming the file and field. */
int an_config_load(an_model_config *c, const char *config_json_path, an_error *err);
int an_config_validate(const an_model_config *c, const char *source, an_error *err);
/* Writes a config.json that Hugging Face transformers loads for this architecture. */
int an_config_save(const an_model_config *c, const char *config_json_path, an_error *err);

#endif
