/* One JSON object -> one pair, for JSONL lines and for arrays of objects in .json files. The field
 * layouts accepted are those of the pair datasets people already have (docs/data.md). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "data/readers/reader.h"

/* Bare NaN / Infinity / -Infinity outside strings become null. deltas records, for each rewrite,
 * where it ends in the new text and how much longer the new text got, to map error offsets back. */
typedef struct rewrite {
    size_t at;
    long grow;
} rewrite;

static char *drop_nan_tokens(const char *s, size_t n, rewrite **rw, size_t *n_rw) {
    an_strbuf b = {0};
    *rw = NULL;
    *n_rw = 0;
    size_t cap = 0;
    long grow = 0;
    int in_str = 0;
    if (an_strbuf_reserve(&b, n + 16)) return NULL;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\' && i + 1 < n) {
                if (an_strbuf_put(&b, s + i, 2)) goto oom;
                i++;
                continue;
            }
            if (c == '"') in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else {
            size_t k = 0;
            if (!strncmp(s + i, "NaN", 3)) k = 3;
            else if (!strncmp(s + i, "Infinity", 8)) k = 8;
            else if (!strncmp(s + i, "-Infinity", 9)) k = 9;
            if (k) {
                if (an_strbuf_put(&b, "null", 4)) goto oom;
                grow += 4 - (long)k;
                if (*n_rw == cap) {
                    cap = cap ? cap * 2 : 8;
                    rewrite *nr = realloc(*rw, cap * sizeof *nr);
                    if (!nr) goto oom;
                    *rw = nr;
                }
                (*rw)[(*n_rw)++] = (rewrite){b.n, grow};
                i += k - 1;
                continue;
            }
        }
        if (an_strbuf_putc(&b, c)) goto oom;
    }
    return b.v;
oom:
    free(*rw);
    *rw = NULL;
    an_strbuf_free(&b);
    return NULL;
}

cJSON *an_json_parse(const char *text, size_t len, size_t *err_at) {
    const char *end = NULL;
    /* cJSON counts the terminating NUL in the length when it must check for trailing garbage */
    cJSON *j = cJSON_ParseWithLengthOpts(text, len + 1, &end, 1);
    if (j) return j;
    size_t first_err = end ? (size_t)(end - text) : 0;
    rewrite *rw;
    size_t n_rw;
    char *clean = drop_nan_tokens(text, len, &rw, &n_rw);
    if (!clean || n_rw == 0) {
        free(clean);
        free(rw);
        *err_at = first_err;
        return NULL;
    }
    size_t clen = strlen(clean);
    end = NULL;
    j = cJSON_ParseWithLengthOpts(clean, clen + 1, &end, 1);
    if (!j) {
        size_t at = end ? (size_t)(end - clean) : 0;
        long grow = 0;
        for (size_t i = 0; i < n_rw && rw[i].at <= at; i++) grow = rw[i].grow;
        *err_at = (size_t)((long)at - grow);
    }
    free(clean);
    free(rw);
    return j;
}

/* A string field: 1 and *out set; 0 when absent; a null value counts as "" (style files write NaN
 * for "no negative"); -1 when present but not a string. */
static int str_field(const cJSON *o, const char *name, const char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v) return 0;
    if (cJSON_IsNull(v)) {
        *out = "";
        return 1;
    }
    if (!cJSON_IsString(v) || !v->valuestring) return -1;
    *out = v->valuestring;
    return 1;
}

static const char *const negative_aliases[] = {"negative_prompt", "negativePrompt", "negative"};

int an_read_object(an_reader *r, const cJSON *o, const char *where, an_error *err) {
    const an_read_opts *op = r->opts;
    const char *p = NULL, *n = NULL, *src = NULL;
    const char *pname = op->prompt_field ? op->prompt_field : "prompt";
    const char *nname = op->negative_field ? op->negative_field : "negative_prompt";
    if (!cJSON_IsObject(o)) return an_reader_skip(r, err, "%s: not a JSON object", where);
    int explicit = op->prompt_field || op->negative_field;
    int rp = str_field(o, pname, &p);
    if (rp < 0) return an_reader_skip(r, err, "%s: field \"%s\" is not a string", where, pname);
    const char *style_name = NULL;
    if (!explicit && rp == 0 && str_field(o, "name", &style_name) == 1 &&
        cJSON_GetObjectItemCaseSensitive(o, "negative_prompt")) {
        /* a style template that only adds a negative (Fooocus writes no "prompt" then) */
        p = "", rp = 1;
    }
    if (rp > 0 || explicit) {
        if (rp == 0) return an_reader_skip(r, err, "%s: no \"%s\" field", where, pname);
        int rn = str_field(o, nname, &n);
        for (size_t i = 0; !explicit && rn == 0 && i < sizeof negative_aliases / sizeof *negative_aliases; i++)
            rn = str_field(o, nname = negative_aliases[i], &n);
        if (rn < 0) return an_reader_skip(r, err, "%s: field \"%s\" is not a string", where, nname);
        if (rn == 0 && !explicit && str_field(o, "name", &style_name) == 1) n = "", rn = 1; /* style, no negative */
        if (rn == 0)
            return an_reader_skip(r, err, "%s: no \"%s\" field", where,
                                  op->negative_field ? op->negative_field : "negative_prompt");
    } else if (cJSON_GetObjectItemCaseSensitive(o, "conversation")) {
        /* XTuner: {"conversation": [{"system"?, "input", "output"}, ...]}; the first turn is the pair */
        const cJSON *turn = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "conversation"), 0);
        if (!cJSON_IsObject(turn)) return an_reader_skip(r, err, "%s: \"conversation\" has no first turn object", where);
        if (str_field(turn, "input", &p) != 1 || str_field(turn, "output", &n) != 1)
            return an_reader_skip(r, err, "%s: conversation[0] needs string \"input\" and \"output\"", where);
    } else if (cJSON_GetObjectItemCaseSensitive(o, "messages")) {
        /* OpenAI chat: the first user message is the prompt, the next assistant message its negative */
        const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(o, "messages"), *m;
        if (!cJSON_IsArray(msgs)) return an_reader_skip(r, err, "%s: \"messages\" is not an array", where);
        cJSON_ArrayForEach(m, msgs) {
            const char *role = NULL, *content = NULL;
            if (str_field(m, "role", &role) != 1 || str_field(m, "content", &content) != 1) continue;
            if (!p && !strcmp(role, "user")) p = content;
            else if (p && !strcmp(role, "assistant")) {
                n = content;
                break;
            }
        }
        if (!p) return an_reader_skip(r, err, "%s: \"messages\" has no user message with string content", where);
        if (!n) return an_reader_skip(r, err, "%s: \"messages\" has no assistant message after the user's", where);
    } else if (cJSON_GetObjectItemCaseSensitive(o, "input")) {
        /* XTuner single turn: {"input", "output"} */
        if (str_field(o, "input", &p) != 1 || str_field(o, "output", &n) != 1)
            return an_reader_skip(r, err, "%s: needs string \"input\" and \"output\"", where);
    } else {
        return an_reader_skip(r, err, "%s: no \"%s\" field (nor input/output, conversation, messages)", where, pname);
    }
    if (op->source_field) {
        if (str_field(o, op->source_field, &src) != 1) src = NULL;
    } else if (str_field(o, "source", &src) != 1 && str_field(o, "name", &src) != 1) {
        src = NULL;
    }
    if (src && !*src) src = NULL;
    return an_reader_add(r, p, n, src, err);
}
