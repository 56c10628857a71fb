/* QLoRA against bitsandbytes + PEFT (tests/ref/make_qlora_fixtures.py): the tiny Llama and InternLM2
 * are quantized to NF4 with double quantization (by an_model_load_nf4 and by an_model_quantize_nf4),
 * and the bits must be bitsandbytes' own; then the PEFT adapter of the LoRA tests runs on top and the
 * logits, the loss, every lora_A / lora_B gradient and the gradient with respect to the input
 * embeddings (which flows back through every frozen NF4 weight) must match PEFT's float64 run on
 * the dequantized weights. Also: the float32 copies are gone, the inference path
 * (an_linear_forward, matvec and GEMM) agrees with a double-precision dequantize-then-multiply, and
 * the perplexity of a random NF4 Llama equals that of its dequantized float32 twin and of a float64
 * forward on the same weights (issue 12).
 *
 * Tolerances as tests/test_lora.c (the engine's): logits and loss 1e-4 of the largest |reference|;
 * gradients 1e-3 of each tensor's largest |value|. The reference uses the very weights the NF4 codes
 * stand for (bitsandbytes' dequantize_4bit), so the only differences are float32 sums in another
 * order (~1e-6). an_infer_linear: 1e-5 of the largest |output| (docs/nf4.md: the kernels agree
 * with a double-precision reference to ~1e-6). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "infer/infer.h"
#include "infer/perplexity.h"
#include "model/io/config.h"
#include "model/lora.h"
#include "model/nf4_weights.h"
#include "train/step.h"
#include "tests/test_model_util.h"

#define QLORA_FIXTURES "tests/ref/qlora"

/* Every NF4 tensor of m has exactly the bits bitsandbytes produced (fixture keys nf4.<name>.*). */
static void check_bits(an_model *m, const an_safetensors *fx, const char *label) {
    int checked = 0;
    for (int i = 0; i < m->n_params; i++) {
        an_param *p = &m->params[i];
        char key[256];
        snprintf(key, sizeof key, "nf4.%s", p->name);
        const an_st_tensor *w = an_st_find(fx, key);
        if (!w) {
            CHECK_MSG(!an_param_nf4(p), "%s: %s is NF4 but bitsandbytes left it in float", label, p->name);
            continue;
        }
        CHECK_MSG(an_param_nf4(p) && p->data == NULL, "%s: %s should be NF4 with its float copy freed", label, p->name);
        if (!an_param_nf4(p)) continue;
        const an_nf4_tensor *t = an_param_nf4(p);
        snprintf(key, sizeof key, "nf4.%s.absmax", p->name);
        const an_st_tensor *am = an_st_find(fx, key);
        snprintf(key, sizeof key, "nf4.%s.nested_absmax", p->name);
        const an_st_tensor *na = an_st_find(fx, key);
        CHECK(t->double_quant && am && na);
        if (!t->double_quant || !am || !na) continue;
        int same = w->nbytes == (size_t)(t->n + 1) / 2 && memcmp(w->data, t->packed, w->nbytes) == 0 &&
                   am->nbytes == (size_t)t->n_blocks && memcmp(am->data, t->qabsmax, am->nbytes) == 0 &&
                   na->nbytes == (size_t)t->n_blocks2 * 4 && memcmp(na->data, t->absmax2, na->nbytes) == 0;
        CHECK_MSG(same, "%s: %s: NF4 codes or scales differ from bitsandbytes'", label, p->name);
        checked++;
    }
    CHECK_MSG(checked > 0 && checked == m->nf4->n, "%s: %d NF4 tensors checked of %d", label, checked,
              m->nf4 ? m->nf4->n : 0);
}

static an_model *quantized(const char *name, int via_load) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", MODEL_FIXTURES, name);
    an_error e;
    an_model *m;
    const an_ops *ops = fixture_ops(); /* the CPU, or the device AN_TEST_DEVICE names */
    if (!ops) return NULL;
    if (via_load) {
        m = an_model_load_nf4(path, ops, 64, 1, &e);
    } else {
        m = an_model_load(path, ops, &e);
        if (m && an_model_quantize_nf4(m, 64, 1, &e)) {
            an_model_free(m);
            m = NULL;
        }
    }
    if (!m) test_fail_at(__FILE__, __LINE__, "%s: %s", path, e.msg);
    return m;
}

/* The PEFT comparison of tests/test_lora.c, on an NF4 base. */
static void check_against_peft(an_model *m, const char *name, const an_safetensors *fx) {
    char dir[256];
    snprintf(dir, sizeof dir, "tests/ref/lora/%s", name);
    an_error e;
    if (an_lora_load(m, dir, &e)) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        return;
    }
    size_t n_logits = 0, n_demb = 0;
    int32_t *ids = fx_ints(fx, "ids", NULL);
    int32_t *targets = fx_ints(fx, "targets", NULL);
    float *ref_logits = fx_floats(fx, "logits", &n_logits);
    float *ref_loss = fx_floats(fx, "loss", NULL);
    float *ref_demb = fx_floats(fx, "dembeds", &n_demb);
    const an_st_tensor *tid = an_st_find(fx, "ids");
    int B = (int)tid->shape[0], T = (int)tid->shape[1];
    CHECK(an_model_param_count(m, 1) == 0 && m->grad_mem == NULL);
    m->head_rows = 5;
    CHECK(an_model_plan(m, B, T, &e) == 0);
    an_batch batch = {ids, NULL, NULL, targets, B, T};
    float *logits = malloc(n_logits * sizeof(float));
    an_lora *l = m->lora;
    float loss = 0;
    CHECK(an_model_forward(m, &batch, 1, 1.0f, &loss, logits, &e) == 0);
    CHECK(an_model_backward(m, &e) == 0);
    double lerr = test_max_rel_err(logits, ref_logits, n_logits, 1e-12);
    CHECK_MSG(lerr < 1e-4, "%s: logits rel err %.3g", name, lerr);
    CHECK_MSG(fabs(loss - ref_loss[0]) < 1e-4 * ref_loss[0], "%s: loss %.7f vs %.7f", name, loss, ref_loss[0]);
    double derr = test_max_rel_err(m->plan.dres, ref_demb, n_demb, 1e-12);
    CHECK_MSG(derr < 1e-3, "%s: d(input embeddings) rel err %.3g", name, derr);
    double worst = 0;
    int checked = 0;
    for (int i = 0; i < l->n_mods; i++) {
        an_param *ps[2] = {&l->mods[i].a, &l->mods[i].bt};
        for (int k = 0; k < 2; k++) {
            char key[200];
            snprintf(key, sizeof key, "grad.base_model.model.%s", ps[k]->name);
            size_t n = 0;
            float *ref = fx_floats(fx, key, &n);
            if (!ref) continue;
            float *g = malloc(n * sizeof(float)), *tmp = malloc(n * sizeof(float));
            CHECK(n == ps[k]->numel);
            an_model_export(m, ps[k], ps[k]->grad, g, tmp);
            double err = test_max_rel_err(g, ref, n, 1e-12);
            CHECK_MSG(err < 1e-3, "%s: gradient of %s rel err %.3g", name, ps[k]->name, err);
            worst = test_nan_max(worst, err);
            checked++;
            free(g);
            free(tmp);
            free(ref);
        }
    }
    CHECK(checked == 2 * l->n_mods && checked > 0);
    printf("  %s: %d NF4 weights, logits err %.2g, d(embeds) err %.2g, worst adapter gradient err %.2g\n", name,
           m->nf4->n, lerr, derr, worst);
    free(ids);
    free(targets);
    free(ref_logits);
    free(ref_loss);
    free(ref_demb);
    free(logits);
}

static void check_family(const char *name, int via_load) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s/fixture.safetensors", QLORA_FIXTURES, name);
    an_safetensors fx;
    an_error e;
    if (an_st_open(&fx, path, &e)) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        return;
    }
    an_model *m = quantized(name, via_load);
    if (m) {
        check_bits(m, &fx, name);
        /* memory: only embeddings, norms and the head remain float32 */
        size_t f32 = 0;
        for (int i = 0; i < m->n_params; i++)
            if (!an_param_nf4(&m->params[i])) f32 += (m->params[i].numel + 15) / 16 * 16;
        CHECK(m->n_param_floats == f32);
        check_against_peft(m, name, &fx);
        an_model_free(m);
    }
    an_st_close(&fx);
}

static void test_llama_load_nf4(void) { check_family("llama", 1); }
static void test_internlm2_quantize(void) { check_family("internlm2", 0); }

/* The inference path: an_infer_linear (the typed linear op) on an NF4 weight, with and without its adapter, for 1, 3
 * (matvec) and 9 (tiled GEMM) rows, against double precision on the dequantized weight. */
static void test_linear_forward(void) {
    an_model *m = quantized("llama", 1);
    if (!m) return;
    an_error e;
    CHECK(an_lora_load(m, "tests/ref/lora/llama", &e) == 0);
    an_param *w = an_model_find(m, "model.layers.1.mlp.down_proj.weight");
    CHECK(w && an_param_nf4(w));
    if (!w || !an_param_nf4(w) || !m->lora) {
        an_model_free(m);
        return;
    }
    int out = (int)w->shape[0], in = (int)w->shape[1], r = an_lora_rank(m);
    an_infer *s = an_infer_create(m, m->lora, 1, 9, 9, &e); /* 9 rows: the workspace and the adapter's scratch */
    CHECK_MSG(s != NULL, "%s", e.msg);
    const an_lora_module *mod = an_lora_find(m->lora, w);
    CHECK(mod != NULL);
    float *wd = malloc((size_t)out * in * sizeof(float)), *x = malloc(9 * (size_t)in * sizeof(float));
    float *y = malloc(9 * (size_t)out * sizeof(float));
    double *ref = malloc(9 * (size_t)out * sizeof(double));
    float *refb = malloc(9 * (size_t)out * sizeof(float));
    an_nf4_tensor_dequantize(an_param_nf4(w), wd);
    for (int k = 0; k < 9 * in; k++) x[k] = sinf(0.37f * (float)k) - 0.2f;
    for (int with_adapter = 0; with_adapter < 2; with_adapter++) {
        for (int n = 0; n < 9; n++)
            for (int o = 0; o < out; o++) {
                double s = 0;
                for (int i = 0; i < in; i++) s += (double)x[n * in + i] * wd[(size_t)o * in + i];
                if (with_adapter) { /* + scaling * sum_k bt[k, o] (A x)[k] */
                    for (int k = 0; k < r; k++) {
                        double ax = 0;
                        for (int i = 0; i < in; i++) ax += (double)mod->a.data[(size_t)k * in + i] * x[n * in + i];
                        s += m->lora->scaling * ax * mod->bt.data[(size_t)k * out + o];
                    }
                }
                ref[n * out + o] = s;
            }
        for (int k = 0; k < 9 * out; k++) refb[k] = (float)ref[k];
        if (s) s->lora = with_adapter ? m->lora : NULL; /* the state's adapter, or none */
        int rows[3] = {1, 3, 9};
        for (int t = 0; t < 3; t++) {
            if (s) an_infer_linear(s, w, NULL, y, x, rows[t]);
            double err = test_max_rel_err(y, refb, (size_t)rows[t] * out, 1e-12);
            CHECK_MSG(err < 1e-5, "%d rows, adapter %d: rel err %.3g", rows[t], with_adapter, err);
        }
    }
    free(wd);
    free(x);
    free(y);
    free(ref);
    free(refb);
    an_infer_free(s);
    an_model_free(m);
}

/* Bad arguments and what an NF4 weight refuses. */
static void test_refusals(void) {
    an_error e;
    an_model *m = load_fixture_model("llama");
    if (!m) return;
    CHECK(an_model_quantize_nf4(m, 48, 1, &e) != 0);
    CHECK_CONTAINS(e.msg, "blocksize 48");
    CHECK(an_model_quantize_nf4(m, 64, 1, &e) == 0);
    an_model_set_all_trainable(m, 1); /* NF4 weights stay frozen */
    an_param *q = an_model_find(m, "model.layers.0.self_attn.q_proj.weight");
    CHECK(q && an_param_nf4(q) && !q->trainable);
    q->trainable = 1;
    CHECK(an_model_alloc_grads(m, &e) != 0);
    CHECK_CONTAINS(e.msg, "model.layers.0.self_attn.q_proj.weight is NF4-quantized and cannot be trained");
    q->trainable = 0;
    an_full_trainer ft;
    CHECK(an_full_trainer_init(&ft, m, &e) != 0);
    CHECK_CONTAINS(e.msg, "full fine-tuning needs float weights");
    an_model_free(m);

    /* a NaN in a weight: the error names it; what came before is NF4, the rest float, and it runs */
    m = load_fixture_model("llama");
    if (!m) return;
    an_param *up = an_model_find(m, "model.layers.1.mlp.up_proj.weight");
    up->data[5] = NAN;
    CHECK(an_model_quantize_nf4(m, 64, 1, &e) != 0);
    CHECK_CONTAINS(e.msg, "model.layers.1.mlp.up_proj.weight");
    CHECK(!an_param_nf4(up) && up->data && an_param_nf4(an_model_find(m, "model.layers.0.self_attn.q_proj.weight")));
    up->data[5] = 0.0f;
    int32_t ids[4] = {5, 6, 7, 8};
    float logits[4 * 256];
    an_batch b = {ids, NULL, NULL, NULL, 1, 4};
    CHECK(an_model_plan(m, 1, 4, &e) == 0 && an_model_forward(m, &b, 0, 1.0f, NULL, logits, &e) == 0);
    CHECK(isfinite(logits[0]) && isfinite(logits[4 * 256 - 1]));
    an_model_free(m);
}

/* Merging an adapter into NF4 weights as PEFT does (dequantize, add scaling * B A, quantize again):
 * against PEFT's merge_and_unload() on transformers + bitsandbytes' 4-bit model
 * (tests/ref/qlora/llama-merged.safetensors). The sums W + s B A are float32 in a different order,
 * so an element that lands within an ulp of a code midpoint may round to the neighbouring code:
 * at least 99% of the codes must be identical, and every one within one code step; the merged
 * model's logits within 1e-3 of the largest (a code flip moves a weight by one NF4 step of its
 * block, ~0.1 of the block scale, for a handful of the ~6000 weights). Measured: all 18432 codes
 * identical, logits 3e-7. */
static void test_merge_like_peft(void) {
    an_error e;
    an_model *m = an_model_load("tests/ref/qlora/llama-bnb", an_ops_cpu(), &e);
    CHECK_MSG(m, "%s", e.msg);
    if (!m) return;
    CHECK(an_lora_load(m, "tests/ref/lora/llama", &e) == 0);
    CHECK_MSG(an_lora_merge(m, &e) == 0, "%s", e.msg);
    CHECK(m->lora == NULL);
    an_safetensors ref, fx;
    CHECK(an_st_open(&ref, "tests/ref/qlora/llama-merged.safetensors", &e) == 0);
    CHECK(an_st_open(&fx, "tests/ref/qlora/llama/fixture.safetensors", &e) == 0);
    size_t total = 0, same = 0, far = 0;
    for (int i = 0; i < m->n_params; i++) {
        an_param *p = &m->params[i];
        if (!an_param_nf4(p)) continue;
        const an_st_tensor *w = an_st_find(&ref, p->name);
        CHECK_MSG(w && w->nbytes == (size_t)(an_param_nf4(p)->n + 1) / 2, "%s missing from the PEFT merge", p->name);
        if (!w) continue;
        const uint8_t *a = w->data, *b = an_param_nf4(p)->packed;
        for (size_t k = 0; k < w->nbytes; k++) {
            int hi = abs((a[k] >> 4) - (b[k] >> 4)), lo = abs((a[k] & 15) - (b[k] & 15));
            same += (hi == 0) + (lo == 0);
            far += (hi > 1) + (lo > 1);
            total += 2;
        }
    }
    CHECK_MSG(total > 0 && same >= 0.99 * (double)total && far == 0, "%zu of %zu codes as PEFT's, %zu off by more than one",
              same, total, far);
    const an_st_tensor *tid = an_st_find(&fx, "ids");
    int B = (int)tid->shape[0], T = (int)tid->shape[1];
    int32_t *ids = fx_ints(&fx, "ids", NULL);
    size_t n = 0;
    float *want = fx_floats(&ref, "logits", &n), *got = malloc(n * sizeof(float));
    an_batch batch = {ids, NULL, NULL, NULL, B, T};
    CHECK(an_model_plan(m, B, T, &e) == 0 && an_model_forward(m, &batch, 0, 1.0f, NULL, got, &e) == 0);
    double err = test_max_rel_err(got, want, n, 1e-12);
    CHECK_MSG(err < 1e-3, "merged logits rel err %.3g", err);
    printf("  merge into NF4: %zu of %zu codes identical with PEFT's, logits err %.2g\n", same, total, err);
    free(ids);
    free(want);
    free(got);
    an_st_close(&ref);
    an_st_close(&fx);
    an_model_free(m);
}

/* ---- perplexity of an NF4 model against the same weights in float32 and in float64 ---- */

/* A random Llama shaped so that every NF4 code path runs: hidden 96 (q/k/v/o and gate/up rows
 * start inside a block of 64, so the matrix-vector kernel takes its dequantize-a-row path), ffn
 * 1088 (down_proj rows are 17 whole blocks, the AVX2 path, and 1088 columns are two k-panels of
 * the tiled GEMM; gate/up have 17 row tiles, so the tiles run in parallel), grouped-query
 * attention, and a bias on every linear (kept in float32 beside the NF4 weight). Seed 21, every
 * weight matrix scaled by 7: a "sharp" random model whose mean NLL (~7.6) is above ln(512) = 6.24,
 * like the model of the issue-12 report; that is where float32 rounding shows most (measured: the
 * float32 forward is ~1e-8 off float64 here, ~1e-7 for larger scales). */
static an_model *sharp_random_llama(void) {
    an_error e;
    an_model_config c;
    if (an_config_load(&c, MODEL_FIXTURES "/llama/config.json", &e)) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        return NULL;
    }
    c.vocab_size = 512;
    c.dim = 96;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 24;
    c.ffn_dim = 1088;
    c.n_layers = 2;
    c.max_seq = 64;
    c.qkv_bias = c.o_bias = c.mlp_bias = c.proj_bias = 1;
    an_model *m = an_config_validate(&c, "test config", &e) ? NULL : an_model_init_random(&c, an_ops_cpu(), 21, &e);
    if (!m) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        return NULL;
    }
    an_rng r;
    an_rng_seed(&r, 22);
    for (int i = 0; i < m->n_params; i++) {
        an_param *p = &m->params[i];
        int bias = strstr(p->name, ".bias") != NULL;
        if (p->ndim != 2 && !bias) continue; /* norm weights stay 1 */
        for (size_t k = 0; k < p->numel; k++) p->data[k] = bias ? 0.1f * an_rng_normal(&r) : 7.0f * p->data[k];
    }
    return m;
}

/* y[n, o] = x[n, :] . w[o, :] + b[o] in double; w and b float32 as the model holds them */
static void lin64(double *y, const double *x, const an_param *w, const an_param *b, int N) {
    int OC = (int)w->shape[0], C = (int)w->shape[1];
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = b ? b->data[o] : 0.0;
            for (int k = 0; k < C; k++) s += (double)w->data[(size_t)o * C + k] * x[(size_t)n * C + k];
            y[(size_t)n * OC + o] = s;
        }
}

static void rms64(double *y, const double *x, const an_param *w, int N, int C, double eps) {
    for (int n = 0; n < N; n++) {
        double ss = 0;
        for (int k = 0; k < C; k++) ss += x[n * C + k] * x[n * C + k];
        double r = 1.0 / sqrt(ss / C + eps);
        for (int k = 0; k < C; k++) y[n * C + k] = x[n * C + k] * r * w->data[k];
    }
}

/* rotate-half RoPE at positions 0..N-1 (Hugging Face Llama) */
static void rope64(double *x, int N, int nh, int hd, double theta) {
    for (int n = 0; n < N; n++)
        for (int h = 0; h < nh; h++) {
            double *v = x + ((size_t)n * nh + h) * hd;
            for (int i = 0; i < hd / 2; i++) {
                double a = n * pow(theta, -2.0 * i / hd), c = cos(a), s = sin(a), x0 = v[i], x1 = v[i + hd / 2];
                v[i] = x0 * c - x1 * s;
                v[i + hd / 2] = x1 * c + x0 * s;
            }
        }
}

/* The perplexity an_perplexity computes (windows of ctx overlapping by one token), with a plain
 * float64 Llama forward written from the Hugging Face definition on d's float32 weights. */
static double nll64(const an_model *d, const int32_t *ids, size_t n, int ctx) {
    const an_model_config *c = &d->cfg;
    int C = c->dim, F = c->ffn_dim, nh = c->n_heads, nkv = c->n_kv_heads, hd = c->head_dim, V = c->vocab_size;
    int qd = nh * hd, kvd = nkv * hd;
    double *x = malloc(sizeof(double) * ctx * C), *h = malloc(sizeof(double) * ctx * C);
    double *q = malloc(sizeof(double) * ctx * qd), *k = malloc(sizeof(double) * ctx * kvd);
    double *v = malloc(sizeof(double) * ctx * kvd), *att = malloc(sizeof(double) * ctx * qd);
    double *a = malloc(sizeof(double) * ctx * F), *b = malloc(sizeof(double) * ctx * F);
    double *lg = malloc(sizeof(double) * V), *sc = malloc(sizeof(double) * ctx), sum = 0;
    const an_param *head = d->lm_head ? d->lm_head : d->tok_emb;
    for (size_t start = 0; start + 1 < n; start += (size_t)ctx - 1) {
        int T = n - start < (size_t)ctx ? (int)(n - start) : ctx;
        for (int t = 0; t < T; t++)
            for (int i = 0; i < C; i++) x[t * C + i] = d->tok_emb->data[(size_t)ids[start + t] * C + i];
        for (int l = 0; l < c->n_layers; l++) {
            const an_layer *L = &d->layers[l];
            rms64(h, x, L->attn_norm_w, T, C, c->norm_eps);
            lin64(q, h, L->wq, L->bq, T);
            lin64(k, h, L->wk, L->bk, T);
            lin64(v, h, L->wv, L->bv, T);
            rope64(q, T, nh, hd, c->rope_theta);
            rope64(k, T, nkv, hd, c->rope_theta);
            for (int t = 0; t < T; t++)
                for (int hh = 0; hh < nh; hh++) {
                    int g = hh / (nh / nkv);
                    double mx = -INFINITY, den = 0;
                    for (int s = 0; s <= t; s++) {
                        double dot = 0;
                        for (int i = 0; i < hd; i++) dot += q[(t * nh + hh) * hd + i] * k[(s * nkv + g) * hd + i];
                        sc[s] = dot / sqrt((double)hd);
                        if (sc[s] > mx) mx = sc[s];
                    }
                    for (int s = 0; s <= t; s++) den += (sc[s] = exp(sc[s] - mx));
                    for (int i = 0; i < hd; i++) {
                        double o = 0;
                        for (int s = 0; s <= t; s++) o += sc[s] * v[(s * nkv + g) * hd + i];
                        att[(t * nh + hh) * hd + i] = o / den;
                    }
                }
            lin64(h, att, L->wo, L->bo, T);
            for (int i = 0; i < T * C; i++) x[i] += h[i];
            rms64(h, x, L->ffn_norm_w, T, C, c->norm_eps);
            lin64(a, h, L->w_gate, L->b_gate, T);
            lin64(b, h, L->w_up, L->b_up, T);
            for (int i = 0; i < T * F; i++) a[i] = a[i] / (1.0 + exp(-a[i])) * b[i]; /* SwiGLU */
            lin64(h, a, L->w_down, L->b_down, T);
            for (int i = 0; i < T * C; i++) x[i] += h[i];
        }
        rms64(h, x, d->final_norm_w, T, C, c->norm_eps);
        for (int t = 0; t + 1 < T; t++) {
            lin64(lg, h + (size_t)t * C, head, NULL, 1);
            double mx = -INFINITY, s = 0;
            for (int j = 0; j < V; j++) mx = lg[j] > mx ? lg[j] : mx;
            for (int j = 0; j < V; j++) s += exp(lg[j] - mx);
            sum += mx + log(s) - lg[ids[start + t + 1]];
        }
    }
    free(x), free(h), free(q), free(k), free(v), free(att), free(a), free(b), free(lg), free(sc);
    return sum / (double)(n - 1);
}

/* Issue 12 reported `autoneg perplexity` of an NF4 folder 2.3e-5 (relative) above the same
 * weights dequantized to float32, which matched float64 to 1e-7. Here: an NF4 model, a float32
 * model holding its weights dequantized (an_nf4_tensor_dequantize, bit-exact with bitsandbytes by
 * tests/test_nf4.c), and a float64 forward on those float32 weights score the same 190 tokens,
 * with windows of 64 (every NF4 linear through the tiled GEMM) and of 4 and 3 (every NF4 linear
 * through the matrix-vector kernel; 63 and 95 windows).
 *
 * Tolerance: 1e-6 of the float64 NLL for both float32 paths and between them. The NF4 kernels
 * dequantize exactly the float32 weights the dense path holds and differ from it only in summation
 * order; rounding errors of either path are a few ulp per logit with random signs, and the NLL
 * averages them over the scored tokens. Measured here: NF4 within 2.3e-9 of float32 (bit-identical
 * on OpenBLAS for shapes whose columns are whole blocks), both within 2.1e-8 of float64; on sharper
 * models (weights x10) and over 1 to 16 threads, float32 and NF4 stay within 1.2e-7 of float64.
 * The bound keeps 8x headroom over that and is still 23x below the reported 2.3e-5. A real fault
 * shows far above it: a matrix-vector kernel that takes a block's nested scale from the wrong
 * 256-block (scale_iter_at with r2 = 0) moves this NLL by 1.2e-4 (ctx 3) and 2.2e-4 (ctx 4), while
 * rounding the double-quantized scale once instead of twice (fmaf) moves it by 1.4e-9 (docs/nf4.md). */
static void test_perplexity_nf4_matches_dequantized_and_float64(void) {
    an_model *m = sharp_random_llama();
    if (!m) return;
    an_error e;
    CHECK_MSG(an_model_quantize_nf4(m, 64, 1, &e) == 0, "%s", e.msg);
    an_model *d = an_model_create(&m->cfg, an_ops_cpu(), &e);
    CHECK_MSG(d, "%s", e.msg);
    if (!d || !m->nf4) {
        an_model_free(d);
        an_model_free(m);
        return;
    }
    int n_nf4 = 0;
    for (int i = 0; i < m->n_params; i++) {
        an_param *p = &m->params[i], *q = an_model_find(d, p->name);
        n_nf4 += an_param_nf4(p) != NULL;
        if (an_param_nf4(p)) an_nf4_tensor_dequantize(an_param_nf4(p), q->data);
        else memcpy(q->data, p->data, p->numel * sizeof(float));
    }
    CHECK_MSG(n_nf4 == 14, "%d NF4 weights, expected the 14 linears of two layers", n_nf4);
    enum { NTOK = 190 };
    int32_t ids[NTOK];
    an_rng r;
    an_rng_seed(&r, 23);
    for (int i = 0; i < NTOK; i++) ids[i] = (int32_t)an_rng_below(&r, (uint64_t)m->cfg.vocab_size);
    const double tol = 1e-6;
    const int ctxs[] = {64, 4, 3};
    for (int ci = 0; ci < 3; ci++) {
        an_ppl pq, pd;
        int ctx = ctxs[ci];
        CHECK_MSG(an_perplexity(m, ids, NTOK, ctx, &pq, &e) == 0, "%s", e.msg);
        CHECK_MSG(an_perplexity(d, ids, NTOK, ctx, &pd, &e) == 0, "%s", e.msg);
        double ref = nll64(d, ids, NTOK, ctx);
        double e_nf4 = fabs(pq.nll - ref) / ref, e_f32 = fabs(pd.nll - ref) / ref, e_pair = fabs(pq.nll - pd.nll) / ref;
        printf("  ctx %2d: NLL float64 %.9f, float32 %.9f (rel %.2g), NF4 %.9f (rel %.2g, vs float32 %.2g)\n", ctx, ref,
               pd.nll, e_f32, pq.nll, e_nf4, e_pair);
        CHECK_MSG(e_f32 <= tol, "ctx %d: float32 NLL %.9f vs float64 %.9f: relative %.3g", ctx, pd.nll, ref, e_f32);
        CHECK_MSG(e_nf4 <= tol, "ctx %d: NF4 NLL %.9f vs float64 %.9f on the dequantized weights: relative %.3g", ctx,
                  pq.nll, ref, e_nf4);
        CHECK_MSG(e_pair <= tol, "ctx %d: NF4 NLL %.9f vs float32 %.9f on the same weights: relative %.3g", ctx, pq.nll,
                  pd.nll, e_pair);
    }
    an_model_free(d);
    an_model_free(m);
}

int main(void) {
    RUN(test_llama_load_nf4);
    RUN(test_internlm2_quantize);
    RUN(test_linear_forward);
    RUN(test_refusals);
    RUN(test_merge_like_peft);
    RUN(test_perplexity_nf4_matches_dequantized_and_float64);
    return test_finish();
}
