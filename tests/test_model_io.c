/* Loading, saving, bad model files, packed batches and random init. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/file.h"
#include "tests/test_model_util.h"
#include "train/step.h"

/* Saving writes the Hugging Face names and layouts: each tensor of a saved GPT-2 (Conv1D weights
 * transposed back to [in, out]) is bit-identical to the transformers save it was loaded from, and no
 * tensor is added or lost. */
static void test_save_matches_transformers_files(void) {
    static const char *names[] = {"gpt2", "llama", "internlm2"};
    for (int k = 0; k < 3; k++) {
        an_model *m = load_fixture_model(names[k]);
        if (!m) continue;
        char dir[512], orig[512], saved[600];
        snprintf(dir, sizeof dir, "%s/saved-%s", test_tmpdir(), names[k]);
        snprintf(orig, sizeof orig, "%s/%s/model.safetensors", MODEL_FIXTURES, names[k]);
        snprintf(saved, sizeof saved, "%s/model.safetensors", dir);
        an_error e;
        CHECK_MSG(an_model_save(m, dir, &e) == 0, "%s", e.msg);
        an_safetensors a, b;
        if (an_st_open(&a, orig, &e) == 0) {
            if (an_st_open(&b, saved, &e) == 0) {
                CHECK(a.n_tensors == b.n_tensors);
                for (int i = 0; i < a.n_tensors; i++) {
                    const an_st_tensor *ta = &a.tensors[i], *tb = an_st_find(&b, ta->name);
                    CHECK_MSG(tb != NULL, "%s: %s not saved", names[k], ta->name);
                    if (!tb) continue;
                    CHECK(ta->ndim == tb->ndim && memcmp(ta->shape, tb->shape, sizeof ta->shape) == 0);
                    CHECK_MSG(ta->nbytes == tb->nbytes && memcmp(ta->data, tb->data, ta->nbytes) == 0,
                              "%s: %s differs", names[k], ta->name);
                }
                an_st_close(&b);
            } else {
                test_fail_at(__FILE__, __LINE__, "%s", e.msg);
            }
            an_st_close(&a);
        }
        /* and the saved folder loads back (config.json round trip) */
        an_model *r = an_model_load(dir, an_ops_cpu(), &e);
        CHECK_MSG(r != NULL, "%s", e.msg);
        if (r) {
            CHECK(r->n_param_floats == m->n_param_floats &&
                  memcmp(r->param_mem, m->param_mem, m->n_param_floats * sizeof(float)) == 0);
            an_model_free(r);
        }
        an_model_free(m);
    }
}

/* A sharded folder (model.safetensors.index.json + two shards, as save_pretrained writes big models)
 * loads to the same parameters as the single file. */
static void test_sharded_folder_loads(void) {
    char src[512], dir[512], path[700];
    snprintf(src, sizeof src, "%s/qwen2/model.safetensors", MODEL_FIXTURES);
    snprintf(dir, sizeof dir, "%s/sharded-qwen2", test_tmpdir());
    mkdir(dir, 0777);
    an_error e;
    an_safetensors st;
    if (an_st_open(&st, src, &e)) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        return;
    }
    static const char *shard[2] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    size_t cap = 64 + (size_t)st.n_tensors * 160, len = 0;
    char *index = malloc(cap);
    len += (size_t)snprintf(index + len, cap - len, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
    for (int k = 0; k < 2; k++) {
        an_st_writer w;
        an_st_writer_init(&w);
        for (int i = k; i < st.n_tensors; i += 2) {
            const an_st_tensor *t = &st.tensors[i];
            CHECK(an_st_writer_add(&w, t->name, t->dtype, t->ndim, t->shape, t->data, &e) == 0);
            len += (size_t)snprintf(index + len, cap - len, "%s\"%s\": \"%s\"", len > 48 ? ", " : "", t->name, shard[k]);
        }
        snprintf(path, sizeof path, "%s/%s", dir, shard[k]);
        CHECK_MSG(an_st_write(&w, path, &e) == 0, "%s", e.msg);
        an_st_writer_free(&w);
    }
    len += (size_t)snprintf(index + len, cap - len, "}}");
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    CHECK(an_write_file_atomic(path, index, len, &e) == 0);
    free(index);
    an_st_close(&st);
    char cfg_src[512], cfg_dst[700];
    snprintf(cfg_src, sizeof cfg_src, "%s/qwen2/config.json", MODEL_FIXTURES);
    snprintf(cfg_dst, sizeof cfg_dst, "%s/config.json", dir);
    size_t n = 0;
    char *cfg = an_read_file(cfg_src, &n, &e);
    CHECK(cfg && an_write_file_atomic(cfg_dst, cfg, n, &e) == 0);
    free(cfg);
    an_model *a = an_model_load(dir, an_ops_cpu(), &e);
    CHECK_MSG(a != NULL, "%s", e.msg);
    an_model *b = load_fixture_model("qwen2");
    if (a && b)
        CHECK(a->n_param_floats == b->n_param_floats &&
              memcmp(a->param_mem, b->param_mem, a->n_param_floats * sizeof(float)) == 0);
    an_model_free(a);
    an_model_free(b);
}

/* Writes a copy of the llama fixture into dir with tensor `victim` changed: mode 0 drops it, mode 1
 * gives it a wrong shape, mode 2 adds a tensor nobody expects. */
static int write_broken_copy(const char *dir, const char *victim, int mode) {
    char src[512], path[600];
    an_error e;
    snprintf(src, sizeof src, "%s/llama/model.safetensors", MODEL_FIXTURES);
    an_safetensors st;
    if (an_st_open(&st, src, &e)) return -1;
    mkdir(dir, 0777);
    an_st_writer w;
    an_st_writer_init(&w);
    for (int i = 0; i < st.n_tensors; i++) {
        const an_st_tensor *t = &st.tensors[i];
        int64_t shape[AN_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        if (strcmp(t->name, victim) == 0) {
            if (mode == 0) continue;
            if (mode == 1) shape[0] /= 2; /* half the rows: the data is a prefix of the real tensor */
        }
        an_st_writer_add(&w, t->name, t->dtype, t->ndim, shape, t->data, &e);
    }
    if (mode == 2) {
        static const float extra[4] = {1, 2, 3, 4};
        int64_t shape[1] = {4};
        an_st_writer_add(&w, "model.layers.0.self_attn.o_proj.bias", AN_F32, 1, shape, extra, &e);
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int rc = an_st_write(&w, path, &e);
    an_st_writer_free(&w);
    an_st_close(&st);
    if (rc) return -1;
    char cfg_src[512], cfg_dst[600];
    snprintf(cfg_src, sizeof cfg_src, "%s/llama/config.json", MODEL_FIXTURES);
    snprintf(cfg_dst, sizeof cfg_dst, "%s/config.json", dir);
    size_t n = 0;
    char *cfg = an_read_file(cfg_src, &n, &e);
    if (!cfg) return -1;
    rc = an_write_file_atomic(cfg_dst, cfg, n, &e);
    free(cfg);
    return rc;
}

static void expect_load_error(const char *victim, int mode, const char *what) {
    static int serial;
    char dir[512], file[600];
    snprintf(dir, sizeof dir, "%s/broken-%d", test_tmpdir(), serial++);
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    if (write_broken_copy(dir, victim, mode)) {
        test_fail_at(__FILE__, __LINE__, "cannot write the broken copy in %s", dir);
        return;
    }
    an_error e;
    e.msg[0] = 0;
    an_model *m = an_model_load(dir, an_ops_cpu(), &e);
    CHECK(m == NULL);
    an_model_free(m);
    CHECK_CONTAINS(e.msg, file);
    CHECK_CONTAINS(e.msg, mode == 2 ? "model.layers.0.self_attn.o_proj.bias" : victim);
    CHECK_CONTAINS(e.msg, what);
}

static void test_bad_model_files_name_file_and_tensor(void) {
    expect_load_error("model.layers.1.mlp.up_proj.weight", 0, "missing");
    expect_load_error("model.layers.0.self_attn.k_proj.weight", 1, "shape [8, 32], expected [16, 32]");
    expect_load_error("", 2, "unexpected");
    an_error e;
    CHECK(an_model_load("/nonexistent/model-folder", an_ops_cpu(), &e) == NULL);
    CHECK_CONTAINS(e.msg, "/nonexistent/model-folder");
}

/* A weight that is NaN or infinite fails the load, naming the file, the tensor and the first bad
 * element (before, perplexity printed nll=nan and exited 0, and training blamed itself). The folder
 * is the llama fixture saved again with one value planted: a NaN at element 5 of one tensor in one
 * folder, an infinity at element 7 of another in a second. */
static void expect_nonfinite_rejected(int param, size_t elem, float value, const char *tag) {
    an_model *m = load_fixture_model("llama");
    if (!m) return;
    an_param *p = &m->params[param];
    char name[128], dir[512], want[1024];
    snprintf(name, sizeof name, "%s", p->name);
    ((float *)p->data)[elem] = value;
    snprintf(dir, sizeof dir, "%s/nonfinite-%s", test_tmpdir(), tag);
    an_error e;
    CHECK_MSG(an_model_save(m, dir, &e) == 0, "%s", e.msg);
    an_model_free(m);
    e.msg[0] = 0;
    an_model *r = an_model_load(dir, an_ops_cpu(), &e);
    CHECK_MSG(r == NULL, "%s: a model with a planted %s loaded", tag, tag);
    an_model_free(r);
    snprintf(want, sizeof want, "%s/model.safetensors: tensor %s holds a NaN or infinite value (first at element %zu)",
             dir, name, elem);
    CHECK_STR(e.msg, want);
}

static void test_nonfinite_weights_rejected(void) {
    expect_nonfinite_rejected(2, 5, NAN, "nan");
    expect_nonfinite_rejected(4, 7, INFINITY, "inf");
    expect_nonfinite_rejected(0, 0, -INFINITY, "-inf");
}

/* Two samples packed in one row (positions restart, seg_start marks the boundary) give the same
 * per-token losses as each sample alone. Both run the same float32 ops on the same values, except
 * that attention tiles see different row lengths, so they agree to rounding: 1e-5 absolute on
 * losses of about 5.5. GPT-2 checks learned positions, Llama RoPE and grouped-query attention. */
static void check_packed(const char *name) {
    an_model *m = load_fixture_model(name);
    if (!m) return;
    enum { LA = 7, LB = 9, T = LA + LB };
    int32_t ids[T], pos[T], seg[T], tg[T];
    for (int t = 0; t < T; t++) {
        ids[t] = 3 + (t * 37 + 11) % (m->cfg.vocab_size - 3);
        int a = t < LA;
        pos[t] = a ? t : t - LA;
        seg[t] = a ? 0 : LA;
        int last = a ? t == LA - 1 : t == T - 1;
        tg[t] = last ? AN_IGNORE_INDEX : 3 + (t * 53 + 5) % (m->cfg.vocab_size - 3);
    }
    an_error e;
    CHECK(an_model_plan(m, 1, T, &e) == 0);
    an_batch packed = {ids, pos, seg, tg, 1, T};
    float loss;
    CHECK(an_model_forward(m, &packed, 0, 1.0f, &loss, NULL, &e) == 0);
    float together[T];
    memcpy(together, an_model_token_losses(m), sizeof together);
    an_batch a = {ids, NULL, NULL, tg, 1, LA}, b = {ids + LA, NULL, NULL, tg + LA, 1, LB};
    CHECK(an_model_forward(m, &a, 0, 1.0f, &loss, NULL, &e) == 0);
    float alone[T];
    memcpy(alone, an_model_token_losses(m), LA * sizeof(float));
    CHECK(an_model_forward(m, &b, 0, 1.0f, &loss, NULL, &e) == 0);
    memcpy(alone + LA, an_model_token_losses(m), LB * sizeof(float));
    double worst = 0;
    for (int t = 0; t < T; t++) worst = test_nan_max(worst, fabs(together[t] - alone[t]));
    CHECK_MSG(worst < 1e-5, "%s: packed vs separate losses differ by %.3g", name, worst);
    /* and packing matters: without the restart, the second sample's losses change */
    an_batch plain = {ids, NULL, NULL, tg, 1, T};
    CHECK(an_model_forward(m, &plain, 0, 1.0f, &loss, NULL, &e) == 0);
    CHECK(fabs(an_model_token_losses(m)[LA + 3] - alone[LA + 3]) > 1e-4);
    an_model_free(m);
}

static void test_packed_rows_match_separate_samples(void) {
    check_packed("gpt2");
    check_packed("llama");
    check_packed("internlm2");
}

/* Random init: repeatable for a seed, different for another, GPT-2 statistics (std 0.02 on the
 * embedding: 256 x 32 values, so the sample std is within 2% of 0.02 at over 4 sigma), norms 1. */
static void test_init_random(void) {
    an_model *ref = load_fixture_model("llama");
    if (!ref) return;
    an_error e;
    an_model *a = an_model_init_random(&ref->cfg, an_ops_cpu(), 7, &e);
    an_model *b = an_model_init_random(&ref->cfg, an_ops_cpu(), 7, &e);
    an_model *c = an_model_init_random(&ref->cfg, an_ops_cpu(), 8, &e);
    CHECK(a && b && c);
    if (a && b && c) {
        CHECK(memcmp(a->param_mem, b->param_mem, a->n_param_floats * sizeof(float)) == 0);
        CHECK(memcmp(a->param_mem, c->param_mem, a->n_param_floats * sizeof(float)) != 0);
        const an_param *emb = a->tok_emb;
        double s2 = 0;
        for (size_t i = 0; i < emb->numel; i++) s2 += (double)emb->data[i] * emb->data[i];
        CHECK_NEAR(sqrt(s2 / (double)emb->numel), 0.02, 0.0004);
        CHECK(a->final_norm_w->data[0] == 1.0f);
        CHECK(an_model_param_count(a, 0) == an_model_param_count(ref, 0));
        /* counted by hand for this config: V*C*2 (untied) + L*(2C + C*(qd + 2kvd) + qd*C + 3*C*F) + C */
        size_t C = 32, F = 64, V = 256, qd = 32, kvd = 16, L = 2;
        CHECK(an_model_param_count(a, 0) == V * C * 2 + L * (2 * C + C * (qd + 2 * kvd) + qd * C + 3 * C * F) + C);
        CHECK(an_model_bytes_params(a) >= an_model_param_count(a, 0) * sizeof(float));
        CHECK(an_model_plan(a, 2, 16, &e) == 0 && an_model_bytes_activations(a) > 0);
        CHECK(an_model_bytes_grads(a) == 0);
        an_model_set_all_trainable(a, 0);
        an_model_find(a, "lm_head.weight")->trainable = 1;
        CHECK(an_model_alloc_grads(a, &e) == 0);
        CHECK(an_model_param_count(a, 1) == V * C);
        CHECK(an_model_find(a, "model.embed_tokens.weight")->grad == NULL);
    }
    an_model_free(a);
    an_model_free(b);
    an_model_free(c);
    an_model_free(ref);
}

/* A frozen base: only the head trains. The head's gradient must equal the full model's head gradient
 * (same forward), and nothing else gets a buffer or a write. */
static void test_frozen_tensors_get_no_gradient(void) {
    an_model *full = load_fixture_model("llama"), *part = load_fixture_model("llama");
    if (!full || !part) goto done;
    an_safetensors fx;
    if (open_fixture(&fx, "llama")) goto done;
    int32_t *ids = fx_ints(&fx, "ids", NULL), *tg = fx_ints(&fx, "targets", NULL);
    an_error e;
    an_model_set_all_trainable(part, 0);
    an_model_find(part, "lm_head.weight")->trainable = 1;
    an_model_find(part, "model.layers.0.self_attn.q_proj.weight")->trainable = 1;
    CHECK(an_model_alloc_grads(full, &e) == 0 && an_model_alloc_grads(part, &e) == 0);
    an_batch b = {ids, NULL, NULL, tg, 2, 16};
    an_model *ms[2] = {full, part};
    for (int k = 0; k < 2; k++) {
        CHECK(an_model_plan(ms[k], 2, 16, &e) == 0);
        an_model_zero_grad(ms[k]);
        CHECK(an_model_forward(ms[k], &b, 1, 1.0f, NULL, NULL, &e) == 0);
        CHECK(an_model_backward(ms[k], &e) == 0);
    }
    static const char *trained[] = {"lm_head.weight", "model.layers.0.self_attn.q_proj.weight"};
    for (int k = 0; k < 2; k++) {
        an_param *pf = an_model_find(full, trained[k]), *pp = an_model_find(part, trained[k]);
        /* identical ops on identical inputs: bit-identical */
        CHECK(memcmp(pf->grad, pp->grad, pf->numel * sizeof(float)) == 0);
    }
    CHECK(an_model_param_count(part, 1) == 256 * 32 + 32 * 32);
    free(ids);
    free(tg);
    an_st_close(&fx);
done:
    an_model_free(full);
    an_model_free(part);
}


/* gather_cols on a hand-made case: the InternLM2 split of one row with nkv = 2 groups, G = 2 query
 * heads per group, hd = 2 -- row [q0 q1 k0 v0 | q2 q3 k1 v1] with each head 2 wide. Values are the
 * column index, so every expected element is written out. Backward must add (not overwrite). */
static void test_gather_cols_splits_grouped_qkv(void) {
    const an_ops *o = an_ops_cpu();
    float src[2 * 16], q[2 * 8], k[2 * 4];
    for (int n = 0; n < 2; n++)
        for (int i = 0; i < 16; i++) src[n * 16 + i] = (float)(100 * n + i);
    an_col_map mq = {2, 4, 8, 0, 4, 16, 0, 8}, mk = {2, 2, 4, 0, 2, 16, 4, 8};
    o->gather_cols_forward(o, q, src, 2, &mq);
    o->gather_cols_forward(o, k, src, 2, &mk);
    static const float want_q[8] = {0, 1, 2, 3, 8, 9, 10, 11}, want_k[4] = {4, 5, 12, 13};
    for (int n = 0; n < 2; n++) {
        for (int i = 0; i < 8; i++) CHECK(q[n * 8 + i] == want_q[i] + 100 * n);
        for (int i = 0; i < 4; i++) CHECK(k[n * 4 + i] == want_k[i] + 100 * n);
    }
    float d[2 * 16];
    for (int i = 0; i < 32; i++) d[i] = 1.0f;
    o->gather_cols_backward(o, d, k, 2, &mk);
    CHECK(d[4] == 5.0f && d[5] == 6.0f && d[12] == 13.0f && d[13] == 14.0f && d[16 + 4] == 105.0f);
    CHECK(d[0] == 1.0f && d[6] == 1.0f && d[14] == 1.0f && d[16 + 15] == 1.0f);
}

/* "Nothing is allocated inside a step": count the backend allocations through a wrapped op table. */
static const an_ops *counted_base;
static int counted_allocs;
static void *counting_alloc(const an_ops *o, size_t bytes) {
    (void)o;
    counted_allocs++;
    return counted_base->alloc(counted_base, bytes);
}

static void test_training_steps_allocate_nothing(void) {
    counted_base = an_ops_cpu();
    an_ops counting = *counted_base;
    counting.alloc = counting_alloc;
    char path[512];
    snprintf(path, sizeof path, "%s/internlm2", MODEL_FIXTURES);
    an_error e;
    an_model *m = an_model_load(path, &counting, &e);
    if (!m) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        return;
    }
    an_full_trainer tr;
    CHECK(an_model_plan(m, 2, 16, &e) == 0 && an_full_trainer_init(&tr, m, &e) == 0);
    /* params, activations, gradients, moments and the optimizer's list of what it updates (train/optim.c):
     * five allocations */
    CHECK_MSG(counted_allocs == 5, "%d allocations", counted_allocs);
    int before = counted_allocs;
    int32_t ids[32], tg[32];
    for (int i = 0; i < 32; i++) ids[i] = 3 + i * 5 % 250, tg[i] = i % 7 ? 3 + i * 11 % 250 : AN_IGNORE_INDEX;
    an_batch b = {ids, NULL, NULL, tg, 2, 16};
    an_adamw_config c = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 1.0f};
    float first = 0;
    for (int s = 0; s < 3; s++) {
        an_step_stats st;
        CHECK(an_train_step(&tr, &b, &c, &st, &e) == 0);
        CHECK(st.tokens == 32 - 5); /* i % 7 == 0 for i = 0, 7, 14, 21, 28 */
        if (s == 0) first = st.loss;
        if (s == 2) CHECK(st.loss < first); /* it learns */
    }
    CHECK(counted_allocs == before);
    an_full_trainer_free(&tr);
    an_model_free(m);
}

int main(void) {
    RUN(test_save_matches_transformers_files);
    RUN(test_sharded_folder_loads);
    RUN(test_bad_model_files_name_file_and_tensor);
    RUN(test_nonfinite_weights_rejected);
    RUN(test_packed_rows_match_separate_samples);
    RUN(test_init_random);
    RUN(test_frozen_tensors_get_no_gradient);
    RUN(test_gather_cols_splits_grouped_qkv);
    RUN(test_training_steps_allocate_nothing);
    return test_finish();
}
