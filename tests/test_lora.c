/* LoRA against PEFT (tests/ref/make_lora_fixtures.py): for tiny GPT-2 (Conv1D), Llama (adapter on
 * the untied head), Qwen2 (q/k/v biases), InternLM2 (fused wqkv, adapter on `output`) and a Llama with
 * every bias and a tied head carrying an adapter, the adapter folder PEFT saved is loaded and the logits, the loss, the gradient
 * of every lora_A / lora_B and the gradient with respect to the input embeddings (through every frozen
 * weight) are compared with PEFT's float64 run. Then: save -> load gives the same logits bit for bit;
 * a merged model gives the adapter's logits; bad adapters give clear errors.
 *
 * Tolerances as in tests/test_model_families.c: logits and loss 1e-4 of the largest |reference| (float32
 * sums in another order differ by ~1e-6); gradients 1e-3 of each tensor's largest |value| (backward
 * chains ~10 ops and reduces over the batch). Merged vs adapter logits: 1e-5 of the largest |logit| --
 * merging changes only the order of a handful of float32 additions per weight (W x + s B A x against
 * (W + s B A) x), an error of a few ulps of the ~1 logits. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/file.h"
#include "model/lora.h"
#include "tests/test_model_util.h"

#define LORA_FIXTURES "tests/ref/lora"

/* The tiny model `name`, NF4-quantized when qlora, with the adapter of fixture `fixture`. */
static an_model *load_model(const char *name, int qlora) {
    an_model *m = load_fixture_model(name);
    an_error e;
    if (m && qlora && an_model_quantize_nf4(m, 64, 1, &e)) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        an_model_free(m);
        return NULL;
    }
    return m;
}

static an_model *load_with_adapter_ex(const char *name, const char *fixture, int qlora) {
    an_model *m = load_model(name, qlora);
    if (!m) return NULL;
    char dir[256];
    snprintf(dir, sizeof dir, "%s/%s", LORA_FIXTURES, fixture);
    an_error e;
    if (an_lora_load(m, dir, &e)) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        an_model_free(m);
        return NULL;
    }
    return m;
}

static an_model *load_with_adapter(const char *name) { return load_with_adapter_ex(name, name, 0); }

/* logits of ids/targets (B x T) into out */
static int run_logits(an_model *m, const int32_t *ids, int B, int T, float *out) {
    an_batch b = {ids, NULL, NULL, NULL, B, T};
    an_error e;
    if (an_model_forward(m, &b, 0, 1.0f, NULL, out, &e)) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        return -1;
    }
    return 0;
}

static void check_family_ex(const char *name, const char *fixture, int qlora) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s/fixture.safetensors", LORA_FIXTURES, fixture);
    an_safetensors fx;
    an_error e;
    if (an_st_open(&fx, path, &e)) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        return;
    }
    an_model *m = load_with_adapter_ex(name, fixture, qlora);
    if (!m) {
        an_st_close(&fx);
        return;
    }
    size_t n_logits = 0, n_demb = 0;
    int32_t *ids = fx_ints(&fx, "ids", NULL);
    int32_t *targets = fx_ints(&fx, "targets", NULL);
    float *ref_logits = fx_floats(&fx, "logits", &n_logits);
    float *ref_loss = fx_floats(&fx, "loss", NULL);
    float *ref_demb = fx_floats(&fx, "dembeds", &n_demb);
    const an_st_tensor *tid = an_st_find(&fx, "ids");
    int B = (int)tid->shape[0], T = (int)tid->shape[1], C = m->cfg.dim;
    CHECK(n_demb == (size_t)B * T * C);
    CHECK(m->lora && an_model_param_count(m, 1) == 0); /* the base is frozen */
    if (qlora) /* the linears hold NF4 codes only; the head stays float32 */
        CHECK(an_param_nf4(m->layers[0].w_down) && !m->layers[0].w_down->data && m->lm_head && !an_param_nf4(m->lm_head) &&
              m->lm_head->data);
    CHECK(m->grad_mem == NULL);

    m->head_rows = 5; /* the head in 7 chunks, the last partial: the head's adapter runs chunked */
    CHECK(an_model_plan(m, B, T, &e) == 0);
    an_batch batch = {ids, NULL, NULL, targets, B, T};
    float *logits = malloc(n_logits * sizeof(float));
    an_lora *l = m->lora;
    for (int want_logits = 1; want_logits >= 0; want_logits--) {
        float loss = 0;
        m->ops->zero(m->ops, l->grad_mem, l->n_floats * sizeof(float));
        CHECK(an_model_forward(m, &batch, 1, 1.0f, &loss, want_logits ? logits : NULL, &e) == 0);
        CHECK(an_model_backward(m, &e) == 0);
        if (want_logits) {
            double lerr = test_max_rel_err(logits, ref_logits, n_logits, 1e-12);
            CHECK_MSG(lerr < 1e-4, "%s: logits rel err %.3g", name, lerr);
        }
        CHECK_MSG(fabs(loss - ref_loss[0]) < 1e-4 * ref_loss[0], "%s: loss %.7f vs %.7f", name, loss, ref_loss[0]);
        /* after backward, dres holds d(loss)/d(layer-0 input) = d(inputs_embeds) */
        double derr = test_max_rel_err(m->plan.dres, ref_demb, n_demb, 1e-12);
        CHECK_MSG(derr < 1e-3, "%s: d(input embeddings) rel err %.3g", name, derr);
        double worst = 0;
        int checked = 0;
        for (int i = 0; i < l->n_mods; i++) {
            an_param *ps[2] = {&l->mods[i].a, &l->mods[i].bt};
            for (int k = 0; k < 2; k++) {
                an_param *p = ps[k];
                char key[200];
                snprintf(key, sizeof key, "grad.base_model.model.%s", p->name);
                size_t n = 0;
                float *ref = fx_floats(&fx, key, &n);
                if (!ref) continue;
                float *g = malloc(n * sizeof(float)), *tmp = malloc(n * sizeof(float));
                CHECK(n == p->numel);
                an_model_export(m, p, p->grad, g, tmp); /* bt -> PEFT's lora_B [out, r] */
                double err = test_max_rel_err(g, ref, n, 1e-12);
                CHECK_MSG(err < 1e-3, "%s: gradient of %s rel err %.3g", name, p->name, err);
                worst = test_nan_max(worst, err);
                checked++;
                free(g);
                free(tmp);
                free(ref);
            }
        }
        int expected = 0;
        for (int i = 0; i < fx.n_tensors; i++) expected += strncmp(fx.tensors[i].name, "grad.", 5) == 0;
        CHECK_MSG(checked == expected && checked > 0, "%s: %d adapter gradients checked, fixture has %d", name, checked,
                  expected);
        if (want_logits) printf("  %s: %d adapted modules, worst gradient rel err %.2g\n", fixture, l->n_mods, worst);
    }

    /* save -> load: identical logits */
    CHECK(run_logits(m, ids, B, T, logits) == 0);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s-saved", test_tmpdir(), name);
    CHECK(an_lora_save(m, dir, &e) == 0);
    an_model *m2 = load_model(name, qlora);
    CHECK(m2 && an_lora_load(m2, dir, &e) == 0);
    if (m2 && m2->lora) {
        m2->head_rows = m->head_rows; /* the same GEMM shapes, so the same bits */
        CHECK(an_model_plan(m2, B, T, &e) == 0);
        float *logits2 = malloc(n_logits * sizeof(float));
        CHECK(run_logits(m2, ids, B, T, logits2) == 0);
        CHECK_MSG(memcmp(logits, logits2, n_logits * sizeof(float)) == 0, "%s: reloaded adapter changes the logits", name);
        CHECK(m2->lora->cfg.r == l->cfg.r && m2->lora->scaling == l->scaling);

        /* merged: W += s B A, then no adapter; the same logits to 1e-5. An adapter on a head tied to the
         * embedding cannot be merged (it would change the embedding too): GPT-2's is refused. */
        if (qlora) { /* merging into NF4 re-quantizes as PEFT does: checked against PEFT in tests/test_qlora.c */
            CHECK(an_lora_merge(m2, &e) == 0 && !m2->lora && an_param_nf4(m2->layers[0].w_down));
            free(logits2);
            goto merged_done;
        }
        if (!m2->lm_head && an_lora_find(m2->lora, m2->tok_emb)) {
            CHECK(an_lora_merge(m2, &e) == -1);
            CHECK_CONTAINS(e.msg, "shares its weight with the token embedding");
            CHECK(m2->lora != NULL);
            free(logits2);
            goto merged_done;
        }
        CHECK(an_lora_merge(m2, &e) == 0);
        CHECK(m2->lora == NULL);
        CHECK(an_model_plan(m2, B, T, &e) == 0);
        CHECK(run_logits(m2, ids, B, T, logits2) == 0);
        double merr = test_max_rel_err(logits2, logits, n_logits, 1e-12);
        CHECK_MSG(merr < 1e-5, "%s: merged logits rel err %.3g", name, merr);
        /* and the merged model saved as a Hugging Face folder reloads to the same logits */
        char mdir[512];
        snprintf(mdir, sizeof mdir, "%s/%s-merged", test_tmpdir(), name);
        CHECK(an_model_save(m2, mdir, &e) == 0);
        an_model *m3 = an_model_load(mdir, m2->ops, &e); /* the same backend: the same bits */
        CHECK(m3 != NULL);
        if (m3) {
            float *logits3 = malloc(n_logits * sizeof(float));
            m3->head_rows = m->head_rows;
            CHECK(an_model_plan(m3, B, T, &e) == 0);
            CHECK(run_logits(m3, ids, B, T, logits3) == 0);
            CHECK(memcmp(logits3, logits2, n_logits * sizeof(float)) == 0);
            free(logits3);
            an_model_free(m3);
        }
        free(logits2);
    }
merged_done:
    an_model_free(m2);
    free(logits);
    free(ids);
    free(targets);
    free(ref_logits);
    free(ref_loss);
    free(ref_demb);
    an_model_free(m);
    an_st_close(&fx);
}

static void check_family(const char *name) { check_family_ex(name, name, 0); }

static void test_gpt2(void) { check_family("gpt2"); }
static void test_llama(void) { check_family("llama"); }
static void test_qwen2(void) { check_family("qwen2"); }
static void test_internlm2(void) { check_family("internlm2"); }
static void test_llama_tied_head(void) { check_family("llama-bias"); }
/* QLoRA: PEFT on bitsandbytes' dequantized NF4 base against autoneg's NF4 layers */
static void test_qlora_llama(void) { check_family_ex("llama", "qlora-llama", 1); }
static void test_qlora_internlm2(void) { check_family_ex("internlm2", "qlora-internlm2", 1); }

/* The adapter file PEFT wrote, read back after our save: same names, shapes and values, and the config
 * keys PEFT needs. */
static void test_saved_files_match_peft(void) {
    an_model *m = load_with_adapter("llama");
    if (!m) return;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/llama-files", test_tmpdir());
    an_error e;
    CHECK(an_lora_save(m, dir, &e) == 0);
    an_safetensors ours, peft;
    char p1[600];
    snprintf(p1, sizeof p1, "%s/adapter_model.safetensors", dir);
    CHECK(an_st_open(&ours, p1, &e) == 0);
    CHECK(an_st_open(&peft, LORA_FIXTURES "/llama/adapter_model.safetensors", &e) == 0);
    CHECK(ours.n_tensors == peft.n_tensors);
    for (int i = 0; i < peft.n_tensors && i < ours.n_tensors; i++) {
        const an_st_tensor *a = &peft.tensors[i], *b = an_st_find(&ours, a->name);
        CHECK_MSG(b != NULL, "our adapter lacks %s", a->name);
        if (!b) continue;
        CHECK(b->ndim == 2 && b->shape[0] == a->shape[0] && b->shape[1] == a->shape[1]);
        CHECK(b->dtype == AN_F32 && a->dtype == AN_F32 && memcmp(a->data, b->data, a->nbytes) == 0);
    }
    an_st_close(&ours);
    an_st_close(&peft);
    snprintf(p1, sizeof p1, "%s/adapter_config.json", dir);
    char *cfg = an_read_file(p1, NULL, &e);
    CHECK(cfg != NULL);
    CHECK_CONTAINS(cfg, "\"peft_type\":\t\"LORA\"");
    CHECK_CONTAINS(cfg, "\"r\":\t4");
    CHECK_CONTAINS(cfg, "\"lora_alpha\":\t8");
    CHECK_CONTAINS(cfg, "\"task_type\":\t\"CAUSAL_LM\"");
    CHECK_CONTAINS(cfg, "\"q_proj\"");
    CHECK_CONTAINS(cfg, "\"base_model_name_or_path\":\t\"tests/ref/models/llama\"");
    free(cfg);
    an_model_free(m);
}

/* ---- a fresh adapter ---- */

static void test_attach_init(void) {
    an_model *m = load_fixture_model("llama");
    if (!m) return;
    an_lora_config c = an_lora_config_default();
    c.r = 8;
    c.alpha = 16;
    c.use_rslora = 1;
    c.seed = 7;
    an_error e;
    CHECK(an_lora_config_add_target(&c, "all-linear", &e) == 0);
    CHECK(an_lora_attach(m, &c, &e) == 0);
    an_lora *l = m->lora;
    /* all-linear: the 7 projections of 2 layers, not the head (PEFT's rule) */
    CHECK(l->n_mods == 14);
    CHECK_NEAR(l->scaling, 16 / sqrt(8.0), 1e-6);
    int A_in_bound = 1, B_zero = 1;
    double sum = 0, sumsq = 0;
    size_t n = 0;
    for (int i = 0; i < l->n_mods; i++) {
        an_lora_module *mod = &l->mods[i];
        float bound = 1.0f / sqrtf((float)mod->in);
        for (size_t k = 0; k < mod->a.numel; k++) {
            float v = mod->a.data[k];
            A_in_bound &= fabsf(v) <= bound;
            sum += v / bound;
            sumsq += (double)(v / bound) * (v / bound);
            n++;
        }
        for (size_t k = 0; k < mod->bt.numel; k++) B_zero &= mod->bt.data[k] == 0.0f;
    }
    CHECK(A_in_bound && B_zero);
    /* U(-1, 1) scaled: mean 0 (sd 1/sqrt(3n)) and mean square 1/3 (sd ~0.3/sqrt(n)); 5 sigma */
    CHECK_NEAR(sum / n, 0.0, 5 / sqrt(3.0 * n));
    CHECK_NEAR(sumsq / n, 1.0 / 3, 5 * 0.3 / sqrt((double)n));
    /* B = 0: the model's logits are the base model's */
    an_model *base = load_fixture_model("llama");
    int32_t ids[8] = {3, 9, 27, 81, 243, 5, 15, 45};
    float *l1 = malloc(8 * 256 * sizeof(float)), *l2 = malloc(8 * 256 * sizeof(float));
    CHECK(an_model_plan(m, 1, 8, &e) == 0 && an_model_plan(base, 1, 8, &e) == 0);
    CHECK(run_logits(m, ids, 1, 8, l1) == 0 && run_logits(base, ids, 1, 8, l2) == 0);
    CHECK(memcmp(l1, l2, 8 * 256 * sizeof(float)) == 0);
    free(l1);
    free(l2);
    an_model_free(base);
    an_model_free(m);
}

/* ---- bad input ---- */

static void write_text(const char *path, const char *text) {
    an_error e;
    CHECK(an_write_file_atomic(path, text, strlen(text), &e) == 0);
}

static void copy_file(const char *dst, const char *src) {
    an_error e;
    size_t n = 0;
    char *data = an_read_file(src, &n, &e);
    CHECK(data != NULL);
    if (data) CHECK(an_write_file_atomic(dst, data, n, &e) == 0);
    free(data);
}

/* an adapter folder holding the llama adapter's weights and the given config */
static const char *bad_adapter(const char *tag, const char *config) {
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/bad-%s", test_tmpdir(), tag);
    mkdir(dir, 0777);
    char p[600];
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    write_text(p, config);
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    copy_file(p, LORA_FIXTURES "/llama/adapter_model.safetensors");
    return dir;
}

static void expect_load_error(const char *model, const char *dir, const char *file, const char *what) {
    an_model *m = load_fixture_model(model);
    if (!m) return;
    an_error e = {{0}};
    CHECK(an_lora_load(m, dir, &e) == -1);
    CHECK_CONTAINS(e.msg, file);
    CHECK_CONTAINS(e.msg, what);
    CHECK(m->lora == NULL); /* nothing half attached */
    an_model_free(m);
}

static void test_bad_adapters(void) {
    /* another base: the llama adapter (hidden 32) on a Llama with hidden 16 */
    expect_load_error("llama-bias", LORA_FIXTURES "/llama", "adapter_model.safetensors",
                      "tensor \"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight\" has shape [4, 32]");
    /* another family: GPT-2's modules do not exist in a Llama */
    expect_load_error("llama", LORA_FIXTURES "/gpt2", "adapter_config.json", "matches no linear layer of this LlamaForCausalLM model");
    const char *d = bad_adapter("no-r", "{\"peft_type\": \"LORA\", \"lora_alpha\": 8, \"target_modules\": [\"q_proj\"]}");
    expect_load_error("llama", d, "adapter_config.json", "r is missing");
    d = bad_adapter("target", "{\"peft_type\": \"LORA\", \"r\": 4, \"target_modules\": [\"q_proj\", \"qproj\"]}");
    expect_load_error("llama", d, "adapter_config.json", "target module 'qproj' matches no linear layer");
    d = bad_adapter("dora", "{\"peft_type\": \"LORA\", \"r\": 4, \"use_dora\": true, \"target_modules\": [\"q_proj\"]}");
    expect_load_error("llama", d, "adapter_config.json", "DoRA");
    d = bad_adapter("type", "{\"peft_type\": \"IA3\", \"target_modules\": [\"q_proj\"]}");
    expect_load_error("llama", d, "adapter_config.json", "peft_type must be \"LORA\"");
    d = bad_adapter("rank", "{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": [\"q_proj\"]}");
    expect_load_error("llama", d, "adapter_model.safetensors", "has shape [4, 32] but [8, 32] was expected");
    /* fewer targets than the file holds: the extra tensors are named */
    d = bad_adapter("extra", "{\"peft_type\": \"LORA\", \"r\": 4, \"target_modules\": [\"q_proj\"]}");
    expect_load_error("llama", d, "adapter_model.safetensors", "belongs to no target module");
    d = bad_adapter("json", "{\"peft_type\": \"LORA\", \"r\": 4,");
    expect_load_error("llama", d, "adapter_config.json", "not a JSON object");
    expect_load_error("llama", "tests/ref/models/llama", "tests/ref/models/llama", "no adapter_config.json");

    /* a target that matches nothing, through the attach API */
    an_model *m = load_fixture_model("internlm2");
    if (!m) return;
    an_lora_config c = an_lora_config_default();
    an_error e;
    CHECK(an_lora_config_add_target(&c, "wqkv", &e) == 0);
    CHECK(an_lora_config_add_target(&c, "q_proj", &e) == 0);
    CHECK(an_lora_attach(m, &c, &e) == -1);
    CHECK_CONTAINS(e.msg, "target module 'q_proj' matches no linear layer");
    CHECK_CONTAINS(e.msg, "wqkv, wo, w1, w2, w3, output");
    /* a suffix must start at a '.': "qkv" is not "wqkv" */
    c = an_lora_config_default();
    CHECK(an_lora_config_add_target(&c, "qkv", &e) == 0);
    CHECK(an_lora_attach(m, &c, &e) == -1);
    CHECK_CONTAINS(e.msg, "'qkv'");
    /* a full name matches exactly one module */
    c = an_lora_config_default();
    CHECK(an_lora_config_add_target(&c, "model.layers.1.attention.wo", &e) == 0);
    CHECK(an_lora_attach(m, &c, &e) == 0);
    CHECK(m->lora && m->lora->n_mods == 1 && m->lora->mods[0].base == m->layers[1].wo);
    /* planned before the adapter: forward refuses */
    an_model_free(m);
    m = load_fixture_model("internlm2");
    CHECK(an_model_plan(m, 1, 4, &e) == 0);
    CHECK(an_lora_attach(m, &c, &e) == 0);
    int32_t ids[4] = {1, 2, 3, 4};
    an_batch b = {ids, NULL, NULL, NULL, 1, 4};
    float *lg = malloc(4 * 256 * sizeof(float));
    CHECK(an_model_forward(m, &b, 0, 1.0f, NULL, lg, &e) == -1);
    CHECK_CONTAINS(e.msg, "plan again");
    free(lg);
    an_model_free(m);
}

int main(void) {
    RUN(test_gpt2);
    RUN(test_llama);
    RUN(test_qwen2);
    RUN(test_internlm2);
    RUN(test_llama_tied_head);
    RUN(test_qlora_llama);
    RUN(test_qlora_internlm2);
    RUN(test_saved_files_match_peft);
    RUN(test_attach_init);
    RUN(test_bad_adapters);
    return test_finish();
}
