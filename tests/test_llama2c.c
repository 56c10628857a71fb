/* model/llama2c: the real stories260K checkpoint as a Hugging Face-named view, an untied variant,
 * the version-1 layout, and truncated / corrupt headers. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "kernels/ops.h"
#include "model/io/llama2c.h"
#include "model/model.h"
#include "tests/test.h"

static const char *stories(void) { return test_shared("models/stories260K/stories260K.bin"); }

static uint32_t bits_at(const an_st_tensor *t, int64_t index) {
    uint32_t u;
    memcpy(&u, (const char *)t->data + 4 * index, 4);
    return u;
}

/* Config from SOURCES.md (dim 64, hidden 172, 5 layers, 8 heads, 4 kv heads, vocab 512, seq 512), and
 * values read from the same bytes by an independent numpy reading of the v0 layout (float32 bit patterns;
 * the numpy script also found cos(0) = 1 and sin(0) = 0 where the freq_cis tables should start, which
 * confirms its offsets). Exact comparison: these are the stored bits, nothing is computed. */
static void test_stories260k(void) {
    an_model_config c;
    an_safetensors st;
    an_error e;
    CHECK_MSG(an_llama2c_open(&c, &st, stories(), &e) == 0, "%s", e.msg);
    CHECK(c.arch == AN_ARCH_LLAMA && c.dim == 64 && c.ffn_dim == 172 && c.n_layers == 5 && c.n_heads == 8);
    CHECK(c.n_kv_heads == 4 && c.head_dim == 8 && c.vocab_size == 512 && c.max_seq == 512);
    CHECK(c.rope_interleaved == 1 && c.tie_embeddings == 1 && c.norm_eps == 1e-5f && c.rope_theta == 10000.0f);
    CHECK(c.bos_id == 1 && c.eos_id == 2 && c.qkv_bias == 0 && c.o_bias == 0 && c.mlp_bias == 0);
    CHECK(st.n_tensors == 2 + 9 * 5); /* embeddings, final norm, 9 per layer, no lm_head (shared) */
    CHECK(an_st_find(&st, "lm_head.weight") == NULL);
    struct {
        const char *name;
        int64_t rows, cols, index;
        uint32_t bits;
    } want[] = {
        {"model.embed_tokens.weight", 512, 64, 0, 0xbe96e950},           /* -0.294748783 */
        {"model.embed_tokens.weight", 512, 64, 3, 0x3eae5faa},           /* 0.340573609 */
        {"model.embed_tokens.weight", 512, 64, 511 * 64 + 63, 0xbed91acd},
        {"model.layers.0.input_layernorm.weight", 64, 0, 1, 0x3f2ced22},  /* rms_att[0][1] */
        {"model.layers.2.self_attn.q_proj.weight", 64, 64, 5 * 64 + 7, 0xbd8cac7f},
        {"model.layers.4.self_attn.k_proj.weight", 32, 64, 31 * 64 + 63, 0xbe87bf24},
        {"model.layers.1.self_attn.v_proj.weight", 32, 64, 0, 0xbcfc6b64},
        {"model.layers.3.self_attn.o_proj.weight", 64, 64, 63 * 64, 0xbca96d75},
        {"model.layers.4.post_attention_layernorm.weight", 64, 0, 1, 0x3f6cff8a}, /* rms_ffn[4][1] */
        {"model.layers.0.mlp.gate_proj.weight", 172, 64, 171 * 64 + 63, 0xbe05c203}, /* w1 */
        {"model.layers.4.mlp.down_proj.weight", 64, 172, 63 * 172 + 171, 0xbb65d38b}, /* w2 */
        {"model.layers.4.mlp.up_proj.weight", 172, 64, 171 * 64 + 63, 0x3dd92746},   /* w3 */
        {"model.norm.weight", 64, 0, 2, 0x3fe00e5c},                                 /* 1.75043821 */
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const an_st_tensor *t = an_st_find(&st, want[i].name);
        CHECK_MSG(t != NULL, "%s missing", want[i].name);
        if (!t) continue;
        CHECK(t->dtype == AN_F32 && t->shape[0] == want[i].rows && t->ndim == (want[i].cols ? 2 : 1));
        if (want[i].cols) CHECK(t->shape[1] == want[i].cols);
        CHECK_MSG(bits_at(t, want[i].index) == want[i].bits, "%s[%lld] = 0x%08x, want 0x%08x", want[i].name,
                  (long long)want[i].index, bits_at(t, want[i].index), want[i].bits);
    }
    /* a view, not a copy: every tensor lies inside the mapping, 4-byte aligned, and together they cover
     * the file minus the header and the two freq_cis tables (2 * 512 * 8 / 2 floats) */
    size_t covered = 0;
    for (int i = 0; i < st.n_tensors; i++) {
        const unsigned char *p = st.tensors[i].data;
        CHECK(p >= st.files[0].data && p + st.tensors[i].nbytes <= st.files[0].data + st.files[0].size);
        CHECK((uintptr_t)p % 4 == 0);
        covered += st.tensors[i].nbytes;
    }
    CHECK(covered == 1056540 - 28 - 2 * 512 * 4 * 4);
    float v[64];
    CHECK(an_st_to_f32(an_st_find(&st, "model.norm.weight"), v, &e) == 0 && v[0] == 2.4583089351654053f);
    CHECK(an_st_expect(&st, "model.layers.0.self_attn.k_proj.weight", 2, (int64_t[]){64, 64}, &e) == NULL);
    CHECK_CONTAINS(e.msg, "stories260K.bin: tensor \"model.layers.0.self_attn.k_proj.weight\" has shape [32, 64]");
    an_st_close(&st);
}

static unsigned char *stories_bytes(size_t *n) {
    an_error e;
    unsigned char *b = (unsigned char *)an_read_file(stories(), n, &e);
    CHECK_MSG(b != NULL, "%s", e.msg);
    return b;
}

static void put_i32(unsigned char *p, int32_t v) { memcpy(p, &v, 4); }

/* vocab_size -512 means a separate classifier after the freq_cis tables: append one and find it. */
static void test_untied_classifier(void) {
    size_t n;
    unsigned char *b = stories_bytes(&n);
    if (!b) return;
    size_t cls = 512 * 64 * 4;
    unsigned char *u = malloc(n + cls);
    memcpy(u, b, n);
    put_i32(u + 20, -512);
    for (size_t i = 0; i < cls / 4; i++) {
        float f = (float)i * 0.25f;
        memcpy(u + n + 4 * i, &f, 4);
    }
    an_error e;
    const char *p = test_tmp_path("untied.bin");
    CHECK(an_write_file_atomic(p, u, n + cls, &e) == 0);
    an_model_config c;
    an_safetensors st;
    CHECK_MSG(an_llama2c_open(&c, &st, p, &e) == 0, "%s", e.msg);
    CHECK(c.tie_embeddings == 0 && c.vocab_size == 512 && st.n_tensors == 3 + 9 * 5);
    const an_st_tensor *head = an_st_find(&st, "lm_head.weight");
    CHECK(head && head->shape[0] == 512 && head->shape[1] == 64);
    float v[512 * 64];
    CHECK(head && an_st_to_f32(head, v, &e) == 0 && v[0] == 0 && v[1] == 0.25f && v[512 * 64 - 1] == 8191.75f);
    an_st_close(&st);
    free(u);
    free(b);
}

/* Version 1 ("ak42"): built here from the v0 file in the order of llama2.c export.py's version1_export
 * (all attention norms, all ffn norms, final norm, embeddings, wq.., wk.., wv.., wo.., w1.., w2.., w3..,
 * no freq_cis); every tensor must read back identical to the v0 view. */
static void test_version1_layout(void) {
    an_model_config c0, c1;
    an_safetensors v0, v1;
    an_error e;
    CHECK_MSG(an_llama2c_open(&c0, &v0, stories(), &e) == 0, "%s", e.msg);
    size_t total = 256 + (1056540 - 28 - 2 * 512 * 4 * 4);
    unsigned char *f = calloc(total, 1);
    put_i32(f, 0x616b3432);
    put_i32(f + 4, 1);
    const int32_t hdr[7] = {64, 172, 5, 8, 4, 512, 512};
    for (int i = 0; i < 7; i++) put_i32(f + 8 + 4 * i, hdr[i]);
    f[36] = 1; /* shared classifier */
    const char *per_layer[] = {"input_layernorm", "post_attention_layernorm", NULL, NULL, "self_attn.q_proj",
                               "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                               "mlp.down_proj", "mlp.up_proj"};
    size_t at = 256;
    for (int k = 0; k < 11; k++) {
        for (int l = 0; l < (per_layer[k] ? 5 : 1); l++) {
            char name[96];
            if (per_layer[k]) snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, per_layer[k]);
            else snprintf(name, sizeof name, k == 2 ? "model.norm.weight" : "model.embed_tokens.weight");
            const an_st_tensor *t = an_st_find(&v0, name);
            CHECK(t != NULL);
            if (!t) continue;
            memcpy(f + at, t->data, t->nbytes);
            at += t->nbytes;
        }
    }
    CHECK(at == total);
    const char *p = test_tmp_path("v1.bin");
    CHECK(an_write_file_atomic(p, f, total, &e) == 0);
    CHECK_MSG(an_llama2c_open(&c1, &v1, p, &e) == 0, "%s", e.msg);
    CHECK(v1.n_tensors == v0.n_tensors && c1.dim == 64 && c1.tie_embeddings == 1 && c1.n_kv_heads == 4);
    for (int i = 0; i < v0.n_tensors && i < v1.n_tensors; i++) {
        CHECK_STR(v1.tensors[i].name, v0.tensors[i].name);
        CHECK(v1.tensors[i].nbytes == v0.tensors[i].nbytes &&
              memcmp(v1.tensors[i].data, v0.tensors[i].data, v0.tensors[i].nbytes) == 0);
    }
    an_st_close(&v1);
    /* version 2 (int8) is refused by name */
    put_i32(f + 4, 2);
    CHECK(an_write_file_atomic(p, f, total, &e) == 0);
    CHECK(an_llama2c_open(&c1, &v1, p, &e) == -1);
    CHECK_CONTAINS(e.msg, p);
    CHECK_CONTAINS(e.msg, "version 2 is not supported");
    free(f);
    an_st_close(&v0);
}

static void expect_error(const unsigned char *bytes, size_t n, const char *name, const char *problem) {
    an_error e;
    const char *p = test_tmp_path(name);
    CHECK(an_write_file_atomic(p, bytes, n, &e) == 0);
    an_model_config c;
    an_safetensors st;
    e.msg[0] = 0;
    int rc = an_llama2c_open(&c, &st, p, &e);
    CHECK_MSG(rc == -1, "%s opened but should fail with \"%s\"", p, problem);
    if (rc == 0) an_st_close(&st);
    CHECK_CONTAINS(e.msg, p);
    CHECK_CONTAINS(e.msg, problem);
    CHECK(st.tensors == NULL && st.files == NULL);
}

static void test_bad_files(void) {
    size_t n;
    unsigned char *b = stories_bytes(&n);
    if (!b) return;
    expect_error(b, n - 4, "truncated.bin", "file is 1056536 bytes but its llama2.c header");
    expect_error(b, n - 4, "truncated2.bin", "needs 1056540 (truncated file?)");
    expect_error(b, n - 1000, "truncated3.bin", "(truncated file?)");
    unsigned char *longer = calloc(n + 4, 1);
    memcpy(longer, b, n);
    expect_error(longer, n + 4, "longer.bin", "file is 1056544 bytes");
    free(longer);
    /* vocab -512 says a classifier follows, but the file has none */
    put_i32(b + 20, -512);
    expect_error(b, n, "nocls.bin", "own classifier");
    put_i32(b + 20, 512);
    expect_error(b, 20, "short.bin", "too short for a llama2.c header");
    put_i32(b, 0);
    expect_error(b, n, "dim0.bin", "dim = 0 is absurd");
    put_i32(b, 64);
    put_i32(b + 12, 7);
    expect_error(b, n, "heads7.bin", "n_heads 7 does not divide dim 64");
    put_i32(b + 12, 8);
    put_i32(b + 16, 3);
    expect_error(b, n, "kv3.bin", "n_kv_heads 3 does not divide n_heads 8");
    put_i32(b + 16, 4);
    put_i32(b + 24, -5);
    expect_error(b, n, "seq.bin", "seq_len = -5 is absurd");
    put_i32(b + 24, 512);
    put_i32(b + 20, INT32_MIN);
    expect_error(b, n, "vocabmin.bin", "vocab_size");
    free(b);
}

/* Interleaved RoPE on W x equals rotate-half RoPE on (permuted W) x, for every position: the defining
 * property of the permutation, checked with both RoPE conventions written out here in double precision.
 * Plus the hand-computed case: one head of 4 rows [r0 r1 r2 r3] becomes [r0 r2 r1 r3]. */
static void test_permute_qk(void) {
    float src4[4] = {10, 11, 12, 13}, dst4[4];
    an_llama2c_permute_qk(dst4, src4, 1, 4, 1);
    CHECK(dst4[0] == 10 && dst4[1] == 12 && dst4[2] == 11 && dst4[3] == 13);

    enum { H = 3, D = 8, C = 5 };
    float w[H * D * C], p[H * D * C], x[C];
    for (int i = 0; i < H * D * C; i++) w[i] = (float)((i * 37) % 23) / 23.0f - 0.5f;
    for (int i = 0; i < C; i++) x[i] = 0.3f * (float)i - 0.4f;
    an_llama2c_permute_qk(p, w, H, D, C);
    double worst = 0;
    for (int pos = 0; pos < 7; pos++) {
        for (int h = 0; h < H; h++) {
            double a[D], b[D];
            for (int r = 0; r < D; r++) {
                a[r] = b[r] = 0;
                for (int c = 0; c < C; c++) {
                    a[r] += (double)w[(h * D + r) * C + c] * x[c];
                    b[r] += (double)p[(h * D + r) * C + c] * x[c];
                }
            }
            for (int i = 0; i < D / 2; i++) {
                double ang = pos * pow(10000.0, -2.0 * i / D), cs = cos(ang), sn = sin(ang);
                /* llama2.c: pairs (2i, 2i+1); HF: pairs (i, i + D/2) */
                double a0 = a[2 * i] * cs - a[2 * i + 1] * sn, a1 = a[2 * i] * sn + a[2 * i + 1] * cs;
                double b0 = b[i] * cs - b[i + D / 2] * sn, b1 = b[i] * sn + b[i + D / 2] * cs;
                worst = test_nan_max(worst, test_nan_max(fabs(a0 - b0), fabs(a1 - b1)));
            }
        }
    }
    /* same products in the same order, only rows moved: the results agree to double rounding */
    CHECK_NEAR(worst, 0, 1e-12);
}

/* A llama2.c .bin with an infinity planted in the token embedding (the first tensor, right after the
 * 28-byte header): the load names the file, the tensor and the element. */
static void test_nonfinite_bin_rejected(void) {
    size_t n;
    an_error e;
    char *b = an_read_file(stories(), &n, &e);
    if (!b) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        return;
    }
    const float inf = INFINITY;
    memcpy(b + 28 + 4 * 11, &inf, 4);
    const char *p = test_tmp_path("inf.bin");
    CHECK(an_write_file_atomic(p, b, n, &e) == 0);
    free(b);
    e.msg[0] = 0;
    an_model *m = an_model_load(p, an_ops_cpu(), &e);
    CHECK(m == NULL);
    an_model_free(m);
    char want[600];
    snprintf(want, sizeof want, "%s: tensor model.embed_tokens.weight holds a NaN or infinite value (first at element 11)", p);
    CHECK_STR(e.msg, want);
}

int main(void) {
    RUN(test_stories260k);
    RUN(test_untied_classifier);
    RUN(test_version1_layout);
    RUN(test_bad_files);
    RUN(test_permute_qk);
    RUN(test_nonfinite_bin_rejected);
    return test_finish();
}
