/* Quantized model folders (model/nf4_weights.h): autoneg's NF4 save is bitsandbytes' serialization
 * byte for byte, loads again without re-quantizing, and reads what transformers + bitsandbytes
 * wrote themselves; damaged NF4 tensors give errors that name the file and the tensor.
 *
 * References: tests/ref/qlora/llama-bnb/ (the tiny Llama quantized and saved by transformers +
 * bitsandbytes 0.50, make_qlora_fixtures.py) and tests/ref/qlora/llama/fixture.safetensors (PEFT's
 * float64 logits on the dequantized weights with the LoRA test adapter). Tolerance for those logits:
 * 1e-4 of the largest |logit|, as tests/test_lora.c. Save -> load must be bit-identical (same codes,
 * same float32 tensors, same kernels). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/file.h"
#include "model/lora.h"
#include "model/nf4_weights.h"
#include "tests/test_model_util.h"

#define BNB_DIR "tests/ref/qlora/llama-bnb"

static int logits_of(an_model *m, const an_safetensors *fx, float **out, size_t *n) {
    an_error e;
    const an_st_tensor *tid = an_st_find(fx, "ids");
    int B = (int)tid->shape[0], T = (int)tid->shape[1];
    int32_t *ids = fx_ints(fx, "ids", NULL);
    *n = (size_t)B * T * m->cfg.vocab_size;
    *out = malloc(*n * sizeof(float));
    an_batch b = {ids, NULL, NULL, NULL, B, T};
    int rc = an_model_plan(m, B, T, &e) || an_model_forward(m, &b, 0, 1.0f, NULL, *out, &e);
    if (rc) test_fail_at(__FILE__, __LINE__, "%s", e.msg);
    free(ids);
    return rc;
}

/* autoneg's save of the tiny Llama is the file bitsandbytes wrote: the same tensors, dtypes, shapes
 * and bytes, and the same quantization_config. */
static void test_save_is_bitsandbytes(void) {
    an_error e;
    an_model *m = an_model_load_nf4("tests/ref/models/llama", an_ops_cpu(), 64, 1, &e);
    CHECK_MSG(m, "%s", e.msg);
    if (!m) return;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/llama-nf4", test_tmpdir());
    CHECK_MSG(an_model_save(m, dir, &e) == 0, "%s", e.msg);
    an_safetensors ours, bnb;
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(an_st_open(&ours, path, &e) == 0);
    CHECK(an_st_open(&bnb, BNB_DIR "/model.safetensors", &e) == 0);
    CHECK_MSG(ours.n_tensors == bnb.n_tensors, "%d tensors, bitsandbytes wrote %d", ours.n_tensors, bnb.n_tensors);
    int same = 0;
    for (int i = 0; i < bnb.n_tensors; i++) {
        const an_st_tensor *b = &bnb.tensors[i], *o = an_st_find(&ours, b->name);
        int ok = o && o->dtype == b->dtype && o->ndim == b->ndim && o->nbytes == b->nbytes &&
                 memcmp(o->shape, b->shape, sizeof(int64_t) * (size_t)b->ndim) == 0 && memcmp(o->data, b->data, b->nbytes) == 0;
        CHECK_MSG(ok, "%s differs from what bitsandbytes wrote", b->name);
        same += ok;
    }
    printf("  %d of %d tensors byte-identical with transformers + bitsandbytes' save\n", same, bnb.n_tensors);
    an_st_close(&ours);
    an_st_close(&bnb);
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *cfg = an_read_file(path, NULL, &e);
    CHECK(cfg && strstr(cfg, "\"quant_method\":\t\"bitsandbytes\"") && strstr(cfg, "\"bnb_4bit_quant_type\":\t\"nf4\"") &&
          strstr(cfg, "\"bnb_4bit_use_double_quant\":\ttrue") && strstr(cfg, "\"load_in_4bit\":\ttrue"));
    free(cfg);

    /* load again: NF4 straight from the file (an_model_load never quantizes), identical logits */
    an_model *m2 = an_model_load(dir, an_ops_cpu(), &e);
    CHECK_MSG(m2, "%s", e.msg);
    an_safetensors fx;
    CHECK(an_st_open(&fx, "tests/ref/qlora/llama/fixture.safetensors", &e) == 0);
    if (m2) {
        CHECK(m2->nf4 && m2->nf4->n == m->nf4->n);
        for (int i = 0; m2->nf4 && i < m2->nf4->n; i++) {
            const an_nf4_tensor *a = &m->nf4->tensors[i], *b = &m2->nf4->tensors[i];
            CHECK(a->n == b->n && memcmp(a->packed, b->packed, (size_t)(a->n + 1) / 2) == 0 &&
                  memcmp(a->qabsmax, b->qabsmax, (size_t)a->n_blocks) == 0 &&
                  memcmp(a->absmax2, b->absmax2, (size_t)a->n_blocks2 * 4) == 0 && a->offset == b->offset);
        }
        float *l1 = NULL, *l2 = NULL;
        size_t n1 = 0, n2 = 0;
        if (!logits_of(m, &fx, &l1, &n1) && !logits_of(m2, &fx, &l2, &n2))
            CHECK(n1 == n2 && memcmp(l1, l2, n1 * sizeof(float)) == 0);
        free(l1);
        free(l2);
    }
    an_st_close(&fx);
    an_model_free(m2);
    an_model_free(m);
}

/* GPT-2 (Conv1D weights, stored [in, out] in float files) and InternLM2 (fused wqkv): quantize ->
 * save -> load gives bit-identical logits. */
static void roundtrip(const char *name) {
    an_error e;
    an_model *m = load_fixture_model(name);
    if (!m) return;
    CHECK(an_model_quantize_nf4(m, 64, 1, &e) == 0);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s-nf4", test_tmpdir(), name);
    CHECK_MSG(an_model_save(m, dir, &e) == 0, "%s", e.msg);
    an_model *m2 = an_model_load(dir, an_ops_cpu(), &e);
    CHECK_MSG(m2 && m2->nf4 && m2->nf4->n == m->nf4->n, "%s: %s", name, m2 ? "NF4 weights lost" : e.msg);
    int32_t ids[12] = {3, 9, 27, 81, 50, 10, 7, 1, 0, 4, 16, 64};
    size_t n = 12 * (size_t)m->cfg.vocab_size;
    float *l1 = malloc(n * sizeof(float)), *l2 = malloc(n * sizeof(float));
    an_batch b = {ids, NULL, NULL, NULL, 2, 6};
    CHECK(an_model_plan(m, 2, 6, &e) == 0 && an_model_forward(m, &b, 0, 1.0f, NULL, l1, &e) == 0);
    if (m2) CHECK(an_model_plan(m2, 2, 6, &e) == 0 && an_model_forward(m2, &b, 0, 1.0f, NULL, l2, &e) == 0);
    CHECK_MSG(m2 && memcmp(l1, l2, n * sizeof(float)) == 0, "%s: logits differ after save -> load", name);
    free(l1);
    free(l2);
    an_model_free(m2);
    an_model_free(m);
}

static void test_roundtrip_gpt2_internlm2(void) {
    roundtrip("gpt2");
    roundtrip("internlm2");
}

/* What transformers + bitsandbytes saved: loads as NF4, and with the LoRA test adapter unmerged gives
 * PEFT's logits. */
static void test_load_bitsandbytes_folder(void) {
    an_error e;
    an_model *m = an_model_load(BNB_DIR, an_ops_cpu(), &e);
    CHECK_MSG(m, "%s", e.msg);
    if (!m) return;
    CHECK(m->nf4 && m->nf4->n == 14 && m->nf4->double_quant && m->nf4->blocksize == 64);
    CHECK(an_lora_load(m, "tests/ref/lora/llama", &e) == 0);
    an_safetensors fx;
    CHECK(an_st_open(&fx, "tests/ref/qlora/llama/fixture.safetensors", &e) == 0);
    float *logits = NULL;
    size_t n = 0, nref = 0;
    float *ref = fx_floats(&fx, "logits", &nref);
    if (!logits_of(m, &fx, &logits, &n)) {
        double err = test_max_rel_err(logits, ref, n, 1e-12);
        CHECK_MSG(n == nref && err < 1e-4, "logits rel err %.3g", err);
    }
    free(logits);
    free(ref);
    an_st_close(&fx);
    an_model_free(m);
}

/* ---- damaged files ---- */

typedef struct edit {
    const char *key;
    an_dtype dtype;
    int ndim;
    int64_t shape[2];
    const void *data;
} edit;

/* dir/ = src/ with one tensor replaced */
static const char *damaged(const char *src, const char *tag, const edit *ed) {
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", test_tmpdir(), tag);
    an_error e;
    char path[600], from[600];
    mkdir(dir, 0777);
    snprintf(from, sizeof from, "%s/config.json", src);
    snprintf(path, sizeof path, "%s/config.json", dir);
    size_t n = 0;
    char *cfg = an_read_file(from, &n, &e);
    CHECK(cfg && an_write_file_atomic(path, cfg, n, &e) == 0);
    free(cfg);
    an_safetensors st;
    snprintf(from, sizeof from, "%s/model.safetensors", src);
    CHECK(an_st_open(&st, from, &e) == 0);
    an_st_writer w;
    an_st_writer_init(&w);
    for (int i = 0; i < st.n_tensors; i++) {
        const an_st_tensor *t = &st.tensors[i];
        if (!strcmp(t->name, ed->key)) CHECK(an_st_writer_add(&w, t->name, ed->dtype, ed->ndim, ed->shape, ed->data, &e) == 0);
        else CHECK(an_st_writer_add(&w, t->name, t->dtype, t->ndim, t->shape, t->data, &e) == 0);
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK_MSG(an_st_write(&w, path, &e) == 0, "%s", e.msg);
    an_st_writer_free(&w);
    an_st_close(&st);
    return dir;
}

static void expect_error(const char *dir, const char *what) {
    an_error e;
    an_model *m = an_model_load(dir, an_ops_cpu(), &e);
    CHECK_MSG(!m, "%s: loaded", dir);
    an_model_free(m);
    if (m) return;
    CHECK_CONTAINS(e.msg, dir);
    CHECK_CONTAINS(e.msg, "model.layers.0.self_attn.q_proj.weight");
    CHECK_CONTAINS(e.msg, what);
}

#define Q "model.layers.0.self_attn.q_proj.weight"

static void test_bad_files(void) {
    an_safetensors st;
    an_error e;
    CHECK(an_st_open(&st, BNB_DIR "/model.safetensors", &e) == 0);
    const an_st_tensor *w = an_st_find(&st, Q), *am = an_st_find(&st, Q ".absmax");
    const an_st_tensor *na = an_st_find(&st, Q ".nested_absmax");
    CHECK(w && w->nbytes == 512 && am && am->nbytes == 16 && na && na->nbytes == 4);
    if (!w || !am || !na) {
        an_st_close(&st);
        return;
    }
    /* the packed weight one byte short of what 32 x 32 codes need */
    edit e1 = {Q, AN_U8, 2, {511, 1}, w->data};
    expect_error(damaged(BNB_DIR, "short-weight", &e1), "weight holds 511 bytes but shape [32 x 32] needs 512");
    /* fewer absmax codes than the 16 blocks of 64 */
    edit e2 = {Q ".absmax", AN_U8, 1, {15}, am->data};
    expect_error(damaged(BNB_DIR, "short-absmax", &e2), "absmax has 15 values but 1024 elements in blocks of 64 need 16");
    /* a quant_state whose shape disagrees with the model: same element count, other layout */
    const char *js = "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [16, 64], "
                     "\"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": 0.05350475758314133}";
    edit e3 = {Q ".quant_state.bitsandbytes__nf4", AN_U8, 1, {(int64_t)strlen(js)}, js};
    expect_error(damaged(BNB_DIR, "other-shape", &e3), "quant_state shape [16, 64], but the config implies [32, 32]");
    /* a quant_state that says blocks of 128: the absmax count no longer fits */
    const char *js2 = "{\"quant_type\": \"nf4\", \"blocksize\": 128, \"dtype\": \"float32\", \"shape\": [32, 32], "
                      "\"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": 0.05350475758314133}";
    edit e4 = {Q ".quant_state.bitsandbytes__nf4", AN_U8, 1, {(int64_t)strlen(js2)}, js2};
    expect_error(damaged(BNB_DIR, "other-blocksize", &e4), "absmax has 16 values but 1024 elements in blocks of 128 need 8");
    /* a NaN scale */
    float nan_scale = NAN;
    edit e5 = {Q ".nested_absmax", AN_F32, 1, {1}, &nan_scale};
    expect_error(damaged(BNB_DIR, "nan-nested", &e5), "nested_absmax[0] is nan");
    an_st_close(&st);

    /* without double quantization the absmax are float32: NaN is refused; 0 is what bitsandbytes
     * writes for an all-zero block, so it loads and that block is zeros */
    an_model *m = an_model_load_nf4("tests/ref/models/llama", an_ops_cpu(), 64, 0, &e);
    CHECK_MSG(m, "%s", e.msg);
    if (!m) return;
    char plain[512];
    snprintf(plain, sizeof plain, "%s/llama-nf4-plain", test_tmpdir());
    CHECK(an_model_save(m, plain, &e) == 0);
    an_param *q = an_model_find(m, Q);
    float absmax[16];
    memcpy(absmax, an_param_nf4(q)->absmax, sizeof absmax);
    absmax[3] = NAN;
    edit e6 = {Q ".absmax", AN_F32, 1, {16}, absmax};
    expect_error(damaged(plain, "nan-absmax", &e6), "absmax[3] is nan");
    absmax[3] = 0.0f;
    an_model *z = an_model_load(damaged(plain, "zero-absmax", &e6), an_ops_cpu(), &e);
    CHECK_MSG(z, "%s", e.msg);
    if (z) {
        float wq[32 * 32], wo[32 * 32];
        an_nf4_tensor_dequantize(an_param_nf4(an_model_find(z, Q)), wq);
        an_nf4_tensor_dequantize(an_param_nf4(q), wo);
        int ok = 1;
        for (int i = 0; i < 32 * 32; i++) ok &= (i / 64 == 3) ? wq[i] == 0.0f : wq[i] == wo[i];
        CHECK(ok);
    }
    an_model_free(z);
    an_model_free(m);
}

int main(void) {
    RUN(test_save_is_bitsandbytes);
    RUN(test_load_bitsandbytes_folder);
    RUN(test_roundtrip_gpt2_internlm2);
    RUN(test_bad_files);
    return test_finish();
}
