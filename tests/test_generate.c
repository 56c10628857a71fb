/* Generation and perplexity on TinyStories-656K against transformers (tests/ref/make_generate_fixtures.py):
 * greedy `generate` with its KV cache gives the recorded ids token for token, and perplexity over
 * windows matches the recorded mean NLL. Then the CLI end to end: generate, perplexity and their
 * bad inputs (empty prompt file, sampling values out of range, a prompt longer than the context). */
#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "infer/generate.h"
#include "infer/perplexity.h"
#include "infer/session.h"
#include "tests/cli_run.h"
#include "tests/test.h"

static cJSON *fixture(void) {
    an_error e;
    char *s = an_read_file("tests/ref/generate/tinystories656k.json", NULL, &e);
    if (!s) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        return NULL;
    }
    cJSON *j = cJSON_Parse(s);
    free(s);
    return j;
}

static int32_t *int_array(const cJSON *a, int *n) {
    *n = cJSON_GetArraySize(a);
    int32_t *v = malloc(((size_t)*n + 1) * sizeof(int32_t));
    int i = 0;
    for (const cJSON *x = a ? a->child : NULL; x; x = x->next) v[i++] = (int32_t)x->valueint;
    return v;
}

/* Our tokenizer gives transformers' prompt ids (BOS from tokenizer.json's post-processor), and greedy
 * generation from them the ids transformers' generate recorded (exact: a different token anywhere is
 * a bug, float rounding of ~1e-6 cannot flip these argmaxes unless two logits tie that closely). */
static void test_greedy_matches_transformers(void) {
    cJSON *fx = fixture();
    if (!fx) return;
    an_session s;
    an_error e;
    if (an_session_open(&s, an_ops_cpu(), test_shared("models/TinyStories-656K"), NULL, NULL, NULL, &e)) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        cJSON_Delete(fx);
        return;
    }
    int max_new = cJSON_GetObjectItem(fx, "max_new_tokens")->valueint;
    const cJSON *gens = cJSON_GetObjectItem(fx, "generate");
    int k = 0;
    for (const cJSON *g = gens->child; g; g = g->next, k++) {
        const char *prompt = cJSON_GetObjectItem(g, "prompt")->valuestring;
        int np, nr;
        int32_t *pids = int_array(cJSON_GetObjectItem(g, "prompt_ids"), &np);
        int32_t *ref = int_array(cJSON_GetObjectItem(g, "ids"), &nr);
        an_ids enc = {0};
        CHECK_MSG(an_session_encode(&s, prompt, 1, &enc, &e) == 0, "%s", e.msg);
        CHECK_MSG(enc.n == (size_t)np && memcmp(enc.v, pids, (size_t)np * 4) == 0, "prompt %d: tokenised differently", k);
        an_gen_opts o = an_gen_defaults();
        o.sampling.temperature = 0;
        o.max_tokens = max_new;
        o.stop_ids = s.stop_ids.v;
        o.n_stop_ids = (int)s.stop_ids.n;
        an_gen_prompt p = {pids, np};
        an_gen_output out = {0};
        CHECK_MSG(an_generate(s.model, s.model->lora, &p, 1, an_tokenizer_bos(s.tok), &o, &out, &e) == 0, "%s", e.msg);
        CHECK_MSG(out.n == nr && memcmp(out.ids, ref, (size_t)nr * 4) == 0, "prompt %d (\"%s\"): %d ids vs %d from transformers",
                  k, prompt, out.n, nr);
        /* and as text through the session (raw continuation), as the CLI prints it */
        an_text_result tr = {0};
        const char *texts[1] = {prompt};
        CHECK_MSG(an_session_generate(&s, texts, 1, 1, &o, &tr, &e) == 0, "%s", e.msg);
        CHECK(tr.n_tokens == nr);
        if (k == 0) {
            CHECK_STR(tr.text, cJSON_GetObjectItem(g, "text")->valuestring);
            printf("greedy: \"%s\" ->%s\n", prompt, tr.text);
        }
        an_text_results_free(&tr, 1);
        an_gen_outputs_free(&out, 1);
        an_ids_free(&enc);
        free(pids);
        free(ref);
    }
    CHECK(k == 4);
    an_session_close(&s);
    cJSON_Delete(fx);
}

/* Perplexity over the whole text in one window and in windows of 16 tokens, against transformers'
 * log-softmax in double of its float32 logits. Tolerance 1e-4 nats: float32 logits differ by ~1e-6
 * relative (test_model_real), which moves a mean NLL of ~2 nats by ~1e-5 at most. */
static void test_perplexity_matches_transformers(void) {
    cJSON *fx = fixture();
    if (!fx) return;
    an_session s;
    an_error e;
    if (an_session_open(&s, an_ops_cpu(), test_shared("models/TinyStories-656K"), NULL, NULL, NULL, &e)) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        cJSON_Delete(fx);
        return;
    }
    int n;
    int32_t *ids = int_array(cJSON_GetObjectItem(fx, "text_ids"), &n);
    /* our tokenizer with BOS as the tokenizer asks (add_bos_token / post-processor) gives the same ids */
    const char *text = cJSON_GetObjectItem(fx, "text")->valuestring;
    an_ids mine = {0};
    CHECK(an_tokenizer_adds_bos(s.tok));
    an_ids_push(&mine, an_tokenizer_bos(s.tok));
    CHECK(an_tokenizer_encode(s.tok, text, strlen(text), &mine, &e) == 0);
    CHECK(mine.n == (size_t)n && memcmp(mine.v, ids, (size_t)n * 4) == 0);
    an_ids_free(&mine);
    for (const cJSON *p = cJSON_GetObjectItem(fx, "perplexity")->child; p; p = p->next) {
        int ctx = cJSON_GetObjectItem(p, "ctx")->valueint;
        double nll = cJSON_GetObjectItem(p, "nll")->valuedouble;
        an_ppl r;
        CHECK_MSG(an_perplexity(s.model, ids, (size_t)n, ctx, &r, &e) == 0, "%s", e.msg);
        CHECK(r.tokens == (size_t)n && r.scored == (size_t)n - 1);
        CHECK_NEAR(r.nll, nll, 1e-4);
        printf("perplexity ctx %d: nll %.6f (transformers %.6f), ppl %.4f\n", ctx, r.nll, nll, r.ppl);
    }
    /* The decoding path's logits of every position (perplexity --logits) give the same whole-text NLL:
     * the KV-cache path against the training forward transformers was checked on, same 1e-4 bound. */
    size_t V = (size_t)s.model->cfg.vocab_size;
    float *logits = malloc((size_t)n * V * sizeof(float));
    CHECK_MSG(an_position_logits(s.model, ids, (size_t)n, logits, &e) == 0, "%s", e.msg);
    double sum = 0;
    for (int t = 0; t + 1 < n; t++) {
        const float *row = logits + (size_t)t * V;
        double mx = row[0], z = 0;
        for (size_t v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
        for (size_t v = 0; v < V; v++) z += exp((double)row[v] - mx);
        sum += log(z) + mx - row[ids[t + 1]];
    }
    double whole = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(fx, "perplexity"), 0), "nll")->valuedouble;
    CHECK_NEAR(sum / (n - 1), whole, 1e-4); /* NaN-safe: CHECK_NEAR fails on NaN */
    printf("position logits: nll %.6f (transformers %.6f)\n", sum / (n - 1), whole);
    CHECK(an_position_logits(s.model, ids, (size_t)s.model->cfg.max_seq + 1, logits, &e) == -1);
    CHECK_CONTAINS(e.msg, "more than the model's context");
    free(logits);
    an_ppl r;
    CHECK(an_perplexity(s.model, ids, 1, 0, &r, &e) == -1);
    CHECK_CONTAINS(e.msg, "at least 2");
    CHECK(an_perplexity(s.model, ids, (size_t)n, 100000, &r, &e) == -1);
    CHECK_CONTAINS(e.msg, "--ctx 100000");
    free(ids);
    an_session_close(&s);
    cJSON_Delete(fx);
}

static void copy_into(const char *dir, const char *name) {
    char src[1024], dst[1024];
    snprintf(src, sizeof src, "%s/%s", test_shared("models/TinyStories-656K"), name);
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    an_error e;
    size_t n;
    char *data = an_read_file(src, &n, &e);
    CHECK_MSG(data && an_write_file_atomic(dst, data, n, &e) == 0, "%s", e.msg);
    free(data);
}

/* The template comes from --template, else the folder's autoneg.json (as autoneg train writes it),
 * else infotext; a broken autoneg.json is an error naming it. */
static void test_template_from_model_folder(void) {
    char dir[512], meta[600];
    snprintf(dir, sizeof dir, "%s/model-with-meta", test_tmpdir());
    CHECK(system((snprintf(meta, sizeof meta, "mkdir -p %s", dir), meta)) == 0);
    const char *files[] = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                           "special_tokens_map.json"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) copy_into(dir, files[i]);
    an_session s;
    an_error e;
    CHECK_MSG(an_session_open(&s, an_ops_cpu(), dir, NULL, NULL, NULL, &e) == 0, "%s", e.msg);
    CHECK_STR(s.tpl.name, "infotext");
    an_session_close(&s);
    snprintf(meta, sizeof meta, "%s/autoneg.json", dir);
    const char *j = "{\"template\": \"default\"}\n";
    CHECK(an_write_file_atomic(meta, j, strlen(j), &e) == 0);
    CHECK_MSG(an_session_open(&s, an_ops_cpu(), dir, NULL, NULL, NULL, &e) == 0, "%s", e.msg);
    CHECK_STR(s.tpl.name, "default");
    an_session_close(&s);
    CHECK_MSG(an_session_open(&s, an_ops_cpu(), dir, NULL, NULL, "internlm2_chat", &e) == 0, "%s", e.msg);
    CHECK_STR(s.tpl.name, "internlm2_chat");
    an_session_close(&s);
    j = "{\"template\": 3}";
    CHECK(an_write_file_atomic(meta, j, strlen(j), &e) == 0);
    CHECK(an_session_open(&s, an_ops_cpu(), dir, NULL, NULL, NULL, &e) == -1);
    CHECK_CONTAINS(e.msg, meta);
    CHECK_CONTAINS(e.msg, "template must be a built-in name or an object");
    j = "{\"template\": \"no-such\"}";
    CHECK(an_write_file_atomic(meta, j, strlen(j), &e) == 0);
    CHECK(an_session_open(&s, an_ops_cpu(), dir, NULL, NULL, NULL, &e) == -1);
    CHECK_CONTAINS(e.msg, meta);
    /* a template object with a multi-token stop word: greedy from "Once upon a time" gives
     * ", a little girl named Lily lived ..." (the fixture), so generation ends at "Lily", which is cut */
    j = "{\"template\": {\"INSTRUCTION\": \"{input}\", \"STOP_WORDS\": [\" Lily\"]}}";
    CHECK(an_write_file_atomic(meta, j, strlen(j), &e) == 0);
    CHECK_MSG(an_session_open(&s, an_ops_cpu(), dir, NULL, NULL, NULL, &e) == 0, "%s", e.msg);
    an_gen_opts o = an_gen_defaults();
    o.sampling.temperature = 0;
    o.max_tokens = 30;
    an_text_result r = {0};
    const char *texts[1] = {"Once upon a time"};
    CHECK_MSG(an_session_generate(&s, texts, 1, 0, &o, &r, &e) == 0, "%s", e.msg);
    CHECK_STR(r.text, ", a little girl named");
    CHECK(r.stop == AN_STOP_CALLER);
    an_text_results_free(&r, 1);
    an_session_close(&s);
    /* a tokenizer that does not belong to the model: TinyStories' 2048 tokens for a 256-token model */
    CHECK(an_session_open(&s, an_ops_cpu(), "tests/ref/models/llama", test_shared("models/TinyStories-656K"), NULL, NULL, &e) == -1);
    CHECK_CONTAINS(e.msg, "TinyStories-656K: the tokenizer has 2048 tokens but the model only 256");
}

/* --min-tokens on a model whose LM head is zeroed: every logit is 0, so greedy picks the lowest id
 * (0). With stop ids {0, 1} the sequence ends at once; masked, the argmax of the rest is id 2, so the
 * expected output is worked out by hand: exactly N tokens of id 2, then a stop (the mask is off again
 * at N and id 0 wins). Sampling (temperature 1, uniform over the unmasked ids) must give at least N
 * tokens per sequence, and the same text for the same seed. */
static void test_min_tokens(void) {
    an_session s;
    an_error e;
    if (an_session_open(&s, an_ops_cpu(), test_shared("models/TinyStories-656K"), NULL, NULL, NULL, &e)) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        return;
    }
    an_param *head = s.model->lm_head ? s.model->lm_head : s.model->tok_emb;
    memset(head->data, 0, head->numel * sizeof(float));
    const int32_t stop[2] = {0, 1};
    /* three prompts of different lengths through two slots: sequences start at different steps, so
     * the count must be kept per sequence */
    const int32_t p0[] = {5, 6, 7}, p1[] = {9}, p2[] = {11, 12, 13, 14, 15, 16};
    an_gen_prompt pr[3] = {{p0, 3}, {p1, 1}, {p2, 6}};
    an_gen_opts o = an_gen_defaults();
    o.sampling.temperature = 0;
    o.stop_ids = stop;
    o.n_stop_ids = 2;
    o.batch = 2;
    o.max_tokens = 20;
    an_gen_output out[3 * 4];
    memset(out, 0, sizeof out);
    CHECK_MSG(an_generate(s.model, s.model->lora, pr, 3, -1, &o, out, &e) == 0, "%s", e.msg);
    for (int j = 0; j < 3; j++) CHECK_MSG(out[j].n == 0 && out[j].stop == AN_STOP_EOS, "off: sequence %d has %d tokens", j, out[j].n);
    an_gen_outputs_free(out, 3);
    for (int N = 1; N <= 20; N += 7) { /* 1, 8, 15 */
        o.min_tokens = N;
        CHECK_MSG(an_generate(s.model, s.model->lora, pr, 3, -1, &o, out, &e) == 0, "%s", e.msg);
        for (int j = 0; j < 3; j++) {
            CHECK_MSG(out[j].n == N && out[j].stop == AN_STOP_EOS, "min %d: sequence %d has %d tokens, stop %d", N, j,
                      out[j].n, (int)out[j].stop);
            for (int t = 0; t < out[j].n; t++) CHECK(out[j].ids[t] == 2);
        }
        an_gen_outputs_free(out, 3);
    }
    /* min == max: the sequence runs to --max-tokens */
    o.min_tokens = o.max_tokens;
    CHECK_MSG(an_generate(s.model, s.model->lora, pr, 3, -1, &o, out, &e) == 0, "%s", e.msg);
    for (int j = 0; j < 3; j++) CHECK(out[j].n == 20 && out[j].stop == AN_STOP_MAX_TOKENS);
    an_gen_outputs_free(out, 3);

    /* sampling, 4 samples per prompt: never a stop id among the first N, same seed same ids */
    o.sampling.temperature = 1;
    o.n_samples = 4;
    o.min_tokens = 12;
    o.seed = 99;
    an_gen_output again[3 * 4];
    memset(again, 0, sizeof again);
    CHECK_MSG(an_generate(s.model, s.model->lora, pr, 3, -1, &o, out, &e) == 0, "%s", e.msg);
    o.batch = 5; /* another schedule: the text depends on the seed alone */
    CHECK_MSG(an_generate(s.model, s.model->lora, pr, 3, -1, &o, again, &e) == 0, "%s", e.msg);
    for (int j = 0; j < 12; j++) {
        CHECK_MSG(out[j].n >= 12, "sampled sequence %d has %d tokens", j, out[j].n);
        for (int t = 0; t < out[j].n; t++) CHECK(out[j].ids[t] != 0 && out[j].ids[t] != 1);
        CHECK(out[j].n == again[j].n && memcmp(out[j].ids, again[j].ids, (size_t)out[j].n * sizeof(int32_t)) == 0);
    }
    an_gen_outputs_free(out, 12);
    an_gen_outputs_free(again, 12);

    /* bad values: the flag and the reason */
    o.min_tokens = -1;
    CHECK(an_generate(s.model, s.model->lora, pr, 3, -1, &o, out, &e) != 0);
    CHECK_CONTAINS(e.msg, "--min-tokens -1: must be >= 0");
    o.min_tokens = 21;
    CHECK(an_generate(s.model, s.model->lora, pr, 3, -1, &o, out, &e) != 0);
    CHECK_CONTAINS(e.msg, "--min-tokens 21: must not exceed --max-tokens 20");
    an_session_close(&s);
}

/* Logits that are not numbers end generate with the sampler's error, not a garbage id: an LM head
 * of NaN (every logit NaN), and --temperature 1e-45 on the real weights (logits / 1e-45 overflow). */
static void test_nan_logits_fail(void) {
    an_session s;
    an_error e;
    if (an_session_open(&s, an_ops_cpu(), test_shared("models/TinyStories-656K"), NULL, NULL, NULL, &e)) {
        test_fail_at(__FILE__, __LINE__, "%s", e.msg);
        return;
    }
    const int32_t p0[] = {5, 6, 7};
    an_gen_prompt pr[1] = {{p0, 3}};
    an_gen_opts o = an_gen_defaults();
    o.max_tokens = 4;
    an_gen_output out[1];
    memset(out, 0, sizeof out);
    o.sampling.temperature = 1e-45f;
    e.msg[0] = 0;
    CHECK(an_generate(s.model, s.model->lora, pr, 1, -1, &o, out, &e) != 0);
    CHECK_CONTAINS(e.msg, "no token can be drawn: --temperature 1.4013e-45");
    an_param *head = s.model->lm_head ? s.model->lm_head : s.model->tok_emb;
    for (size_t i = 0; i < head->numel; i++) ((float *)head->data)[i] = NAN;
    for (int greedy = 0; greedy < 2; greedy++) {
        o.sampling.temperature = greedy ? 0.0f : 1.0f;
        e.msg[0] = 0;
        CHECK(an_generate(s.model, s.model->lora, pr, 1, -1, &o, out, &e) != 0);
        CHECK_CONTAINS(e.msg, "no token can be drawn: every logit is NaN");
    }
    an_session_close(&s);
}

/* ---- the CLI end to end ---- */

/* The command exits with 1 and its message contains text (the file, the flag, the reason). */
static void check_refused(const char *args, const char *out, const char *err, const char *text) {
    CHECK(test_autoneg("OMP_NUM_THREADS=1", args, out, err) == 1);
    char *m = test_slurp(err);
    CHECK_CONTAINS(m, text);
    free(m);
}

static void write_text(const char *path, const char *s) {
    an_error e;
    CHECK(an_write_file_atomic(path, s, strlen(s), &e) == 0);
}

static void test_cli(void) {
    const char *d = test_tmpdir();
    char out[512], err[512], f[512], args[4096];
    snprintf(out, sizeof out, "%s/out", d);
    snprintf(err, sizeof err, "%s/err", d);
    snprintf(f, sizeof f, "%s/prompts.txt", d);
    const char *model = test_shared("models/TinyStories-656K");

    /* --min-tokens out of range: refused before the model is read, naming the flag and the reason */
    snprintf(args, sizeof args, "generate --model %s --prompt cat --min-tokens 40 --max-tokens 32", model);
    check_refused(args, out, err, "--min-tokens 40: must not exceed --max-tokens 32");
    snprintf(args, sizeof args, "eval --model %s --data nowhere.jsonl --min-tokens -3", model);
    check_refused(args, out, err, "--min-tokens -3: must be >= 0");
    /* and in range it makes a greedy raw continuation at least that long */
    snprintf(args, sizeof args, "generate --model %s --raw --prompt \"Once upon a time\" --temperature 0 --max-tokens 40 --min-tokens 40 --jsonl", model);
    CHECK(test_autoneg("OMP_NUM_THREADS=1", args, out, err) == 0);
    char *m = test_slurp(out);
    CHECK_CONTAINS(m, "\"tokens\": 40, \"stop\": \"max_tokens\"");
    free(m);

    /* one line per output even where the text has line breaks (200 greedy raw tokens of TinyStories
     * hold several): the JSONL text with each break written as a space */
    snprintf(args, sizeof args, "generate --model %s --raw --prompt \"Once upon a time\" --temperature 0 --max-tokens 200 --jsonl", model);
    CHECK(test_autoneg("OMP_NUM_THREADS=1", args, out, err) == 0);
    char *js = test_slurp(out);
    cJSON *jo = js ? cJSON_Parse(js) : NULL;
    const cJSON *jt = cJSON_GetObjectItem(jo, "text");
    CHECK(cJSON_IsString(jt) && strchr(jt->valuestring, '\n'));
    snprintf(args, sizeof args, "generate --model %s --raw --prompt \"Once upon a time\" --temperature 0 --max-tokens 200", model);
    CHECK(test_autoneg("OMP_NUM_THREADS=1", args, out, err) == 0);
    char *plain = test_slurp(out);
    if (cJSON_IsString(jt) && plain) {
        char flat[8192];
        snprintf(flat, sizeof flat, "%s\n", jt->valuestring);
        for (char *c = flat; c[1]; c++)
            if (*c == '\n' || *c == '\r') *c = ' ';
        CHECK_STR(plain, flat);
    }
    cJSON_Delete(jo);
    free(js);
    free(plain);

    /* the first fixture prompt, greedy, raw: the recorded text */
    cJSON *fx = fixture();
    if (!fx) return;
    const cJSON *g0 = cJSON_GetObjectItem(fx, "generate")->child;
    snprintf(args, sizeof args, "generate --model %s --raw --prompt \"Once upon a time\" --temperature 0 --max-tokens 30",
             model);
    CHECK(test_autoneg("OMP_NUM_THREADS=1", args, out, err) == 0);
    char *s = test_slurp(out);
    char want[1024];
    snprintf(want, sizeof want, "%s\n", cJSON_GetObjectItem(g0, "text")->valuestring);
    CHECK_STR(s, want);
    free(s);
    cJSON_Delete(fx);

    /* two prompts from a file (one plain line, one JSONL line), 2 samples each, JSONL out; the same
     * seed prints the same text twice, another seed something else */
    write_text(f, "a cat on a hill\n\n{\"prompt\": \"a dog\"}\n");
    snprintf(args, sizeof args, "generate --model %s --file %s --n 2 --seed 7 --max-tokens 12 --jsonl", model, f);
    CHECK(test_autoneg("OMP_NUM_THREADS=1", args, out, err) == 0);
    char *a = test_slurp(out);
    size_t lines = 0;
    for (char *c = a; *c; c++) lines += *c == '\n';
    CHECK(lines == 4);
    CHECK_CONTAINS(a, "{\"prompt\": \"a cat on a hill\", \"negative_prompt\": ");
    CHECK_CONTAINS(a, "{\"prompt\": \"a dog\", \"negative_prompt\": ");
    CHECK(test_autoneg("OMP_NUM_THREADS=1", args, out, err) == 0);
    char *b = test_slurp(out);
    CHECK_STR(a, b);
    free(b);
    snprintf(args, sizeof args, "generate --model %s --file %s --n 2 --seed 8 --max-tokens 12 --jsonl", model, f);
    CHECK(test_autoneg("OMP_NUM_THREADS=1", args, out, err) == 0);
    b = test_slurp(out);
    CHECK(strcmp(a, b) != 0);
    free(a);
    free(b);

    /* bad input */
    write_text(f, "");
    snprintf(args, sizeof args, "generate --model %s --file %s", model, f);
    CHECK(test_autoneg("OMP_NUM_THREADS=1", args, out, err) == 1);
    s = test_slurp(err);
    CHECK_CONTAINS(s, f);
    CHECK_CONTAINS(s, "no prompts");
    free(s);
    write_text(f, "{\"negative\": \"x\"}\n");
    check_refused(args, out, err, "line 1: no \"prompt\" string field");
    snprintf(args, sizeof args, "generate --model %s --prompt x --top-p 1.5", model);
    check_refused(args, out, err, "--top-p 1.5: must be in (0, 1]");
    snprintf(args, sizeof args, "generate --model %s --prompt x --temperature -1", model);
    check_refused(args, out, err, "--temperature -1: must be a finite number >= 0");
    snprintf(args, sizeof args, "generate --model %s/stories260K.bin --prompt x",
             test_shared("models/stories260K"));
    check_refused(args, out, err, "stories260K.bin: a llama2.c model needs --tokenizer");

    /* an adapter made for another base model */
    CHECK(test_autoneg("OMP_NUM_THREADS=1", "generate --model tests/ref/models/llama-bias --adapter tests/ref/lora/qwen2 --prompt x", out, err) == 1);
    s = test_slurp(err);
    CHECK_CONTAINS(s, "tests/ref/lora/qwen2/adapter_model.safetensors");
    CHECK_CONTAINS(s, "shape");
    free(s);

    /* a prompt longer than the context: a warning and a cut, or an error with --strict */
    snprintf(args, sizeof args,
             "generate --model %s --raw --ctx 16 --max-tokens 4 --temperature 0 --prompt \"Tom and Lily went to the park "
             "with their mom and dad and they played on the swings all day long\"",
             model);
    CHECK(test_autoneg("OMP_NUM_THREADS=1", args, out, err) == 0);
    s = test_slurp(err);
    CHECK_CONTAINS(s, "warning: prompt 1:");
    CHECK_CONTAINS(s, "cut from the left");
    free(s);
    strcat(args, " --strict");
    CHECK(test_autoneg("OMP_NUM_THREADS=1", args, out, err) == 1);
    s = test_slurp(err);
    CHECK_CONTAINS(s, "prompt 1 has");
    CHECK_CONTAINS(s, "--strict refuses to truncate");
    free(s);

    /* perplexity prints tokens=N nll=X ppl=Y */
    write_text(f, "Once upon a time, there was a little girl.");
    snprintf(args, sizeof args, "perplexity --model %s --file %s", model, f);
    CHECK(test_autoneg("OMP_NUM_THREADS=1", args, out, err) == 0);
    s = test_slurp(out);
    CHECK_CONTAINS(s, "tokens=");
    CHECK_CONTAINS(s, " nll=");
    CHECK_CONTAINS(s, " ppl=");
    free(s);
    /* --logits: tokens x vocab (2048) float32 rows, as many rows as the tokens printed */
    char lpath[600];
    snprintf(lpath, sizeof lpath, "%s.logits", f);
    snprintf(args, sizeof args, "perplexity --model %s --file %s --logits %s", model, f, lpath);
    CHECK(test_autoneg("OMP_NUM_THREADS=1", args, out, err) == 0);
    s = test_slurp(out);
    size_t ntok = 0, lbytes = 0;
    CHECK(s && sscanf(s, "tokens=%zu", &ntok) == 1 && ntok == 9);
    free(s);
    an_error le;
    char *lraw = an_read_file(lpath, &lbytes, &le);
    CHECK(lraw && lbytes == ntok * 2048 * sizeof(float));
    free(lraw);
    snprintf(args, sizeof args, "perplexity --model %s --file %s --logits /nonexistent-dir/l.bin", model, f);
    check_refused(args, out, err, "/nonexistent-dir/l.bin");
    write_text(f, "");
    CHECK(test_autoneg("OMP_NUM_THREADS=1", args, out, err) == 1);
    s = test_slurp(err);
    CHECK_CONTAINS(s, f);
    CHECK_CONTAINS(s, "perplexity needs at least 2");
    free(s);
}

int main(void) {
    /* TinyStories-656K's ops take microseconds; on a shared 2-core machine a thread team costs more than
     * that, so these model-level tests run on one thread (the threaded kernels are tested in test_ops) */
    omp_set_num_threads(1);
    RUN(test_greedy_matches_transformers);
    RUN(test_perplexity_matches_transformers);
    RUN(test_template_from_model_folder);
    RUN(test_min_tokens);
    RUN(test_nan_logits_fail);
    RUN(test_cli);
    return test_finish();
}
