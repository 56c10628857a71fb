/* Writing GGUF (model/io/gguf_write.h, an_ggml_quantize, autoneg export).
 *
 * References: tiny.gguf (tests/ref/make_gguf_model_fixture.py) was written by the gguf package the way
 * llama.cpp's converter writes a Llama, so an F32 export of the model read from it must give the same
 * tensor bytes (names, shapes, the q/k row permutation) and, read back, bit-identical logits.
 * quants.safetensors (tests/ref/make_gguf_write_fixture.py) holds the gguf package's Q8_0 / Q4_0 bytes
 * of awkward blocks (zeros, rounding ties, equal maxima of both signs, tiny scales): autoneg's quantizer
 * must write the same bytes. The key and tensor table an export must have is listed here, as the
 * converter writes it (the fixture script prints what gguf's reader sees in an exported file). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/io/gguf.h"
#include "model/io/gguf_write.h"
#include "model/lora.h"
#include "tests/cli_run.h"
#include "tests/test_model_util.h"

#define TINY "tests/ref/gguf_model/tiny.gguf"

static void test_quantize_matches_gguf(void) {
    an_safetensors fx;
    an_error e;
    if (an_st_open(&fx, "tests/ref/gguf_write/quants.safetensors", &e)) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        return;
    }
    size_t n = 0;
    float *x = fx_floats(&fx, "x", &n);
    const struct { const char *name; uint32_t type; int block_bytes; } cases[] = {
        {"q8_0", AN_GGML_Q8_0, 34}, {"q4_0", AN_GGML_Q4_0, 18}};
    for (int c = 0; x && c < 2; c++) {
        const an_st_tensor *t = an_st_find(&fx, cases[c].name);
        CHECK(t && t->dtype == AN_U8 && t->nbytes == n / 32 * (size_t)cases[c].block_bytes);
        if (!t) continue;
        unsigned char *got = malloc(t->nbytes);
        CHECK_MSG(an_ggml_quantize(cases[c].type, x, got, (int64_t)n, &e) == 0, "%s", e.msg);
        const unsigned char *ref = t->data;
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < t->nbytes; i++)
            if (got[i] != ref[i] && !bad++) first = i;
        CHECK_MSG(bad == 0, "%s: %zu of %zu bytes differ from gguf's quantize, first at byte %zu (block %zu): %u vs %u",
                  cases[c].name, bad, t->nbytes, first, first / (size_t)cases[c].block_bytes, got[first], ref[first]);
        printf("  %s: %zu blocks byte-identical to gguf's quantize\n", cases[c].name, n / 32);
        free(got);
    }
    /* a partial block is refused rather than padded */
    unsigned char blk[34];
    CHECK(an_ggml_quantize(AN_GGML_Q8_0, x, blk, 31, &e) != 0);
    CHECK(an_ggml_quantize(AN_GGML_Q4_K, x, blk, 256, &e) != 0 && strstr(e.msg, "Q4_K"));
    free(x);
    an_st_close(&fx);
}

static float *logits_of(an_model *m, const int32_t *ids, int T) {
    an_error e;
    float *out = malloc((size_t)T * (size_t)m->cfg.vocab_size * sizeof(float));
    an_batch b = {ids, NULL, NULL, NULL, 1, T};
    CHECK_MSG(an_model_plan(m, 1, T, &e) == 0, "%s", e.msg);
    CHECK_MSG(an_model_forward(m, &b, 0, 1.0f, NULL, out, &e) == 0, "%s", e.msg);
    return out;
}

/* Largest |a - b| over the largest |b| (NaN-safe: a NaN gives NaN). */
static double rel_err(const float *a, const float *b, size_t n) {
    double scale = 0, worst = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs((double)b[i]) > scale) scale = fabs((double)b[i]);
        worst = test_nan_max(worst, fabs((double)a[i] - b[i]));
    }
    return worst / (scale > 1e-30 ? scale : 1e-30);
}

static an_model *export_and_load(const an_model *m, const char *path, uint32_t type, const char *tok) {
    an_error e;
    an_gguf_write_opts o = {type, "tiny", tok};
    CHECK_MSG(an_gguf_write_model(m, path, &o, &e) == 0, "%s", e.msg);
    /* an F32 file read back as plain float32, so that bit-identical logits check the file, not the
     * kernels (kept, its matrices become panels whose products add in another order:
     * tests/test_f32x32.c checks those); the block types kept in their blocks, as generate runs them */
    an_model *r = type == AN_GGML_F32 ? an_model_load_gguf(path, an_ops_cpu(), AN_GGUF_DEQUANTIZE, &e)
                                      : an_model_load(path, an_ops_cpu(), &e);
    CHECK_MSG(r, "%s: %s", path, e.msg);
    return r;
}

/* F32: the same tensor bytes as the converter's file and bit-identical logits; F16, Q8_0, Q4_0: logits
 * within their rounding (tolerances below, relative to the largest |logit|). */
static void test_round_trip(void) {
    an_error e;
    an_model *m = an_model_load_gguf(TINY, an_ops_cpu(), AN_GGUF_DEQUANTIZE, &e); /* plain float32 */
    CHECK_MSG(m, "%s", e.msg);
    if (!m) return;
    const int32_t ids[] = {1, 17, 5, 42, 63, 0, 8, 29, 33, 2};
    const int T = 10;
    size_t nl = (size_t)T * (size_t)m->cfg.vocab_size;
    float *ref = logits_of(m, ids, T);

    const char *p32 = test_tmp_path("tiny.f32.gguf");
    an_model *r = export_and_load(m, p32, AN_GGML_F32, TINY);
    if (r) {
        float *got = logits_of(r, ids, T);
        CHECK_MSG(memcmp(got, ref, nl * sizeof(float)) == 0, "f32 round trip: logits differ (rel err %.3g)",
                  rel_err(got, ref, nl));
        free(got);
        an_model_free(r);
    }
    an_gguf a, b;
    if (an_gguf_open(&a, TINY, &e) == 0) {
        if (an_gguf_open(&b, p32, &e) == 0) {
            CHECK(a.n_tensors == b.n_tensors);
            for (int64_t i = 0; i < a.n_tensors; i++) {
                const an_gguf_tensor *s = &a.tensors[i], *t = an_gguf_find_tensor(&b, s->name);
                CHECK_MSG(t && t->type == s->type && t->nbytes == s->nbytes && memcmp(t->data, s->data, s->nbytes) == 0,
                          "%s: not the converter's bytes", s->name);
            }
            an_gguf_close(&b);
        } else test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        an_gguf_close(&a);
    } else test_fail_at(__FILE__, __LINE__, "%s", e.msg);

    /* f16 rounds each weight by at most 2^-11 relatively; through two layers and the head that stays
     * under 2e-3 of the largest logit (measured 3.7e-4, printed). Q8_0 and Q4_0 round far more coarsely
     * (a scale per 32 weights, 8 and 4 bits): only a loose bound that catches a wrong layout. */
    const struct { uint32_t type; const char *name; double tol; } lossy[] = {
        {AN_GGML_F16, "f16", 2e-3}, {AN_GGML_Q8_0, "q8_0", 5e-2}, {AN_GGML_Q4_0, "q4_0", 0.5}};
    for (int k = 0; k < 3; k++) {
        char name[64];
        snprintf(name, sizeof name, "tiny.%s.gguf", lossy[k].name);
        r = export_and_load(m, test_tmp_path(name), lossy[k].type, TINY);
        if (!r) continue;
        float *got = logits_of(r, ids, T);
        double err = rel_err(got, ref, nl);
        printf("  %s: logits within %.3g of the largest |logit| (bound %g)\n", lossy[k].name, err, lossy[k].tol);
        CHECK_MSG(err <= lossy[k].tol, "%s round trip: logits error %.3g", lossy[k].name, err);
        free(got);
        an_model_free(r);
    }
    free(ref);
    an_model_free(m);
}

/* The keys, in order, with their types: what convert_hf_to_gguf.py writes for a Llama (plus
 * general.alignment, written explicitly). */
static const struct { const char *key; an_gguf_type type; } llama_keys[] = {
    {"general.architecture", AN_GGUF_STRING},
    {"general.type", AN_GGUF_STRING},
    {"general.name", AN_GGUF_STRING},
    {"general.alignment", AN_GGUF_U32},
    {"llama.block_count", AN_GGUF_U32},
    {"llama.context_length", AN_GGUF_U32},
    {"llama.embedding_length", AN_GGUF_U32},
    {"llama.feed_forward_length", AN_GGUF_U32},
    {"llama.attention.head_count", AN_GGUF_U32},
    {"llama.attention.head_count_kv", AN_GGUF_U32},
    {"llama.rope.freq_base", AN_GGUF_F32},
    {"llama.attention.layer_norm_rms_epsilon", AN_GGUF_F32},
    {"general.file_type", AN_GGUF_U32},
    {"llama.vocab_size", AN_GGUF_U32},
    {"llama.rope.dimension_count", AN_GGUF_U32},
    {"general.quantization_version", AN_GGUF_U32},
};
#define N_LLAMA_KEYS ((int)(sizeof llama_keys / sizeof llama_keys[0]))

static void check_int(const an_gguf *g, const char *key, int64_t want) {
    int64_t v = -1;
    an_error e;
    CHECK_MSG(an_gguf_get_int(g, key, &v, &e) == 0 && v == want, "%s = %lld, expected %lld", key, (long long)v,
              (long long)want);
}

/* tiny.gguf as q8_0: every key and tensor as the converter would write them; the tokenizer keys copied. */
static void test_keys_and_tensors(void) {
    an_error e;
    an_model *m = an_model_load(TINY, an_ops_cpu(), &e);
    CHECK_MSG(m, "%s", e.msg);
    if (!m) return;
    const char *path = test_tmp_path("keys.q8_0.gguf");
    an_gguf_write_opts o = {AN_GGML_Q8_0, "tiny", TINY};
    CHECK_MSG(an_gguf_write_model(m, path, &o, &e) == 0, "%s", e.msg);
    an_model_free(m);
    an_gguf g, src;
    if (an_gguf_open(&g, path, &e)) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        return;
    }
    CHECK(g.version == 3 && g.alignment == 32);
    CHECK(g.n_kv == N_LLAMA_KEYS + 7); /* tiny.gguf's 7 tokenizer keys */
    for (int i = 0; i < N_LLAMA_KEYS && i < g.n_kv; i++)
        CHECK_MSG(strcmp(g.kvs[i].key, llama_keys[i].key) == 0 && g.kvs[i].value.type == llama_keys[i].type,
                  "key %d: %s (%s), expected %s (%s)", i, g.kvs[i].key, an_gguf_type_name(g.kvs[i].value.type),
                  llama_keys[i].key, an_gguf_type_name(llama_keys[i].type));
    const char *s;
    uint64_t len;
    CHECK(an_gguf_get_str(&g, "general.architecture", &s, &len, &e) == 0 && len == 5 && !memcmp(s, "llama", 5));
    CHECK(an_gguf_get_str(&g, "general.name", &s, &len, &e) == 0 && len == 4 && !memcmp(s, "tiny", 4));
    check_int(&g, "general.file_type", 7); /* MOSTLY_Q8_0 */
    check_int(&g, "llama.block_count", 2);
    check_int(&g, "llama.context_length", 64);
    check_int(&g, "llama.embedding_length", 32);
    check_int(&g, "llama.feed_forward_length", 64);
    check_int(&g, "llama.attention.head_count", 4);
    check_int(&g, "llama.attention.head_count_kv", 2);
    check_int(&g, "llama.rope.dimension_count", 8);
    check_int(&g, "llama.vocab_size", 64);
    double f;
    CHECK(an_gguf_get_float(&g, "llama.rope.freq_base", &f, &e) == 0 && f == 50000.0);
    CHECK(an_gguf_get_float(&g, "llama.attention.layer_norm_rms_epsilon", &f, &e) == 0 && f == (double)1e-5f);
    /* the tokenizer: the source's keys, values equal element by element */
    if (an_gguf_open(&src, TINY, &e) == 0) {
        for (int64_t i = 0; i < src.n_kv; i++) {
            if (strncmp(src.kvs[i].key, "tokenizer.", 10)) continue;
            const an_gguf_kv *kv = an_gguf_find_key(&g, src.kvs[i].key);
            CHECK_MSG(kv && kv->value.type == src.kvs[i].value.type, "%s missing or retyped", src.kvs[i].key);
            if (!kv || kv->value.type != AN_GGUF_ARRAY) continue;
            CHECK(kv->value.v.arr.n == src.kvs[i].value.v.arr.n && kv->value.v.arr.elem == src.kvs[i].value.v.arr.elem);
            for (uint64_t j = 0; j < kv->value.v.arr.n && j < src.kvs[i].value.v.arr.n; j++) {
                an_gguf_value a, b;
                an_gguf_array_get(&kv->value, j, &a);
                an_gguf_array_get(&src.kvs[i].value, j, &b);
                int same = a.type == AN_GGUF_STRING ? a.v.str.len == b.v.str.len && !memcmp(a.v.str.ptr, b.v.str.ptr, a.v.str.len)
                                                    : !memcmp(&a.v, &b.v, sizeof a.v);
                CHECK_MSG(same, "%s[%llu] differs from the source", src.kvs[i].key, (unsigned long long)j);
            }
        }
        an_gguf_close(&src);
    }
    /* the tensors: names, order, types (norms F32, matrices Q8_0), ggml shapes */
    CHECK(g.n_tensors == 21);
    int i = 0;
    const char *per_layer[] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                               "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"};
    const int64_t shape[9][2] = {{32, 1}, {32, 32}, {32, 16}, {32, 16}, {32, 32}, {32, 1}, {32, 64}, {32, 64}, {64, 32}};
    struct { char name[64]; int64_t ne0, ne1; int dims; } want[21];
    snprintf(want[i].name, 64, "token_embd.weight"), want[i].ne0 = 32, want[i].ne1 = 64, want[i++].dims = 2;
    for (int l = 0; l < 2; l++)
        for (int k = 0; k < 9; k++) {
            snprintf(want[i].name, 64, "blk.%d.%s.weight", l, per_layer[k]);
            want[i].ne0 = shape[k][0], want[i].ne1 = shape[k][1], want[i++].dims = shape[k][1] == 1 ? 1 : 2;
        }
    snprintf(want[i].name, 64, "output_norm.weight"), want[i].ne0 = 32, want[i].ne1 = 1, want[i++].dims = 1;
    snprintf(want[i].name, 64, "output.weight"), want[i].ne0 = 32, want[i].ne1 = 64, want[i++].dims = 2;
    for (int k = 0; k < 21 && k < g.n_tensors; k++) {
        const an_gguf_tensor *t = &g.tensors[k];
        uint32_t type = want[k].dims == 1 ? AN_GGML_F32 : AN_GGML_Q8_0;
        CHECK_MSG(strcmp(t->name, want[k].name) == 0 && t->n_dims == want[k].dims && t->ne[0] == want[k].ne0 &&
                      t->ne[1] == want[k].ne1 && t->type == type && t->offset % 32 == 0,
                  "tensor %d: %s %s [%lld, %lld], expected %s %s [%lld, %lld]", k, t->name,
                  an_ggml_type_get(t->type)->name, (long long)t->ne[0], (long long)t->ne[1], want[k].name,
                  an_ggml_type_get(type)->name, (long long)want[k].ne0, (long long)want[k].ne1);
    }
    an_gguf_close(&g);
}

/* A Hugging Face folder: no tokenizer keys (the CLI says so); a tied head has no output.weight. */
static void test_hf_folder_and_cli(void) {
    const char *out = test_tmp_path("llama.f16.gguf"), *o2 = test_tmp_path("out.txt"), *e2 = test_tmp_path("err.txt");
    char args[1024];
    snprintf(args, sizeof args, "export --model " MODEL_FIXTURES "/llama --out %s --type f16", out);
    CHECK(test_autoneg(NULL, args, o2, e2) == 0);
    char *err = test_slurp(e2);
    CHECK_MSG(strstr(err, "without tokenizer.ggml.* keys"), "no note about the tokenizer: %s", err);
    free(err);
    an_gguf g;
    an_error e;
    if (an_gguf_open(&g, out, &e) == 0) {
        for (int64_t i = 0; i < g.n_kv; i++) CHECK_MSG(strncmp(g.kvs[i].key, "tokenizer.", 10), "%s", g.kvs[i].key);
        check_int(&g, "general.file_type", 1);
        const an_gguf_tensor *t = an_gguf_find_tensor(&g, "blk.0.attn_q.weight");
        CHECK(t && t->type == AN_GGML_F16);
        t = an_gguf_find_tensor(&g, "blk.0.ffn_norm.weight");
        CHECK(t && t->type == AN_GGML_F32);
        an_gguf_close(&g);
    } else test_fail_at(__FILE__, __LINE__, "%s", e.msg);

    /* tied: the head is the embedding, so output.weight is left out and the reader ties it again */
    an_model *src = an_model_load(MODEL_FIXTURES "/llama", an_ops_cpu(), &e);
    CHECK_MSG(src, "%s", e.msg);
    if (!src) return;
    an_model_config cfg = src->cfg;
    an_model_free(src);
    cfg.tie_embeddings = 1;
    an_model *m = an_model_init_random(&cfg, an_ops_cpu(), 7, &e);
    CHECK_MSG(m && m->lm_head == NULL, "%s", m ? "the random model has a head" : e.msg);
    if (!m) return;
    const char *tp = test_tmp_path("tied.gguf");
    an_model *r = export_and_load(m, tp, AN_GGML_F32, NULL);
    if (an_gguf_open(&g, tp, &e) == 0) {
        CHECK(an_gguf_find_tensor(&g, "output.weight") == NULL && g.n_tensors == 2 + 9 * cfg.n_layers);
        an_gguf_close(&g);
    }
    if (r) {
        const int32_t ids[] = {1, 200, 3, 77, 150};
        float *a = logits_of(m, ids, 5), *b = logits_of(r, ids, 5);
        CHECK(r->cfg.tie_embeddings == 1 && memcmp(a, b, 5 * (size_t)cfg.vocab_size * sizeof(float)) == 0);
        free(a);
        free(b);
        an_model_free(r);
    }
    an_model_free(m);
}

/* export --adapter: the adapter merged first (an_lora_load + an_lora_merge), so the exported F32 file
 * computes exactly the merged model's logits. */
static void test_cli_adapter(void) {
    const char *out = test_tmp_path("merged.f32.gguf");
    char args[1024];
    snprintf(args, sizeof args, "export --model " MODEL_FIXTURES "/llama --adapter tests/ref/lora/llama --out %s --type f32",
             out);
    CHECK(test_autoneg(NULL, args, test_tmp_path("a.out"), test_tmp_path("a.err")) == 0);
    an_error e;
    an_model *m = an_model_load(MODEL_FIXTURES "/llama", an_ops_cpu(), &e);
    CHECK_MSG(m && an_lora_load(m, "tests/ref/lora/llama", &e) == 0 && an_lora_merge(m, &e) == 0, "%s", e.msg);
    an_model *r = an_model_load_gguf(out, an_ops_cpu(), AN_GGUF_DEQUANTIZE, &e); /* plain float32, as above */
    CHECK_MSG(r, "%s", e.msg);
    if (m && r) {
        const int32_t ids[] = {1, 20, 3, 77, 150, 9};
        float *a = logits_of(m, ids, 6), *b = logits_of(r, ids, 6);
        CHECK_MSG(memcmp(a, b, 6 * (size_t)m->cfg.vocab_size * sizeof(float)) == 0, "merged export: logits differ (%.3g)",
                  rel_err(b, a, 6 * (size_t)m->cfg.vocab_size));
        an_model *base = an_model_load(MODEL_FIXTURES "/llama", an_ops_cpu(), &e);
        if (base) { /* the adapter changes the model, so the comparison above means something */
            float *c = logits_of(base, ids, 6);
            CHECK(memcmp(a, c, 6 * (size_t)m->cfg.vocab_size * sizeof(float)) != 0);
            free(c);
            an_model_free(base);
        }
        free(a);
        free(b);
    }
    an_model_free(m);
    an_model_free(r);
}

/* export --adapter A --base M: the adapter alone in llama.cpp's LoRA format. The check applies it as
 * llama.cpp does (llama-adapter.cpp: W x + (alpha / r) B (A x), r = the rank from A's shape, to the
 * base tensor named by the adapter tensor's name without .lora_a / .lora_b) to the unmerged f32 export,
 * and must land on the merged f32 export (which test_cli_adapter ties to the merged model's logits):
 * that checks the names, the ggml shapes, the rope permutation of lora_b's rows and the alpha key.
 * Tolerance: the merge and this check sum r = 4 products in float32 in different orders, a few ulps of
 * the largest weight; 1e-6 of the tensor's largest magnitude is well above that and far below any
 * permuted row or wrong scale (the adapter's deltas are ~1e-2 of the weights). */
static void test_cli_adapter_gguf(void) {
    char base[600], merged[600], ad[600], args[2048];
    snprintf(base, sizeof base, "%s", test_tmp_path("base.f32.gguf"));
    snprintf(merged, sizeof merged, "%s", test_tmp_path("merged2.f32.gguf"));
    snprintf(ad, sizeof ad, "%s", test_tmp_path("adapter.gguf"));
    snprintf(args, sizeof args, "export --model " MODEL_FIXTURES "/llama --out %s --type f32", base);
    CHECK(test_autoneg(NULL, args, test_tmp_path("a.out"), test_tmp_path("a.err")) == 0);
    snprintf(args, sizeof args, "export --model " MODEL_FIXTURES "/llama --adapter tests/ref/lora/llama --out %s --type f32",
             merged);
    CHECK(test_autoneg(NULL, args, test_tmp_path("a.out"), test_tmp_path("a.err")) == 0);
    snprintf(args, sizeof args, "export --adapter tests/ref/lora/llama --base " MODEL_FIXTURES "/llama --out %s", ad);
    CHECK(test_autoneg(NULL, args, test_tmp_path("a.out"), test_tmp_path("a.err")) == 0);
    an_gguf gb, gm, ga;
    an_error e;
    int ob = an_gguf_open(&gb, base, &e) == 0, om = an_gguf_open(&gm, merged, &e) == 0, oa = an_gguf_open(&ga, ad, &e) == 0;
    CHECK_MSG(ob && om && oa, "%s", e.msg);
    if (!(ob && om && oa)) goto done;
    const an_gguf_kv *kv = an_gguf_find_key(&ga, "general.type");
    CHECK(kv && kv->value.type == AN_GGUF_STRING && kv->value.v.str.len == 7 && !memcmp(kv->value.v.str.ptr, "adapter", 7));
    kv = an_gguf_find_key(&ga, "adapter.type");
    CHECK(kv && kv->value.type == AN_GGUF_STRING && kv->value.v.str.len == 4 && !memcmp(kv->value.v.str.ptr, "lora", 4));
    double alpha = 0;
    CHECK(an_gguf_get_float(&ga, "adapter.lora.alpha", &alpha, &e) == 0 && alpha == 8.0); /* the fixture's lora_alpha */
    int applied = 0, changed = 0;
    for (int64_t t = 0; t < gb.n_tensors; t++) {
        const an_gguf_tensor *w = &gb.tensors[t], *wm = an_gguf_find_tensor(&gm, w->name);
        CHECK(wm && wm->numel == w->numel && w->type == AN_GGML_F32);
        if (!wm) continue;
        const float *W = w->data, *M = wm->data;
        int differs = memcmp(W, M, (size_t)w->numel * sizeof(float)) != 0;
        char an[128], bn[128];
        snprintf(an, sizeof an, "%s.lora_a", w->name);
        snprintf(bn, sizeof bn, "%s.lora_b", w->name);
        const an_gguf_tensor *A = an_gguf_find_tensor(&ga, an), *B = an_gguf_find_tensor(&ga, bn);
        CHECK_MSG(!differs || (A && B), "%s: changed by the merge, but the adapter file has no %s", w->name, an);
        if (!A || !B) continue;
        changed += differs;
        int64_t in = w->ne[0], out = w->ne[1], r = A->ne[1];
        /* llama.cpp's shape checks: a->ne[0] == w->ne[0], b->ne[1] == w->ne[1], a->ne[1] == b->ne[0] */
        CHECK_MSG(A->ne[0] == in && B->ne[1] == out && B->ne[0] == r, "%s: adapter shapes do not fit", w->name);
        if (A->ne[0] != in || B->ne[1] != out || B->ne[0] != r) continue;
        const float *a = A->data, *b = B->data;
        float scale = (float)(alpha / (double)r);
        double maxw = 0, worst = 0;
        for (int64_t o = 0; o < out; o++)
            for (int64_t i = 0; i < in; i++) {
                double d = 0;
                for (int64_t k = 0; k < r; k++) d += (double)b[o * r + k] * a[k * in + i];
                double want = W[o * in + i] + scale * d, got = M[o * in + i];
                maxw = fmax(maxw, fabs(want));
                double err = fabs(got - want);
                if (test_nan_worse(err, worst)) worst = err;
            }
        CHECK_MSG(worst <= 1e-6 * maxw, "%s: base + adapter differs from the merged export by %g (max |w| %g)", w->name,
                  worst, maxw);
        applied++;
    }
    CHECK_MSG(applied == 15 && changed == 15, "applied to %d tensors, %d changed by the merge (want 15: 7 per layer "
              "x 2 layers + the head)", applied, changed);
    CHECK(ga.n_tensors == 30);
done:
    if (ob) an_gguf_close(&gb);
    if (om) an_gguf_close(&gm);
    if (oa) an_gguf_close(&ga);
}

static void expect_cli_error(const char *args, const char *needle) {
    const char *o = test_tmp_path("bad.out"), *e = test_tmp_path("bad.err");
    CHECK_MSG(test_autoneg(NULL, args, o, e) != 0, "autoneg %s: exit 0", args);
    char *err = test_slurp(e);
    CHECK_MSG(strstr(err, needle), "autoneg %s: the error does not say \"%s\": %s", args, needle, err);
    free(err);
}

static void test_bad_input(void) {
    char args[1024];
    snprintf(args, sizeof args, "export --model " TINY " --out %s --type q5_0", test_tmp_path("x.gguf"));
    expect_cli_error(args, "--type q5_0 is not supported (f32, f16, q8_0 or q4_0)");
    snprintf(args, sizeof args, "export --model " TINY " --out %s/no/such/folder/x.gguf", test_tmpdir());
    expect_cli_error(args, "x.gguf: cannot create");
    snprintf(args, sizeof args, "export --model " MODEL_FIXTURES "/gpt2 --out %s", test_tmp_path("g.gguf"));
    expect_cli_error(args, "gpt2 models cannot be written as GGUF yet");
    snprintf(args, sizeof args, "export --model " MODEL_FIXTURES "/qwen2 --out %s", test_tmp_path("q.gguf"));
    expect_cli_error(args, "biases");
    expect_cli_error("export --model " TINY, "--model and --out are required");
    /* nothing is left behind by a failed write */
    CHECK(!an_file_exists(test_tmp_path("g.gguf")) && !an_file_exists(test_tmp_path("g.gguf.tmp")));
    /* the library refuses a type it cannot write */
    an_error e;
    an_model *m = an_model_load(TINY, an_ops_cpu(), &e);
    if (m) {
        an_gguf_write_opts o = {AN_GGML_Q4_1, NULL, NULL};
        CHECK(an_gguf_write_model(m, test_tmp_path("x.gguf"), &o, &e) != 0 && strstr(e.msg, "Q4_1"));
        an_model_free(m);
    }
    CHECK(an_gguf_write_type("Q8_0") == AN_GGML_Q8_0 && an_gguf_write_type("bf16") == -1);
}

int main(void) {
    RUN(test_quantize_matches_gguf);
    RUN(test_round_trip);
    RUN(test_keys_and_tensors);
    RUN(test_hf_folder_and_cli);
    RUN(test_cli_adapter);
    RUN(test_cli_adapter_gguf);
    RUN(test_bad_input);
    return test_finish();
}
