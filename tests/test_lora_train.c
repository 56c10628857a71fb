/* A short LoRA and QLoRA run on a real pretrained model: TinyStories-656K (../shared/models) learns
 * prompt -> negative prompt on the SDXL style pairs in ../shared/data, through the step API
 * (train/lora_step.h), and the validation loss falls.
 *
 * Reference: the validation loss of the same model before training, on pairs held out from training
 * (every 8th pair). The model has never seen "Negative prompt:" lists, so its loss on them starts high
 * (~7 nats); 40 steps of 4 rows x 128 tokens of LoRA (r 8, alpha 16, dropout 0.05, all linear layers)
 * at lr 3e-3 must take at least 15% off -- measured: 7.01 -> 4.67 (LoRA), 7.00 -> 4.65 (QLoRA) --
 * while the frozen base (float weights, or NF4 codes and scales) does not change by a single bit. A
 * reloaded adapter gives the same validation loss exactly.
 * QLoRA: the linear layers are quantized to NF4 with double quantization as the model loads
 * (an_model_load_nf4), and quantization itself must cost little: the NF4 model's validation loss
 * before training is within 5% of the float model's (NF4 keeps ~3 significant bits per weight;
 * QLoRA's premise is that this barely moves the loss).
 * One thread: GEMMs of 128 columns gain nothing from more, and OpenBLAS threads spinning on a busy
 * shared machine made this test 15x slower. */
#include <omp.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/pairs/pairs.h"
#include "data/prompts/template.h"
#include "data/tokenizers/tokenizer.h"
#include "model/lora.h"
#include "model/nf4_weights.h"
#include "tests/test_model_util.h"
#include "train/lora_step.h"

#define T_LEN 128
#define ROWS 4
#define STEPS 40

typedef struct sample {
    int32_t ids[T_LEN], targets[T_LEN];
} sample;

/* one padded row per sample: targets already shifted, -100 on the prompt and padding */
static int encode(const an_template *tpl, const an_encoder *enc, const an_pair *p, sample *s) {
    an_ids ids = {0}, labels = {0};
    an_error e;
    int rc = an_template_encode_sample(tpl, enc, p->prompt, p->negative, "", 0, &ids, &labels, &e);
    if (rc == 0 && ids.n > T_LEN) rc = -1; /* only whole samples: a truncated one may have nothing to learn */
    if (rc == 0) {
        for (int t = 0; t < T_LEN; t++) {
            s->ids[t] = t < (int)ids.n ? ids.v[t] : 0;
            s->targets[t] = t + 1 < (int)ids.n ? labels.v[t + 1] : AN_IGNORE_INDEX;
        }
    }
    an_ids_free(&ids);
    an_ids_free(&labels);
    return rc;
}

static double mean_loss(an_model *m, const sample *v, int n) {
    int32_t ids[ROWS * T_LEN], tg[ROWS * T_LEN];
    double sum = 0;
    int batches = 0;
    for (int i = 0; i + ROWS <= n; i += ROWS, batches++) {
        for (int r = 0; r < ROWS; r++) {
            memcpy(ids + r * T_LEN, v[i + r].ids, sizeof ids[0] * T_LEN);
            memcpy(tg + r * T_LEN, v[i + r].targets, sizeof tg[0] * T_LEN);
        }
        an_batch b = {ids, NULL, NULL, tg, ROWS, T_LEN};
        float loss;
        an_error e;
        CHECK(an_model_forward(m, &b, 0, 1.0f, &loss, NULL, &e) == 0);
        sum += loss;
    }
    return sum / batches;
}

static an_model *load(const char *dir, int quantized, an_error *e) {
    return quantized ? an_model_load_nf4(dir, an_ops_cpu(), 64, 1, e) : an_model_load(dir, an_ops_cpu(), e);
}

/* The frozen base as bytes: the float parameters, or every NF4 tensor's packed codes. */
static uint8_t *base_snapshot(const an_model *m, int quantized, size_t *n) {
    *n = 0;
    if (!quantized) {
        *n = m->n_param_floats * sizeof(float);
        uint8_t *s = malloc(*n);
        if (s) memcpy(s, m->param_mem, *n);
        return s;
    }
    for (int i = 0; i < m->nf4->n; i++) *n += (size_t)(m->nf4->tensors[i].n + 1) / 2;
    uint8_t *s = malloc(*n), *p = s;
    for (int i = 0; s && i < m->nf4->n; i++) {
        const an_nf4_tensor *t = &m->nf4->tensors[i];
        memcpy(p, t->packed, (size_t)(t->n + 1) / 2);
        p += (size_t)(t->n + 1) / 2;
    }
    return s;
}

static void short_run(int quantized) {
    const char *model_dir = test_shared("models/TinyStories-656K");
    an_error e;
    an_model *m = load(model_dir, quantized, &e);
    an_tokenizer *tok = an_tokenizer_load(model_dir, &e);
    CHECK(m && tok);
    if (!m || !tok) {
        an_model_free(m);
        an_tokenizer_free(tok);
        return;
    }
    an_pairs pairs = {0};
    an_read_opts ro = {0};
    ro.subject = "a castle on a hill";
    CHECK(an_pairs_read(&pairs, test_shared("data/sdxl-prompt-styler/sdxl_styles_twri.json"), &ro, NULL, &e) == 0);
    CHECK(an_pairs_read(&pairs, test_shared("data/comfyui-promptstylers/sdxl_styles_horror.json"), &ro, NULL, &e) == 0);
    an_template tpl;
    CHECK(an_template_builtin("infotext", &tpl, &e) == 0);
    an_encoder enc = an_encoder_of(tok);
    sample *train = calloc(pairs.n, sizeof *train), *val = calloc(pairs.n, sizeof *val);
    int n_train = 0, n_val = 0;
    for (size_t i = 0; i < pairs.n; i++) {
        if (!pairs.v[i].negative || !pairs.v[i].negative[0]) continue;
        sample *s = (i % 8 == 0) ? &val[n_val] : &train[n_train];
        if (encode(&tpl, &enc, &pairs.v[i], s) == 0) (i % 8 == 0) ? n_val++ : n_train++;
    }
    CHECK(n_train >= 300 && n_val >= 40);

    double before_f32 = 0;
    if (quantized) {
        CHECK(m->nf4 && m->nf4->n == 2 * 7); /* 2 layers x q, k, v, o, gate, up, down */
        an_model *f32 = an_model_load(model_dir, an_ops_cpu(), &e);
        CHECK(f32 && an_model_plan(f32, ROWS, T_LEN, &e) == 0);
        if (f32) before_f32 = mean_loss(f32, val, n_val);
        an_model_free(f32);
    }

    an_lora_config c = an_lora_config_default();
    c.r = 8;
    c.alpha = 16;
    c.dropout = 0.05f;
    c.seed = 1;
    CHECK(an_lora_config_add_target(&c, "all-linear", &e) == 0);
    CHECK(an_lora_attach(m, &c, &e) == 0);
    CHECK(an_model_plan(m, ROWS, T_LEN, &e) == 0);
    an_lora_trainer tr;
    CHECK(an_lora_trainer_init(&tr, m, &e) == 0);
    size_t base_bytes;
    uint8_t *base_before = base_snapshot(m, quantized, &base_bytes);

    double before = mean_loss(m, val, n_val);
    if (quantized) CHECK_MSG(fabs(before - before_f32) < 0.05 * before_f32, "NF4 %.4f vs float %.4f", before, before_f32);
    an_adamw_config opt = {3e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 1.0f};
    int32_t ids[ROWS * T_LEN], tg[ROWS * T_LEN];
    float first = 0, last = 0;
    for (int step = 0; step < STEPS; step++) {
        for (int r = 0; r < ROWS; r++) {
            const sample *s = &train[(step * ROWS + r) % n_train];
            memcpy(ids + r * T_LEN, s->ids, sizeof ids[0] * T_LEN);
            memcpy(tg + r * T_LEN, s->targets, sizeof tg[0] * T_LEN);
        }
        an_batch b = {ids, NULL, NULL, tg, ROWS, T_LEN};
        an_step_stats st;
        CHECK(an_lora_train_step(&tr, &b, &opt, &st, &e) == 0);
        CHECK_MSG(isfinite(st.loss) && st.grad_norm > 0, "step %d loss %g norm %g tokens %d", step, st.loss, st.grad_norm, st.tokens);
        if (step == 0) first = st.loss;
        last = st.loss;
    }
    double after = mean_loss(m, val, n_val);
    printf("  TinyStories-656K %s: validation loss %.4f -> %.4f (train %.4f -> %.4f), %d train / %d val pairs\n",
           quantized ? "QLoRA" : "LoRA", before, after, first, last, n_train, n_val);
    CHECK(after < 0.85 * before);
    size_t base_bytes_after;
    uint8_t *base_after = base_snapshot(m, quantized, &base_bytes_after);
    CHECK(base_before && base_after && base_bytes == base_bytes_after && memcmp(base_before, base_after, base_bytes) == 0);
    free(base_before);
    free(base_after);

    /* the adapter folder (checked by hand against PEFT with tests/ref/check_peft_compat.py) on a freshly
     * loaded base gives the same loss exactly */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/tinystories-%s-adapter", test_tmpdir(), quantized ? "qlora" : "lora");
    snprintf(m->lora->base_model, sizeof m->lora->base_model, "%s", model_dir);
    CHECK(an_lora_save(m, dir, &e) == 0);
    an_model *m2 = load(model_dir, quantized, &e);
    CHECK(m2 && an_lora_load(m2, dir, &e) == 0);
    if (m2 && m2->lora) {
        CHECK(an_model_plan(m2, ROWS, T_LEN, &e) == 0);
        CHECK(mean_loss(m2, val, n_val) == after);
    }
    an_model_free(m2);

    an_lora_trainer_free(&tr);
    free(train);
    free(val);
    an_template_free(&tpl);
    an_pairs_free(&pairs);
    an_tokenizer_free(tok);
    an_model_free(m);
}

static void test_tinystories_lora(void) { short_run(0); }
static void test_tinystories_qlora(void) { short_run(1); }

int main(void) {
    omp_set_num_threads(1);
    RUN(test_tinystories_lora);
    RUN(test_tinystories_qlora);
    return test_finish();
}
