#ifndef AN_LORA_H
#define AN_LORA_H
/* LoRA adapters as PEFT defines them, on any linear layer of a model (docs/lora.md).
 *
 *   y = W x + b + scaling * B A dropout(x),   scaling = alpha / r  (alpha / sqrt(r) with rsLoRA)
 *
 * A [r, in] starts uniform in +-1/sqrt(in) (PEFT's kaiming_uniform_(a = sqrt(5))), B [out, r] at zero,
 * so a fresh adapter leaves the model unchanged. Dropout is inverted dropout on the LoRA input only,
 * in training forwards only; its mask is a function of (seed, element index) (an_ops.dropout), so
 * backward regenerates it instead of storing it.
 *
 * An adapter is an object of its own that points at the base model's weights (an_lora_module.base);
 * the base does not change when one is opened, so one base can back several adapters at once, each
 * in its own inference state (infer/infer.h). Training attaches one to the model (an_model.lora).
 *
 * Life cycle for training:
 *   an_lora_attach(m, &cfg, err)      new adapter on the modules cfg names (or an_lora_load)
 *   an_model_plan(m, B, T, err)       plans the LoRA activations too (attach or load first)
 *   an_model_forward / an_model_backward   run base + adapters; gradients go to the adapters only
 *   an_lora_save(m, dir, err)         a PEFT adapter folder PEFT loads as it is
 *   an_lora_merge(m, err)             W += scaling * B A, then the adapter is dropped
 * Attaching freezes the whole base model (no base gradients, no base optimizer state); the adapters'
 * A and B are the only trainable tensors. train/lora_step.h trains them.
 * For serving: an_lora_open(m, dir, err) reads an adapter without attaching it (no gradients, the
 * base untouched); an_infer_create takes it; an_lora_free releases it.
 *
 * Targets follow PEFT's rule: a target_modules entry matches a module whose full name equals it or
 * ends with "." + entry ("q_proj" matches "model.layers.0.self_attn.q_proj"); "all-linear" means every
 * linear layer but the output head. Module names are the Hugging Face ones without ".weight":
 *   GPT-2      transformer.h.N.attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj (Conv1D), lm_head
 *   Llama      model.layers.N.self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj, lm_head
 *   InternLM2  model.layers.N.attention.{wqkv,wo}, feed_forward.{w1,w2,w3}, output
 * The head is a target only when named (PEFT's "all-linear" leaves it out too). */
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "model/model.h"
#include "model/nf4_weights.h"

#define AN_LORA_MAX_TARGETS 32

typedef struct an_lora_config {
    int r;
    float alpha;
    float dropout;      /* probability in [0, 1) */
    int use_rslora;     /* scaling alpha / sqrt(r) instead of alpha / r */
    int n_targets;
    char targets[AN_LORA_MAX_TARGETS][64]; /* module names or suffixes, or "all-linear" */
    uint64_t seed;      /* A's initialisation and the dropout masks */
} an_lora_config;

/* The defaults PEFT's LoraConfig has (r 8, alpha 8, dropout 0), with no targets. */
an_lora_config an_lora_config_default(void);
/* Appends a target; -1 when the list is full or the name too long. */
int an_lora_config_add_target(an_lora_config *c, const char *name, an_error *err);

/* One adapted linear layer. */
typedef struct an_lora_module {
    char name[96];      /* module path, e.g. "model.layers.0.self_attn.q_proj" */
    an_param *base;     /* the frozen base weight [out, in] */
    int in, out;
    /* Held as an_params named "<name>.lora_A.weight" / "<name>.lora_B.weight" (PEFT's keys without
     * the "base_model.model." prefix):
     * A [r, in]; B is kept transposed, bt [r, out] (transposed = 1: PEFT stores lora_B.weight
     * [out, r]), so out += u @ bt is an accumulating matmul and no [N, out] scratch is needed. */
    an_param a, bt;     /* their grad is NULL until the adapter is attached for training */
} an_lora_module;

typedef struct an_lora {
    an_lora_config cfg;
    float scaling;
    an_lora_module *mods;
    int n_mods;
    float *mem;          /* one backend allocation for every A and B */
    size_t n_floats;
    float *grad_mem;     /* their gradients, laid out like mem; NULL until attached (an_lora_adopt) */
    const an_ops *mem_owner; /* the backend that allocated mem and grad_mem */
    char base_model[1024]; /* base_model_name_or_path for adapter_config.json: the model type after
                            * attach (set it to the base model's path), the file's value after load */
    /* Dropout: each training forward draws masks from seed (cfg.seed, forwards); the backward
     * that follows uses the same. A trainer that resumes restores `forwards`. */
    uint64_t forwards;
    uint64_t mask_seed;  /* of the last training forward */
} an_lora;

/* A new adapter on m's modules that cfg names: A random, B zero; m does not change. A target that
 * matches no linear layer is an error naming it; so are r < 1 and dropout outside [0, 1). */
an_lora *an_lora_create(an_model *m, const an_lora_config *cfg, an_error *err);
/* Makes l (created for m) m's adapter for training: allocates its gradients, freezes the base model
 * and sets m->lora, which then owns l. */
int an_lora_adopt(an_model *m, an_lora *l, an_error *err);
/* an_lora_create + an_lora_adopt: adds a new adapter to m (which must have none). */
int an_lora_attach(an_model *m, const an_lora_config *cfg, an_error *err);
/* Reads a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) for the base m, as an
 * object of its own: m does not change (see an_lora_load for the checks and errors). */
an_lora *an_lora_open(an_model *m, const char *dir, an_error *err);
/* an_lora_open + an_lora_adopt: loads a PEFT adapter folder onto m. The config must
 * be a LoRA without DoRA; its target modules must match m's modules; every lora_A/lora_B tensor must be
 * present with the shape m's module implies (errors name the file and the tensor, e.g. an adapter
 * trained for another base). The adapter's tensors are trainable, as after an_lora_attach. */
int an_lora_load(an_model *m, const char *dir, an_error *err);
/* Writes dir/adapter_config.json and dir/adapter_model.safetensors (float32), PEFT's names and layouts. */
int an_lora_save(const an_model *m, const char *dir, an_error *err);
/* Folds every adapter into its base weight (W += scaling * B A) and removes the adapter; the model then
 * needs a new plan. */
int an_lora_merge(an_model *m, an_error *err);
/* Removes the adapter (its memory too) and leaves the base model as it was. */
void an_lora_detach(an_model *m);
void an_lora_free(an_lora *l);

/* The adapted module whose base weight is w, or NULL. */
an_lora_module *an_lora_find(const an_lora *l, const an_param *w);
size_t an_lora_param_count(const an_lora *l);
size_t an_lora_bytes_params(const an_lora *l);   /* the adapters; their gradients take as much again */
/* Every linear layer of m: its base weight, bias (or NULL) and module name; returns the count (at
 * most cap are filled). The head is the last one (tok_emb when tied). */
typedef struct an_linear_ref {
    an_param *w, *b;
    char name[96];
    int is_head;
} an_linear_ref;
int an_model_linears(an_model *m, an_linear_ref *out, int cap);

/* ---- QLoRA: NF4 base weights ----
 * an_model_quantize_nf4 / an_model_load_nf4 (model/nf4_weights.h) turn every linear weight but the
 * head into NF4 as bitsandbytes does; the layers then run on the NF4 weights (kernels/nf4.h): forward
 * dequantizes a tile at a time, backward computes input gradients only. Quantize before
 * an_model_plan. A quantized model saves in bitsandbytes' 4-bit serialization; merging into it
 * re-quantizes as PEFT does (docs/qlora.md). */
/* 1 when any weight of m is NF4 */
int an_model_is_quantized(const an_model *m);

/* LoRA rank of m's adapter (0 without one). */
int an_lora_rank(const an_model *m);
/* Internal to model/: a new adapter whose A and B are zero (an_lora_create and an_lora_open fill them). */
an_lora *an_lora_new_zeroed(an_model *m, const an_lora_config *cfg, an_error *err);
/* Internal to model/: the dropout seed of the next training forward (advances l->forwards). */
uint64_t an_lora_next_mask_seed(an_lora *l);

#endif
