/* Gradient checkpointing per layer (an_model_set_recompute) against the plain path.
 *
 * Recomputation runs the same op calls on the same inputs, so the reference is the model itself
 * without recomputation: losses and every gradient must be bit-identical (memcmp, no tolerance),
 * for each family of tests/ref/models (GPT-2, Llama, Llama with biases, Qwen2, InternLM2), with
 * full fine-tuning, with a LoRA adapter whose dropout is 0.2 (masks regenerated in the recomputed
 * forward), and with QLoRA (NF4 base + the same adapter). Two forward/backward passes accumulate
 * into the gradients so the second dropout seed is exercised too.
 *
 * The activation bytes: the recomputed plan must be smaller than the plain one by exactly
 * (L - 1) layers' worth of activations other than the layer input, plus (L - 1) layers' worth of
 * adapter u buffers -- counted here by hand from the buffer list of model/plan.c. And the
 * QLoRA step must not allocate (glibc's in-use heap bytes unchanged across a step after a warm-up). */
#include <malloc.h>
#include <string.h>

#include "model/lora.h"
#include "model/nf4_weights.h"
#include "model/qlora_plan.h"
#include "tests/test_model_util.h"

enum { MODE_FULL, MODE_LORA, MODE_QLORA };

static size_t buf(size_t n) { return (n * 4 + 63) / 64 * 64; }

static an_model *build(const char *name, int mode, int recompute, int B, int T) {
    an_model *m = load_fixture_model(name);
    if (!m) return NULL;
    an_error e;
    if (mode == MODE_QLORA) CHECK_MSG(an_model_quantize_nf4(m, 64, 1, &e) == 0, "%s", e.msg);
    if (mode != MODE_FULL) {
        an_lora_config c = an_lora_config_default();
        c.r = 4;
        c.alpha = 8;
        c.dropout = 0.2f;
        CHECK(an_lora_config_add_target(&c, "all-linear", &e) == 0);
        CHECK_MSG(an_lora_attach(m, &c, &e) == 0, "%s", e.msg);
        /* B starts at zero, which would leave dA zero: give it values so every adapter gradient counts */
        for (int i = 0; m->lora && i < m->lora->n_mods; i++) {
            an_param *bt = &m->lora->mods[i].bt;
            for (size_t k = 0; k < bt->numel; k++) bt->data[k] = 0.01f * (float)((int)((k * 37 + (size_t)i * 11) % 17) - 8);
        }
    } else {
        an_model_set_all_trainable(m, 1);
        CHECK(an_model_alloc_grads(m, &e) == 0);
    }
    an_model_set_recompute(m, recompute);
    CHECK_MSG(an_model_plan(m, B, T, &e) == 0, "%s", e.msg);
    return m;
}

static void make_batch(const an_model *m, int32_t *ids, int32_t *tg, int N, int salt) {
    for (int n = 0; n < N; n++) {
        ids[n] = (int32_t)(((unsigned)n * 2654435761u + (unsigned)salt * 97u) % (unsigned)m->cfg.vocab_size);
        tg[n] = n % 5 == 2 ? AN_IGNORE_INDEX : (int32_t)(((unsigned)n * 40503u + 7u) % (unsigned)m->cfg.vocab_size);
    }
}

/* two forward/backward passes; losses out */
static int run_steps(an_model *m, int B, int T, float loss[2]) {
    int32_t ids[64], tg[64];
    an_error e;
    for (int s = 0; s < 2; s++) {
        make_batch(m, ids, tg, B * T, s);
        an_batch b = {ids, NULL, NULL, tg, B, T};
        if (an_model_forward(m, &b, 1, 1.0f, &loss[s], NULL, &e) || an_model_backward(m, &e)) {
            test_fail_at(__FILE__, __LINE__, "%s", e.msg);
            return -1;
        }
    }
    return 0;
}

static void compare_grads(const char *tag, const float *a, const float *b, size_t n) {
    CHECK_MSG(n > 0 && memcmp(a, b, n * sizeof(float)) == 0, "%s: gradients differ with recomputation", tag);
    /* bit-identical NaNs would pass the memcmp, and NaN != 0 the nonzero test: require finite too */
    int nonzero = 0, finite = 1;
    for (size_t i = 0; i < n; i++) nonzero |= a[i] != 0.0f, finite &= isfinite(a[i]) != 0;
    CHECK_MSG(nonzero, "%s: all gradients zero (the comparison would prove nothing)", tag);
    CHECK_MSG(finite, "%s: gradients not finite (the comparison would prove nothing)", tag);
}

/* The activations of one layer besides its input, as model/plan.c lists them. */
static size_t layer_bytes(const an_model_config *c, size_t N) {
    int gpt2 = c->arch == AN_ARCH_GPT2;
    size_t C = (size_t)c->dim, F = (size_t)c->ffn_dim, qd = (size_t)c->n_heads * c->head_dim,
           kvd = (size_t)c->n_kv_heads * c->head_dim;
    return 3 * buf(N * C) /* ln1, res_mid, ln2 */ + (gpt2 ? 4 : 2) * buf(N) /* norm statistics */ +
           2 * buf(N * qd) + 2 * buf(N * kvd) /* q, att; k, v */ + buf(N * (size_t)c->n_heads) /* lse */ +
           (gpt2 ? 2 : 3) * buf(N * F);
}

static void check_family(const char *name, int mode) {
    const int B = 2, T = 5;
    char tag[96];
    snprintf(tag, sizeof tag, "%s/%s", name, mode == MODE_FULL ? "full" : mode == MODE_LORA ? "lora" : "qlora");
    an_model *plain = build(name, mode, 0, B, T), *rec = build(name, mode, 1, B, T);
    if (!plain || !rec) goto done;
    float l0[2], l1[2];
    if (run_steps(plain, B, T, l0) || run_steps(rec, B, T, l1)) goto done;
    CHECK_MSG(memcmp(l0, l1, sizeof l0) == 0 && isfinite(l0[0]) && isfinite(l0[1]), "%s: losses %.9g %.9g vs %.9g %.9g",
              tag, l0[0], l0[1], l1[0], l1[1]);
    if (mode == MODE_FULL) compare_grads(tag, plain->grad_mem, rec->grad_mem, plain->n_grad_floats);
    else compare_grads(tag, plain->lora->grad_mem, rec->lora->grad_mem, plain->lora->n_floats);

    size_t L = (size_t)plain->cfg.n_layers, N = (size_t)B * T;
    size_t u_per_layer = mode == MODE_FULL ? 0 : (size_t)(plain->cfg.arch == AN_ARCH_LLAMA ? 7 : plain->cfg.arch == AN_ARCH_GPT2 ? 4 : 5) * buf(N * 4);
    size_t saved = (L - 1) * (layer_bytes(&plain->cfg, N) + u_per_layer);
    CHECK_MSG(an_model_bytes_activations(plain) - an_model_bytes_activations(rec) == saved,
              "%s: plain %zu, recomputed %zu, expected a difference of %zu", tag, an_model_bytes_activations(plain),
              an_model_bytes_activations(rec), saved);
    if (mode == MODE_QLORA) { /* model/qlora_plan.c's figure is what the recomputed plan allocates */
        an_memory_opts o = an_memory_opts_default();
        o.B = B;
        o.T = T;
        o.r = 4;
        o.dropout = 1;
        o.ops = rec->ops; /* the backend's workspace sizes (the CPU, or AN_TEST_DEVICE's) */
        an_memory_plan p;
        an_error e;
        CHECK(an_memory_plan_compute(&rec->cfg, &o, &p, &e) == 0);
        CHECK_MSG(p.activations_recompute + p.workspace == an_model_bytes_activations(rec),
                  "%s: planned %zu + %zu, allocated %zu", tag, p.activations_recompute, p.workspace,
                  an_model_bytes_activations(rec));
    }
done:
    an_model_free(plain);
    an_model_free(rec);
}

static void test_bit_identical(void) {
    const char *families[] = {"gpt2", "llama", "llama-bias", "qwen2", "internlm2"};
    for (int f = 0; f < 5; f++)
        for (int mode = MODE_FULL; mode <= MODE_QLORA; mode++) check_family(families[f], mode);
}

/* The factor on a deeper model: the fixture Llama's shapes with 8 layers (random weights) at
 * 2 x 32 tokens. Per layer the plain plan holds the input (N x C) plus layer_bytes; the recomputed
 * one holds the 8 inputs and one layer_bytes, so it must be smaller by exactly 7 layer_bytes, and
 * since layer_bytes is about 3 + 2*qd/C + ... times the input, the ratio is well above 2. */
static void test_factor(void) {
    an_model *f = load_fixture_model("llama");
    if (!f) return;
    an_model_config cfg = f->cfg;
    an_model_free(f);
    cfg.n_layers = 8;
    an_error e;
    an_model *m[2] = {NULL, NULL};
    size_t bytes[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        m[k] = an_model_init_random(&cfg, an_ops_cpu(), 7, &e);
        if (!m[k]) break;
        an_model_set_recompute(m[k], k);
        CHECK(an_model_plan(m[k], 2, 32, &e) == 0);
        bytes[k] = an_model_bytes_activations(m[k]);
    }
    if (m[0] && m[1]) {
        size_t layer = layer_bytes(&cfg, 64);
        CHECK_MSG(bytes[0] - bytes[1] == 7 * layer, "plain %zu, recomputed %zu, one layer %zu", bytes[0], bytes[1], layer);
        double ratio = (double)bytes[0] / (double)bytes[1];
        CHECK_MSG(ratio > 2.0, "8 layers: activations only %.2fx smaller", ratio);
        printf("  8 layers, 2 x 32 tokens: activations %zu -> %zu bytes (%.2fx)\n", bytes[0], bytes[1], ratio);
    }
    an_model_free(m[0]);
    an_model_free(m[1]);
}

/* A recomputed QLoRA step allocates nothing: after one warm-up step (OpenMP and BLAS set up their
 * threads then) the heap's in-use bytes are the same before and after a step. */
static void test_no_allocation(void) {
    an_model *m = build("internlm2", MODE_QLORA, 1, 2, 5);
    if (!m) return;
    float loss[2];
    run_steps(m, 2, 5, loss);
    size_t before = mallinfo2().uordblks;
    run_steps(m, 2, 5, loss);
    size_t after = mallinfo2().uordblks;
    CHECK_MSG(before == after, "heap in use %zu before a step, %zu after", before, after);
    an_model_free(m);
}

int main(void) {
    RUN(test_bit_identical);
    RUN(test_factor);
    RUN(test_no_allocation);
    return test_finish();
}
