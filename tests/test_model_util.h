#ifndef AN_TEST_MODEL_UTIL_H
#define AN_TEST_MODEL_UTIL_H
/* Helpers shared by the tests/test_model_*.c binaries: reading the PyTorch fixtures that
 * tests/ref/make_model_fixtures.py wrote (tests/ref/models/). Header-only so that it is linked
 * only into the model tests. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/ops.h"
#include "model/model.h"
#include "model/io/safetensors.h"
#include "tests/test.h"

#define MODEL_FIXTURES "tests/ref/models"

/* A fixture tensor as float32 (malloc'd, numel in *n), or NULL with a test failure. */
static inline float *fx_floats(const an_safetensors *st, const char *name, size_t *n) {
    const an_st_tensor *t = an_st_find(st, name);
    if (!t) {
        test_fail_at(__FILE__, __LINE__, "fixture tensor %s missing", name);
        return NULL;
    }
    size_t k = (size_t)an_st_numel(t);
    float *out = malloc((k ? k : 1) * sizeof(float));
    an_error e;
    if (an_st_to_f32(t, out, &e)) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        free(out);
        return NULL;
    }
    if (n) *n = k;
    return out;
}

static inline int32_t *fx_ints(const an_safetensors *st, const char *name, size_t *n) {
    const an_st_tensor *t = an_st_find(st, name);
    if (!t || t->dtype != AN_I32) {
        test_fail_at(__FILE__, __LINE__, "fixture tensor %s missing or not I32", name);
        return NULL;
    }
    size_t k = (size_t)an_st_numel(t);
    int32_t *out = malloc((k ? k : 1) * sizeof(int32_t));
    memcpy(out, t->data, k * sizeof(int32_t));
    if (n) *n = k;
    return out;
}

/* The backend the fixture models load on: the CPU, or the one AN_TEST_DEVICE names (tools/gpu_check.sh
 * runs test_model_families with AN_TEST_DEVICE=cuda). Opened once per test binary and left open. */
static inline const an_ops *fixture_ops(void) {
    static const an_ops *ops;
    const char *dev = getenv("AN_TEST_DEVICE");
    if (ops) return ops;
    if (!dev || !*dev || strcmp(dev, "cpu") == 0) return ops = an_ops_cpu();
    an_error e;
    ops = an_backend_open(dev, &e);
    if (!ops) test_fail_at(__FILE__, __LINE__, "AN_TEST_DEVICE=%s: %s", dev, e.msg);
    else fprintf(stderr, "fixture models on %s\n", ops->description);
    return ops;
}

static inline an_model *load_fixture_model(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", MODEL_FIXTURES, name);
    an_error e;
    const an_ops *ops = fixture_ops();
    if (!ops) return NULL;
    an_model *m = an_model_load(path, ops, &e);
    if (!m) test_fail_at(__FILE__, __LINE__, "loading %s: %s", path, e.msg);
    return m;
}

static inline int open_fixture(an_safetensors *st, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s/fixture.safetensors", MODEL_FIXTURES, name);
    an_error e;
    if (an_st_open(st, path, &e)) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        return -1;
    }
    return 0;
}

static inline int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

#endif
