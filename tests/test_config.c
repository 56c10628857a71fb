/* model/config: config.json files written by transformers' own config classes, read as transformers
 * resolves them (tests/ref/config_expected.json); the real TinyStories config; save/load round trips;
 * and every rejected case naming the file and the field. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "model/io/config.h"
#include "tests/test.h"

#define REF "tests/ref/"

static int jint(const cJSON *o, const char *k) { return (int)cJSON_GetObjectItem(o, k)->valuedouble; }

static void check_against_expected(const an_model_config *c, const cJSON *x, const char *name) {
    CHECK_MSG(c->vocab_size == jint(x, "vocab_size"), "%s vocab", name);
    CHECK_MSG(c->dim == jint(x, "dim"), "%s dim", name);
    CHECK_MSG(c->n_layers == jint(x, "n_layers"), "%s layers", name);
    CHECK_MSG(c->n_heads == jint(x, "n_heads"), "%s heads", name);
    CHECK_MSG(c->n_kv_heads == jint(x, "n_kv_heads"), "%s kv heads", name);
    CHECK_MSG(c->head_dim == jint(x, "head_dim"), "%s head_dim %d", name, c->head_dim);
    CHECK_MSG(c->ffn_dim == jint(x, "ffn_dim"), "%s ffn", name);
    CHECK_MSG(c->max_seq == jint(x, "max_seq"), "%s max_seq", name);
    /* eps and theta are float32 in the struct: equal to the float32 rounding of the JSON double */
    CHECK_MSG(c->norm_eps == (float)cJSON_GetObjectItem(x, "norm_eps")->valuedouble, "%s eps", name);
    if (c->arch != AN_ARCH_GPT2)
        CHECK_MSG(c->rope_theta == (float)cJSON_GetObjectItem(x, "rope_theta")->valuedouble, "%s theta", name);
    CHECK_MSG(c->tie_embeddings == jint(x, "tie"), "%s tie", name);
    CHECK_MSG(c->qkv_bias == jint(x, "qkv_bias"), "%s qkv_bias", name);
    CHECK_MSG(c->o_bias == jint(x, "o_bias"), "%s o_bias", name);
    CHECK_MSG(c->mlp_bias == jint(x, "mlp_bias"), "%s mlp_bias", name);
    CHECK_MSG(c->proj_bias == (jint(x, "o_bias") && jint(x, "mlp_bias")), "%s proj_bias", name);
    CHECK_MSG(c->bos_id == jint(x, "bos") && c->eos_id == jint(x, "eos") && c->pad_id == jint(x, "pad"), "%s ids", name);
    CHECK_MSG(c->sliding_window == jint(x, "sliding_window"), "%s sliding_window", name);
    CHECK(c->rope_interleaved == 0);
}

/* config.json files saved by transformers' GPT2Config / LlamaConfig / MistralConfig / Qwen2Config, against
 * the values transformers itself resolves (head_dim defaults, n_inner null, eos list, ...). Then each is
 * saved by an_config_save and read back to the same struct. */
static void test_transformers_configs(void) {
    an_error e;
    char *text = an_read_file(REF "config_expected.json", NULL, &e);
    cJSON *exp = text ? cJSON_Parse(text) : NULL;
    free(text);
    CHECK(exp != NULL);
    if (!exp) return;
    const char *archs[][2] = {{"gpt2", "GPT2LMHeadModel"},
                              {"llama", "LlamaForCausalLM"},
                              {"mistral", "MistralForCausalLM"},
                              {"qwen2", "Qwen2ForCausalLM"}};
    for (int i = 0; i < 4; i++) {
        char path[256];
        snprintf(path, sizeof path, REF "config_%s.json", archs[i][0]);
        an_model_config c, d;
        CHECK_MSG(an_config_load(&c, path, &e) == 0, "%s", e.msg);
        CHECK_STR(c.architecture, archs[i][1]);
        CHECK_STR(c.model_type, archs[i][0]);
        CHECK(c.arch == (i == 0 ? AN_ARCH_GPT2 : AN_ARCH_LLAMA));
        check_against_expected(&c, cJSON_GetObjectItem(exp, archs[i][0]), archs[i][0]);
        const char *out = test_tmp_path("saved.json");
        CHECK_MSG(an_config_save(&c, out, &e) == 0, "%s", e.msg);
        CHECK_MSG(an_config_load(&d, out, &e) == 0, "%s", e.msg);
        check_against_expected(&d, cJSON_GetObjectItem(exp, archs[i][0]), archs[i][0]);
        CHECK_STR(d.architecture, c.architecture);
        CHECK_STR(d.torch_dtype, c.torch_dtype[0] ? c.torch_dtype : "float32");
    }
    cJSON_Delete(exp);
}

/* The real TinyStories-656K config.json (values as printed in that file, transformers 4.41 layout). */
static void test_tinystories_config(void) {
    an_model_config c;
    an_error e;
    CHECK_MSG(an_config_load(&c, test_shared("models/TinyStories-656K/config.json"), &e) == 0, "%s", e.msg);
    CHECK(c.arch == AN_ARCH_LLAMA && c.dim == 128 && c.ffn_dim == 384 && c.n_layers == 2 && c.n_heads == 8);
    CHECK(c.n_kv_heads == 4 && c.head_dim == 16 && c.vocab_size == 2048 && c.max_seq == 512);
    CHECK(c.norm_eps == 1e-6f && c.rope_theta == 10000.0f && c.tie_embeddings == 1 && c.rope_interleaved == 0);
    CHECK(c.qkv_bias == 0 && c.o_bias == 0 && c.mlp_bias == 0 && c.proj_bias == 0);
    CHECK(c.bos_id == 1 && c.eos_id == 2 && c.pad_id == -1);
    CHECK_STR(c.torch_dtype, "float32");
}

static const char *write_text(const char *name, const char *text) {
    const char *p = test_tmp_path(name);
    an_error e;
    if (an_write_file_atomic(p, text, strlen(text), &e) != 0) CHECK_MSG(0, "%s", e.msg);
    return p;
}

/* InternLM2 (remote-code model: the field layout of internlm2-chat-1_8b's published config.json, with its
 * dynamic rope_scaling) and a legacy transformers 4.x Llama config with top-level rope_theta. */
static void test_internlm2_and_legacy_rope(void) {
    const char *internlm2 =
        "{\"architectures\":[\"InternLM2ForCausalLM\"],\"bias\":false,\"bos_token_id\":1,\"eos_token_id\":2,"
        "\"hidden_act\":\"silu\",\"hidden_size\":2048,\"intermediate_size\":8192,\"max_position_embeddings\":32768,"
        "\"model_type\":\"internlm2\",\"num_attention_heads\":16,\"num_hidden_layers\":24,\"num_key_value_heads\":8,"
        "\"pad_token_id\":2,\"rms_norm_eps\":1e-05,\"rope_scaling\":{\"type\":\"dynamic\",\"factor\":2.0},"
        "\"rope_theta\":1000000,\"tie_word_embeddings\":false,\"torch_dtype\":\"bfloat16\",\"vocab_size\":92544}";
    an_model_config c, d;
    an_error e;
    CHECK_MSG(an_config_load(&c, write_text("internlm2.json", internlm2), &e) == 0, "%s", e.msg);
    CHECK(c.arch == AN_ARCH_INTERNLM2 && c.dim == 2048 && c.head_dim == 128 && c.n_kv_heads == 8 && c.ffn_dim == 8192);
    CHECK(c.rope_theta == 1e6f && c.norm_eps == 1e-5f && c.qkv_bias == 0 && c.o_bias == 0 && c.tie_embeddings == 0);
    CHECK(c.bos_id == 1 && c.eos_id == 2 && c.pad_id == 2);
    CHECK_STR(c.torch_dtype, "bfloat16");
    CHECK_STR(c.model_type, "internlm2");
    CHECK(an_config_save(&c, test_tmp_path("internlm2_saved.json"), &e) == 0);
    CHECK(an_config_load(&d, test_tmp_path("internlm2_saved.json"), &e) == 0);
    CHECK(d.arch == c.arch && d.dim == c.dim && d.n_kv_heads == c.n_kv_heads && d.rope_theta == c.rope_theta);
    CHECK_STR(d.torch_dtype, "bfloat16");

    const char *legacy = "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":172,"
                         "\"num_hidden_layers\":1,\"num_attention_heads\":4,\"vocab_size\":100,"
                         "\"max_position_embeddings\":32,\"rope_theta\":500000.0,\"rope_scaling\":null,"
                         "\"eos_token_id\":[9,3],\"pad_token_id\":-1}";
    CHECK_MSG(an_config_load(&c, write_text("legacy.json", legacy), &e) == 0, "%s", e.msg);
    /* defaults as LlamaConfig has them: kv heads = heads, rms_norm_eps 1e-6, untied, no biases */
    CHECK(c.rope_theta == 5e5f && c.n_kv_heads == 4 && c.head_dim == 16 && c.norm_eps == 1e-6f && c.tie_embeddings == 0);
    CHECK(c.eos_id == 9 && c.pad_id == -1 && c.bos_id == -1);

    /* Mistral's sliding_window: null is none; absent is MistralConfig's default 4096 */
    const char *mistral = "{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":172,"
                          "\"num_hidden_layers\":1,\"num_attention_heads\":4,\"vocab_size\":100,"
                          "\"max_position_embeddings\":32,\"sliding_window\":null}";
    CHECK_MSG(an_config_load(&c, write_text("mistral_null.json", mistral), &e) == 0, "%s", e.msg);
    CHECK(c.sliding_window == 0);
    CHECK(an_config_save(&c, test_tmp_path("mistral_saved.json"), &e) == 0);
    CHECK(an_config_load(&d, test_tmp_path("mistral_saved.json"), &e) == 0 && d.sliding_window == 0);
}

/* Edits the TinyStories config: sets (or, with value NULL, deletes) one field, writes it to a temp file. */
static const char *variant(const char *name, const char *key, const char *value_json) {
    an_error e;
    char *text = an_read_file(test_shared("models/TinyStories-656K/config.json"), NULL, &e);
    cJSON *o = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (!o) return "missing";
    cJSON_DeleteItemFromObjectCaseSensitive(o, key);
    if (value_json) cJSON_AddItemToObject(o, key, cJSON_Parse(value_json));
    char *s = cJSON_Print(o);
    const char *p = write_text(name, s);
    free(s);
    cJSON_Delete(o);
    return p;
}

/* transformers 5.x writes "dtype" where 4.x wrote "torch_dtype"; both are read. */
static void test_dtype_spellings(void) {
    an_model_config c;
    an_error e;
    CHECK_MSG(an_config_load(&c, variant("dtype5.json", "dtype", "\"bfloat16\""), &e) == 0, "%s", e.msg);
    CHECK_STR(c.torch_dtype, "float32"); /* torch_dtype still there and wins */
    const char *p = variant("nodtype.json", "torch_dtype", NULL);
    CHECK_MSG(an_config_load(&c, p, &e) == 0, "%s", e.msg);
    CHECK_STR(c.torch_dtype, "");
    char *text = an_read_file(p, NULL, &e);
    cJSON *o = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (!o) return;
    cJSON_AddItemToObject(o, "dtype", cJSON_CreateString("bfloat16"));
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    CHECK_MSG(an_config_load(&c, write_text("dtype_only.json", s), &e) == 0, "%s", e.msg);
    free(s);
    CHECK_STR(c.torch_dtype, "bfloat16");
}

static void expect_error(const char *path, const char *field, const char *problem) {
    an_model_config c;
    an_error e;
    e.msg[0] = 0;
    CHECK_MSG(an_config_load(&c, path, &e) == -1, "%s loaded but should fail (%s)", path, problem);
    CHECK_CONTAINS(e.msg, path);
    if (field) CHECK_CONTAINS(e.msg, field);
    CHECK_CONTAINS(e.msg, problem);
}

static void test_bad_configs(void) {
    expect_error(variant("no_hidden.json", "hidden_size", NULL), "\"hidden_size\"", "missing field");
    expect_error(variant("no_vocab.json", "vocab_size", NULL), "\"vocab_size\"", "missing field");
    expect_error(variant("heads0.json", "num_attention_heads", "0"), "\"num_attention_heads\"", "must be positive");
    expect_error(variant("heads7.json", "num_attention_heads", "7"), "\"num_attention_heads\" (7)",
                 "does not divide \"hidden_size\" (128)");
    expect_error(variant("kv3.json", "num_key_value_heads", "3"), "\"num_key_value_heads\" (3)", "does not divide");
    expect_error(variant("kv16.json", "num_key_value_heads", "16"), "\"num_key_value_heads\" (16)", "must be between 1 and 8");
    expect_error(variant("layers-1.json", "num_hidden_layers", "-1"), "\"num_hidden_layers\" (-1)", "must be between");
    expect_error(variant("eps0.json", "rms_norm_eps", "0"), "\"rms_norm_eps\"", "must be in (0, 1]");
    expect_error(variant("eps2.json", "rms_norm_eps", "2.0"), "\"rms_norm_eps\"", "must be in (0, 1]");
    expect_error(variant("vocab.json", "vocab_size", "20000000"), "\"vocab_size\" (20000000)", "must be between 1 and 10000000");
    expect_error(variant("hidden_str.json", "hidden_size", "\"128\""), "\"hidden_size\"", "is not an integer");
    expect_error(variant("hidden_frac.json", "hidden_size", "128.5"), "\"hidden_size\"", "is not an integer");
    expect_error(variant("arch.json", "architectures", "[\"FooForCausalLM\"]"), "\"architectures\"",
                 "\"FooForCausalLM\" is not supported");
    expect_error(variant("linear.json", "rope_scaling", "{\"type\":\"linear\",\"factor\":2.0}"), "\"rope_scaling\"",
                 "rope type \"linear\" is not supported yet");
    expect_error(variant("yarn.json", "rope_parameters", "{\"rope_type\":\"yarn\",\"rope_theta\":10000.0}"),
                 "\"rope_parameters\"", "rope type \"yarn\" is not supported yet");
    expect_error(variant("act.json", "hidden_act", "\"gelu\""), "\"hidden_act\"", "\"gelu\" is not supported");
    expect_error(variant("bos.json", "bos_token_id", "5000"), "\"bos_token_id\" (5000)", "outside the vocabulary");
    expect_error(variant("tie.json", "tie_word_embeddings", "1"), "\"tie_word_embeddings\"", "is not true or false");
    expect_error(variant("sliding.json", "layer_types", "[\"full_attention\",\"sliding_attention\"]"), "\"layer_types\"[1]",
                 "only \"full_attention\"");
    expect_error(write_text("qwen_sw.json", "{\"architectures\":[\"Qwen2ForCausalLM\"],\"vocab_size\":10,\"hidden_size\":8,"
                                             "\"intermediate_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,"
                                             "\"max_position_embeddings\":8,\"use_sliding_window\":true}"),
                 "\"use_sliding_window\"", "not supported yet");
    expect_error(write_text("notjson.json", "{\"hidden_size\": }"), NULL, "not valid JSON");
    expect_error(write_text("gpt2_heads.json", "{\"architectures\":[\"GPT2LMHeadModel\"],\"vocab_size\":10,\"n_embd\":10,"
                                               "\"n_layer\":1,\"n_head\":3,\"n_positions\":8}"),
                 "\"n_head\" (3)", "does not divide \"n_embd\" (10)");
    expect_error(test_tmp_path("nonexistent.json"), NULL, "cannot open");
}

/* A 100 KB hidden_act: the error quotes 80 bytes of it and its length (an_quote), not 1 KB of it. */
static void test_long_value_is_cut(void) {
    enum { N = 100000 };
    char *v = malloc(N + 3);
    v[0] = '"';
    memset(v + 1, 'g', N);
    v[N + 1] = '"';
    v[N + 2] = 0;
    const char *path = variant("longact.json", "hidden_act", v);
    char want[200];
    snprintf(want, sizeof want, "\"%.80s...\" (100000 bytes) is not supported", v + 1);
    expect_error(path, "\"hidden_act\"", want);
    an_model_config c;
    an_error e;
    if (an_config_load(&c, path, &e) != 0) CHECK_MSG(strlen(e.msg) < 400, "%zu-byte message", strlen(e.msg));
    free(v);
}

static void test_validate_and_save_refusals(void) {
    an_model_config c;
    an_error e;
    CHECK(an_config_load(&c, test_shared("models/TinyStories-656K/config.json"), &e) == 0);
    c.rope_interleaved = 1; /* a llama2.c model: HF has no field for interleaved RoPE */
    CHECK(an_config_save(&c, test_tmp_path("x.json"), &e) == -1);
    CHECK_CONTAINS(e.msg, "x.json");
    CHECK_CONTAINS(e.msg, "interleaved RoPE");
    c.rope_interleaved = 0;
    c.proj_bias = 1; /* says "output and MLP biases" while o_bias and mlp_bias say none */
    CHECK(an_config_validate(&c, "cfg", &e) == -1);
    CHECK_CONTAINS(e.msg, "proj_bias (1) disagrees");
    c.proj_bias = 0;
    c.o_bias = 1; /* Llama's attention_bias covers q, k, v and o together: o alone is not expressible */
    c.qkv_bias = 0;
    CHECK(an_config_save(&c, test_tmp_path("y.json"), &e) == -1);
    CHECK_CONTAINS(e.msg, "cannot be written as LlamaForCausalLM");
}

int main(void) {
    RUN(test_transformers_configs);
    RUN(test_tinystories_config);
    RUN(test_internlm2_and_legacy_rope);
    RUN(test_dtype_spellings);
    RUN(test_bad_configs);
    RUN(test_long_value_is_cut);
    RUN(test_validate_and_save_refusals);
    return test_finish();
}
