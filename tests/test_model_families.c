/* The three families against PyTorch (tests/ref/make_model_fixtures.py): tiny random GPT-2, Llama
 * (grouped-query, untied head), Qwen2 (q/k/v biases, tied head, stored as BF16), a Llama with every
 * bias and one kv head, and InternLM2 (fused grouped wqkv). For each: logits, loss, every parameter's
 * gradient, and five AdamW steps with clipping at 1.
 *
 * Tolerances. Logits and loss: 1e-4 of the largest |reference| -- float32 sums of a few dozen terms
 * in a different order differ by ~1e-6 relative, so 1e-4 leaves room but catches any wrong term.
 * Gradients: 1e-3 of each tensor's largest |gradient| -- backward chains ~10 ops and reduces over
 * the batch, and small gradients of tiny tensors (biases) carry the most relative rounding.
 * AdamW losses: 1e-4 relative; the five updates move the loss by ~0.3, so a wrong bias correction
 * or clip shows up as > 1e-3. The reference decays the matrices only (two parameter groups, the rule
 * of train/optim.h); decaying the norm weights and biases too moves these losses by only 2e-6 to 5e-6
 * (lr 1e-3 x decay 0.01 over five steps), which tests/test_optim.c catches instead. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/step.h"
#include "tests/test_model_util.h"

static const an_adamw_config adam = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 1.0f};

static void check_family(const char *name) {
    an_safetensors fx;
    if (open_fixture(&fx, name)) return;
    an_model *m = load_fixture_model(name);
    if (!m) {
        an_st_close(&fx);
        return;
    }
    size_t n_ids = 0, n_logits = 0;
    int32_t *ids = fx_ints(&fx, "ids", &n_ids);
    int32_t *targets = fx_ints(&fx, "targets", NULL);
    float *ref_logits = fx_floats(&fx, "logits", &n_logits);
    float *ref_loss = fx_floats(&fx, "loss", NULL);
    float *ref_adam = fx_floats(&fx, "adam_loss", NULL);
    float *ref_gnorm = fx_floats(&fx, "adam_gnorm", NULL);
    const an_st_tensor *tid = an_st_find(&fx, "ids");
    int B = (int)tid->shape[0], T = (int)tid->shape[1], V = m->cfg.vocab_size;
    CHECK(n_logits == (size_t)B * T * V);

    an_error e;
    /* 5 rows per LM-head chunk, so the 32 rows take 7 chunks and the last one is partial */
    m->head_rows = 5;
    CHECK(an_model_plan(m, B, T, &e) == 0);
    an_full_trainer tr;
    CHECK(an_full_trainer_init(&tr, m, &e) == 0);
    an_batch batch = {ids, NULL, NULL, targets, B, T};

    float *logits = malloc(n_logits * sizeof(float));
    size_t maxn = 0;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].numel > maxn) maxn = m->params[i].numel;
    float *g = malloc(maxn * sizeof(float)), *tmp = malloc(maxn * sizeof(float));
    /* Twice: asking for the logits runs the head over every row; training runs it only over the rows
     * with a target, gathered. Both must give the reference loss and gradients. */
    for (int want_logits = 1; want_logits >= 0; want_logits--) {
        float loss = 0;
        an_model_zero_grad(m);
        CHECK(an_model_forward(m, &batch, 1, 1.0f, &loss, want_logits ? logits : NULL, &e) == 0);
        CHECK(an_model_backward(m, &e) == 0);
        double lerr = want_logits ? test_max_rel_err(logits, ref_logits, n_logits, 1e-12) : 0;
        CHECK_MSG(lerr < 1e-4, "%s: logits rel err %.3g", name, lerr);
        CHECK_MSG(fabs(loss - ref_loss[0]) < 1e-4 * ref_loss[0], "%s: loss %.7f vs %.7f", name, loss, ref_loss[0]);
        double worst = 0;
        const char *worst_name = "";
        /* Full fine-tuning trains every parameter and the fixture holds torch's gradient of each, so a
         * parameter without a gradient here or without a reference there is a failure, not a skip;
         * and every reference must be matched by a parameter: a tensor torch trains that the model
         * lacks (say a bias that is zero at init, so logits and loss still agree) shows up only here. */
        int checked = 0, expected = 0;
        for (int i = 0; i < fx.n_tensors; i++) expected += strncmp(fx.tensors[i].name, "grad.", 5) == 0;
        for (int i = 0; i < m->n_params; i++) {
            an_param *p = &m->params[i];
            char key[160];
            snprintf(key, sizeof key, "grad.%s", p->name);
            int have_ref = an_st_find(&fx, key) != NULL;
            CHECK_MSG(have_ref, "%s: %s has no reference gradient in the fixture", name, p->name);
            CHECK_MSG(p->trainable && p->grad, "%s: %s is not trained (no gradient)", name, p->name);
            if (!have_ref || !p->grad) continue;
            size_t n = 0;
            float *ref = fx_floats(&fx, key, &n);
            if (!ref) continue; /* fx_floats has failed the test */
            CHECK_MSG(n == p->numel, "%s: %s has %zu values, fixture %zu", name, p->name, p->numel, n);
            if (n == p->numel) {
                an_model_export(m, p, p->grad, g, tmp);
                double err = test_max_rel_err(g, ref, n, 1e-12);
                CHECK_MSG(err < 1e-3, "%s: gradient of %s rel err %.3g", name, p->name, err);
                if (test_nan_worse(err, worst)) worst = err, worst_name = p->name;
                checked++;
            }
            free(ref);
        }
        CHECK_MSG(checked == m->n_params && checked == expected && checked > 0,
                  "%s: %d gradients checked of %d parameters; the fixture has %d", name, checked, m->n_params, expected);
        if (want_logits)
            printf("%s: logits rel err %.2g, loss %.6f (torch %.6f), worst gradient rel err %.2g (%s)\n", name, lerr,
                   loss, ref_loss[0], worst, worst_name);
        else
            printf("%s: trained rows only: loss %.6f, worst gradient rel err %.2g (%s)\n", name, loss, worst,
                   worst_name);
    }

    for (int s = 0; s < 5; s++) {
        an_step_stats st;
        CHECK(an_train_step(&tr, &batch, &adam, &st, &e) == 0);
        CHECK_MSG(fabs(st.loss - ref_adam[s]) < 1e-4 * ref_adam[s], "%s: AdamW step %d loss %.6f vs %.6f", name, s + 1,
                  st.loss, ref_adam[s]);
        CHECK_MSG(fabs(st.grad_norm - ref_gnorm[s]) < 1e-3 * ref_gnorm[s], "%s: step %d grad norm %.6f vs %.6f", name,
                  s + 1, st.grad_norm, ref_gnorm[s]);
        if (s == 4) printf("%s: AdamW step 5 loss %.6f (torch %.6f)\n", name, st.loss, ref_adam[s]);
    }
    an_full_trainer_free(&tr);
    free(g);
    free(tmp);
    free(logits);
    free(ids);
    free(targets);
    free(ref_logits);
    free(ref_loss);
    free(ref_adam);
    free(ref_gnorm);
    an_model_free(m);
    an_st_close(&fx);
}

static void test_gpt2(void) { check_family("gpt2"); }
static void test_llama_gqa_untied(void) { check_family("llama"); }
static void test_qwen2_bias_tied_bf16(void) { check_family("qwen2"); }
/* attention_bias (q/k/v/o) and mlp_bias, a single kv head, tied head; its gradient norm stays under 1,
 * so this one also covers steps without clipping */
static void test_llama_all_biases_one_kv_head(void) { check_family("llama-bias"); }
static void test_internlm2_fused_wqkv(void) { check_family("internlm2"); }

/* The original OpenAI GPT-2 key style (no "transformer." prefix, attn.bias buffers, no lm_head) loads
 * to exactly the same parameters as the transformers save of the same weights. */
static void test_gpt2_original_keys_load_identically(void) {
    an_model *a = load_fixture_model("gpt2"), *b = load_fixture_model("gpt2-original-keys");
    if (!a || !b) goto done;
    CHECK(a->n_param_floats == b->n_param_floats);
    CHECK(memcmp(a->param_mem, b->param_mem, a->n_param_floats * sizeof(float)) == 0);
done:
    an_model_free(a);
    an_model_free(b);
}

int main(void) {
    RUN(test_gpt2);
    RUN(test_llama_gqa_untied);
    RUN(test_qwen2_bias_tied_bf16);
    RUN(test_llama_all_biases_one_kv_head);
    RUN(test_internlm2_fused_wqkv);
    RUN(test_gpt2_original_keys_load_identically);
    return test_finish();
}
