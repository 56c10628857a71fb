/* "Nothing is allocated inside a step or a decode": every malloc, calloc, realloc, aligned_alloc and
 * posix_memalign that autoneg's own code makes is counted, through link-time wrapping
 * (-Wl,--wrap=malloc,... in the Makefile for this binary: the linker sends our objects' calls to the
 * __wrap_ functions below; OpenBLAS and libgomp keep their own pools and are not ours to count).
 *
 * Training steps (full fine-tuning, LoRA with dropout, QLoRA with a bf16 head, per-layer
 * recomputation) and decode steps (float32, NF4 with an adapter) run once to warm up, then again with
 * counting on: the count must be 0; so must the request engine's steps once its prefix cache is warm. A self-check first proves the wrapping is live (a malloc of ours
 * is counted), so a build that silently lost the linker flags fails instead of passing. */
#include <stdlib.h>
#include <string.h>

#include "infer/engine.h"
#include "infer/infer.h"
#include "model/lora.h"
#include "model/nf4_weights.h"
#include "tests/test_model_util.h"
#include "train/lora_step.h"
#include "train/step.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
int __real_posix_memalign(void **p, size_t a, size_t n);

/* The counter: only this test binary has it, and it runs single-threaded outside the ops' own teams,
 * whose allocations (if any) would be counted too. */
static int counting;
static long counted;

static void note(void) {
    if (counting) __atomic_add_fetch(&counted, 1, __ATOMIC_RELAXED);
}
void *__wrap_malloc(size_t n) {
    note();
    return __real_malloc(n);
}
void *__wrap_calloc(size_t k, size_t n) {
    note();
    return __real_calloc(k, n);
}
void *__wrap_realloc(void *p, size_t n) {
    note();
    return __real_realloc(p, n);
}
void *__wrap_aligned_alloc(size_t a, size_t n) {
    note();
    return __real_aligned_alloc(a, n);
}
int __wrap_posix_memalign(void **p, size_t a, size_t n) {
    note();
    return __real_posix_memalign(p, a, n);
}

/* A device backend's allocations (AN_TEST_DEVICE=cuda: the fixture models on it) are counted by the
 * backend itself (an_ops.memory_counts) and added in. */
static void start(void) {
    const an_ops *o = fixture_ops();
    if (o && o->memory_counts) o->memory_counts(o, 1, NULL, NULL, NULL);
    counted = 0;
    counting = 1;
}
static long stop(void) {
    counting = 0;
    const an_ops *o = fixture_ops();
    size_t on_device = 0;
    if (o && o->memory_counts) o->memory_counts(o, 0, NULL, NULL, &on_device);
    return counted + (long)on_device;
}

/* Library code that allocates must be seen: an_model_plan allocates its block; so must a device
 * backend's alloc. */
static void test_wrapping_is_live(void) {
    an_model *m = load_fixture_model("llama");
    if (!m) return;
    an_error e;
    start();
    int rc = an_model_plan(m, 1, 8, &e);
    long n = stop();
    CHECK(rc == 0);
    CHECK_MSG(n > 0, "an_model_plan made no counted allocation: the --wrap linker flags are missing");
    const an_ops *o = m->ops;
    if (o->memory_counts) { /* a device backend's count sees its own allocations too */
        size_t now0 = 0, now = 0, peak = 0, allocs = 0;
        o->memory_counts(o, 1, &now0, NULL, NULL);
        void *p = o->alloc(o, 1000);
        o->memory_counts(o, 0, &now, &peak, &allocs);
        CHECK_MSG(allocs == 1 && peak == now && now - now0 >= 1000, "%s: one alloc: %zu counted, now %zu (from %zu), peak %zu",
                  o->name, allocs, now, now0, peak);
        o->free(o, p);
        o->memory_counts(o, 0, &now, NULL, NULL);
        CHECK_MSG(now == now0, "%s: after its free, %zu bytes held (%zu before)", o->name, now, now0);
    }
    an_model_free(m);
}

enum { B = 2, T = 16 };

static void batch(an_model *m, int32_t *ids, int32_t *tg) {
    for (int i = 0; i < B * T; i++) {
        ids[i] = (3 + 7 * i) % m->cfg.vocab_size;
        tg[i] = i % 5 ? (5 + 11 * i) % m->cfg.vocab_size : AN_IGNORE_INDEX;
    }
}

static void check_full(const char *name, int recompute) {
    an_model *m = load_fixture_model(name);
    if (!m) return;
    an_error e;
    an_model_set_recompute(m, recompute);
    an_full_trainer tr;
    int ok = an_model_plan(m, B, T, &e) == 0 && an_full_trainer_init(&tr, m, &e) == 0;
    CHECK_MSG(ok, "%s: %s", name, e.msg);
    if (!ok) {
        an_model_free(m);
        return;
    }
    int32_t ids[B * T], tg[B * T];
    batch(m, ids, tg);
    an_batch b = {ids, NULL, NULL, tg, B, T};
    an_adamw_config c = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, 1.0f};
    an_step_stats s;
    CHECK(an_train_step(&tr, &b, &c, &s, &e) == 0); /* warm-up */
    start();
    int rc = an_train_step(&tr, &b, &c, &s, &e) || an_train_step(&tr, &b, &c, &s, &e);
    long n = stop();
    CHECK_MSG(rc == 0, "%s: %s", name, e.msg);
    CHECK_MSG(n == 0, "%s full fine-tuning (recompute %d): %ld allocations in two steps", name, recompute, n);
    an_full_trainer_free(&tr);
    an_model_free(m);
}

static void test_full_steps(void) {
    check_full("llama", 0);
    check_full("gpt2", 0);
    check_full("internlm2", 1);
}

/* LoRA with dropout on every linear but the head; qlora: the base NF4 and the head bf16. */
static void check_lora(const char *name, int qlora) {
    an_model *m = load_fixture_model(name);
    if (!m) return;
    an_error e;
    an_lora_config lc = an_lora_config_default();
    lc.r = 4;
    lc.dropout = 0.1f;
    lc.seed = 5;
    an_lora_config_add_target(&lc, "all-linear", &e);
    int ok = (!qlora || an_model_quantize_nf4(m, 64, 1, &e) == 0) && an_lora_attach(m, &lc, &e) == 0 &&
             (!qlora || an_model_store_frozen_bf16(m, &e) == 0) && an_model_plan(m, B, T, &e) == 0;
    an_lora_trainer tr;
    ok = ok && an_lora_trainer_init(&tr, m, &e) == 0;
    CHECK_MSG(ok, "%s: %s", name, e.msg);
    if (!ok) {
        an_model_free(m);
        return;
    }
    int32_t ids[B * T], tg[B * T];
    batch(m, ids, tg);
    an_batch b = {ids, NULL, NULL, tg, B, T};
    an_adamw_config c = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 1.0f};
    an_step_stats s;
    CHECK(an_lora_train_step(&tr, &b, &c, &s, &e) == 0);
    start();
    int rc = an_lora_train_step(&tr, &b, &c, &s, &e) || an_lora_train_step(&tr, &b, &c, &s, &e);
    long n = stop();
    CHECK_MSG(rc == 0, "%s: %s", name, e.msg);
    CHECK_MSG(n == 0, "%s %s: %ld allocations in two steps", name, qlora ? "QLoRA" : "LoRA", n);
    an_lora_trainer_free(&tr);
    an_model_free(m);
}

static void test_lora_steps(void) {
    check_lora("llama", 0);
    check_lora("qwen2", 1);
    check_lora("internlm2", 1);
}

/* Prefill two prompts, then decode: the decode steps allocate nothing. */
static void check_decode(const char *name, int nf4_with_adapter) {
    an_model *m = load_fixture_model(name);
    if (!m) return;
    an_error e;
    int ok = 1;
    if (nf4_with_adapter) {
        an_lora_config lc = an_lora_config_default();
        lc.r = 4;
        an_lora_config_add_target(&lc, "all-linear", &e);
        ok = an_model_quantize_nf4(m, 64, 1, &e) == 0 && an_lora_attach(m, &lc, &e) == 0;
    }
    an_infer *s = ok ? an_infer_create(m, m->lora, 2, 32, 32, &e) : NULL;
    CHECK_MSG(s != NULL, "%s: %s", name, e.msg);
    if (!s) {
        an_model_free(m);
        return;
    }
    int V = m->cfg.vocab_size;
    float *logits = malloc(sizeof(float) * 2 * V);
    int32_t p0[5] = {1, 5, 9, 13, 17}, p1[3] = {2, 4, 6}, slots[2] = {0, 1}, next[2] = {7, 8};
    const int32_t *prompts[2] = {p0, p1};
    int lens[2] = {5, 3};
    /* where the backend samples (a GPU), the steps sample there too: decode leaves the logits on the
     * device and an_infer_sample draws from them */
    int on_device = an_infer_enable_sampling(s, 8, &e);
    CHECK_MSG(on_device >= 0, "%s: %s", name, e.msg);
    an_sample_row rows[2] = {{0.8f, 0.9f, 0.0f, 1.1f, 20, 0.5f, 0, 2, 1}, {0.0f, 1.0f, 0.0f, 1.0f, 0, 0.5f, 3, 0, 0}};
    int32_t ids[3] = {1, 5, 2}, picked[4];
    CHECK(an_infer_prefill(s, slots, prompts, lens, 2, logits, &e) == 0);
    CHECK(an_infer_decode(s, slots, next, 2, logits, &e) == 0); /* warm-up */
    if (on_device > 0) CHECK(an_infer_sample(s, 2, rows, ids, 3, picked, &e) == 0);
    start();
    int rc = 0;
    for (int k = 0; k < 4 && !rc; k++)
        rc = on_device > 0 ? an_infer_decode(s, slots, next, 2, NULL, &e) || an_infer_sample(s, 2, rows, ids, 3, picked, &e)
                           : an_infer_decode(s, slots, next, 2, logits, &e);
    long n = stop();
    CHECK_MSG(rc == 0, "%s: %s", name, e.msg);
    CHECK_MSG(n == 0, "%s decode%s: %ld allocations in four steps", name, nf4_with_adapter ? " (NF4 + adapter)" : "", n);
    free(logits);
    an_infer_free(s);
    an_model_free(m);
}

static void test_decode_steps(void) {
    check_decode("llama", 0);
    check_decode("gpt2", 0);
    check_decode("qwen2", 1);
}

/* The request engine's steps (infer/engine.h): admissions, prefills through the prefix cache, decode
 * rows of two adapters and the base, finished requests leaving. Submitting allocates (the request's
 * copy); so does the first use of a prefix with an adapter (its KV): a first round warms that, and
 * the steps of a second round must allocate nothing. */
static int count_tokens(void *ctx, const an_token *t) {
    (void)t;
    (*(int *)ctx)++;
    return 0;
}

static void test_engine_steps(void) {
    an_model *m = load_fixture_model("llama");
    if (!m) return;
    an_error e;
    an_engine_config c = an_engine_config_default();
    c.slots = 3;
    c.max_rank = 4;
    an_engine *en = an_engine_create(m, &c, &e);
    CHECK_MSG(en != NULL, "%s", e.msg);
    for (int k = 0; en && k < 2; k++) {
        an_lora_config lc = an_lora_config_default();
        lc.r = 2 + 2 * k;
        an_lora_config_add_target(&lc, k ? "q_proj" : "all-linear", &e);
        an_lora *l = an_lora_create(m, &lc, &e);
        CHECK_MSG(l && an_engine_add_adapter(en, k ? "b" : "a", l, &e) == 0, "%s", e.msg);
    }
    static const int32_t lead[6] = {1, 9, 8, 7, 6, 5};
    CHECK(en && an_engine_add_prefix(en, lead, 6, &e) == 0);
    int32_t prompt[10] = {1, 9, 8, 7, 6, 5, 40, 41, 42, 43};
    int tokens = 0;
    long allocs[2] = {0, 0};
    for (int round = 0; en && round < 2; round++) {
        for (int i = 0; i < 5; i++) {
            an_request q;
            memset(&q, 0, sizeof q);
            q.ids = prompt;
            q.n_ids = i % 2 ? 10 : 4; /* with the prefix, and without */
            q.sampling = an_sampler_defaults();
            q.max_tokens = 6 + i;
            q.seed = (uint64_t)i;
            q.adapter = i % 3 == 0 ? NULL : i % 3 == 1 ? "a" : "b";
            q.want_logprobs = 1;
            q.on_token = count_tokens;
            q.ctx = &tokens;
            int64_t id;
            CHECK(an_engine_submit(en, &q, &id, &e) == AN_ENGINE_OK);
        }
        start();
        while (an_engine_step(en, &e) > 0) {}
        allocs[round] = stop();
    }
    /* the first round computes the prefix's KV for each adapter: counted, so the counting sees the
     * engine's allocations */
    CHECK_MSG(allocs[0] > 0, "engine: the first round's prefix KV was not counted");
    CHECK(tokens == 2 * (6 + 7 + 8 + 9 + 10));
    CHECK_MSG(allocs[1] == 0, "engine: %ld allocations in the steps of a warm round", allocs[1]);
    an_engine_free(en);
    an_model_free(m);
}

int main(void) {
    RUN(test_wrapping_is_live);
    RUN(test_engine_steps);
    RUN(test_full_steps);
    RUN(test_lora_steps);
    RUN(test_decode_steps);
    return test_finish();
}
