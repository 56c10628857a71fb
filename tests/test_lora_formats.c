/* Adapters across the model formats autoneg converts between.
 *
 * llama2.c: stories260K (a .bin with interleaved RoPE q/k rows) with an adapter on q/k/v/o and the MLP
 * is saved as a PEFT adapter and the model as a Hugging Face folder (whose q/k rows are permuted to
 * rotate-half order); the Hugging Face folder with the saved adapter must give the .bin model's
 * logits -- which holds only if lora_B's q/k rows were permuted like the weights -- and the adapter
 * loaded back onto the .bin gives identical logits (the inverse permutation). Tolerance 1e-4 of the
 * largest logit: the two models differ only in RoPE's pairing of dimensions, computed with the same
 * float32 angles, so they agree to ~1e-6 (the same bound as test_model_io's llama2.c export check).
 *
 * an_linear_forward, the inference path, against a double-precision reference (see there).
 *
 * QLoRA: a quantized model saves as the float32 model it computes with (an_nf4_tensor_dequantize,
 * bit-exact against bitsandbytes in test_nf4), so the saved folder reloads to its logits within
 * 1e-5 -- sgemm on a dequantized tile against sgemm on the whole dequantized matrix sums in another
 * order. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "infer/infer.h"
#include "model/lora.h"
#include "tests/test_model_util.h"

enum { T = 12 };
static const int32_t ids[T] = {1, 403, 261, 289, 5, 91, 350, 12, 270, 44, 300, 7};

static int logits_of(an_model *m, float *out) {
    an_error e;
    int32_t in_vocab[T];
    for (int i = 0; i < T; i++) in_vocab[i] = ids[i] % m->cfg.vocab_size;
    an_batch b = {in_vocab, NULL, NULL, NULL, 1, T};
    if (an_model_plan(m, 1, T, &e) || an_model_forward(m, &b, 0, 1.0f, NULL, out, &e)) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        return -1;
    }
    return 0;
}

static void test_llama2c_adapter(void) {
    an_error e;
    const char *bin = test_shared("models/stories260K/stories260K.bin");
    an_model *m = an_model_load(bin, an_ops_cpu(), &e);
    CHECK(m != NULL);
    if (!m) return;
    CHECK(m->cfg.rope_interleaved == 1);
    an_lora_config c = an_lora_config_default();
    c.r = 4;
    c.alpha = 8;
    CHECK(an_lora_config_add_target(&c, "all-linear", &e) == 0);
    CHECK(an_lora_attach(m, &c, &e) == 0);
    /* random B (a fresh adapter's B is zero and would hide any permutation error) */
    an_rng rng;
    an_rng_seed(&rng, 3);
    for (int i = 0; i < m->lora->n_mods; i++) {
        an_param *bt = &m->lora->mods[i].bt;
        for (size_t k = 0; k < bt->numel; k++) bt->data[k] = 0.2f * an_rng_normal(&rng);
    }
    int V = m->cfg.vocab_size;
    float *l1 = malloc(sizeof(float) * T * V), *l2 = malloc(sizeof(float) * T * V), *l0 = malloc(sizeof(float) * T * V);
    CHECK(logits_of(m, l1) == 0);

    char adir[512], mdir[512];
    snprintf(adir, sizeof adir, "%s/stories-adapter", test_tmpdir());
    snprintf(mdir, sizeof mdir, "%s/stories-hf", test_tmpdir());
    CHECK(an_lora_save(m, adir, &e) == 0);
    an_model *base = an_model_load(bin, an_ops_cpu(), &e);
    CHECK(base && an_model_save(base, mdir, &e) == 0);
    CHECK(base && logits_of(base, l0) == 0);
    CHECK(test_max_rel_err(l1, l0, (size_t)T * V, 1e-12) > 1e-3); /* the adapter does change the logits */

    an_model *hf = an_model_load(mdir, an_ops_cpu(), &e);
    CHECK(hf && hf->cfg.rope_interleaved == 0);
    if (hf) {
        CHECK(an_lora_load(hf, adir, &e) == 0);
        CHECK(logits_of(hf, l2) == 0);
        double err = test_max_rel_err(l2, l1, (size_t)T * V, 1e-12);
        CHECK_MSG(err < 1e-4, "Hugging Face export + saved adapter: logits rel err %.3g", err);
    }
    if (base) {
        CHECK(an_lora_load(base, adir, &e) == 0);
        CHECK(logits_of(base, l2) == 0);
        CHECK(memcmp(l1, l2, sizeof(float) * T * V) == 0);
    }
    an_model_free(hf);
    an_model_free(base);
    an_model_free(m);
    free(l0);
    free(l1);
    free(l2);
}

static void test_qlora_model_saves_dequantized(void) {
    an_model *m = load_fixture_model("llama");
    if (!m) return;
    an_error e;
    size_t before = an_model_bytes_params(m);
    CHECK(an_model_quantize_nf4(m, 64, 1, &e) == 0);
    /* the linears hold ~0.52 bytes per weight; the embedding and head stay float32 */
    CHECK(an_model_bytes_params(m) < before);
    int V = m->cfg.vocab_size;
    float *l1 = malloc(sizeof(float) * T * V), *l2 = malloc(sizeof(float) * T * V);
    CHECK(logits_of(m, l1) == 0);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/llama-nf4-saved", test_tmpdir());
    CHECK(an_model_save(m, dir, &e) == 0);
    an_model *r = an_model_load(dir, an_ops_cpu(), &e);
    CHECK(r != NULL);
    if (r) {
        CHECK(logits_of(r, l2) == 0);
        double err = test_max_rel_err(l2, l1, (size_t)T * V, 1e-12);
        CHECK_MSG(err < 1e-5, "saved NF4 model: logits rel err %.3g", err);
    }
    /* quantizing twice is refused; quantizing after planning plans again (the plan's workspace grows
     * for the NF4 kernels), so the forward runs and gives the quantized model's logits, bit for bit */
    CHECK(an_model_quantize_nf4(m, 64, 1, &e) == -1);
    CHECK_CONTAINS(e.msg, "already quantized");
    an_model *p = load_fixture_model("llama");
    CHECK(p && an_model_plan(p, 1, T, &e) == 0 && an_model_quantize_nf4(p, 64, 1, &e) == 0);
    CHECK(p && p->plan.linear_work_bytes >= an_model_linear_work_bytes(p, NULL, T));
    if (p) { /* no an_model_plan here: the one quantizing made */
        int32_t in_vocab[T];
        for (int i = 0; i < T; i++) in_vocab[i] = ids[i] % p->cfg.vocab_size;
        an_batch b = {in_vocab, NULL, NULL, NULL, 1, T};
        CHECK_MSG(an_model_forward(p, &b, 0, 1.0f, NULL, l2, &e) == 0, "%s", e.msg);
        CHECK(memcmp(l1, l2, sizeof(float) * T * V) == 0);
    }
    an_model_free(p);
    an_model_free(r);
    an_model_free(m);
    free(l1);
    free(l2);
}

/* an_infer_linear (the unmerged inference path: the typed linear op, then the adapter) against W x + b + (alpha / r) B A x in double, with
 * A and B read straight from PEFT's adapter file: float32 and NF4 bases, adapted and plain layers.
 * Tolerance 1e-5 of the largest |output|: float32 sums of 32..64 terms. */
static void check_linear_forward(int qlora) {
    an_model *m = load_fixture_model("qwen2"); /* q/k/v biases: the bias path too */
    if (!m) return;
    an_error e;
    if (qlora) CHECK(an_model_quantize_nf4(m, 64, 1, &e) == 0);
    CHECK(an_lora_load(m, "tests/ref/lora/qwen2", &e) == 0);
    an_safetensors st;
    CHECK(an_st_open(&st, "tests/ref/lora/qwen2/adapter_model.safetensors", &e) == 0);
    const int N = 3;
    an_infer *s = an_infer_create(m, m->lora, 1, 8, 8, &e); /* its workspace and the adapter's scratch */
    CHECK_MSG(s != NULL, "%s", e.msg);
    an_param *ws[2] = {m->layers[1].wq, m->tok_emb}, *bs[2] = {m->layers[1].bq, NULL}; /* head: not adapted */
    const char *mods[2] = {"model.layers.1.self_attn.q_proj", NULL};
    for (int k = 0; k < 2; k++) {
        an_param *w = ws[k];
        int in = (int)w->shape[1], out = (int)w->shape[0], r = 4;
        float *x = malloc(sizeof(float) * N * in), *y = malloc(sizeof(float) * N * out);
        float *wf = malloc(sizeof(float) * in * out), *tmp = malloc(sizeof(float) * in * out);
        double *ref = calloc((size_t)N * out, sizeof(double));
        an_rng rng;
        an_rng_seed(&rng, 11 + k);
        for (int i = 0; i < N * in; i++) x[i] = an_rng_normal(&rng);
        if (s) an_infer_linear(s, w, bs[k], y, x, N);
        an_model_export(m, w, w->data, wf, tmp); /* float32 or dequantized NF4, [out, in] */
        for (int n = 0; n < N; n++)
            for (int o = 0; o < out; o++) {
                double acc = bs[k] ? bs[k]->data[o] : 0;
                for (int i = 0; i < in; i++) acc += (double)wf[(size_t)o * in + i] * x[n * in + i];
                ref[(size_t)n * out + o] = acc;
            }
        if (mods[k]) {
            char ka[200], kb[200];
            snprintf(ka, sizeof ka, "base_model.model.%s.lora_A.weight", mods[k]);
            snprintf(kb, sizeof kb, "base_model.model.%s.lora_B.weight", mods[k]);
            float *A = fx_floats(&st, ka, NULL), *B = fx_floats(&st, kb, NULL);
            for (int n = 0; A && B && n < N; n++)
                for (int o = 0; o < out; o++)
                    for (int j = 0; j < r; j++) {
                        double ax = 0;
                        for (int i = 0; i < in; i++) ax += (double)A[j * in + i] * x[n * in + i];
                        ref[(size_t)n * out + o] += 2.0 * B[o * r + j] * ax; /* alpha 8 / r 4 */
                    }
            free(A);
            free(B);
        }
        double worst = 0, scale = 0;
        for (int i = 0; i < N * out; i++) scale = test_nan_max(scale, fabs(ref[i]));
        for (int i = 0; i < N * out; i++) worst = test_nan_max(worst, fabs(y[i] - ref[i]) / scale);
        CHECK_MSG(worst < 1e-5, "%s linear %d: rel err %.3g", qlora ? "nf4" : "f32", k, worst);
        free(x);
        free(y);
        free(wf);
        free(tmp);
        free(ref);
    }
    an_st_close(&st);
    an_infer_free(s);
    an_model_free(m);
}

static void test_linear_forward(void) { check_linear_forward(0); }
static void test_linear_forward_nf4(void) { check_linear_forward(1); }

int main(void) {
    RUN(test_linear_forward);
    RUN(test_linear_forward_nf4);
    RUN(test_llama2c_adapter);
    RUN(test_qlora_model_saves_dequantized);
    return test_finish();
}
