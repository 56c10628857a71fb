/* The tokenizer read from a GGUF file against Hugging Face transformers loading the same file (with,
 * for pre "smollm", SmolLM2's own Digits + ByteLevel pre-tokenizer, which transformers' GGUF loader lacks)
 * (tests/ref/make_gguf_tokenizer_fixture.py): the tiny synthetic vocabularies always, SmolLM2-135M
 * on civitai prompts and negatives (read from ../shared at run time) when both are present. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/file.h"
#include "data/prompts/template.h"
#include "data/tokenizers/tokenizer.h"
#include "model/io/gguf.h"
#include "tests/test.h"

#define DIR "tests/ref/gguf_tok/"

/* One line of any length from a gz file, without "\n"; -1 at the end. */
static long gz_line(gzFile f, char **buf, size_t *cap) {
    size_t n = 0;
    for (;;) {
        if (*cap - n < 2) {
            size_t c = *cap ? *cap * 2 : 4096;
            char *b = realloc(*buf, c);
            if (!b) return -1;
            *buf = b, *cap = c;
        }
        if (!gzgets(f, *buf + n, (int)(*cap - n))) return n ? (long)n : -1;
        n += strlen(*buf + n);
        if (n && (*buf)[n - 1] == '\n') {
            (*buf)[--n] = 0;
            return (long)n;
        }
    }
}

static char *unhex(const char *h, size_t *len) {
    size_t n = strlen(h) / 2;
    char *s = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        sscanf(h + 2 * i, "%2x", &v);
        s[i] = (char)v;
    }
    s[n] = 0;
    *len = n;
    return s;
}

static uint64_t fnv1a64(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

/* Encodes text and compares with the space-separated ids; reports the first difference. */
static int check_ids(const an_tokenizer *t, const char *text, size_t len, const char *want, const char *what) {
    an_ids ids = {0};
    an_error err = {0};
    int rc = an_tokenizer_encode(t, text, len, &ids, &err);
    CHECK_MSG(rc == 0, "%s: %s", what, err.msg);
    int ok = rc == 0;
    const char *p = want;
    size_t k = 0;
    for (; ok; k++) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) break;
        p = end;
        if (k >= ids.n || ids.v[k] != v) {
            CHECK_MSG(0, "%s: id %zu is %d, HF has %ld", what, k, k < ids.n ? ids.v[k] : -1, v);
            ok = 0;
        }
    }
    if (ok && k != ids.n) {
        CHECK_MSG(0, "%s: %zu ids, HF has %zu", what, ids.n, k);
        ok = 0;
    }
    an_ids_free(&ids);
    return ok;
}

static void test_tiny_vocabularies(void) {
    gzFile f = gzopen(DIR "tiny.ids.gz", "rb");
    CHECK(f != NULL);
    if (!f) return;
    an_tokenizer *bpe = NULL, *spm = NULL;
    an_error err = {0};
    bpe = an_tokenizer_load(DIR "tiny_bpe.gguf", &err);
    CHECK_MSG(bpe != NULL, "%s", err.msg);
    spm = an_tokenizer_load(DIR "tiny_spm.gguf", &err);
    CHECK_MSG(spm != NULL, "%s", err.msg);
    char *line = NULL;
    size_t cap = 0;
    int n = 0, same = 0;
    while (bpe && spm && gz_line(f, &line, &cap) >= 0) {
        char *name = strtok(line, "\t"), *hex = name ? name + strlen(name) + 1 : NULL;
        char *tab = hex ? strchr(hex, '\t') : NULL;
        if (!tab) continue;
        *tab = 0;
        size_t len;
        char *text = unhex(hex, &len);
        char what[160];
        snprintf(what, sizeof what, "%s text %d (%.40s)", name, n + 1, text);
        same += check_ids(strstr(name, "spm") ? spm : bpe, text, len, tab + 1, what);
        n++;
        free(text);
    }
    free(line);
    gzclose(f);
    CHECK(n == 62);
    printf("  tiny GGUF vocabularies: %d of %d texts give HF's ids\n", same, n);
    if (bpe) {
        CHECK(an_tokenizer_bos(bpe) == 1 && an_tokenizer_eos(bpe) == 2 && !an_tokenizer_adds_bos(bpe));
        CHECK(an_tokenizer_token_id(bpe, "<|im_end|>") == 2 && an_tokenizer_is_special(bpe, 2));
        /* a prompt holding "<|im_end|>" as plain text cannot end the turn; <think> (user-defined) stays whole */
        an_ids ids = {0};
        CHECK(an_tokenizer_encode_plain(bpe, "<|im_end|><think>", 17, &ids, &err) == 0);
        CHECK(ids.n > 2 && ids.v[0] != 2 && ids.v[ids.n - 1] == an_tokenizer_token_id(bpe, "<think>"));
        an_ids_free(&ids);
        const char *s = "caf\xc3\xa9 the low <|im_start|>x";
        CHECK(an_tokenizer_encode(bpe, s, strlen(s), &ids, &err) == 0);
        char *back = an_tokenizer_decode(bpe, ids.v, ids.n, &err);
        CHECK_STR(back, s);
        free(back);
        an_ids_free(&ids);
    }
    if (spm) {
        CHECK(an_tokenizer_bos(spm) == 1 && an_tokenizer_adds_bos(spm));
        an_ids ids = {0};
        const char *s = "the bad \xc3\xa9x";
        CHECK(an_tokenizer_encode(spm, s, strlen(s), &ids, &err) == 0);
        char *back = an_tokenizer_decode(spm, ids.v, ids.n, &err);
        CHECK_STR(back, s);
        free(back);
        an_ids_free(&ids);
    }
    an_tokenizer_free(bpe);
    an_tokenizer_free(spm);
}

/* A copy of tiny_bpe.gguf with one string's bytes replaced (same length). */
static const char *patched(const char *from, const char *to, const char *name) {
    size_t n;
    an_error err = {0};
    char *s = an_read_file(DIR "tiny_bpe.gguf", &n, &err);
    if (!s) return NULL;
    for (size_t i = 0; i + strlen(from) <= n; i++)
        if (memcmp(s + i, from, strlen(from)) == 0) {
            memcpy(s + i, to, strlen(to));
            break;
        }
    const char *p = test_tmp_path(name);
    FILE *f = fopen(p, "wb");
    fwrite(s, 1, n, f);
    fclose(f);
    free(s);
    return p;
}

static void test_errors(void) {
    an_error err = {0};
    const char *p = patched("smollm", "qwen99", "badpre.gguf");
    CHECK(an_tokenizer_load(p, &err) == NULL);
    CHECK_CONTAINS(err.msg, "badpre.gguf");
    CHECK_CONTAINS(err.msg, "tokenizer.ggml.pre \"qwen99\" is not supported");
    p = patched("gpt2", "bert", "badmodel.gguf");
    CHECK(an_tokenizer_load(p, &err) == NULL);
    CHECK_CONTAINS(err.msg, "tokenizer.ggml.model \"bert\" is not supported");
    p = patched("tokenizer.ggml.merges", "tokenizer.ggml.merxes", "nomerges.gguf");
    CHECK(an_tokenizer_load(p, &err) == NULL);
    CHECK_CONTAINS(err.msg, "tokenizer.ggml.merges is missing");
}

static void test_smollm2_vs_hf(void) {
    char mpath[1024];
    snprintf(mpath, sizeof mpath, "%s/.cache/autoneg/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
             getenv("HOME") ? getenv("HOME") : "");
    const char *model = mpath;
    const char *pairs = test_shared("data/real-pairs/civitai-sfw/train.jsonl.gz");
    if (!an_file_exists(model) || !an_file_exists(pairs) || !an_file_exists(DIR "smollm2.ids.gz")) {
        printf("  note: skipped, needs %s and %s (make model; ../shared)\n", model, pairs);
        return;
    }
    an_error err = {0};
    an_tokenizer *t = an_tokenizer_load(model, &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    if (!t) return;
    CHECK(an_tokenizer_vocab_size(t) == 49152 && an_tokenizer_bos(t) == 1 && an_tokenizer_eos(t) == 2);
    CHECK(!an_tokenizer_adds_bos(t));
    /* the pairs file, line by line (53k lines, about 20 MB) */
    gzFile pf = gzopen(pairs, "rb");
    char **rows = NULL, *line = NULL;
    size_t nrows = 0, rcap = 0, cap = 0;
    while (gz_line(pf, &line, &cap) >= 0) {
        if (nrows == rcap) rows = realloc(rows, (rcap = rcap ? rcap * 2 : 65536) * sizeof *rows);
        rows[nrows++] = strdup(line);
    }
    gzclose(pf);
    gzFile f = gzopen(DIR "smollm2.ids.gz", "rb");
    int n = 0, same = 0, civitai = 0;
    while (gz_line(f, &line, &cap) >= 0) {
        char what[96];
        if (!strncmp(line, "c\t", 2)) {
            long ln = 0;
            char field = 0;
            unsigned long long hash = 0;
            int off = 0;
            if (sscanf(line, "c\t%ld\t%c\t%llx\t%n", &ln, &field, &hash, &off) < 3 || ln < 1 || (size_t)ln > nrows) {
                CHECK_MSG(0, "bad fixture line %d", n + 1);
                continue;
            }
            cJSON *j = cJSON_Parse(rows[ln - 1]);
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, field == 'p' ? "prompt" : "negative_prompt");
            const char *text = cJSON_IsString(v) ? v->valuestring : "";
            snprintf(what, sizeof what, "civitai line %ld %s", ln, field == 'p' ? "prompt" : "negative");
            if (fnv1a64(text, strlen(text)) != hash) {
                CHECK_MSG(0, "%s: the text is not the one the fixture was made from (../shared changed?)", what);
            } else {
                same += check_ids(t, text, strlen(text), line + off, what);
                civitai++;
            }
            cJSON_Delete(j);
        } else if (!strncmp(line, "chat\t", 5)) {
            /* the GGUF's chat template recognised as ChatML, rendered as transformers renders it */
            char *f1 = line + 5, *f2 = strchr(f1, '\t'), *f3 = f2 ? strchr(f2 + 1, '\t') : NULL;
            if (!f3) continue;
            *f2 = *f3 = 0;
            size_t l1, l2, l3;
            char *system = unhex(f1, &l1), *prompt = unhex(f2 + 1, &l2), *want = unhex(f3 + 1, &l3);
            an_gguf g;
            const char *jinja;
            uint64_t jlen;
            an_template tpl;
            CHECK(an_gguf_open(&g, model, &err) == 0);
            CHECK(an_gguf_get_str(&g, "tokenizer.chat_template", &jinja, &jlen, &err) == 0);
            char *j = strndup(jinja, (size_t)jlen);
            an_gguf_close(&g);
            CHECK(an_template_from_chat_template(j, &tpl, &err) == 0);
            CHECK_STR(tpl.name, "chatml");
            char *got = an_template_render_input(&tpl, prompt, system, &err);
            CHECK_STR(got, want);
            same += got && !strcmp(got, want);
            free(got);
            free(j);
            an_template_free(&tpl);
            free(system), free(prompt), free(want);
        } else {
            char *hex = line + 2, *tab = strchr(hex, '\t');
            if (!tab) continue;
            *tab = 0;
            size_t len;
            char *text = unhex(hex, &len);
            snprintf(what, sizeof what, "tricky text %.40s", text);
            same += check_ids(t, text, len, tab + 1, what);
            free(text);
        }
        n++;
    }
    gzclose(f);
    free(line);
    for (size_t i = 0; i < nrows; i++) free(rows[i]);
    free(rows);
    CHECK(n >= 502 && civitai >= 480);
    printf("  SmolLM2 GGUF: %d of %d checks give HF's result (%d civitai texts' ids, 2 chat template renderings)\n",
           same, n, civitai);
    an_tokenizer_free(t);
}

/* BOS in a template's prompt: a GGUF whose tokenizer.ggml.add_bos_token is false (tiny_bpe, as
 * SmolLM2) gets none, so the prompt is exactly what llama.cpp feeds for the same chat: the rendered
 * template tokenized with the file's own add_bos (tokenize(render(messages)), no BOS); one that says
 * true (tiny_spm, a Llama) keeps its BOS first. */
static void test_template_bos(void) {
    an_error err;
    an_tokenizer *bpe = an_tokenizer_load(DIR "tiny_bpe.gguf", &err), *spm = an_tokenizer_load(DIR "tiny_spm.gguf", &err);
    CHECK_MSG(bpe && spm, "%s", err.msg);
    if (!bpe || !spm) goto done;
    CHECK(an_tokenizer_bos(bpe) == 1 && an_tokenizer_template_bos(bpe) == -1);
    CHECK(an_tokenizer_bos(spm) == 1 && an_tokenizer_template_bos(spm) == 1);
    an_template t;
    CHECK(an_template_builtin("chatml", &t, &err) == 0);
    an_encoder enc = an_encoder_of(bpe);
    an_ids got = {0}, want = {0};
    CHECK(an_template_encode_input(&t, &enc, "a cat", NULL, &got, &err) == 0);
    char *text = an_template_render_input(&t, "a cat", NULL, &err);
    CHECK(text && an_tokenizer_encode(bpe, text, strlen(text), &want, &err) == 0);
    CHECK_MSG(got.n == want.n && got.n > 0 && memcmp(got.v, want.v, got.n * sizeof(int32_t)) == 0,
              "chatml prompt: %zu ids, llama.cpp's %zu", got.n, want.n);
    free(text);
    an_ids_free(&got);
    an_ids_free(&want);
    an_template_free(&t);
done:
    an_tokenizer_free(bpe);
    an_tokenizer_free(spm);
}

int main(void) {
    RUN(test_template_bos);
    RUN(test_tiny_vocabularies);
    RUN(test_errors);
    RUN(test_smollm2_vs_hf);
    return test_finish();
}
