/* Tokenizers against reference ids: HF tokenizers, sentencepiece and llama2.c's encode on ~2,200
 * texts (prompt templates, civitai prompts read from ../shared, Unicode and whitespace edge cases),
 * made by tests/ref/make_tokenizer_fixtures.py. Every id must match: tokenization is exact. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/file.h"

#include "data/tokenizers/tokenizer.h"
#include "tests/test.h"

typedef struct fixture_texts {
    char **text;
    size_t *len; /* texts may hold NUL bytes */
    int n;
} fixture_texts;
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/file.h"
#include "tests/test.h"

/* Reads one line of any length from a gz file into *buf; returns its length without "\n", -1 at EOF. */
static long gz_line(gzFile f, char **buf, size_t *cap) {
    size_t n = 0;
    for (;;) {
        if (*cap - n < 2) {
            *cap = *cap ? *cap * 2 : 65536;
            *buf = realloc(*buf, *cap);
        }
        if (!gzgets(f, *buf + n, (int)(*cap - n))) return n ? (long)n : -1;
        n += strlen(*buf + n);
        if (n && (*buf)[n - 1] == '\n') {
            (*buf)[--n] = 0;
            return (long)n;
        }
    }
}

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    memcpy(d, s, n + 1);
    return d;
}

static int fixture_texts_load(fixture_texts *ft) {
    memset(ft, 0, sizeof *ft);
    an_error err;
    size_t size;
    char *all = an_read_file("tests/ref/tokenizers/texts.jsonl", &size, &err);
    if (!all) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    int cap = 0, *civ_line = NULL;
    char **civ_field = NULL;
    for (char *line = all, *nl; line < all + size; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl) nl = all + size;
        *nl = 0;
        if (ft->n == cap) {
            cap = cap ? cap * 2 : 1024;
            ft->text = realloc(ft->text, (size_t)cap * sizeof *ft->text);
            ft->len = realloc(ft->len, (size_t)cap * sizeof *ft->len);
            civ_line = realloc(civ_line, (size_t)cap * sizeof *civ_line);
            civ_field = realloc(civ_field, (size_t)cap * sizeof *civ_field);
        }
        cJSON *j = cJSON_Parse(line);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "text");
        const cJSON *hex = cJSON_GetObjectItemCaseSensitive(j, "text_hex");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "civitai");
        civ_line[ft->n] = -1;
        civ_field[ft->n] = NULL;
        ft->text[ft->n] = NULL;
        if (cJSON_IsString(t)) {
            ft->text[ft->n] = dup_str(t->valuestring);
            ft->len[ft->n] = strlen(t->valuestring);
        }
        else if (cJSON_IsString(hex)) {
            size_t hn = strlen(hex->valuestring) / 2;
            char *b = malloc(hn + 1);
            for (size_t k = 0; k < hn; k++) {
                unsigned v;
                sscanf(hex->valuestring + 2 * k, "%2x", &v);
                b[k] = (char)v;
            }
            b[hn] = 0;
            ft->text[ft->n] = b;
            ft->len[ft->n] = hn;
        } else if (cJSON_IsNumber(c)) {
            civ_line[ft->n] = (int)c->valuedouble;
            civ_field[ft->n] = dup_str(cJSON_GetObjectItemCaseSensitive(j, "field")->valuestring);
        }
        cJSON_Delete(j);
        ft->n++;
    }
    free(all);
    /* civitai texts: one pass over the gzip file, picking the lines named */
    gzFile f = gzopen(test_shared("data/real-pairs/civitai-sfw/train.jsonl.gz"), "rb");
    if (!f) {
        fprintf(stderr, "cannot open civitai pairs in ../shared\n");
        return -1;
    }
    char *buf = NULL;
    size_t bcap = 0;
    long len;
    for (int ln = 0; (len = gz_line(f, &buf, &bcap)) >= 0; ln++) {
        cJSON *j = NULL;
        for (int i = 0; i < ft->n; i++) {
            if (civ_line[i] != ln) continue;
            if (!j) j = cJSON_ParseWithLength(buf, (size_t)len);
            ft->text[i] = dup_str(cJSON_GetObjectItemCaseSensitive(j, civ_field[i])->valuestring);
            ft->len[i] = strlen(ft->text[i]);
        }
        cJSON_Delete(j);
    }
    gzclose(f);
    free(buf);
    int missing = 0;
    for (int i = 0; i < ft->n; i++) {
        if (!ft->text[i]) missing++;

        free(civ_field[i]);
    }
    free(civ_line);
    free(civ_field);
    if (missing) fprintf(stderr, "%d fixture texts not found\n", missing);
    return missing ? -1 : 0;
}

static void fixture_texts_free(fixture_texts *ft) {
    for (int i = 0; i < ft->n; i++) free(ft->text[i]);
    free(ft->text);
    free(ft->len);
}

static an_ids *fixture_ids_load(const char *name, int expect_lines) {
    char path[256];
    snprintf(path, sizeof path, "tests/ref/tokenizers/ids_%s.txt.gz", name);
    gzFile f = gzopen(path, "rb");
    if (!f) return NULL;
    an_ids *rows = calloc((size_t)expect_lines + 1, sizeof *rows);
    char *buf = NULL;
    size_t cap = 0;
    long len;
    int n = 0;
    while ((len = gz_line(f, &buf, &cap)) >= 0 && n <= expect_lines) {
        for (char *p = buf, *end; *p; p = end) {
            long v = strtol(p, &end, 10);
            if (end == p) break;
            an_ids_push(&rows[n], (int32_t)v);
        }
        n++;
    }
    gzclose(f);
    free(buf);
    if (n != expect_lines) {
        fprintf(stderr, "%s: %d lines, expected %d\n", path, n, expect_lines);
        for (int i = 0; i <= expect_lines; i++) an_ids_free(&rows[i]);
        free(rows);
        return NULL;
    }
    return rows;
}

static void fixture_ids_free(an_ids *rows, int n) {
    if (!rows) return;
    for (int i = 0; i <= n; i++) an_ids_free(&rows[i]);
    free(rows);
}

static fixture_texts texts;
static int encode_plain; /* check an_tokenizer_encode_plain instead of an_tokenizer_encode */

static void show_ids(const char *label, const int32_t *v, size_t n) {
    fprintf(stderr, "    %s:", label);
    for (size_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", v[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

/* Encodes every fixture text and compares with the reference; with round_trip, also checks
 * decode(encode(x)) == x, and for all tokenizers that feeding ids one by one to the streaming
 * decoder gives the whole-sequence decode. */
static void check_against(const char *tok_path, const char *name, int round_trip) {
    an_error err;
    an_tokenizer *t = an_tokenizer_load(tok_path, &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    an_ids *ref = fixture_ids_load(name, texts.n);
    CHECK_MSG(ref != NULL, "missing fixture ids_%s (run tests/ref/make_tokenizer_fixtures.py)", name);
    if (!t || !ref) {
        an_tokenizer_free(t);
        fixture_ids_free(ref, texts.n);
        return;
    }
    int bad = 0, bad_rt = 0, bad_stream = 0;
    for (int i = 0; i < texts.n; i++) {
        const char *s = texts.text[i];
        size_t slen = texts.len[i];
        an_ids got = {0};
        CHECK((encode_plain ? an_tokenizer_encode_plain : an_tokenizer_encode)(t, s, slen, &got, &err) == 0);
        if (got.n != ref[i].n || (got.n && memcmp(got.v, ref[i].v, got.n * sizeof *got.v))) {
            if (bad++ < 3) {
                fprintf(stderr, "  %s: text %d \"%.80s\" differs\n", name, i, s);
                show_ids("got", got.v, got.n);
                show_ids("ref", ref[i].v, ref[i].n);
            }
        }
        size_t wlen = 0;
        char *whole = an_tokenizer_decode_len(t, got.v, got.n, &wlen, &err);
        /* SentencePiece cannot give back a "▁" typed in the text (it is its space), nor a piece
         * name that tokenizer_config.json replaced */
        int rt = round_trip && !memmem(s, slen, "\xe2\x96\x81", 3) && !memmem(s, slen, "[UNUSED_TOKEN_", 14);
        if (rt && (!whole || wlen != slen || memcmp(whole, s, slen) != 0)) {
            if (bad_rt++ < 3) fprintf(stderr, "  %s: text %d \"%.80s\" decodes to \"%.80s\"\n", name, i, s, whole);
        }
        /* streaming: a small buffer per call, concatenated */
        size_t cap = wlen + 64, n = 0;
        char *cat = malloc(cap), piece[1024];
        an_detok d;
        an_detok_init(&d, t);
        for (size_t k = 0; k < got.n; k++) {
            int m = an_detok_feed(&d, got.v[k], piece, sizeof piece);
            if (m < 0 || n + (size_t)m >= cap) break;
            memcpy(cat + n, piece, (size_t)m), n += (size_t)m;
        }
        int m = an_detok_flush(&d, piece, sizeof piece);
        if (m > 0 && n + (size_t)m < cap) memcpy(cat + n, piece, (size_t)m), n += (size_t)m;
        cat[n] = 0;
        if (!whole || n != wlen || memcmp(cat, whole, n) != 0) bad_stream++;
        free(cat);
        free(whole);
        an_ids_free(&got);
    }
    CHECK_MSG(bad == 0, "%s: %d of %d texts tokenized differently from the reference", name, bad, texts.n);
    CHECK_MSG(bad_rt == 0, "%s: %d texts do not survive decode(encode(x))", name, bad_rt);
    CHECK_MSG(bad_stream == 0, "%s: streaming decode differs from whole decode on %d texts", name, bad_stream);
    fixture_ids_free(ref, texts.n);
    an_tokenizer_free(t);
}

static void test_gpt2_matches_hf_tokenizers(void) {
    check_against(test_shared("data/tokenizers/gpt2"), "gpt2", 1);
}
static void test_llama2_matches_sentencepiece(void) {
    check_against(test_shared("data/tokenizers/llama2/tokenizer.model"), "llama2", 1);
}
static void test_internlm2_matches_sentencepiece(void) {
    check_against(test_shared("data/tokenizers/internlm2/tokenizer_internlm2.model"), "internlm2", 1);
}
static void test_tinystories_matches_hf_tokenizers(void) {
    /* unknown characters become <unk>, so no round trip */
    check_against(test_shared("models/TinyStories-656K"), "tinystories", 0);
}
static void test_llama2c_bin_matches_llama2c_encode(void) {
    check_against(test_shared("models/llama2c-tokenizer-32k/tokenizer.bin"), "llama2c32k", 1);
    check_against(test_shared("models/stories260K/tok512.bin"), "stories260k", 1);
}

/* TinyStories' tokenizer.json with its normalizer replaced by a Metaspace pre-tokenizer (the edit
 * make_tokenizer_fixtures.py makes), written to the temp folder; returns the file's path. */
static const char *metaspace_variant(const char *scheme, int split) {
    static char path[2][600];
    static int slot;
    char *out = path[slot++ & 1];
    an_error err;
    size_t n;
    char *src = an_read_file(test_shared("models/TinyStories-656K/tokenizer.json"), &n, &err);
    if (!src) return "missing";
    cJSON *j = cJSON_ParseWithLength(src, n);
    free(src);
    cJSON_ReplaceItemInObjectCaseSensitive(j, "normalizer", cJSON_CreateNull());
    for (int k = 0; k < 2; k++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "type", "Metaspace");
        cJSON_AddStringToObject(m, "replacement", "\xe2\x96\x81");
        cJSON_AddStringToObject(m, "prepend_scheme", scheme);
        cJSON_AddBoolToObject(m, "split", split);
        cJSON_ReplaceItemInObjectCaseSensitive(j, k ? "decoder" : "pre_tokenizer", m);
    }
    char *txt = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    snprintf(out, sizeof path[0], "%s/metaspace-%s.json", test_tmpdir(), scheme);
    if (an_write_file_atomic(out, txt, strlen(txt), &err)) fprintf(stderr, "%s\n", err.msg);
    free(txt);
    return out;
}

static void test_metaspace_tokenizer_json_matches_hf(void) {
    check_against(metaspace_variant("first", 0), "tsmetafirst", 0);
    check_against(metaspace_variant("always", 1), "tsmetaalways", 0);
}

/* InternLM2 chat tokens named in tokenizer_config.json beside the model win over the model's
 * [UNUSED_TOKEN_n] placeholders and are matched before BPE. */
static void test_internlm2_chat_tokens_from_config(void) {
    char dir[512], model[600], cfg[600];
    snprintf(dir, sizeof dir, "%s/internlm2-chat", test_tmpdir());
    mkdir(dir, 0755);
    snprintf(model, sizeof model, "%s/tokenizer_internlm2.model", dir);
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    char src[4096];
    snprintf(src, sizeof src, "%s", test_shared("data/tokenizers/internlm2/tokenizer_internlm2.model"));
    if (src[0] != '/') {
        char cwd[2048];
        CHECK(getcwd(cwd, sizeof cwd) != NULL);
        snprintf(src, sizeof src, "%s/%s", cwd, test_shared("data/tokenizers/internlm2/tokenizer_internlm2.model"));
    }
    unlink(model);
    CHECK(symlink(src, model) == 0);
    an_error err;
    size_t n;
    char *c = an_read_file("tests/ref/tokenizers/internlm2-chat/tokenizer_config.json", &n, &err);
    CHECK(c && an_write_file_atomic(cfg, c, n, &err) == 0);
    free(c);
    check_against(dir, "internlm2chat", 1);
    /* with special tokens off, the chat names are plain text again: plain sentencepiece ids */
    encode_plain = 1;
    check_against(dir, "internlm2", 1);
    encode_plain = 0;
    an_tokenizer *t = an_tokenizer_load(dir, &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    if (!t) return;
    /* ids from the anchor notes (InternLM chat_format.md) */
    CHECK(an_tokenizer_token_id(t, "<|im_start|>") == 92543);
    CHECK(an_tokenizer_token_id(t, "<|im_end|>") == 92542);
    CHECK(an_tokenizer_token_id(t, "<|action_start|>") == 92541);
    /* the model's own user-defined piece text still matches, as in sentencepiece (see fixture) */
    CHECK(an_tokenizer_token_id(t, "[UNUSED_TOKEN_146]") == 92543);
    CHECK(an_tokenizer_bos(t) == 1 && an_tokenizer_eos(t) == 2 && an_tokenizer_adds_bos(t));
    int32_t ids[] = {92543, 1008};
    char *s = an_tokenizer_decode(t, ids, 1, &err);
    CHECK_STR(s, "<|im_start|>");
    free(s);
    an_tokenizer_free(t);
}

/* Trains on the committed corpus as `autoneg tokenizer train --vocab 512` does (one text per
 * non-empty line), into dir. */
static int train_corpus(const char *dir) {
    an_error err;
    size_t n;
    char *all = an_read_file("tests/ref/tokenizers/train_corpus.txt", &n, &err);
    if (!all) return -1;
    const char **lines = malloc((n + 1) * sizeof *lines);
    size_t *lens = malloc((n + 1) * sizeof *lens), k = 0;
    for (size_t i = 0; i < n;) {
        size_t e = i;
        while (e < n && all[e] != '\n') e++;
        if (e > i) lines[k] = all + i, lens[k++] = e - i;
        i = e + 1;
    }
    mkdir(dir, 0755);
    int rc = an_tokenizer_train_bytelevel(lines, lens, k, 512, dir, &err);
    if (rc != 512) fprintf(stderr, "%s\n", rc < 0 ? err.msg : "fewer tokens than asked");
    rc = rc == 512 ? 0 : -1;
    free(lines);
    free(lens);
    free(all);
    return rc;
}

/* The trained tokenizer.json, loaded by HF tokenizers, gave ids_trained; autoneg must give the
 * same ids from the same file, and training twice must write the same bytes. */
static void test_trained_tokenizer_matches_hf(void) {
    char a[512], b[512], fa[600], fb[600];
    snprintf(a, sizeof a, "%s/trained-a", test_tmpdir());
    snprintf(b, sizeof b, "%s/trained-b", test_tmpdir());
    CHECK(train_corpus(a) == 0 && train_corpus(b) == 0);
    snprintf(fa, sizeof fa, "%s/tokenizer.json", a);
    snprintf(fb, sizeof fb, "%s/tokenizer.json", b);
    an_error err;
    size_t na = 0, nb = 0;
    char *ja = an_read_file(fa, &na, &err), *jb = an_read_file(fb, &nb, &err);
    CHECK(ja && jb && na == nb && memcmp(ja, jb, na) == 0);
    free(ja);
    free(jb);
    check_against(a, "trained", 1);
    an_tokenizer *t = an_tokenizer_load(a, &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    if (t) {
        CHECK(an_tokenizer_vocab_size(t) == 512 && an_tokenizer_token_id(t, "<|endoftext|>") == 511);
        CHECK(an_tokenizer_bos(t) == 511 && an_tokenizer_eos(t) == 511 && !an_tokenizer_adds_bos(t));
    }
    an_tokenizer_free(t);
    /* the same tokenizer with ByteLevel(add_prefix_space=True), as written by HF itself (merges as
     * pairs): HF decodes " x" for "x", so no round trip here */
    check_against("tests/ref/tokenizers/trained-prefix/tokenizer.json", "trainedprefix", 0);
}

/* Training with add_prefix_space learns on " " + text (for each text not starting with a space), so it
 * must give exactly the merges and vocabulary that plain training gives on those spaced texts, and a
 * tokenizer.json that says ByteLevel add_prefix_space true, so that (as in HF tokenizers) the first
 * word of a text is encoded as it is after a space. */
static void test_trained_prefix_space_tokenizer(void) {
    static const char *const raw[] = {"worst quality, low quality", "blurry, worst quality", " lowres, blurry",
                                      "worst hands", "quality of the worst kind"};
    enum { N = 5 };
    const char *spaced[N];
    size_t lens[N], slens[N];
    char buf[N][64];
    for (int i = 0; i < N; i++) {
        lens[i] = strlen(raw[i]);
        snprintf(buf[i], sizeof buf[i], "%s%s", raw[i][0] == ' ' ? "" : " ", raw[i]);
        spaced[i] = buf[i];
        slens[i] = strlen(buf[i]);
    }
    char a[512], b[512], fa[600], fb[600];
    snprintf(a, sizeof a, "%s/prefix-a", test_tmpdir());
    snprintf(b, sizeof b, "%s/prefix-b", test_tmpdir());
    mkdir(a, 0755);
    mkdir(b, 0755);
    an_error err;
    CHECK(an_tokenizer_train_bytelevel_ex(raw, lens, N, 300, 1, a, &err) > 257);
    CHECK(an_tokenizer_train_bytelevel_ex(spaced, slens, N, 300, 0, b, &err) > 257);
    snprintf(fa, sizeof fa, "%s/tokenizer.json", a);
    snprintf(fb, sizeof fb, "%s/tokenizer.json", b);
    size_t na = 0, nb = 0;
    char *ja = an_read_file(fa, &na, &err), *jb = an_read_file(fb, &nb, &err);
    CHECK(ja && jb);
    if (ja && jb) {
        /* the same file but for the pre_tokenizer's flag, which comes first */
        char *pa = strstr(ja, "\"add_prefix_space\":\ttrue"), *pb = strstr(jb, "\"add_prefix_space\":\tfalse");
        CHECK(pa && pb && pa - ja == pb - jb);
        CHECK(pa && pb && strcmp(pa + strlen("\"add_prefix_space\":\ttrue"), pb + strlen("\"add_prefix_space\":\tfalse")) == 0);
    }
    free(ja);
    free(jb);
    an_tokenizer *t = an_tokenizer_load(a, &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    if (t) {
        an_ids x = {0}, y = {0};
        CHECK(an_tokenizer_encode(t, "worst quality", 13, &x, &err) == 0);
        CHECK(an_tokenizer_encode(t, " worst quality", 14, &y, &err) == 0);
        CHECK(x.n == y.n && x.n > 0 && memcmp(x.v, y.v, x.n * sizeof *x.v) == 0);
        /* " worst" is a frequent word in the corpus: one token, the one that follows ", " mid-text */
        CHECK(x.n == 2 && x.v[0] == an_tokenizer_token_id(t, "\xc4\xa0worst"));
        an_ids_free(&x);
        an_ids_free(&y);
    }
    an_tokenizer_free(t);
}

int main(void) {
    if (fixture_texts_load(&texts)) {
        fprintf(stderr, "cannot load the fixture texts\n");
        return 1;
    }
    RUN(test_gpt2_matches_hf_tokenizers);
    RUN(test_llama2_matches_sentencepiece);
    RUN(test_internlm2_matches_sentencepiece);
    RUN(test_tinystories_matches_hf_tokenizers);
    RUN(test_llama2c_bin_matches_llama2c_encode);
    RUN(test_internlm2_chat_tokens_from_config);
    RUN(test_trained_tokenizer_matches_hf);
    RUN(test_trained_prefix_space_tokenizer);
    RUN(test_metaspace_tokenizer_json_matches_hf);
    fixture_texts_free(&texts);
    return test_finish();
}
