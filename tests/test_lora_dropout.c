/* LoRA dropout: the mask that backward regenerates from (seed, counter) is the one forward used, and
 * the expected fraction of inputs is dropped.
 *
 * The gradient check: with dropout 0.3 on every adapter of the tiny Llama (the fixture adapter of
 * tests/ref/lora/llama, whose B is non-zero), the analytic gradient of the training loss with respect
 * to entries of A is compared with central finite differences of that same loss, the forward counter
 * reset before every evaluation so each sees the same masks. In float32 with h = 1e-2 the difference
 * quotient carries ~1e-6 / 1e-2 = 1e-4 of loss rounding plus O(h^2) truncation, so it must agree with
 * the analytic value to 3% of that value plus 2e-4 absolute. A backward that drew a different mask
 * than its forward gives gradients off by O(1) of their size (checked below: regenerating from a
 * different seed breaks the agreement), so the tolerance separates right from wrong clearly. Measured:
 * analytic and finite differences agree to ~1e-3 of the value. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/file.h"
#include "model/lora.h"
#include "tests/test_model_util.h"
#include "train/lora_step.h"

static const char *adapter_with_dropout(void) {
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/llama-dropout", test_tmpdir());
    mkdir(dir, 0777);
    an_error e;
    char p[600];
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    const char *cfg = "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"lora_dropout\": 0.3, \"target_modules\": "
                      "[\"q_proj\", \"k_proj\", \"v_proj\", \"o_proj\", \"gate_proj\", \"up_proj\", \"down_proj\", \"lm_head\"]}";
    CHECK(an_write_file_atomic(p, cfg, strlen(cfg), &e) == 0);
    size_t n = 0;
    char *data = an_read_file("tests/ref/lora/llama/adapter_model.safetensors", &n, &e);
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    CHECK(data && an_write_file_atomic(p, data, n, &e) == 0);
    free(data);
    return dir;
}

static float loss_at(an_model *m, const an_batch *b, uint64_t forwards) {
    an_error e;
    float loss = 0;
    m->lora->forwards = forwards;
    CHECK(an_model_forward(m, b, 1, 1.0f, &loss, NULL, &e) == 0);
    return loss;
}

static void test_mask_regenerated(void) {
    an_model *m = load_fixture_model("llama");
    if (!m) return;
    an_error e;
    CHECK(an_lora_load(m, adapter_with_dropout(), &e) == 0);
    if (!m->lora) {
        an_model_free(m);
        return;
    }
    CHECK_NEAR(m->lora->cfg.dropout, 0.3, 1e-7);
    an_safetensors fx;
    if (open_fixture(&fx, "llama")) return;
    int32_t *ids = fx_ints(&fx, "ids", NULL), *targets = fx_ints(&fx, "targets", NULL);
    const an_st_tensor *tid = an_st_find(&fx, "ids");
    int B = (int)tid->shape[0], T = (int)tid->shape[1];
    m->head_rows = 7; /* the head's adapter in chunks: its mask counters restart per chunk */
    CHECK(an_model_plan(m, B, T, &e) == 0);
    an_batch b = {ids, NULL, NULL, targets, B, T};
    an_lora *l = m->lora;

    /* dropout acts in training forwards only, and each forward draws new masks */
    float eval_loss = 0;
    CHECK(an_model_forward(m, &b, 0, 1.0f, &eval_loss, NULL, &e) == 0);
    float l1 = loss_at(m, &b, 10), l2 = loss_at(m, &b, 11), l1again = loss_at(m, &b, 10);
    CHECK(l1 != eval_loss && l1 != l2);
    CHECK(l1 == l1again);

    const uint64_t F0 = 41;
    m->ops->zero(m->ops, l->grad_mem, l->n_floats * sizeof(float));
    loss_at(m, &b, F0);
    CHECK(an_model_backward(m, &e) == 0);
    float *g = malloc(l->n_floats * sizeof(float));
    memcpy(g, l->grad_mem, l->n_floats * sizeof(float));

    /* the same, but backward regenerates the masks from another seed: must disagree */
    m->ops->zero(m->ops, l->grad_mem, l->n_floats * sizeof(float));
    loss_at(m, &b, F0);
    l->mask_seed ^= 0x5555;
    CHECK(an_model_backward(m, &e) == 0);
    float *g_wrong = malloc(l->n_floats * sizeof(float));
    memcpy(g_wrong, l->grad_mem, l->n_floats * sizeof(float));

    /* modules: first layer's q_proj, last layer's down_proj, and the head (chunked) */
    const an_param *targets_w[3] = {m->layers[0].wq, m->layers[1].w_down, m->lm_head};
    const float h = 1e-2f;
    int wrong_detected = 0, checked = 0;
    for (int t = 0; t < 3; t++) {
        an_lora_module *mod = an_lora_find(l, targets_w[t]);
        CHECK(mod != NULL);
        if (!mod) continue;
        size_t off = (size_t)(mod->a.data - l->mem);
        /* the 4 entries with the largest gradients; a NaN counts as the largest (and stays chosen), so
         * it is checked below and fails instead of being passed over by the > */
        for (int k = 0; k < 4; k++) {
            size_t best = 0;
            for (size_t j = 0; j < mod->a.numel; j++)
                if (test_nan_worse(fabsf(g[off + j]), fabsf(g[off + best]))) best = j;
            float *a = &mod->a.data[best], saved = *a;
            *a = saved + h;
            double lp = loss_at(m, &b, F0);
            *a = saved - h;
            double lm = loss_at(m, &b, F0);
            *a = saved;
            double fd = (lp - lm) / (2.0 * h), an = g[off + best];
            CHECK_MSG(fabs(fd - an) <= 0.03 * fabs(an) + 2e-4, "%s A[%zu]: analytic %.6g, finite difference %.6g",
                      mod->name, best, an, fd);
            /* the head's backward runs inside the forward, before the seed is spoiled: blocks only */
            if (t < 2 && fabs(fd - g_wrong[off + best]) > 0.03 * fabs(fd) + 2e-4) wrong_detected++;
            checked++;
            g[off + best] = 0; /* next largest */
        }
    }
    CHECK(checked == 12);
    CHECK_MSG(wrong_detected == 8, "a mismatched mask went unnoticed in %d of 8 entries", 8 - wrong_detected);
    free(g);
    free(g_wrong);
    free(ids);
    free(targets);
    an_st_close(&fx);
    an_model_free(m);
}

/* The op on its own: the dropped fraction, the kept scale, and repeatability from (seed, counter). */
static void test_dropout_op(void) {
    const an_ops *o = an_ops_cpu();
    const size_t n = 1 << 20;
    const float p = 0.3f;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float)), *z = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = 1.0f + (float)(i % 7);
    o->dropout(o, y, x, n, p, 1234, 0);
    size_t zeros = 0;
    int scaled = 1;
    for (size_t i = 0; i < n; i++) {
        if (y[i] == 0.0f) zeros++;
        else scaled &= y[i] == x[i] * (1.0f / (1.0f - p));
    }
    CHECK(scaled);
    /* binomial: sd sqrt(p (1 - p) / n) = 4.5e-4; 5 sd */
    CHECK_NEAR((double)zeros / n, p, 5 * sqrt(p * (1 - p) / n));
    /* the mask of element i depends on counter + i only: a shifted call reproduces the tail */
    o->dropout(o, z, x + 1000, n - 1000, p, 1234, 1000);
    CHECK(memcmp(z, y + 1000, (n - 1000) * sizeof(float)) == 0);
    /* in place, as backward uses it */
    memcpy(z, x, n * sizeof(float));
    o->dropout(o, z, z, n, p, 1234, 0);
    CHECK(memcmp(z, y, n * sizeof(float)) == 0);
    /* another seed, another mask (agreeing on ~p^2 + (1-p)^2 = 58% of entries) */
    o->dropout(o, z, x, n, p, 1235, 0);
    size_t same = 0;
    for (size_t i = 0; i < n; i++) same += (z[i] == 0) == (y[i] == 0);
    CHECK_NEAR((double)same / n, p * p + (1 - p) * (1 - p), 0.005);
    free(x);
    free(y);
    free(z);
}

int main(void) {
    RUN(test_dropout_op);
    RUN(test_mask_regenerated);
    return test_finish();
}
