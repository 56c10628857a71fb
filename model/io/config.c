/* Hugging Face config.json <-> an_model_config for the families autoneg runs.
 * Anything we would silently get wrong (an unknown architecture, RoPE scaling we do not implement,
 * another activation) is an error naming the file and the field. */
#include "model/io/config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"

typedef struct family {
    const char *architecture, *model_type;
    an_arch arch;
} family;

static const family families[] = {
    {"GPT2LMHeadModel", "gpt2", AN_ARCH_GPT2},
    {"LlamaForCausalLM", "llama", AN_ARCH_LLAMA},
    {"MistralForCausalLM", "mistral", AN_ARCH_LLAMA},
    {"Qwen2ForCausalLM", "qwen2", AN_ARCH_LLAMA},
    {"InternLM2ForCausalLM", "internlm2", AN_ARCH_INTERNLM2},
};
#define N_FAMILIES (int)(sizeof families / sizeof families[0])

/* Limits past which a value is certainly a mistake (and would make size arithmetic overflow). */
#define MAX_VOCAB 10000000
#define MAX_DIM (1 << 17)
#define MAX_LAYERS 1024
#define MAX_HEAD_DIM 1024
#define MAX_FFN (1 << 20)
#define MAX_SEQ (1 << 24)

static int is_gpt2(const an_model_config *c) { return c->arch == AN_ARCH_GPT2; }

/* ---- reading fields ---- */

typedef struct reader {
    const cJSON *root;
    const char *path;
    an_error *err;
} reader;

static const cJSON *field(const reader *r, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(r->root, key);
    return cJSON_IsNull(j) ? NULL : j;
}

/* An integer field; absent or null gives def, or an error when required. */
static int get_int(const reader *r, const char *key, int required, int def, int *out) {
    const cJSON *j = field(r, key);
    if (!j) {
        if (required) return an_fail(r->err, "%s: missing field \"%s\"", r->path, key);
        *out = def;
        return 0;
    }
    double d = j->valuedouble;
    if (!cJSON_IsNumber(j) || d != floor(d) || d < -2147483648.0 || d > 2147483647.0)
        return an_fail(r->err, "%s: field \"%s\" is not an integer", r->path, key);
    *out = (int)d;
    return 0;
}

static int get_float(const reader *r, const char *key, int required, float def, float *out) {
    const cJSON *j = field(r, key);
    if (!j) {
        if (required) return an_fail(r->err, "%s: missing field \"%s\"", r->path, key);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(j)) return an_fail(r->err, "%s: field \"%s\" is not a number", r->path, key);
    *out = (float)j->valuedouble;
    return 0;
}

static int get_bool(const reader *r, const char *key, int def, int *out) {
    const cJSON *j = field(r, key);
    if (!j) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(j)) return an_fail(r->err, "%s: field \"%s\" is not true or false", r->path, key);
    *out = cJSON_IsTrue(j);
    return 0;
}

static const char *get_string(const reader *r, const char *key) {
    const cJSON *j = field(r, key);
    return cJSON_IsString(j) ? j->valuestring : NULL;
}

/* Token ids: null/absent -> -1; a list (eos_token_id in newer configs) -> its first entry. */
static int get_token_id(const reader *r, const char *key, int *out) {
    const cJSON *j = field(r, key);
    *out = -1;
    if (!j) return 0;
    if (cJSON_IsArray(j)) {
        j = j->child;
        if (!j) return 0;
    }
    double d = j->valuedouble;
    if (!cJSON_IsNumber(j) || d != floor(d) || d > 2147483647.0 || d < -2147483648.0)
        return an_fail(r->err, "%s: field \"%s\" is not a token id", r->path, key);
    *out = d < 0 ? -1 : (int)d; /* some old Llama configs say pad_token_id -1 for "none" */
    return 0;
}

/* RoPE settings come in two spellings: transformers 4.x top-level "rope_theta" + "rope_scaling", and 5.x
 * "rope_parameters": {"rope_type", "rope_theta", ...}. Type "default" and "dynamic" are fine (dynamic NTK only
 * changes anything past max_position_embeddings, which we never run); any other type changes the model,
 * so it is refused rather than ignored. */
static int check_rope_type(const reader *r, const char *key, const cJSON *j) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "rope_type");
    if (!cJSON_IsString(t)) t = cJSON_GetObjectItemCaseSensitive(j, "type");
    const char *type = cJSON_IsString(t) ? t->valuestring : "default";
    if (strcmp(type, "default") == 0 || strcmp(type, "dynamic") == 0) return 0;
    return an_fail(r->err, "%s: field \"%s\": rope type %s is not supported yet (only default and dynamic)",
                   r->path, key, AN_QUOTE(type));
}

static int read_rope(an_model_config *c, const reader *r) {
    if (get_float(r, "rope_theta", 0, 10000.0f, &c->rope_theta)) return -1;
    const cJSON *j = field(r, "rope_scaling");
    if (j) {
        if (!cJSON_IsObject(j)) return an_fail(r->err, "%s: field \"rope_scaling\" is not an object or null", r->path);
        if (check_rope_type(r, "rope_scaling", j)) return -1;
    }
    j = field(r, "rope_parameters");
    if (!j) return 0;
    if (!cJSON_IsObject(j)) return an_fail(r->err, "%s: field \"rope_parameters\" is not an object or null", r->path);
    const cJSON *theta = cJSON_GetObjectItemCaseSensitive(j, "rope_theta");
    if (!theta && !cJSON_GetObjectItemCaseSensitive(j, "rope_type"))
        return an_fail(r->err, "%s: field \"rope_parameters\": per-layer-type RoPE settings are not supported", r->path);
    if (theta) {
        if (!cJSON_IsNumber(theta))
            return an_fail(r->err, "%s: field \"rope_parameters.rope_theta\" is not a number", r->path);
        c->rope_theta = (float)theta->valuedouble;
    }
    return check_rope_type(r, "rope_parameters", j);
}

/* transformers 5.x lists each layer's attention kind; only full causal attention is implemented. */
static int check_layer_types(const reader *r) {
    const cJSON *j = field(r, "layer_types");
    if (!j) return 0;
    if (!cJSON_IsArray(j)) return an_fail(r->err, "%s: field \"layer_types\" is not a list", r->path);
    int i = 0;
    for (const cJSON *e = j->child; e; e = e->next, i++)
        if (!cJSON_IsString(e) || strcmp(e->valuestring, "full_attention") != 0)
            return an_fail(r->err, "%s: field \"layer_types\"[%d]: only \"full_attention\" layers are supported", r->path, i);
    return 0;
}

static int load_gpt2(an_model_config *c, const reader *r) {
    if (get_int(r, "vocab_size", 1, 0, &c->vocab_size) || get_int(r, "n_embd", 1, 0, &c->dim) ||
        get_int(r, "n_layer", 1, 0, &c->n_layers) || get_int(r, "n_head", 1, 0, &c->n_heads) ||
        get_int(r, "n_positions", 1, 0, &c->max_seq) || get_int(r, "n_inner", 0, 0, &c->ffn_dim) ||
        get_float(r, "layer_norm_epsilon", 0, 1e-5f, &c->norm_eps))
        return -1;
    if (!field(r, "n_inner")) c->ffn_dim = 4 * c->dim; /* n_inner null means 4 * n_embd */
    const char *act = get_string(r, "activation_function");
    if (act && strcmp(act, "gelu_new") != 0 && strcmp(act, "gelu_pytorch_tanh") != 0)
        return an_fail(r->err, "%s: field \"activation_function\": %s is not supported (gelu_new only)", r->path, AN_QUOTE(act));
    int scale = 1, by_layer = 0;
    if (get_bool(r, "scale_attn_weights", 1, &scale) || get_bool(r, "scale_attn_by_inverse_layer_idx", 0, &by_layer))
        return -1;
    if (!scale || by_layer)
        return an_fail(r->err, "%s: field \"%s\" is not supported", r->path,
                       !scale ? "scale_attn_weights" : "scale_attn_by_inverse_layer_idx");
    c->n_kv_heads = c->n_heads;
    c->head_dim = c->n_heads > 0 ? c->dim / c->n_heads : 0;
    c->tie_embeddings = 1;
    c->qkv_bias = c->o_bias = c->mlp_bias = 1;
    return 0;
}

static int load_llama_like(an_model_config *c, const reader *r, const char *architecture) {
    int is_qwen2 = strcmp(architecture, "Qwen2ForCausalLM") == 0;
    int is_mistral = strcmp(architecture, "MistralForCausalLM") == 0;
    int is_internlm2 = c->arch == AN_ARCH_INTERNLM2;
    if (get_int(r, "vocab_size", 1, 0, &c->vocab_size) || get_int(r, "hidden_size", 1, 0, &c->dim) ||
        get_int(r, "intermediate_size", 1, 0, &c->ffn_dim) || get_int(r, "num_hidden_layers", 1, 0, &c->n_layers) ||
        get_int(r, "num_attention_heads", 1, 0, &c->n_heads) ||
        get_int(r, "max_position_embeddings", 1, 0, &c->max_seq) ||
        get_int(r, "num_key_value_heads", 0, c->n_heads, &c->n_kv_heads) ||
        get_float(r, "rms_norm_eps", 0, 1e-6f, &c->norm_eps) || read_rope(c, r) ||
        get_bool(r, "tie_word_embeddings", 0, &c->tie_embeddings) || check_layer_types(r))
        return -1;
    if (c->n_heads <= 0) return an_fail(r->err, "%s: field \"num_attention_heads\" (%d) must be positive", r->path, c->n_heads);
    if (!field(r, "head_dim") && c->dim % c->n_heads != 0)
        return an_fail(r->err, "%s: field \"num_attention_heads\" (%d) does not divide \"hidden_size\" (%d)", r->path,
                       c->n_heads, c->dim);
    if (get_int(r, "head_dim", 0, c->dim / c->n_heads, &c->head_dim)) return -1;
    if ((is_qwen2 || is_internlm2) && c->head_dim * c->n_heads != c->dim)
        return an_fail(r->err, "%s: field \"head_dim\" (%d) must be hidden_size / num_attention_heads for %s", r->path,
                       c->head_dim, architecture);
    const char *act = get_string(r, "hidden_act");
    if (act && strcmp(act, "silu") != 0)
        return an_fail(r->err, "%s: field \"hidden_act\": %s is not supported (silu only)", r->path, AN_QUOTE(act));
    if (is_qwen2) {
        c->qkv_bias = 1; /* Qwen2 always has q, k, v biases and none elsewhere */
        /* Qwen2's window applies only to layers >= max_window_layers; no released model turns it on */
        int sw = 0;
        if (get_bool(r, "use_sliding_window", 0, &sw)) return -1;
        if (sw) return an_fail(r->err, "%s: field \"use_sliding_window\": sliding-window attention is not supported yet", r->path);
    } else if (is_internlm2) {
        if (get_bool(r, "bias", 0, &c->qkv_bias)) return -1;
        c->o_bias = c->qkv_bias; /* "bias" applies to wqkv and wo; the MLP never has one */
    } else {
        /* Llama semantics: attention_bias puts a bias on q, k, v AND o_proj (not only q, k, v). */
        if (get_bool(r, "attention_bias", 0, &c->qkv_bias) || get_bool(r, "mlp_bias", 0, &c->mlp_bias)) return -1;
        c->o_bias = c->qkv_bias;
        /* Mistral: absent means MistralConfig's default 4096, null means no window */
        int absent = !cJSON_GetObjectItemCaseSensitive(r->root, "sliding_window");
        if (is_mistral && get_int(r, "sliding_window", 0, absent ? 4096 : 0, &c->sliding_window)) return -1;
    }
    return 0;
}

int an_config_load(an_model_config *c, const char *path, an_error *err) {
    memset(c, 0, sizeof *c);
    char *text = an_read_file(path, NULL, err);
    if (!text) return -1;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root) return an_fail(err, "%s: not valid JSON", path);
    reader r = {root, path, err};
    int rc = -1;
    if (!cJSON_IsObject(root)) {
        an_fail(err, "%s: not a JSON object", path);
        goto done;
    }
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    const char *model_type = get_string(&r, "model_type");
    const char *architecture = NULL;
    if (cJSON_IsArray(archs) && cJSON_IsString(archs->child)) {
        architecture = archs->child->valuestring;
    } else if (field(&r, "architectures")) {
        an_fail(err, "%s: field \"architectures\" is not a list of names", path);
        goto done;
    }
    const family *f = NULL;
    for (int i = 0; i < N_FAMILIES && !f; i++) {
        if (architecture ? strcmp(architecture, families[i].architecture) == 0
                         : model_type && strcmp(model_type, families[i].model_type) == 0)
            f = &families[i];
    }
    if (!f) {
        if (architecture)
            an_fail(err, "%s: field \"architectures\": %s is not supported (GPT2LMHeadModel, LlamaForCausalLM, "
                         "MistralForCausalLM, Qwen2ForCausalLM, InternLM2ForCausalLM)",
                    path, AN_QUOTE(architecture));
        else
            an_fail(err, "%s: missing field \"architectures\" (and model_type %s is not one we know)", path,
                    model_type ? AN_QUOTE(model_type) : "(none)");
        goto done;
    }
    c->arch = f->arch;
    snprintf(c->architecture, sizeof c->architecture, "%s", f->architecture);
    snprintf(c->model_type, sizeof c->model_type, "%s", model_type ? model_type : f->model_type);
    c->rope_theta = 10000.0f;
    if ((f->arch == AN_ARCH_GPT2 ? load_gpt2(c, &r) : load_llama_like(c, &r, f->architecture)) != 0) goto done;
    c->proj_bias = c->o_bias && c->mlp_bias;
    if (get_token_id(&r, "bos_token_id", &c->bos_id) || get_token_id(&r, "eos_token_id", &c->eos_id) ||
        get_token_id(&r, "pad_token_id", &c->pad_id))
        goto done;
    const char *dt = get_string(&r, "torch_dtype");
    if (!dt) dt = get_string(&r, "dtype"); /* transformers 5.x renamed the field */
    if (dt) snprintf(c->torch_dtype, sizeof c->torch_dtype, "%s", dt);
    rc = an_config_validate(c, path, err);
done:
    cJSON_Delete(root);
    return rc;
}

/* ---- validation ---- */

/* The config.json name of each struct field, per family, so errors name what the user can fix. */
static const char *fname(const an_model_config *c, const char *what) {
    static const char *const names[][3] = {
        {"vocab", "vocab_size", "vocab_size"},
        {"dim", "n_embd", "hidden_size"},
        {"layers", "n_layer", "num_hidden_layers"},
        {"heads", "n_head", "num_attention_heads"},
        {"kv_heads", "n_head", "num_key_value_heads"},
        {"head_dim", "n_embd / n_head", "head_dim"},
        {"ffn", "n_inner", "intermediate_size"},
        {"seq", "n_positions", "max_position_embeddings"},
        {"eps", "layer_norm_epsilon", "rms_norm_eps"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(names[i][0], what) == 0) return names[i][is_gpt2(c) ? 1 : 2];
    return what;
}

static int check_range(const an_model_config *c, const char *src, const char *what, long long v, long long hi,
                       an_error *err) {
    if (v <= 0 || v > hi)
        return an_fail(err, "%s: field \"%s\" (%lld) must be between 1 and %lld", src, fname(c, what), v, hi);
    return 0;
}

int an_config_validate(const an_model_config *c, const char *src, an_error *err) {
    if (c->arch != AN_ARCH_GPT2 && c->arch != AN_ARCH_LLAMA && c->arch != AN_ARCH_INTERNLM2)
        return an_fail(err, "%s: unknown architecture %d", src, (int)c->arch);
    if (check_range(c, src, "vocab", c->vocab_size, MAX_VOCAB, err) || check_range(c, src, "dim", c->dim, MAX_DIM, err) ||
        check_range(c, src, "layers", c->n_layers, MAX_LAYERS, err) ||
        check_range(c, src, "heads", c->n_heads, c->dim, err) ||
        check_range(c, src, "kv_heads", c->n_kv_heads, c->n_heads, err) ||
        check_range(c, src, "head_dim", c->head_dim, MAX_HEAD_DIM, err) ||
        check_range(c, src, "ffn", c->ffn_dim, MAX_FFN, err) || check_range(c, src, "seq", c->max_seq, MAX_SEQ, err))
        return -1;
    if (c->n_heads % c->n_kv_heads != 0)
        return an_fail(err, "%s: field \"%s\" (%d) does not divide \"%s\" (%d)", src, fname(c, "kv_heads"), c->n_kv_heads,
                       fname(c, "heads"), c->n_heads);
    if (is_gpt2(c) && (c->n_heads * c->head_dim != c->dim || c->n_kv_heads != c->n_heads))
        return an_fail(err, "%s: field \"n_head\" (%d) does not divide \"n_embd\" (%d)", src, c->n_heads, c->dim);
    if (!is_gpt2(c) && c->head_dim % 2 != 0)
        return an_fail(err, "%s: field \"head_dim\" (%d) must be even for rotary embeddings", src, c->head_dim);
    if (!(c->norm_eps > 0 && c->norm_eps <= 1))
        return an_fail(err, "%s: field \"%s\" (%g) must be in (0, 1]", src, fname(c, "eps"), (double)c->norm_eps);
    if (!is_gpt2(c) && !(c->rope_theta > 0 && isfinite(c->rope_theta)))
        return an_fail(err, "%s: field \"rope_theta\" (%g) must be positive", src, (double)c->rope_theta);
    const int flags[] = {c->rope_interleaved, c->tie_embeddings, c->qkv_bias, c->proj_bias, c->o_bias, c->mlp_bias};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (flags[i] != 0 && flags[i] != 1) return an_fail(err, "%s: a yes/no setting holds %d", src, flags[i]);
    if (c->proj_bias != (c->o_bias && c->mlp_bias))
        return an_fail(err, "%s: proj_bias (%d) disagrees with o_bias (%d) and mlp_bias (%d)", src, c->proj_bias, c->o_bias,
                       c->mlp_bias);
    if (c->sliding_window < 0) return an_fail(err, "%s: field \"sliding_window\" (%d) is negative", src, c->sliding_window);
    const int ids[] = {c->bos_id, c->eos_id, c->pad_id};
    const char *id_names[] = {"bos_token_id", "eos_token_id", "pad_token_id"};
    for (int i = 0; i < 3; i++)
        if (ids[i] < -1 || ids[i] >= c->vocab_size)
            return an_fail(err, "%s: field \"%s\" (%d) is outside the vocabulary (%d)", src, id_names[i], ids[i],
                           c->vocab_size);
    return 0;
}

/* ---- writing ---- */

/* The shortest decimal that reads back as the same float, so 1e-6f is written "1e-06", not 9.99999997e-07. */
static cJSON *float_json(float v) {
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)v);
        if ((float)strtod(buf, NULL) == v) break;
    }
    return cJSON_CreateRaw(buf);
}

static void put_int(cJSON *o, const char *k, int v) { cJSON_AddItemToObject(o, k, cJSON_CreateNumber(v)); }
static void put_id(cJSON *o, const char *k, int v) {
    cJSON_AddItemToObject(o, k, v >= 0 ? cJSON_CreateNumber(v) : cJSON_CreateNull());
}
static void put_bool(cJSON *o, const char *k, int v) { cJSON_AddItemToObject(o, k, cJSON_CreateBool(v)); }
static void put_str(cJSON *o, const char *k, const char *v) { cJSON_AddItemToObject(o, k, cJSON_CreateString(v)); }

static int family_of(const an_model_config *c, const char *path, an_error *err) {
    for (int i = 0; i < N_FAMILIES; i++)
        if (strcmp(c->architecture, families[i].architecture) == 0) {
            if (families[i].arch != c->arch)
                return an_fail(err, "%s: architecture \"%s\" does not match arch %d", path, c->architecture, (int)c->arch);
            return i;
        }
    if (!c->architecture[0]) /* built in code: take the family's main architecture */
        for (int i = 0; i < N_FAMILIES; i++)
            if (families[i].arch == c->arch) return i;
    return an_fail(err, "%s: architecture \"%s\" cannot be saved", path, c->architecture);
}

int an_config_save(const an_model_config *c, const char *path, an_error *err) {
    if (an_config_validate(c, path, err) != 0) return -1;
    int fi = family_of(c, path, err);
    if (fi < 0) return -1;
    const family *f = &families[fi];
    if (c->rope_interleaved)
        return an_fail(err, "%s: interleaved RoPE (llama2.c) has no config.json field: permute the q/k rows to "
                            "rotate-half order and clear rope_interleaved before saving",
                       path);
    int is_qwen2 = strcmp(f->architecture, "Qwen2ForCausalLM") == 0;
    int is_mistral = strcmp(f->architecture, "MistralForCausalLM") == 0;
    int is_llama = strcmp(f->architecture, "LlamaForCausalLM") == 0;
    const char *bad = NULL;
    if (is_gpt2(c) && !(c->qkv_bias && c->o_bias && c->mlp_bias && c->tie_embeddings)) bad = "GPT-2 has every bias and a tied head";
    if (is_qwen2 && !(c->qkv_bias && !c->o_bias && !c->mlp_bias)) bad = "Qwen2 has q/k/v biases only";
    if (is_qwen2 && c->sliding_window) bad = "sliding-window Qwen2 is not supported";
    if (is_mistral && (c->qkv_bias || c->o_bias || c->mlp_bias)) bad = "Mistral has no biases";
    if ((is_llama || c->arch == AN_ARCH_INTERNLM2) && c->qkv_bias != c->o_bias)
        bad = "q/k/v and o_proj biases come together in this family";
    if (c->arch == AN_ARCH_INTERNLM2 && c->mlp_bias) bad = "InternLM2 has no MLP biases";
    if ((is_gpt2(c) || is_qwen2 || c->arch == AN_ARCH_INTERNLM2) && c->head_dim * c->n_heads != c->dim)
        bad = "head_dim must be hidden size / heads in this family";
    if (bad) return an_fail(err, "%s: this configuration cannot be written as %s: %s", path, f->architecture, bad);

    /* keys in sorted order, as transformers writes them */
    cJSON *o = cJSON_CreateObject();
    cJSON *archs = cJSON_CreateArray();
    cJSON_AddItemToArray(archs, cJSON_CreateString(f->architecture));
    const char *dtype = c->torch_dtype[0] ? c->torch_dtype : "float32";
    if (is_gpt2(c)) {
        put_str(o, "activation_function", "gelu_new");
        cJSON_AddItemToObject(o, "architectures", archs);
        put_id(o, "bos_token_id", c->bos_id);
        put_id(o, "eos_token_id", c->eos_id);
        cJSON_AddItemToObject(o, "layer_norm_epsilon", float_json(c->norm_eps));
        put_str(o, "model_type", "gpt2");
        put_int(o, "n_ctx", c->max_seq);
        put_int(o, "n_embd", c->dim);
        put_int(o, "n_head", c->n_heads);
        put_int(o, "n_inner", c->ffn_dim);
        put_int(o, "n_layer", c->n_layers);
        put_int(o, "n_positions", c->max_seq);
        put_id(o, "pad_token_id", c->pad_id);
        put_bool(o, "tie_word_embeddings", 1);
        put_str(o, "torch_dtype", dtype);
        put_int(o, "vocab_size", c->vocab_size);
    } else {
        cJSON_AddItemToObject(o, "architectures", archs);
        if (is_llama) put_bool(o, "attention_bias", c->qkv_bias);
        if (c->arch == AN_ARCH_INTERNLM2) put_bool(o, "bias", c->qkv_bias);
        put_id(o, "bos_token_id", c->bos_id);
        put_id(o, "eos_token_id", c->eos_id);
        if (!is_qwen2 && c->arch != AN_ARCH_INTERNLM2) put_int(o, "head_dim", c->head_dim);
        put_str(o, "hidden_act", "silu");
        put_int(o, "hidden_size", c->dim);
        put_int(o, "intermediate_size", c->ffn_dim);
        put_int(o, "max_position_embeddings", c->max_seq);
        if (is_qwen2) put_int(o, "max_window_layers", c->n_layers);
        if (is_llama) put_bool(o, "mlp_bias", c->mlp_bias);
        put_str(o, "model_type", f->model_type);
        put_int(o, "num_attention_heads", c->n_heads);
        put_int(o, "num_hidden_layers", c->n_layers);
        put_int(o, "num_key_value_heads", c->n_kv_heads);
        put_id(o, "pad_token_id", c->pad_id);
        cJSON_AddItemToObject(o, "rms_norm_eps", float_json(c->norm_eps));
        cJSON_AddItemToObject(o, "rope_scaling", cJSON_CreateNull());
        cJSON_AddItemToObject(o, "rope_theta", float_json(c->rope_theta));
        if (is_qwen2) cJSON_AddItemToObject(o, "sliding_window", cJSON_CreateNull());
        if (is_mistral)
            cJSON_AddItemToObject(o, "sliding_window",
                                  c->sliding_window ? cJSON_CreateNumber(c->sliding_window) : cJSON_CreateNull());
        put_bool(o, "tie_word_embeddings", c->tie_embeddings);
        put_str(o, "torch_dtype", dtype);
        if (is_qwen2) put_bool(o, "use_sliding_window", 0);
        put_int(o, "vocab_size", c->vocab_size);
    }
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    if (!s) return an_fail(err, "%s: out of memory", path);
    size_t n = strlen(s);
    char *t = realloc(s, n + 2);
    if (!t) {
        free(s);
        return an_fail(err, "%s: out of memory", path);
    }
    t[n] = '\n';
    int rc = an_write_file_atomic(path, t, n + 1, err);
    free(t);
    return rc;
}
