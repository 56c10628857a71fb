/* GGUF files as models (model/io/gguf_model.h) against transformers, which loads the same files.
 *
 * tiny.gguf (tests/ref/make_gguf_model_fixture.py) is a tiny random Llama written as llama.cpp's converter
 * writes one (F32, attn_q / attn_k rows permuted); qwen2.gguf a tiny random Qwen2 (q/k/v biases, rows not
 * permuted, tied head) and gpt2.gguf a tiny random GPT-2 (fused attn_qkv, every bias, output.weight a
 * copy of token_embd), as the converter writes those. Their expected logits are the original torch
 * models', for all 11 or 10 positions. The
 * real SmolLM2-135M-Instruct Q4_1 file (`make model`; skipped with a note when absent) is compared with
 * transformers' model loaded from that GGUF (it dequantizes Q4_1 to float32 too) on a ChatML prompt, last
 * 2 positions. Tolerance: 1e-4 of each row's largest |reference logit| (float32 on both sides, different
 * summation orders; the dequantized weights are the same values, so quantization adds nothing). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/file.h"
#include "infer/session.h"
#include "model/io/gguf.h"
#include "model/nf4_weights.h"
#include "tests/test_model_util.h"

#define FX "tests/ref/gguf_model/"

/* max over rows of max_j |got - ref| / max_j |ref| (NaN-safe: a NaN anywhere gives NaN). */
static double row_rel_err(const float *got, const float *ref, int rows, int cols) {
    double worst = 0;
    for (int r = 0; r < rows; r++) {
        double scale = 0, e = 0;
        for (int j = 0; j < cols; j++) {
            double a = fabs((double)ref[(size_t)r * cols + j]);
            if (a > scale) scale = a;
            e = test_nan_max(e, fabs((double)got[(size_t)r * cols + j] - ref[(size_t)r * cols + j]));
        }
        worst = test_nan_max(worst, e / (scale > 1e-30 ? scale : 1e-30));
    }
    return worst;
}

/* The model's logits for the fixture's ids, the last n_rows rows compared with its "logits". */
static void check_logits(an_model *m, const char *fixture, const char *what) {
    an_safetensors fx;
    an_error e;
    if (an_st_open(&fx, fixture, &e)) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        return;
    }
    size_t T = 0, n = 0;
    int32_t *ids = fx_ints(&fx, "ids", &T);
    float *ref = fx_floats(&fx, "logits", &n);
    int V = m->cfg.vocab_size, rows = (int)(n / (size_t)V);
    CHECK(ids && ref && n % (size_t)V == 0 && rows >= 1 && (size_t)rows <= T);
    float *logits = malloc(T * (size_t)V * sizeof(float));
    CHECK(an_model_plan(m, 1, (int)T, &e) == 0);
    an_batch b = {ids, NULL, NULL, NULL, 1, (int)T};
    CHECK_MSG(an_model_forward(m, &b, 0, 1.0f, NULL, logits, &e) == 0, "%s", e.msg);
    double err = row_rel_err(logits + (T - (size_t)rows) * (size_t)V, ref, rows, V);
    printf("  %s: logits error %.3g of the row's largest |logit| (%d rows of %zu positions)\n", what, err, rows, T);
    CHECK_MSG(err <= 1e-4, "%s: logits error %.3g", what, err);
    free(logits);
    free(ids);
    free(ref);
    an_st_close(&fx);
}

static void test_tiny(void) {
    an_error e;
    an_model *m = an_model_load(FX "tiny.gguf", an_ops_cpu(), &e);
    CHECK_MSG(m, "%s", e.msg);
    if (!m) return;
    const an_model_config *c = &m->cfg;
    CHECK(c->arch == AN_ARCH_LLAMA && strcmp(c->model_type, "llama") == 0);
    CHECK(c->vocab_size == 64 && c->dim == 32 && c->n_layers == 2 && c->n_heads == 4 && c->n_kv_heads == 2);
    CHECK(c->head_dim == 8 && c->ffn_dim == 64 && c->max_seq == 64);
    CHECK(c->rope_theta == 50000.0f && c->norm_eps == 1e-5f && c->rope_interleaved == 0);
    CHECK(c->tie_embeddings == 0 && m->lm_head != NULL);
    CHECK(c->bos_id == 1 && c->eos_id == 2 && c->pad_id == -1);
    check_logits(m, FX "tiny_expected.safetensors", "tiny.gguf");
    an_model_free(m);
    /* QLoRA's base: the float32 weights quantized after loading */
    m = an_model_load_nf4(FX "tiny.gguf", an_ops_cpu(), 64, 0, &e);
    CHECK_MSG(m && an_model_nf4_param_count(m) > 0, "%s", m ? "not quantized" : e.msg);
    an_model_free(m);
}

/* m saved as a Hugging Face folder and loaded back gives the same logits (GPT-2's Conv1D weights are
 * transposed on the way out and back in). */
static void check_saved(an_model *m, const char *fixture, const char *what) {
    char dir[] = "/tmp/an_gguf_saved_XXXXXX";
    an_error e;
    CHECK(mkdtemp(dir) != NULL);
    CHECK_MSG(an_model_save(m, dir, &e) == 0, "%s", e.msg);
    an_model *back = an_model_load(dir, an_ops_cpu(), &e);
    CHECK_MSG(back, "%s", e.msg);
    if (back) {
        CHECK(strcmp(back->cfg.architecture, m->cfg.architecture) == 0);
        check_logits(back, fixture, what);
        an_model_free(back);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

static void test_qwen2(void) {
    an_error e;
    an_model *m = an_model_load(FX "qwen2.gguf", an_ops_cpu(), &e);
    CHECK_MSG(m, "%s", e.msg);
    if (!m) return;
    const an_model_config *c = &m->cfg;
    CHECK(c->arch == AN_ARCH_LLAMA && strcmp(c->model_type, "qwen2") == 0 &&
          strcmp(c->architecture, "Qwen2ForCausalLM") == 0);
    CHECK(c->vocab_size == 64 && c->dim == 32 && c->n_layers == 2 && c->n_heads == 4 && c->n_kv_heads == 2);
    CHECK(c->head_dim == 8 && c->ffn_dim == 48 && c->max_seq == 128);
    CHECK(c->rope_theta == 1000000.0f && c->norm_eps == 1e-6f && c->rope_interleaved == 0);
    CHECK(c->qkv_bias == 1 && c->o_bias == 0 && c->mlp_bias == 0 && c->proj_bias == 0);
    CHECK(c->tie_embeddings == 1 && m->lm_head == NULL && m->layers[1].bk != NULL);
    CHECK(c->bos_id == 1 && c->eos_id == 2 && c->pad_id == -1);
    check_logits(m, FX "qwen2_expected.safetensors", "qwen2.gguf");
    check_saved(m, FX "qwen2_expected.safetensors", "qwen2.gguf saved as a folder");
    an_model_free(m);
}

static void test_gpt2(void) {
    an_error e;
    an_model *m = an_model_load(FX "gpt2.gguf", an_ops_cpu(), &e);
    CHECK_MSG(m, "%s", e.msg);
    if (!m) return;
    const an_model_config *c = &m->cfg;
    CHECK(c->arch == AN_ARCH_GPT2 && strcmp(c->model_type, "gpt2") == 0 &&
          strcmp(c->architecture, "GPT2LMHeadModel") == 0);
    CHECK(c->vocab_size == 64 && c->dim == 16 && c->n_layers == 2 && c->n_heads == 2 && c->n_kv_heads == 2);
    CHECK(c->head_dim == 8 && c->ffn_dim == 64 && c->max_seq == 64 && c->norm_eps == 1e-5f);
    CHECK(c->qkv_bias == 1 && c->o_bias == 1 && c->mlp_bias == 1 && c->proj_bias == 1);
    CHECK(c->tie_embeddings == 1 && m->lm_head == NULL && m->pos_emb != NULL);
    CHECK(c->bos_id == 1 && c->eos_id == 2);
    check_logits(m, FX "gpt2_expected.safetensors", "gpt2.gguf");
    check_saved(m, FX "gpt2_expected.safetensors", "gpt2.gguf saved as a folder");
    an_model_free(m);
}

/* A copy of src with the k bytes `from` replaced by `to` at their first occurrence. */
static int patched_copy_from(const char *src, const char *out, const char *from, const char *to, size_t k) {
    size_t n;
    char *data = an_read_file(src, &n, NULL);
    if (!data) return -1;
    char *hit = NULL;
    for (size_t i = 0; i + k <= n && !hit; i++)
        if (memcmp(data + i, from, k) == 0) hit = data + i;
    int rc = -1;
    FILE *f = fopen(out, "wb");
    if (hit && f) {
        memcpy(hit, to, k);
        rc = fwrite(data, 1, n, f) == n ? 0 : -1;
    }
    if (f) fclose(f);
    free(data);
    return rc;
}

/* literals that may hold NULs: their length from sizeof */
#define patched_copy(out, from, to) patched_copy_from(FX "tiny.gguf", out, from, to, sizeof(from) - 1)
#define patched(src, out, from, to) patched_copy_from(FX src, out, from, to, sizeof(from) - 1)

/* gpt2.gguf with output.weight's first value changed: an output head of its own. */
static int untied_gpt2(const char *out) {
    an_gguf g;
    an_error e;
    if (an_gguf_open(&g, FX "gpt2.gguf", &e)) return -1;
    const an_gguf_tensor *t = an_gguf_find_tensor(&g, "output.weight");
    size_t at = t ? (size_t)(g.data_offset + t->offset) : 0;
    an_gguf_close(&g);
    size_t n;
    char *data = t ? an_read_file(FX "gpt2.gguf", &n, NULL) : NULL;
    if (!data || at + sizeof(float) > n) {
        free(data);
        return -1;
    }
    float v;
    memcpy(&v, data + at, sizeof v);
    v += 0.5f;
    memcpy(data + at, &v, sizeof v);
    FILE *f = fopen(out, "wb");
    int rc = f && fwrite(data, 1, n, f) == n ? 0 : -1;
    if (f) fclose(f);
    free(data);
    return rc;
}

static void expect_error(const char *path, const char *want) {
    an_error e;
    an_model *m = an_model_load(path, an_ops_cpu(), &e);
    CHECK_MSG(m == NULL, "%s loaded", path);
    if (m) {
        an_model_free(m);
        return;
    }
    CHECK_MSG(strstr(e.msg, path) && strstr(e.msg, want), "got: %s (wanted %s)", e.msg, want);
}

static void test_errors(void) {
    char dir[] = "/tmp/an_gguf_model_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/qwen.gguf", dir);
    /* general.architecture's value: u64 length 5, then the bytes */
    CHECK(patched_copy(path, "\5\0\0\0\0\0\0\0llama", "\5\0\0\0\0\0\0\0bloom") == 0);
    expect_error(path, "GGUF architecture \"bloom\" is not supported");
    remove(path);
    snprintf(path, sizeof path, "%s/missing.gguf", dir);
    CHECK(patched_copy(path, "blk.1.ffn_up.weight", "blk.1.ffn_uq.weight") == 0);
    expect_error(path, "tensor \"blk.1.ffn_up.weight\" is missing");
    remove(path);
    snprintf(path, sizeof path, "%s/nokey.gguf", dir);
    CHECK(patched_copy(path, "llama.block_count", "llama.block_cOunt") == 0);
    expect_error(path, "key \"llama.block_count\" is missing");
    remove(path);
    /* a Qwen2 without one of its biases (renamed, so it is missing and the renamed one unexpected) */
    snprintf(path, sizeof path, "%s/nobias.gguf", dir);
    CHECK(patched("qwen2.gguf", path, "blk.1.attn_k.bias", "blk.1.attn_k.biaz") == 0);
    expect_error(path, "tensor \"blk.1.attn_k.bias\" is missing");
    remove(path);
    /* gpt2's attn_qkv with ne [16, 48] read as [16, 24]: its ne[1] is a u64 after the name and n_dims */
    snprintf(path, sizeof path, "%s/shape.gguf", dir);
    CHECK(patched("gpt2.gguf", path, "blk.0.attn_qkv.weight\2\0\0\0\20\0\0\0\0\0\0\0\60",
                  "blk.0.attn_qkv.weight\2\0\0\0\20\0\0\0\0\0\0\0\30") == 0);
    expect_error(path, "tensor \"blk.0.attn_qkv.weight\" has 2 dims, ne [16, 24], expected ne [16, 48]");
    remove(path);
    snprintf(path, sizeof path, "%s/gpt2_nobias.gguf", dir);
    CHECK(patched("gpt2.gguf", path, "blk.1.ffn_down.bias", "blk.1.ffn_down.biaz") == 0);
    expect_error(path, "tensor \"blk.1.ffn_down.bias\" is missing");
    remove(path);
    /* an untied GPT-2 head (output.weight is not token_embd's copy) is refused, not silently tied */
    snprintf(path, sizeof path, "%s/untied.gguf", dir);
    CHECK(untied_gpt2(path) == 0);
    expect_error(path, "tensor \"output.weight\" differs from token_embd.weight");
    remove(path);
    rmdir(dir);
}

/* A .gguf model is its own default tokenizer (a llama2.c .bin needs --tokenizer). Whether the GGUF
 * tokenizer reads tiny.gguf's made-up vocabulary is data/tokenizers' business: this checks only that the
 * session got past the model path logic (loaded the model, asked the GGUF file for the tokenizer). */
static void test_session_default_tokenizer(void) {
    an_session s;
    an_error e;
    if (an_session_open(&s, an_ops_cpu(), FX "tiny.gguf", NULL, NULL, NULL, &e) == 0) {
        CHECK(s.model && s.model->cfg.vocab_size == 64);
        an_session_close(&s);
        return;
    }
    CHECK_MSG(!strstr(e.msg, "--tokenizer") && strstr(e.msg, FX "tiny.gguf"), "%s", e.msg);
}

static void test_smollm2(void) {
    char path[4096];
    const char *cache = getenv("AN_CACHE"), *home = getenv("HOME");
    snprintf(path, sizeof path, "%s%s/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
             cache && *cache ? cache : home ? home : "", cache && *cache ? "" : "/.cache/autoneg");
    if (!an_file_exists(path)) {
        printf("  note: %s is absent (run `make model` to fetch it); the SmolLM2 checks are skipped\n", path);
        return;
    }
    an_error e;
    an_model *m = an_model_load(path, an_ops_cpu(), &e);
    CHECK_MSG(m, "%s", e.msg);
    if (!m) return;
    const an_model_config *c = &m->cfg;
    CHECK(c->n_layers == 30 && c->dim == 576 && c->ffn_dim == 1536 && c->n_heads == 9 && c->n_kv_heads == 3);
    CHECK(c->head_dim == 64 && c->rope_theta == 100000.0f && c->norm_eps == 1e-5f && c->vocab_size == 49152);
    CHECK(c->tie_embeddings == 1 && m->lm_head == NULL && c->max_seq == 8192);
    check_logits(m, FX "smollm2_logits.safetensors", "SmolLM2-135M-Instruct.Q4_1.gguf");
    an_model_free(m);
}

int main(void) {
    RUN(test_tiny);
    RUN(test_qwen2);
    RUN(test_gpt2);
    RUN(test_errors);
    RUN(test_session_default_tokenizer);
    RUN(test_smollm2);
    return test_finish();
}
