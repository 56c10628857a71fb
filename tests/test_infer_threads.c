/* One base model, loaded once, serving two adapters at the same time: two inference states (each
 * with its own adapter: PEFT's fixture adapter and a second one made here) generate from two threads
 * concurrently, several rounds, and every sequence must be exactly the tokens that state gives when it
 * runs alone. The reference runs alone first; the two adapters and the bare base must disagree on the
 * tokens, so that one state reading the other's adapter or scratch could not pass unnoticed.
 * `make tsan` runs this binary under ThreadSanitizer (OMP_NUM_THREADS=1: libgomp is not instrumented,
 * and its own threads would only add false reports). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "infer/generate.h"
#include "model/lora.h"
#include "tests/test_model_util.h"

enum { N_PROMPTS = 3, MAX_TOKENS = 10, ROUNDS = 3 };

typedef struct job {
    const an_model *m;
    const an_lora *lora;
    an_gen_output out[N_PROMPTS];
    int rc;
    char msg[1100]; /* an an_error message and room */
} job;

static const int32_t p0[] = {1, 5, 9, 13}, p1[] = {1, 40, 2}, p2[] = {1, 77, 31, 8, 120, 6};

static void *run(void *arg) {
    job *j = arg;
    an_gen_prompt pr[N_PROMPTS] = {{p0, 4}, {p1, 3}, {p2, 6}};
    an_gen_opts o = an_gen_defaults();
    o.max_tokens = MAX_TOKENS;
    o.seed = 42; /* sampled, not greedy: the sampler's state is per call too */
    o.batch = 2;
    memset(j->out, 0, sizeof j->out);
    an_error e;
    j->rc = an_generate(j->m, j->lora, pr, N_PROMPTS, 1, &o, j->out, &e);
    if (j->rc) snprintf(j->msg, sizeof j->msg, "%s", e.msg);
    return NULL;
}

static int same(const an_gen_output *a, const an_gen_output *b) {
    for (int i = 0; i < N_PROMPTS; i++)
        if (a[i].n != b[i].n || memcmp(a[i].ids, b[i].ids, sizeof(int32_t) * (size_t)a[i].n)) return 0;
    return 1;
}

/* A second adapter on every linear layer, with A and B both random (a fresh adapter's B is zero). */
static an_lora *random_adapter(an_model *m, an_error *e) {
    an_lora_config c = an_lora_config_default();
    c.r = 4;
    c.alpha = 16;
    c.seed = 9;
    if (an_lora_config_add_target(&c, "all-linear", e)) return NULL;
    an_lora *l = an_lora_create(m, &c, e);
    if (!l) return NULL;
    an_rng r;
    an_rng_seed(&r, 10);
    for (int i = 0; i < l->n_mods; i++) {
        an_param *bt = &l->mods[i].bt;
        float *h = malloc(sizeof(float) * bt->numel);
        for (size_t k = 0; k < bt->numel; k++) h[k] = 0.5f * (2.0f * an_rng_uniform(&r) - 1.0f);
        m->ops->upload(m->ops, bt->data, h, sizeof(float) * bt->numel);
        free(h);
    }
    return l;
}

static void test_two_adapters_two_threads(void) {
    an_model *m = load_fixture_model("llama");
    if (!m) return;
    an_error e;
    an_lora *a = an_lora_open(m, "tests/ref/lora/llama", &e);
    CHECK_MSG(a != NULL, "%s", e.msg);
    an_lora *b = a ? random_adapter(m, &e) : NULL;
    CHECK_MSG(b != NULL, "%s", e.msg);
    CHECK(m->lora == NULL); /* opening adapters leaves the base as it was */
    if (!a || !b) goto done;

    job alone[3] = {{m, a, {{0}}, 0, ""}, {m, b, {{0}}, 0, ""}, {m, NULL, {{0}}, 0, ""}};
    for (int k = 0; k < 3; k++) {
        run(&alone[k]);
        CHECK_MSG(alone[k].rc == 0, "alone %d: %s", k, alone[k].msg);
    }
    /* the three disagree, so cross-talk between the states would show */
    CHECK(!same(alone[0].out, alone[1].out) && !same(alone[0].out, alone[2].out) && !same(alone[1].out, alone[2].out));

    for (int round = 0; round < ROUNDS; round++) {
        job together[2] = {{m, a, {{0}}, 0, ""}, {m, b, {{0}}, 0, ""}};
        pthread_t t[2];
        for (int k = 0; k < 2; k++) CHECK(pthread_create(&t[k], NULL, run, &together[k]) == 0);
        for (int k = 0; k < 2; k++) pthread_join(t[k], NULL);
        for (int k = 0; k < 2; k++) {
            CHECK_MSG(together[k].rc == 0, "round %d thread %d: %s", round, k, together[k].msg);
            CHECK_MSG(together[k].rc || same(together[k].out, alone[k].out),
                      "round %d: adapter %d decoded differently beside the other thread", round, k);
            an_gen_outputs_free(together[k].out, N_PROMPTS);
        }
    }
    for (int k = 0; k < 3; k++) an_gen_outputs_free(alone[k].out, N_PROMPTS);
done:
    an_lora_free(a);
    an_lora_free(b);
    an_model_free(m);
}

int main(void) {
    RUN(test_two_adapters_two_threads);
    return test_finish();
}
