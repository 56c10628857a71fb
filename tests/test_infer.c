/* KV-cache inference against the full forward (an_model_forward with logits_out), for every family:
 * GPT-2, Llama (grouped-query, untied), Qwen2 (q/k/v biases, tied), InternLM2 (fused grouped wqkv),
 * and the real stories260K (llama2.c, interleaved RoPE) and TinyStories-656K.
 *
 * The full forward itself matches PyTorch (tests/test_model_families.c, test_model_real.c), so it is
 * the reference here. Tolerance: 1e-4 of the largest |logit|, as the model tests use against PyTorch:
 * the KV path runs the same ops on the same numbers, only the attention of a decode step and the
 * matrix-vector products sum in another order (float32 rounding ~1e-6 relative). A wrong position,
 * mask, cache slot or RoPE angle gives errors of order 1. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "infer/generate.h"
#include "infer/infer.h"
#include "model/lora.h"
#include "tests/test_model_util.h"

/* Full-forward logits of one sequence [T, V] (malloc'd). */
static float *full_logits(an_model *m, const int32_t *ids, int T) {
    an_error e;
    float *out = malloc((size_t)T * m->cfg.vocab_size * sizeof(float));
    CHECK_MSG(an_model_plan(m, 1, T, &e) == 0, "%s", e.msg);
    an_batch b = {ids, NULL, NULL, NULL, 1, T};
    CHECK_MSG(an_model_forward(m, &b, 0, 1.0f, NULL, out, &e) == 0, "%s", e.msg);
    return out;
}

static double row_err(const float *a, const float *ref, int V) { return test_max_rel_err(a, ref, (size_t)V, 1e-12); }

/* Sequences of different lengths in several slots at once: prefill the first `pre[i]` tokens of each
 * (one batch), then decode the rest one token per step with all unfinished sequences together; every
 * step's logits must match the full forward of that sequence alone. */
static void check_kv_against_full(an_model *m, const char *name, int nseq, const int *lens, const int *pre,
                                  const int32_t *const *seqs) {
    int V = m->cfg.vocab_size, maxlen = 0;
    for (int i = 0; i < nseq; i++) maxlen = lens[i] > maxlen ? lens[i] : maxlen;
    float **ref = calloc((size_t)nseq, sizeof *ref);
    for (int i = 0; i < nseq; i++) ref[i] = full_logits(m, seqs[i], lens[i]);
    an_error e;
    /* slots in reverse order, so slot and sequence index differ */
    an_infer *s = an_infer_create(m, m->lora, nseq + 1, maxlen, 0, &e);
    CHECK_MSG(s != NULL, "%s: %s", name, s ? "" : e.msg);
    if (!s) goto done;
    int32_t slots[8], ids[8];
    float *logits = malloc((size_t)nseq * V * sizeof(float));
    for (int i = 0; i < nseq; i++) slots[i] = nseq - i;
    CHECK_MSG(an_infer_prefill(s, slots, seqs, pre, nseq, logits, &e) == 0, "%s", e.msg);
    double worst = 0;
    for (int i = 0; i < nseq; i++) {
        double err = row_err(logits + (size_t)i * V, ref[i] + (size_t)(pre[i] - 1) * V, V);
        worst = test_nan_max(worst, err);
        CHECK_MSG(err < 1e-4, "%s: prefill of sequence %d (%d tokens): rel err %.3g", name, i, pre[i], err);
    }
    for (int t = 1; t < maxlen; t++) {
        int n = 0, which[8];
        for (int i = 0; i < nseq; i++)
            if (t >= pre[i] && t < lens[i]) {
                slots[n] = nseq - i;
                ids[n] = seqs[i][t];
                which[n++] = i;
            }
        if (n == 0) continue;
        CHECK_MSG(an_infer_decode(s, slots, ids, n, logits, &e) == 0, "%s", e.msg);
        for (int r = 0; r < n; r++) {
            int i = which[r];
            double err = row_err(logits + (size_t)r * V, ref[i] + (size_t)t * V, V);
            worst = test_nan_max(worst, err);
            CHECK_MSG(err < 1e-4, "%s: decode of sequence %d at position %d: rel err %.3g", name, i, t, err);
        }
    }
    printf("%s: KV-cache logits vs full forward, worst rel err %.2g\n", name, worst);
    free(logits);
    an_infer_free(s);
done:
    for (int i = 0; i < nseq; i++) free(ref[i]);
    free(ref);
}

static void check_family(const char *name, an_model *m) {
    if (!m) return;
    int V = m->cfg.vocab_size;
    /* three sequences of different lengths; prefill 1, 4 and 7 tokens of them */
    enum { L0 = 19, L1 = 9, L2 = 14 };
    int32_t a[L0], b[L1], c[L2];
    an_rng r;
    an_rng_seed(&r, 7);
    for (int i = 0; i < L0; i++) a[i] = (int32_t)an_rng_below(&r, (uint64_t)V);
    for (int i = 0; i < L1; i++) b[i] = (int32_t)an_rng_below(&r, (uint64_t)V);
    for (int i = 0; i < L2; i++) c[i] = (int32_t)an_rng_below(&r, (uint64_t)V);
    const int32_t *seqs[3] = {a, b, c};
    int lens[3] = {L0, L1, L2}, pre[3] = {1, 4, 7};
    check_kv_against_full(m, name, 3, lens, pre, seqs);
    an_model_free(m);
}

static void test_gpt2(void) { check_family("gpt2", load_fixture_model("gpt2")); }
static void test_llama(void) { check_family("llama", load_fixture_model("llama")); }
static void test_qwen2(void) { check_family("qwen2", load_fixture_model("qwen2")); }
static void test_internlm2(void) { check_family("internlm2", load_fixture_model("internlm2")); }
static void test_llama_bias(void) { check_family("llama-bias", load_fixture_model("llama-bias")); }

/* A model with the PEFT adapter the LoRA tests made for it (tests/ref/lora/NAME, applied unmerged). */
static an_model *with_adapter(const char *name) {
    an_model *m = load_fixture_model(name);
    char dir[256];
    snprintf(dir, sizeof dir, "tests/ref/lora/%s", name);
    an_error e;
    if (m && an_lora_load(m, dir, &e)) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        an_model_free(m);
        return NULL;
    }
    return m;
}

/* The adapter really changes the model (so the checks below are not those of the base again), and the
 * KV-cache path applies it as the full forward does (the full forward with adapters matches PEFT in
 * test_lora). */
static void check_adapter(const char *name) {
    an_model *base = load_fixture_model(name), *m = with_adapter(name);
    if (!base || !m) {
        an_model_free(base);
        an_model_free(m);
        return;
    }
    int32_t ids[6] = {1, 5, 9, 2, 7, 3};
    float *a = full_logits(base, ids, 6), *b = full_logits(m, ids, 6);
    double diff = test_max_rel_err(a, b, (size_t)6 * m->cfg.vocab_size, 1e-12);
    CHECK_MSG(diff > 1e-3, "%s: the adapter changes the logits by only %.3g", name, diff);
    free(a);
    free(b);
    an_model_free(base);
    char label[64];
    snprintf(label, sizeof label, "%s + LoRA", name);
    check_family(label, m);
}

static void test_lora_gpt2(void) { check_adapter("gpt2"); }
static void test_lora_llama(void) { check_adapter("llama"); }
static void test_lora_llama_bias(void) { check_adapter("llama-bias"); }
static void test_lora_qwen2(void) { check_adapter("qwen2"); }
static void test_lora_internlm2(void) { check_adapter("internlm2"); }

/* QLoRA: the base quantized to NF4 with the adapter on top; the decode path hands NF4 layers to the
 * model's own linear, so the KV-cache logits still match the full forward of the same quantized model. */
static void test_qlora_nf4_base(void) {
    an_model *m = load_fixture_model("llama");
    if (!m) return;
    an_error e;
    CHECK_MSG(an_model_quantize_nf4(m, 64, 1, &e) == 0, "%s", e.msg);
    CHECK_MSG(an_lora_load(m, "tests/ref/lora/llama", &e) == 0, "%s", e.msg);
    CHECK(an_model_is_quantized(m));
    check_family("llama NF4 + LoRA", m);
}

/* An adapter made for another base: the error names the adapter file and what disagrees. */
static void test_lora_wrong_base(void) {
    an_model *m = load_fixture_model("qwen2");
    if (!m) return;
    an_error e;
    CHECK(an_lora_load(m, "tests/ref/lora/internlm2", &e) == -1);
    CHECK_CONTAINS(e.msg, "tests/ref/lora/internlm2");
    printf("wrong base: %s\n", e.msg);
    an_model_free(m);
    /* same module names, other shapes: Qwen2's adapter (hidden 32) on the Llama with hidden 16 */
    m = load_fixture_model("llama-bias");
    if (!m) return;
    CHECK(an_lora_load(m, "tests/ref/lora/qwen2", &e) == -1);
    CHECK_CONTAINS(e.msg, "tests/ref/lora/qwen2/adapter_model.safetensors");
    CHECK_CONTAINS(e.msg, "shape");
    printf("wrong shapes: %s\n", e.msg);
    an_model_free(m);
}

static an_model *load_shared(const char *rel) {
    an_error e;
    an_model *m = an_model_load(test_shared(rel), an_ops_cpu(), &e);
    if (!m) test_fail_at(__FILE__, __LINE__, "%s", e.msg);
    return m;
}

static void test_stories260K(void) { check_family("stories260K", load_shared("models/stories260K/stories260K.bin")); }
static void test_tinystories656K(void) { check_family("TinyStories-656K", load_shared("models/TinyStories-656K")); }

/* Greedy generation from BOS with the KV cache gives the 40 ids the model branch recorded from PyTorch
 * (tests/ref/models/real/stories260K.safetensors "greedy", BOS included). */
static void test_stories260K_greedy_matches_pytorch(void) {
    an_model *m = load_shared("models/stories260K/stories260K.bin");
    if (!m) return;
    an_safetensors fx;
    an_error e;
    if (an_st_open(&fx, MODEL_FIXTURES "/real/stories260K.safetensors", &e)) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        an_model_free(m);
        return;
    }
    size_t n = 0;
    int32_t *ref = fx_ints(&fx, "greedy", &n);
    an_gen_opts o = an_gen_defaults();
    o.sampling.temperature = 0;
    o.max_tokens = (int)n - 1;
    int32_t bos = 1;
    an_gen_prompt p = {&bos, 1};
    an_gen_output out = {0};
    CHECK_MSG(an_generate(m, m->lora, &p, 1, 1, &o, &out, &e) == 0, "%s", e.msg);
    CHECK(out.n == (int)n - 1);
    CHECK(out.stop == AN_STOP_MAX_TOKENS);
    CHECK(out.n == (int)n - 1 && memcmp(out.ids, ref + 1, (n - 1) * sizeof(int32_t)) == 0);
    an_gen_outputs_free(&out, 1);
    free(ref);
    an_st_close(&fx);
    an_model_free(m);
}

/* Many prompts of different lengths decoded together (batch 3 with continuous batching, and 2
 * samples each) give the same tokens as each prompt alone with batch 1: greedy, and sampled with a
 * seed (each sequence has its own random stream). */
static void test_batched_equals_one_at_a_time(void) {
    an_model *m = load_shared("models/stories260K/stories260K.bin");
    if (!m) return;
    int32_t p0[] = {1, 403, 407, 261, 378}, p1[] = {1}, p2[] = {1, 403, 407, 261, 378, 412, 300, 263, 290, 268, 264},
            p3[] = {1, 319, 290};
    an_gen_prompt prompts[4] = {{p0, 5}, {p1, 1}, {p2, 11}, {p3, 3}};
    for (int sampled = 0; sampled < 2; sampled++) {
        an_gen_opts o = an_gen_defaults();
        o.sampling.temperature = sampled ? 0.9f : 0.0f;
        o.sampling.top_k = sampled ? 20 : 0;
        o.seed = 42;
        o.max_tokens = 24;
        o.n_samples = 2;
        o.stop_ids = (int32_t[]){2};
        o.n_stop_ids = 1;
        an_gen_output together[8] = {{0}}, alone[8] = {{0}};
        an_error e;
        o.batch = 3;
        CHECK_MSG(an_generate(m, m->lora, prompts, 4, 1, &o, together, &e) == 0, "%s", e.msg);
        o.batch = 1; /* one sequence at a time, in order */
        CHECK_MSG(an_generate(m, m->lora, prompts, 4, 1, &o, alone, &e) == 0, "%s", e.msg);
        for (int j = 0; j < 8; j++) {
            CHECK_MSG(together[j].n == alone[j].n && together[j].n > 0 &&
                          memcmp(together[j].ids, alone[j].ids, (size_t)alone[j].n * sizeof(int32_t)) == 0,
                      "%s: sequence %d differs between batch 3 and batch 1 (%d vs %d tokens)",
                      sampled ? "sampled" : "greedy", j, together[j].n, alone[j].n);
        }
        if (!sampled) /* greedy: both samples of a prompt are the same text */
            for (int p = 0; p < 4; p++)
                CHECK(together[2 * p].n == together[2 * p + 1].n &&
                      memcmp(together[2 * p].ids, together[2 * p + 1].ids, (size_t)together[2 * p].n * 4) == 0);
        else /* sampled: the two samples of a prompt differ */
            CHECK(together[0].n != together[1].n ||
                  memcmp(together[0].ids, together[1].ids, (size_t)together[0].n * 4) != 0);
        an_gen_outputs_free(together, 8);
        an_gen_outputs_free(alone, 8);
    }
    an_model_free(m);
}

/* Bad input: empty prompt, a prompt longer than the context (truncated from the left keeping BOS, or
 * refused with strict), bad sampling values. */
static void test_generate_bad_input(void) {
    an_model *m = load_shared("models/stories260K/stories260K.bin");
    if (!m) return;
    an_error e;
    an_gen_opts o = an_gen_defaults();
    o.sampling.temperature = 0;
    o.max_tokens = 4;
    an_gen_output out[2] = {{0}};
    an_gen_prompt empty = {NULL, 0};
    CHECK(an_generate(m, m->lora, &empty, 1, 1, &o, out, &e) == -1);
    CHECK_CONTAINS(e.msg, "prompt 1 is empty");

    int ctx = 16;
    int32_t longp[40];
    longp[0] = 1;
    for (int i = 1; i < 40; i++) longp[i] = 300 + i;
    an_gen_prompt lp = {longp, 40};
    o.context = ctx;
    o.strict = 1;
    CHECK(an_generate(m, m->lora, &lp, 1, 1, &o, out, &e) == -1);
    CHECK_CONTAINS(e.msg, "prompt 1 has 40 tokens");
    CHECK_CONTAINS(e.msg, "--strict");
    o.strict = 0;
    CHECK_MSG(an_generate(m, m->lora, &lp, 1, 1, &o, out, &e) == 0, "%s", e.msg);
    CHECK(out[0].prompt_tokens == ctx - 4 && out[0].truncated == 40 - (ctx - 4));
    /* the kept prompt is BOS + the last 11 tokens: the same as generating from that prompt directly */
    int32_t kept[12];
    kept[0] = 1;
    memcpy(kept + 1, longp + 40 - 11, 11 * sizeof(int32_t));
    an_gen_prompt kp = {kept, 12};
    CHECK_MSG(an_generate(m, m->lora, &kp, 1, 1, &o, out + 1, &e) == 0, "%s", e.msg);
    CHECK(out[0].n == out[1].n && memcmp(out[0].ids, out[1].ids, (size_t)out[0].n * 4) == 0);
    an_gen_outputs_free(out, 2);

    o.sampling.top_p = 1.5f;
    CHECK(an_generate(m, m->lora, &kp, 1, 1, &o, out, &e) == -1);
    CHECK_CONTAINS(e.msg, "--top-p");
    o.sampling.top_p = 0.0f;
    CHECK(an_generate(m, m->lora, &kp, 1, 1, &o, out, &e) == -1);
    CHECK_CONTAINS(e.msg, "(0, 1]");
    o.sampling.top_p = 1.0f;
    o.sampling.temperature = -0.5f;
    CHECK(an_generate(m, m->lora, &kp, 1, 1, &o, out, &e) == -1);
    CHECK_CONTAINS(e.msg, "--temperature -0.5");
    an_model_free(m);
}

int main(void) {
    /* tiny models: every op takes microseconds, less than waking a thread team on a shared 2-core
     * machine, so these run on one thread (the threaded kernels are tested in test_ops and test_infer_ops) */
    omp_set_num_threads(1);
    RUN(test_gpt2);
    RUN(test_llama);
    RUN(test_qwen2);
    RUN(test_internlm2);
    RUN(test_llama_bias);
    RUN(test_lora_gpt2);
    RUN(test_lora_llama);
    RUN(test_lora_llama_bias);
    RUN(test_lora_qwen2);
    RUN(test_lora_internlm2);
    RUN(test_lora_wrong_base);
    RUN(test_qlora_nf4_base);
    RUN(test_stories260K);
    RUN(test_tinystories656K);
    RUN(test_stories260K_greedy_matches_pytorch);
    RUN(test_batched_equals_one_at_a_time);
    RUN(test_generate_bad_input);
    return test_finish();
}
