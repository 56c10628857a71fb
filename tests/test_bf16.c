/* bf16 storage of the frozen embedding table and LM head (an_model_store_frozen_bf16).
 *
 * Ops (kernels/cpu_bf16.c) against widening the weight to float32 first and running the float32 op:
 *  - embedding_lookup of a bf16 table: bit-identical (widening is exact and the gather copies);
 *  - linear_forward / linear_backward_input of a bf16 weight with a workspace of 3 rows (so several
 *    tiles and a partial last one): each output is a float32 dot product of length K (C forward,
 *    OC backward), the tiled and the plain op differing at most in summation order, so both lie
 *    within Higham's bound gamma_K * sum|a b| of the exact value and differ by at most twice it.
 * Models (tests/ref/models): the reference is the same fixture whose embedding/head float32 values
 * were rounded to bf16 in place (an_f32_to_bf16, round to nearest even); logits must agree to 1e-6
 * of the largest logit (only the head GEMM's summation order differs: tiles of the head rows), and
 * a LoRA (dropout 0.2) and a QLoRA forward/backward give the same loss and adapter gradients to
 * 1e-5 relative (that summation-order difference, carried through the backward). The parameter
 * bytes drop by 2 bytes per embedding/head parameter (plus alignment), and a
 * trainable embedding is refused with a message naming it. */
#include <math.h>
#include <string.h>

#include "kernels/cpu.h"
#include "model/lora.h"
#include "model/nf4_weights.h"
#include "infer/infer.h"
#include "model/io/safetensors.h"
#include "tests/op_harness.h"
#include "tests/test_model_util.h"

static void to_bf16(const float *x, uint16_t *h, float *widened, size_t n) {
    an_f32_to_bf16_n(h, x, n);
    an_bf16_to_f32_n(widened, h, n);
}

static void test_ops(void) {
    const an_ops *o = an_ops_cpu();
    an_rng r;
    an_rng_seed(&r, 11);
    enum { N = 5, C = 37, OC = 11, V = 9 };
    float *w = oh_rand_f(&r, (size_t)OC * C, -1, 1), *x = oh_rand_f(&r, (size_t)N * C, -1, 1);
    float *dout = oh_rand_f(&r, (size_t)N * OC, -1, 1), *bias = oh_rand_f(&r, OC, -1, 1);
    uint16_t wh[OC * C];
    float ww[OC * C], work[3 * C];
    to_bf16(w, wh, ww, (size_t)OC * C);

    int32_t ids[N] = {3, 0, 8, 3, 5};
    float e1[N * C], e2[N * C];
    an_weight wb = {AN_BF16, OC, C, wh}; /* ids < V <= OC: rows of w as a table */
    o->embedding_lookup(o, e1, ids, &wb, N);
    o->embedding_forward(o, e2, ids, ww, N, C);
    CHECK(memcmp(e1, e2, sizeof e1) == 0);
    (void)V;

    float y1[N * OC], y2[N * OC];
    double bound[N * OC];
    o->linear_forward(o, y1, x, &wb, bias, N, work, sizeof work, AN_LINEAR_EXACT);
    o->matmul_forward(o, y2, x, ww, bias, N, C, OC);
    for (int n = 0; n < N; n++)
        for (int j = 0; j < OC; j++) {
            double a = fabs(bias[j]);
            for (int c = 0; c < C; c++) a += fabs((double)x[n * C + c] * ww[j * C + c]);
            bound[n * OC + j] = 2.0 * (C + 3) * ldexp(1.0, -24) * a;
        }
    for (int i = 0; i < N * OC; i++) CHECK_MSG(fabs(y1[i] - y2[i]) <= bound[i], "forward %d: %g vs %g", i, y1[i], y2[i]);

    float d1[N * C], d2[N * C];
    for (int i = 0; i < N * C; i++) d1[i] = d2[i] = x[i]; /* accumulates onto what is there */
    o->linear_backward_input(o, d1, dout, &wb, N, work, sizeof work);
    o->matmul_backward(o, d2, NULL, NULL, dout, NULL, ww, N, C, OC);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            double a = fabs(x[n * C + c]);
            for (int j = 0; j < OC; j++) a += fabs((double)dout[n * OC + j] * ww[j * C + c]);
            double b = 2.0 * (OC + 3) * ldexp(1.0, -24) * a;
            CHECK_MSG(fabs(d1[n * C + c] - d2[n * C + c]) <= b, "backward %d %d: %g vs %g", n, c, d1[n * C + c], d2[n * C + c]);
        }
    free(w);
    free(x);
    free(dout);
    free(bias);
}

/* The single-token path (N <= 4 rows): each bf16 weight widened in registers and dotted in float32,
 * 8 lanes per row, against the exact (double) product of x and the widened weights. Shapes: rows not
 * a multiple of the 4-row unroll (11, 9), columns not a multiple of the 8 lanes (37) and a multiple
 * (64), and 1..4 input rows (one pair, a pair and a single, two pairs). A float32 dot of C terms with
 * any summation order and fused multiply-adds is within gamma_C * sum|x w| of the exact value
 * (Higham 3.5); the bias adds one more rounding, hence (C + 2) units of 2^-24. */
static void test_matvec(void) {
    const an_ops *o = an_ops_cpu();
    an_rng r;
    an_rng_seed(&r, 12);
    const int shapes[3][2] = {{37, 11}, {64, 9}, {64, 16}};
    for (int si = 0; si < 3; si++) {
        int C = shapes[si][0], OC = shapes[si][1];
        float *w = oh_rand_f(&r, (size_t)OC * C, -1, 1), *x = oh_rand_f(&r, (size_t)4 * C, -1, 1);
        float *bias = oh_rand_f(&r, OC, -1, 1), *ww = malloc(sizeof(float) * (size_t)OC * C);
        uint16_t *wh = malloc(sizeof(uint16_t) * (size_t)OC * C);
        to_bf16(w, wh, ww, (size_t)OC * C);
        for (int N = 1; N <= 4; N++)
            for (int with_bias = 0; with_bias < 2; with_bias++) {
                float y[4 * 16];
                an_weight wb = {AN_BF16, OC, C, wh};
                o->linear_forward(o, y, x, &wb, with_bias ? bias : NULL, N, NULL, 0, AN_LINEAR_EXACT); /* no workspace needed */
                for (int n = 0; n < N; n++)
                    for (int j = 0; j < OC; j++) {
                        double exact = with_bias ? bias[j] : 0.0, a = fabs(exact);
                        for (int c = 0; c < C; c++) {
                            exact += (double)x[n * C + c] * ww[j * C + c];
                            a += fabs((double)x[n * C + c] * ww[j * C + c]);
                        }
                        double bound = (C + 2) * ldexp(1.0, -24) * a;
                        CHECK_MSG(fabs(y[n * OC + j] - exact) <= bound, "C %d OC %d N %d row %d out %d: %.9g vs %.9g", C,
                                  OC, N, n, j, y[n * OC + j], exact);
                    }
            }
        free(w), free(x), free(bias), free(ww), free(wh);
    }
}

enum { PLAIN, LORA, QLORA };

/* The fixture; bf16: stored in bf16, else its embedding/head rounded to bf16 in place (the reference). */
static an_model *build(const char *name, int mode, int bf16) {
    an_model *m = load_fixture_model(name);
    if (!m) return NULL;
    an_error e;
    if (mode == QLORA) CHECK_MSG(an_model_quantize_nf4(m, 64, 1, &e) == 0, "%s", e.msg);
    if (mode != PLAIN) {
        an_lora_config c = an_lora_config_default();
        c.r = 4;
        c.alpha = 8;
        c.dropout = 0.2f;
        CHECK(an_lora_config_add_target(&c, "all-linear", &e) == 0);
        CHECK_MSG(an_lora_attach(m, &c, &e) == 0, "%s", e.msg);
        for (int i = 0; m->lora && i < m->lora->n_mods; i++) { /* B != 0 so that dA counts */
            an_param *bt = &m->lora->mods[i].bt;
            for (size_t k = 0; k < bt->numel; k++) bt->data[k] = 0.01f * (float)((int)((k * 37 + (size_t)i * 11) % 17) - 8);
        }
    } else {
        an_model_set_all_trainable(m, 0);
    }
    if (bf16) {
        CHECK_MSG(an_model_store_frozen_bf16(m, &e) == 0, "%s", e.msg);
    } else {
        an_param *t[2] = {m->tok_emb, m->lm_head};
        for (int i = 0; i < 2; i++)
            for (size_t k = 0; t[i] && k < t[i]->numel; k++) t[i]->data[k] = an_bf16_to_f32(an_f32_to_bf16(t[i]->data[k]));
    }
    CHECK_MSG(an_model_plan(m, 2, 5, &e) == 0, "%s", e.msg);
    return m;
}

static double rel_err(const float *a, const float *b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d = test_nan_max(d, fabs(a[i] - b[i]));
        s = test_nan_max(s, fabs(b[i]));
    }
    return s > 0 ? d / s : d;
}

static void check_family(const char *name) {
    int32_t ids[10], tg[10];
    an_model *a = build(name, PLAIN, 1), *ref = build(name, PLAIN, 0);
    if (!a || !ref) goto next;
    for (int n = 0; n < 10; n++) {
        ids[n] = (int32_t)((n * 31u + 5u) % (unsigned)a->cfg.vocab_size);
        tg[n] = n % 4 == 1 ? AN_IGNORE_INDEX : (int32_t)((n * 17u + 3u) % (unsigned)a->cfg.vocab_size);
    }
    an_batch b = {ids, NULL, NULL, tg, 2, 5};
    size_t nl = (size_t)10 * a->cfg.vocab_size;
    float *la = malloc(nl * sizeof(float)), *lr = malloc(nl * sizeof(float));
    an_error e;
    CHECK(an_model_forward(a, &b, 0, 1, NULL, la, &e) == 0);
    CHECK(an_model_forward(ref, &b, 0, 1, NULL, lr, &e) == 0);
    double err = rel_err(la, lr, nl);
    CHECK_MSG(err <= 1e-6, "%s: logits differ by %.3g of the largest", name, err);
    /* 2 bytes saved per embedding/head parameter, less alignment */
    size_t vc = a->tok_emb->numel + (a->lm_head ? a->lm_head->numel : 0);
    size_t saved = an_model_bytes_params(ref) - an_model_bytes_params(a);
    CHECK_MSG(saved >= 2 * vc && saved <= 2 * vc + 256, "%s: %zu bytes saved for %zu bf16 parameters", name, saved, vc);
    free(la);
    free(lr);
next:
    an_model_free(a);
    an_model_free(ref);

    for (int mode = LORA; mode <= QLORA; mode++) {
        a = build(name, mode, 1);
        ref = build(name, mode, 0);
        if (a && ref) {
            float l1 = 0, l2 = 0;
            an_batch bt = {ids, NULL, NULL, tg, 2, 5};
            CHECK(an_model_forward(a, &bt, 1, 1, &l1, NULL, &e) == 0 && an_model_backward(a, &e) == 0);
            CHECK(an_model_forward(ref, &bt, 1, 1, &l2, NULL, &e) == 0 && an_model_backward(ref, &e) == 0);
            CHECK_MSG(fabs(l1 - l2) <= 1e-5 * fabs(l2), "%s mode %d: loss %.9g vs %.9g", name, mode, l1, l2);
            double g = rel_err(a->lora->grad_mem, ref->lora->grad_mem, a->lora->n_floats);
            CHECK_MSG(g <= 1e-5, "%s mode %d: adapter gradients differ by %.3g of the largest", name, mode, g);
        }
        an_model_free(a);
        an_model_free(ref);
    }
}

/* Decoding with the KV cache (infer/) on a QLoRA model -- NF4 linears, bf16 embedding and head --
 * against the same model whose head and embedding hold the bf16-rounded values in float32: prefill,
 * then single-token steps, which run the head through the bf16 matrix-vector kernel. Both compute the
 * same products of the same values; only the head's summation order differs (8 lanes against the
 * float32 matvec), so the logits agree to a few float32 roundings of dot products of length dim
 * (measured 5e-8 to 1e-7 of the largest logit; dim <= 64 in the fixtures): 1e-6 is ten times that. */
static void check_decode(const char *name) {
    an_model *a = build(name, QLORA, 1), *ref = build(name, QLORA, 0);
    an_error e;
    an_infer *sa = a ? an_infer_create(a, a->lora, 1, 12, 0, &e) : NULL, *sr = ref ? an_infer_create(ref, ref->lora, 1, 12, 0, &e) : NULL;
    CHECK_MSG(sa && sr, "%s: %s", name, e.msg);
    if (sa && sr) {
        int V = a->cfg.vocab_size;
        float *la = malloc(sizeof(float) * V), *lr = malloc(sizeof(float) * V);
        int32_t prompt[5] = {1, 7 % V, 11 % V, 3 % V, 5 % V}, slot = 0;
        const int32_t *rows[1] = {prompt};
        int len = 5;
        CHECK(an_infer_prefill(sa, &slot, rows, &len, 1, la, &e) == 0);
        CHECK(an_infer_prefill(sr, &slot, rows, &len, 1, lr, &e) == 0);
        for (int step = 0; step < 4; step++) {
            double err = rel_err(la, lr, (size_t)V);
            CHECK_MSG(err <= 1e-6, "%s step %d: logits differ by %.3g of the largest", name, step, err);
            int32_t id = (int32_t)((step * 13 + 2) % V);
            CHECK(an_infer_decode(sa, &slot, &id, 1, la, &e) == 0);
            CHECK(an_infer_decode(sr, &slot, &id, 1, lr, &e) == 0);
        }
        CHECK(a->lm_head ? an_param_bf16(a->lm_head) != NULL : an_param_bf16(a->tok_emb) != NULL);
        free(la), free(lr);
    }
    an_infer_free(sa);
    an_infer_free(sr);
    an_model_free(a);
    an_model_free(ref);
}

static void test_models(void) {
    check_family("llama");     /* separate head */
    check_family("gpt2");      /* head tied to the embedding */
    check_family("internlm2"); /* separate head, grouped wqkv */
    check_family("qwen2");     /* tied */
    check_decode("llama");
    check_decode("gpt2");
}

static void test_refusals(void) {
    an_model *m = load_fixture_model("llama");
    if (!m) return;
    an_error e;
    an_model_set_all_trainable(m, 1);
    CHECK(an_model_store_frozen_bf16(m, &e) != 0);
    CHECK_CONTAINS(e.msg, "model.embed_tokens.weight");
    CHECK_CONTAINS(e.msg, "trainable");
    an_model_set_all_trainable(m, 0);
    CHECK(an_model_store_frozen_bf16(m, &e) == 0);
    CHECK(m->tok_emb->data == NULL && m->lm_head->data == NULL && an_param_bf16(m->tok_emb) && an_param_bf16(m->lm_head));
    an_model_set_all_trainable(m, 1); /* the bf16 tensors stay frozen */
    CHECK(!m->tok_emb->trainable && !m->lm_head->trainable && m->final_norm_w->trainable);
    CHECK(an_model_quantize_nf4(m, 64, 1, &e) != 0);
    CHECK_CONTAINS(e.msg, "bf16");
    /* export gives the widened values */
    float *h = malloc(m->tok_emb->numel * sizeof(float));
    an_model_export(m, m->tok_emb, NULL, h, NULL);
    an_model *f = load_fixture_model("llama");
    int same = 1;
    for (size_t k = 0; f && k < f->tok_emb->numel; k++)
        same &= h[k] == an_bf16_to_f32(an_f32_to_bf16(f->tok_emb->data[k]));
    CHECK(f && same);
    free(h);
    an_model_free(f);
    an_model_free(m);
}

int main(void) {
    RUN(test_ops);
    RUN(test_matvec);
    RUN(test_models);
    RUN(test_refusals);
    return test_finish();
}
