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
    /* Which linears carry a bias, per family (as an_config_load sets them):
     *   GPT-2:            qkv_bias = o_bias = mlp_bias = proj_bias = 1 (every linear has one)
     *   Llama / Mistral:  qkv_bias = o_bias = attention_bias (HF LlamaAttention puts it on q, k, v AND o),
     *                     mlp_bias = mlp_bias (gate/up/down)
     *   Qwen2:            qkv_bias = 1, o_bias = 0, mlp_bias = 0
     *   InternLM2:        qkv_bias = o_bias = "bias" (wqkv and wo), mlp_bias = 0
     * o_bias and mlp_bias are the precise flags; proj_bias is their conjunction, kept for GPT-2 style code
     * (an_config_validate rejects a proj_bias that disagrees with them). */
    int qkv_bias;  /* bias on q, k, v (fused c_attn / wqkv included) */
    int proj_bias; /* o_bias && mlp_bias */
    int bos_id, eos_id, pad_id; /* -1 when absent; a list-valued eos_token_id gives its first entry */
    /* Added after the first version of this header: */
    int o_bias;    /* bias on the attention output projection (o_proj, c_proj of attn, wo) */
    int mlp_bias;  /* bias on the MLP linears (gate/up/down, c_fc/c_proj) */
    int sliding_window; /* Mistral sliding-window span (only matters past it); 0 = none. Qwen2 windows are refused */
    char torch_dtype[16]; /* "float32", "bfloat16", "float16" as in config.json; "" when absent */
} an_model_config;

/* Parses and validates config.json: an unknown architecture, a missing field or an absurd value
 * (negative sizes, heads that do not divide the dimension, ...) is an error naming the file and field. */
int an_config_load(an_model_config *c, const char *config_json_path, an_error *err);
int an_config_validate(const an_model_config *c, const char *source, an_error *err);
/* Writes a config.json that Hugging Face transformers loads for this architecture
 * (torch_dtype "float32" unless c->torch_dtype says otherwise). */
int an_config_save(const an_model_config *c, const char *config_json_path, an_error *err);

#endif
