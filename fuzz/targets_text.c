/* Fuzz targets for text inputs (data/): tokenizer files, prompt-pair files, prompt syntax and
 * templates. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/pairs/pairs.h"
#include "data/prompts/prompt_syntax.h"
#include "data/prompts/template.h"
#include "data/readers/reader.h"
#include "data/tokenizers/tokenizer.h"
#include "fuzz/fuzz.h"

/* A tokenizer that loads encodes a fixed text to ids inside its vocabulary and decodes them. */
static int exercise(an_tokenizer *t) {
    static const char text[] = "masterpiece, (best quality:1.2), a cat \xc3\xa9t\xc3\xa9 \xe7\x8c\xab <s> 123";
    an_ids ids = {0};
    an_error err;
    int bad = 0, v = an_tokenizer_vocab_size(t);
    if (v <= 0) bad = 1;
    if (!bad && an_tokenizer_encode(t, text, sizeof text - 1, &ids, &err) == 0)
        for (size_t i = 0; i < ids.n; i++) {
            if (ids.v[i] < 0 || ids.v[i] >= v) bad = 1;
            else (void)an_tokenizer_piece(t, ids.v[i]);
        }
    an_ids_free(&ids);
    an_tokenizer_free(t);
    return bad ? AN_FUZZ_BROKEN : AN_FUZZ_ACCEPTED;
}

/* One tokenizer file: the first byte picks which kind it is read as (the rest is the file). */
int an_fuzz_tokenizer(const uint8_t *data, size_t size) {
    if (size < 1) return AN_FUZZ_REFUSED;
    static const char *const names[] = {"tokenizer.json", "tokenizer.model", "tokenizer.bin"};
    const char *path = an_fuzz_write(names[data[0] % 3], data + 1, size - 1);
    if (!path) return AN_FUZZ_REFUSED;
    an_error err;
    an_tokenizer *t = an_tokenizer_load(path, &err);
    return t ? exercise(t) : AN_FUZZ_REFUSED;
}

/* vocab.json + merges.txt (split at the first byte 0) in a folder. */
int an_fuzz_bpe_files(const uint8_t *data, size_t size) {
    const uint8_t *a, *b;
    size_t na, nb;
    an_fuzz_split(data, size, &a, &na, &b, &nb);
    if (!an_fuzz_write("vocab.json", a, na) || !an_fuzz_write("merges.txt", b, nb)) return AN_FUZZ_REFUSED;
    char dir[700];
    snprintf(dir, sizeof dir, "%s", an_fuzz_path("."));
    remove(an_fuzz_path("tokenizer.json")); /* a folder is read by what it holds: only these two */
    remove(an_fuzz_path("tokenizer.model"));
    an_error err;
    an_tokenizer *t = an_tokenizer_load(dir, &err);
    return t ? exercise(t) : AN_FUZZ_REFUSED;
}

/* A pair file; the first byte picks the container and format (the rest is the file). Every pair
 * read has both texts, as valid UTF-8. */
int an_fuzz_pairs(const uint8_t *data, size_t size) {
    if (size < 1) return AN_FUZZ_REFUSED;
    static const char *const names[] = {"pairs.jsonl", "pairs.json", "pairs.csv", "pairs.jsonl.gz", "pairs.zip"};
    const char *path = an_fuzz_write(names[data[0] % 5], data + 1, size - 1);
    if (!path) return AN_FUZZ_REFUSED;
    an_pairs p = {0};
    an_read_report rep;
    an_error err;
    int bad = 0, ok = an_pairs_read(&p, path, NULL, &rep, &err) == 0;
    if (ok)
        for (size_t i = 0; i < p.n && !bad; i++) {
            const an_pair *q = &p.v[i];
            if (!q->prompt || !q->negative) bad = 1;
            else if (an_utf8_check(q->prompt, strlen(q->prompt)) != strlen(q->prompt) ||
                     an_utf8_check(q->negative, strlen(q->negative)) != strlen(q->negative))
                bad = 1;
        }
    an_pairs_free(&p);
    return bad ? AN_FUZZ_BROKEN : ok ? AN_FUZZ_ACCEPTED : AN_FUZZ_REFUSED;
}

/* Prompt attention syntax, in the mode the first byte picks: parse, tags, and writing it back. */
int an_fuzz_prompt(const uint8_t *data, size_t size) {
    if (size < 1) return AN_FUZZ_REFUSED;
    an_prompt_mode mode = data[0] & 1 ? AN_PROMPT_NOVELAI : AN_PROMPT_A1111;
    char *text = an_fuzz_string(data + 1, size - 1);
    an_error err;
    an_prompt p;
    int ok = an_prompt_parse(text, mode, NULL, &p, &err) == 0;
    if (ok) {
        char *back = an_prompt_write(&p, mode, &err);
        free(back);
        an_prompt_free(&p);
    }
    an_attn_chunks c;
    if (an_prompt_attention(text, mode, &c, &err) == 0) an_attn_chunks_free(&c);
    free(text);
    return ok ? AN_FUZZ_ACCEPTED : AN_FUZZ_REFUSED;
}

/* Renders an accepted template for a prompt with braces, a system text and a negative. */
static void render_template(an_template *t) {
    an_error err;
    free(an_template_render_input(t, "a cat {x} }{", "be brief", &err));
    free(an_template_render_output(t, "blurry, {0}", &err));
    an_template_free(t);
}

/* A chat template as a GGUF or tokenizer_config.json carries it (Jinja source, recognised by its
 * markers: data/prompts/template.h), when the first byte is 1. */
static int fuzz_chat_template(const uint8_t *data, size_t size) {
    char *jinja = an_fuzz_string(data, size);
    if (!jinja) return AN_FUZZ_REFUSED;
    an_template t;
    an_error err;
    int ok = an_template_from_chat_template(jinja, &t, &err) == 0;
    if (ok) render_template(&t);
    free(jinja);
    return ok ? AN_FUZZ_ACCEPTED : AN_FUZZ_REFUSED;
}

/* A template as a recipe gives it (a JSON object), rendered for a prompt and a negative; or, after a
 * first byte 1, a chat template's Jinja source. */
int an_fuzz_template(const uint8_t *data, size_t size) {
    if (size > 0 && data[0] == 1) return fuzz_chat_template(data + 1, size - 1);
    cJSON *o = cJSON_ParseWithLength((const char *)data, size);
    if (!o) return AN_FUZZ_REFUSED;
    an_template t;
    an_error err;
    int ok = cJSON_IsObject(o) && an_template_from_json(o, "fuzz", &t, &err) == 0;
    if (ok) render_template(&t);
    cJSON_Delete(o);
    return ok ? AN_FUZZ_ACCEPTED : AN_FUZZ_REFUSED;
}
