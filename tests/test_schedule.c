/* Learning-rate schedules against PyTorch's schedulers (tests/ref/schedule_lr.json, made by
 * tests/ref/make_schedule_fixture.py with torch.optim.lr_scheduler). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "tests/test.h"
#include "train/schedule.h"

static cJSON *fixture;

static const cJSON *find_case(const char *name) {
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(fixture, "cases")) {
        if (!strcmp(cJSON_GetObjectItem(c, "name")->valuestring, name)) return c;
    }
    test_fail_at(__FILE__, __LINE__, "no case %s in the fixture", name);
    return NULL;
}

static double num(const cJSON *c, const char *key) { return cJSON_GetObjectItem(c, key)->valuedouble; }

static an_schedule_type type_of(const cJSON *c) {
    const char *t = cJSON_GetObjectItem(c, "type")->valuestring;
    return !strcmp(t, "cosine") ? AN_SCHED_COSINE : !strcmp(t, "linear") ? AN_SCHED_LINEAR : AN_SCHED_CONSTANT;
}

/* Largest relative difference between our lr at step t (via lr_of) and PyTorch's. PyTorch updates
 * the rate multiplicatively step by step (the "chained" form), so it drifts from the closed form by
 * a few ulps per step; 1e-6 relative leaves room for hundreds of steps of that and still catches an
 * off-by-one step (which moves the rate by more than 1e-3 relative in every case here). The floor of
 * 1e-9 of the base rate keeps the last cosine steps, which approach 0, from dividing by ~0. */
static double max_rel(const an_schedule *s, const cJSON *c, int by_step, long *worst) {
    const cJSON *lr = cJSON_GetObjectItem(c, "lr");
    double base = num(c, "base_lr"), m = 0;
    int n = cJSON_GetArraySize(lr);
    long steps = by_step ? n / s->ticks_per_step : n;
    for (long t = 0; t < steps; t++) {
        double ref = by_step ? cJSON_GetArrayItem(lr, (int)(t * s->ticks_per_step + s->ticks_per_step - 1))->valuedouble
                             : cJSON_GetArrayItem(lr, (int)t)->valuedouble;
        double got = by_step ? an_schedule_lr(s, t) : an_schedule_lr_at(s, t);
        double den = fabs(ref) > 1e-9 * base ? fabs(ref) : 1e-9 * base;
        double e = fabs(got - ref) / den;
        if (test_nan_worse(e, m)) m = e, *worst = t; /* a NaN sticks, at the first step that gave one */
    }
    return m;
}

static void test_matches_pytorch_every_case(void) {
    const cJSON *c;
    int n = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(fixture, "cases")) {
        an_schedule s;
        an_error err;
        int rc = an_schedule_init(&s, type_of(c), num(c, "base_lr"), num(c, "start_factor"), num(c, "min_lr_ratio"),
                                  (long)num(c, "warmup"), (long)num(c, "total"), 1, &err);
        CHECK_MSG(rc == 0, "%s", err.msg);
        long worst = -1;
        double e = max_rel(&s, c, 0, &worst);
        if (getenv("AN_TEST_VERBOSE")) fprintf(stderr, "  %s: max relative error %.3g\n", cJSON_GetObjectItem(c, "name")->valuestring, e);
        CHECK_MSG(e < 1e-6, "%s: relative error %.3g at step %ld", cJSON_GetObjectItem(c, "name")->valuestring, e, worst);
        n++;
    }
    CHECK(n >= 6);
}

/* Hand values for XTuner's schedule, 100 steps with 3 of warmup at 2e-4 from 1e-5 of the rate. */
static void test_xtuner_hand_values(void) {
    an_schedule s;
    an_error err;
    CHECK(an_schedule_init(&s, AN_SCHED_COSINE, 2e-4, 1e-5, 0, 3, 100, 1, &err) == 0);
    CHECK_NEAR(an_schedule_lr_at(&s, 0), 2e-9, 1e-24);                                  /* 2e-4 * 1e-5 */
    CHECK_NEAR(an_schedule_lr_at(&s, 1), 2e-4 * (1e-5 + (1 - 1e-5) / 3), 1e-19);
    CHECK_NEAR(an_schedule_lr_at(&s, 3), 2e-4, 1e-19);                                  /* top of the warmup */
    CHECK_NEAR(an_schedule_lr_at(&s, 99), 2e-4 * (1 + cos(M_PI * 96 / 97)) / 2, 1e-19); /* last step */
    CHECK_NEAR(an_schedule_lr_at(&s, 100), 0, 0);                                       /* past the end */
}

/* The recipe path: warmup from the ratio (0.03 * 100 must give 3, not 2), and XTuner's per-micro-
 * batch ticking, where optimizer step k uses the rate of micro-batch 16k + 15. */
static void test_from_recipe(void) {
    an_recipe r;
    an_error err;
    CHECK_MSG(an_recipe_load(&r, "configs/recipes/internlm2-7b-qlora.json", &err) == 0, "%s", err.msg);
    an_schedule s;
    CHECK(an_recipe_set(&r, "schedule.per_micro_batch=false", &err) == 0);
    CHECK(an_schedule_from_recipe(&s, &r, 100, &err) == 0);
    CHECK(s.warmup == 3 && s.total == 100 && s.ticks_per_step == 1);
    long worst = -1;
    const cJSON *c = find_case("xtuner_100_w3");
    if (c) CHECK_MSG(max_rel(&s, c, 1, &worst) < 1e-6, "xtuner_100_w3 via recipe, step %ld", worst);

    CHECK(an_recipe_set(&r, "schedule.per_micro_batch=true", &err) == 0);
    CHECK(an_schedule_from_recipe(&s, &r, 20, &err) == 0);
    CHECK(s.warmup == 9 && s.total == 320 && s.ticks_per_step == 16); /* floor(0.03 * 320) */
    c = find_case("xtuner_per_micro_batch");
    if (c) CHECK_MSG(max_rel(&s, c, 1, &worst) < 1e-6, "per micro-batch, step %ld", worst);
    an_recipe_free(&r);

    CHECK_MSG(an_recipe_load(&r, "configs/recipes/tiny-from-scratch.json", &err) == 0, "%s", err.msg);
    CHECK(an_schedule_from_recipe(&s, &r, r.train.steps, &err) == 0);
    CHECK(s.warmup == 30 && s.total == 600);
    c = find_case("tiny_from_scratch");
    if (c) CHECK_MSG(max_rel(&s, c, 1, &worst) < 1e-6, "tiny_from_scratch via recipe, step %ld", worst);
    an_recipe_free(&r);
}

static void test_edges(void) {
    an_schedule s;
    an_error err;
    /* a warmup longer than the run is cut to leave one tick of decay */
    CHECK(an_schedule_init(&s, AN_SCHED_COSINE, 1e-3, 0.1, 0, 30, 5, 1, &err) == 0);
    CHECK(s.warmup == 4);
    CHECK_NEAR(an_schedule_lr_at(&s, 4), 1e-3, 1e-18);
    CHECK(an_schedule_init(&s, AN_SCHED_COSINE, 1e-3, 0.1, 0, 0, 0, 1, &err) != 0);
    CHECK_CONTAINS(err.msg, "nothing to schedule");
    CHECK(an_schedule_init(&s, AN_SCHED_COSINE, -1e-3, 0.1, 0, 0, 10, 1, &err) != 0);
    CHECK_CONTAINS(err.msg, "learning rate must be > 0");
    CHECK(an_schedule_init(&s, AN_SCHED_COSINE, 1e-3, 0, 0, 0, 10, 1, &err) != 0);
    CHECK_CONTAINS(err.msg, "warmup_start_factor");
    /* constant stays at the rate past the end; linear ends at min_lr */
    CHECK(an_schedule_init(&s, AN_SCHED_CONSTANT, 1e-3, 0.5, 0, 2, 10, 1, &err) == 0);
    CHECK_NEAR(an_schedule_lr_at(&s, 50), 1e-3, 0);
    CHECK(an_schedule_init(&s, AN_SCHED_LINEAR, 1e-3, 0.5, 0.25, 0, 10, 1, &err) == 0);
    CHECK_NEAR(an_schedule_lr_at(&s, 5), 1e-3 * (1 - 0.75 * 0.5), 1e-18);
    CHECK_NEAR(an_schedule_lr_at(&s, 10), 0.25e-3, 1e-18);
}

int main(void) {
    an_error err;
    char *text = an_read_file("tests/ref/schedule_lr.json", NULL, &err);
    fixture = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (!fixture) {
        fprintf(stderr, "tests/ref/schedule_lr.json: cannot read\n");
        printf("0 passed, 1 failed\n");
        return 1;
    }
    RUN(test_matches_pytorch_every_case);
    RUN(test_xtuner_hand_values);
    RUN(test_from_recipe);
    RUN(test_edges);
    cJSON_Delete(fixture);
    return test_finish();
}
