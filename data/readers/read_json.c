/* .json documents: an array of pair objects (style templates {name, prompt, negative_prompt},
 * XTuner or chat records), an array of [sentence, prompt, negative_prompt, score] rows (the GPT-2
 * keyword generator's dataset), an AI-Horde style dict {name: {prompt: "pos###neg", ...}}, or a
 * file that is really JSONL under a .json name. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "data/readers/reader.h"

static size_t line_of(const char *buf, size_t off) {
    size_t line = 1;
    for (size_t i = 0; i < off; i++) line += buf[i] == '\n';
    return line;
}

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Removes every "{np}" and then the separators left at either end. */
static char *horde_negative(const char *s) {
    an_strbuf b = {0};
    if (an_strbuf_reserve(&b, strlen(s))) return NULL;
    for (const char *p = s; *p;) {
        if (!strncmp(p, "{np}", 4)) {
            p += 4;
            continue;
        }
        an_strbuf_putc(&b, *p++);
    }
    size_t a = 0, e = b.n;
    while (a < e && (is_blank(b.v[a]) || b.v[a] == ',')) a++;
    while (e > a && (is_blank(b.v[e - 1]) || b.v[e - 1] == ',')) e--;
    memmove(b.v, b.v + a, e - a);
    b.v[e - a] = 0;
    return b.v;
}

static char *horde_positive(const char *s, size_t n, const char *subject) {
    an_strbuf b = {0};
    if (an_strbuf_reserve(&b, n)) return NULL;
    for (size_t i = 0; i < n;) {
        if (!strncmp(s + i, "{np}", 4) && i + 4 <= n) {
            i += 4;
            continue;
        }
        if (subject && !strncmp(s + i, "{p}", 3) && i + 3 <= n) {
            if (an_strbuf_put(&b, subject, strlen(subject))) goto oom;
            i += 3;
            continue;
        }
        if (an_strbuf_putc(&b, s[i++])) goto oom;
    }
    return b.v;
oom:
    an_strbuf_free(&b);
    return NULL;
}

static int read_horde(an_reader *r, const cJSON *doc, an_error *err) {
    const cJSON *style;
    cJSON_ArrayForEach(style, doc) {
        r->rep->records++;
        const char *name = style->string ? style->string : "";
        const cJSON *pv = cJSON_GetObjectItemCaseSensitive(style, "prompt");
        if (!cJSON_IsString(pv) || !pv->valuestring) {
            if (an_reader_skip(r, err, "style \"%.80s\": no string \"prompt\"", name)) return -1;
            continue;
        }
        const char *full = pv->valuestring, *sep = strstr(full, "###");
        size_t plen = sep ? (size_t)(sep - full) : strlen(full);
        char *pos = horde_positive(full, plen, r->opts->subject);
        char *neg = horde_negative(sep ? sep + 3 : "");
        int rc = pos && neg ? an_pairs_add(r->out, pos, neg, name) : -1;
        free(pos);
        free(neg);
        if (rc) return an_fail(err, "%s: out of memory", r->name);
        r->rep->pairs++;
    }
    return 0;
}

/* An object whose values are all objects with a "prompt": the AI-Horde style dict. */
static int looks_like_horde(const cJSON *doc) {
    const cJSON *v;
    int any = 0;
    cJSON_ArrayForEach(v, doc) {
        if (!cJSON_IsObject(v) || !cJSON_GetObjectItemCaseSensitive(v, "prompt")) return 0;
        any = 1;
    }
    return any;
}

static int read_array(an_reader *r, const cJSON *doc, an_error *err) {
    const cJSON *el;
    size_t i = 0;
    cJSON_ArrayForEach(el, doc) {
        i++;
        r->rep->records++;
        char where[48];
        snprintf(where, sizeof where, "element %zu", i);
        int rc;
        if (cJSON_IsArray(el)) {
            const cJSON *p = cJSON_GetArrayItem(el, 1), *n = cJSON_GetArrayItem(el, 2);
            if (cJSON_IsString(p) && cJSON_IsString(n)) rc = an_reader_add(r, p->valuestring, n->valuestring, NULL, err);
            else rc = an_reader_skip(r, err, "%s: a row needs strings at [1] (prompt) and [2] (negative prompt)", where);
        } else {
            rc = an_read_object(r, el, where, err);
        }
        if (rc) return -1;
    }
    return 0;
}

/* The buffer holds JSONL after all: read it line by line. */
static int read_as_jsonl(an_reader *r, char *buf, size_t len, an_error *err) {
    size_t line_no = 0;
    for (size_t a = 0; a < len;) {
        char *nl = memchr(buf + a, '\n', len - a);
        size_t e = nl ? (size_t)(nl - buf) : len;
        line_no++;
        size_t le = e;
        if (le > a && buf[le - 1] == '\r') le--;
        char keep = buf[le];
        buf[le] = 0;
        int rc = an_read_jsonl_line(r, buf + a, le - a, line_no, err);
        buf[le] = keep;
        if (rc) return -1;
        a = e + 1;
    }
    return 0;
}

int an_read_json_buffer(an_reader *r, char *buf, size_t len, an_error *err) {
    size_t start = 0;
    if (len >= 3 && !memcmp(buf, "\xEF\xBB\xBF", 3)) start = 3;
    char *text = buf + start;
    size_t tlen = len - start;
    char *fixed = NULL;
    size_t bad = an_utf8_check(text, tlen);
    if (bad != tlen) {
        if (!r->opts->utf8_replace)
            return an_fail(err, "%s: line %zu: invalid UTF-8 (byte 0x%02x at offset %zu)", r->name,
                           line_of(text, bad), (unsigned char)text[bad], bad + start);
        fixed = an_utf8_replace(text, tlen, &tlen);
        if (!fixed) return an_fail(err, "%s: out of memory", r->name);
        r->rep->utf8_replaced++;
        text = fixed;
    }
    size_t at = 0;
    cJSON *doc = an_json_parse(text, tlen, &at);
    int rc;
    if (!doc) {
        size_t i = 0;
        while (i < tlen && is_blank(text[i])) i++;
        char *nl = memchr(text + i, '\n', tlen - i);
        size_t first_end = nl ? (size_t)(nl - text) : tlen, dummy;
        cJSON *first = NULL;
        if (i < tlen && text[i] == '{' && nl) {
            char keep = text[first_end];
            text[first_end] = 0;
            first = an_json_parse(text + i, first_end - i, &dummy);
            text[first_end] = keep;
        }
        if (first) {
            cJSON_Delete(first);
            rc = read_as_jsonl(r, text, tlen, err);
        } else {
            size_t line = line_of(text, at), col = 1;
            for (size_t k = at; k > 0 && text[k - 1] != '\n'; k--) col++;
            rc = an_fail(err, "%s: line %zu, column %zu: not valid JSON", r->name, line, col);
        }
    } else if (cJSON_IsArray(doc)) {
        rc = read_array(r, doc, err);
    } else if (cJSON_IsObject(doc) && looks_like_horde(doc)) {
        rc = read_horde(r, doc, err);
    } else {
        r->rep->records++;
        rc = an_read_object(r, doc, "document", err);
    }
    cJSON_Delete(doc);
    free(fixed);
    return rc;
}
