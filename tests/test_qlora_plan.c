/* The memory plan of model/qlora_plan.h against what the model really allocates: for the tiny
 * Llama, InternLM2 and GPT-2 fixtures with an adapter (with and without dropout, on and off the
 * head) and NF4 weights, the planned activations must equal an_model_plan's allocation byte for
 * byte, the adapters an_lora_bytes_params, the NF4 bytes an_model_nf4_bytes and the parameter
 * counts the model's own. And the InternLM2-7B preset must count 7,737,708,544 parameters, the
 * published total (../shared/reference/anchor-xtuner-qlora.md, section 2), with its NF4 linear
 * weights at no more than 0.52 bytes each (docs/nf4.md: 0.5159 for blocks of 64 with double
 * quantization). The LM head's chunk rows (an_head_chunk_rows) are checked against hand-computed
 * values. */
#include <string.h>

#include "model/lora.h"
#include "model/nf4_weights.h"
#include "model/qlora_plan.h"
#include "tests/test_model_util.h"

static void check(const char *name, int dropout, int head, int B, int T) {
    an_model *m = load_fixture_model(name);
    if (!m) return;
    an_error e;
    CHECK(an_model_quantize_nf4(m, 64, 1, &e) == 0);
    an_lora_config c = an_lora_config_default();
    c.r = 4;
    c.dropout = dropout ? 0.1f : 0.0f;
    CHECK(an_lora_config_add_target(&c, "all-linear", &e) == 0);
    if (head) CHECK(an_lora_config_add_target(&c, m->cfg.arch == AN_ARCH_INTERNLM2 ? "output" : "lm_head", &e) == 0);
    CHECK(an_lora_attach(m, &c, &e) == 0);
    CHECK(an_model_plan(m, B, T, &e) == 0);
    an_memory_opts o = an_memory_opts_default();
    o.B = B;
    o.T = T;
    o.r = 4;
    o.dropout = dropout;
    o.lora_head = head;
    an_memory_plan p;
    CHECK(an_memory_plan_compute(&m->cfg, &o, &p, &e) == 0);
    /* the plan also holds the ops' workspace (linear ops, attention), carved in 64-byte units */
    size_t ws = p.workspace;
    CHECK_MSG(p.activations + ws == an_model_bytes_activations(m), "%s: planned %zu + %zu, allocated %zu", name,
              p.activations, ws, an_model_bytes_activations(m));
    CHECK(p.activations_recompute < p.activations);
    an_model_set_recompute(m, 1); /* the recomputed plan, byte for byte too */
    CHECK(an_model_plan(m, B, T, &e) == 0);
    CHECK_MSG(p.activations_recompute + ws == an_model_bytes_activations(m), "%s recomputed: planned %zu + %zu, allocated %zu",
              name, p.activations_recompute, ws, an_model_bytes_activations(m));
    CHECK(p.adapters == an_lora_bytes_params(m->lora));
    CHECK(p.n_adapter == an_lora_param_count(m->lora));
    CHECK(p.base_linear == an_model_nf4_bytes(m));
    CHECK(p.n_linear == an_model_nf4_param_count(m));
    CHECK(p.n_linear + p.n_other == an_model_param_count(m, 0));
    an_model_free(m);
}

static void test_plan_matches_allocation(void) {
    check("llama", 0, 1, 2, 7);
    check("llama", 1, 0, 3, 5);
    check("internlm2", 1, 1, 1, 9);
    check("gpt2", 0, 0, 2, 6);
}

static void test_internlm2_7b(void) {
    an_model_config cfg;
    an_error e;
    CHECK_MSG(an_config_load(&cfg, "configs/models/internlm2-7b.json", &e) == 0, "%s", e.msg);
    an_memory_opts o = an_memory_opts_default();
    an_memory_plan p;
    CHECK(an_memory_plan_compute(&cfg, &o, &p, &e) == 0);
    CHECK(p.n_linear + p.n_other == 7737708544ull);
    CHECK(p.n_other == 758120448ull + 65 * 4096); /* embedding + head, and 65 norm weights */
    CHECK(p.linear_bytes_per_param <= 0.52 && p.linear_bytes_per_param > 0.515);
    /* the target: a whole QLoRA step at r 64, 1 x 2048 tokens, under 10 GB (10^9 bytes) with
     * recomputation and the frozen embedding/head in bf16 */
    o.frozen_bf16 = 1;
    CHECK(an_memory_plan_compute(&cfg, &o, &p, &e) == 0);
    CHECK(p.n_frozen_bf16 == 758120448ull);
    CHECK_MSG(p.total_recompute < 10000000000ull, "planned %zu bytes", p.total_recompute);
}

/* With the embedding/head in bf16 the planned parameter bytes are the model's, up to the 64-byte
 * alignment of each tensor (the plan counts exact sizes). */
static void test_frozen_bf16_params(void) {
    const char *names[] = {"llama", "gpt2", "internlm2"};
    for (int k = 0; k < 3; k++) {
        an_model *m = load_fixture_model(names[k]);
        if (!m) continue;
        an_error e;
        CHECK(an_model_quantize_nf4(m, 64, 1, &e) == 0);
        an_lora_config c = an_lora_config_default();
        c.r = 4;
        CHECK(an_lora_config_add_target(&c, "all-linear", &e) == 0);
        CHECK(an_lora_attach(m, &c, &e) == 0);
        CHECK_MSG(an_model_store_frozen_bf16(m, &e) == 0, "%s", e.msg);
        an_memory_opts o = an_memory_opts_default();
        o.r = 4;
        o.frozen_bf16 = 1;
        o.T = 16; /* a shape the fixture can run (GPT-2 has learned positions): the plan refuses others */
        an_memory_plan p;
        CHECK_MSG(an_memory_plan_compute(&m->cfg, &o, &p, &e) == 0, "%s", e.msg);
        size_t planned = p.base_linear + p.base_other, got = an_model_bytes_params(m);
        CHECK_MSG(planned <= got && got - planned <= 64 * (size_t)m->n_params, "%s: planned %zu, model %zu", names[k],
                  planned, got);
        an_model_free(m);
    }
    an_model_config cfg; /* full fine-tuning trains the embedding: refused */
    an_error e;
    CHECK(an_config_load(&cfg, "configs/models/internlm2-7b.json", &e) == 0);
    an_memory_opts o = an_memory_opts_default();
    o.method = AN_METHOD_FULL;
    o.frozen_bf16 = 1;
    an_memory_plan p;
    CHECK(an_memory_plan_compute(&cfg, &o, &p, &e) != 0);
    CHECK_CONTAINS(e.msg, "frozen");
}

/* The LM head's chunk rows, by hand: (bytes) / ((V + 2C) * 4), within [1, N], and all N rows when N
 * is at most 1/8 over that. */
static void test_head_chunk_rows(void) {
    /* 128 MiB = 134,217,728 bytes; llama-60m (V 32,000, C 512): 132,096 bytes a row -> 1,016.06 */
    CHECK(an_head_chunk_rows(4096, 32000, 512, 0) == 1016);
    CHECK(an_head_chunk_rows(1143, 32000, 512, 0) == 1143); /* 1,016 + 127: one chunk */
    CHECK(an_head_chunk_rows(1144, 32000, 512, 0) == 1016); /* 1,016 + 128: two */
    CHECK(an_head_chunk_rows(1024, 32000, 512, 0) == 1024);
    CHECK(an_head_chunk_rows(512, 32000, 512, 0) == 512); /* never more rows than the batch has */
    /* a scratch larger than 128 MiB is used whole: 600 MiB / (92,544 + 8,192) / 4 = 1,561.3 rows */
    CHECK(an_head_chunk_rows(4096, 92544, 4096, (size_t)600 << 20) == 1561);
    CHECK(an_head_chunk_rows(4096, (size_t)1 << 30, 512, 0) == 1); /* a row larger than the chunk: one row */
}

int main(void) {
    RUN(test_head_chunk_rows);
    RUN(test_plan_matches_allocation);
    RUN(test_internlm2_7b);
    RUN(test_frozen_bf16_params);
    return test_finish();
}
