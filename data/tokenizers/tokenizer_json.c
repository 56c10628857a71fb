/* Hugging Face and OpenAI tokenizer files: tokenizer.json, vocab.json + merges.txt,
 * encoder.json + vocab.bpe, and the tokenizer_config.json / special_tokens_map.json beside them. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "data/tokenizers/tokenizer_impl.h"
#include "data/tokenizers/unicode.h"

static cJSON *read_json(const char *path, an_error *err) {
    size_t n = 0;
    char *s = an_read_file(path, &n, err);
    if (!s) return NULL;
    cJSON *j = cJSON_ParseWithLength(s, n);
    if (!j) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= s && at <= s + n ? (long)(at - s) : -1;
        an_fail(err, "%s: not valid JSON (near byte %ld)", path, off);
    }
    free(s);
    return j;
}

int an_add_ranked_merge(an_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen, int rank,
                        const char *file, an_error *err) {
    int32_t ia = an_vocab_find(&t->vocab, a, alen), ib = an_vocab_find(&t->vocab, b, blen);
    if (ia < 0 || ib < 0)
        return an_fail(err, "%s: merge %d (%s %s) names unknown token %s", file, rank + 1, AN_QUOTE_N(a, alen),
                       AN_QUOTE_N(b, blen), ia < 0 ? AN_QUOTE_N(a, alen) : AN_QUOTE_N(b, blen));
    char stack[256], *ab = alen + blen <= sizeof stack ? stack : malloc(alen + blen);
    if (!ab) return an_fail(err, "%s: out of memory", file);
    memcpy(ab, a, alen);
    memcpy(ab + alen, b, blen);
    int32_t im = an_vocab_find(&t->vocab, ab, alen + blen);
    if (ab != stack) free(ab);
    if (im < 0)
        return an_fail(err, "%s: merge %d (%s %s) makes a token that is not in the vocabulary", file,
                       rank + 1, AN_QUOTE_N(a, alen), AN_QUOTE_N(b, blen));
    /* ranks are below 2^24 in any real file, so the float priority is exact */
    if (an_pairmap_put(&t->merges, ia, ib, im, -(float)rank)) return an_fail(err, "%s: out of memory", file);
    return 0;
}

int an_bytelevel_bytes(an_tokenizer *t, const char *file, an_error *err) {
    uint32_t b2c[256];
    an_bytelevel_table(b2c);
    for (int b = 0; b < 256; b++) {
        char u[4];
        int l = an_utf8_encode(b2c[b], u);
        t->byte_id[b] = an_vocab_find(&t->vocab, u, (size_t)l);
        if (t->byte_id[b] < 0)
            return an_fail(err, "%s: the vocabulary has no token for byte 0x%02X (\"%.*s\"), which byte-level BPE needs",
                           file, b, l, u);
    }
    return 0;
}

/* Fills t->vocab from a JSON object {"piece": id, ...}; ids must be 0..n-1 without gaps. */
static int load_vocab_object(an_tokenizer *t, const cJSON *obj, const char *file, const char *field, an_error *err) {
    if (!cJSON_IsObject(obj)) return an_fail(err, "%s: %s is missing or not an object", file, field);
    int n = cJSON_GetArraySize(obj);
    const cJSON **by_id = calloc(n ? (size_t)n : 1, sizeof *by_id);
    if (!by_id) return an_fail(err, "%s: out of memory", file);
    int rc = 0;
    for (const cJSON *e = obj->child; e; e = e->next) {
        double v = cJSON_IsNumber(e) ? e->valuedouble : -1;
        if (v < 0 || v >= n || v != floor(v)) {
            rc = an_fail(err, "%s: %s: token %s has id %g, not an integer in 0..%d", file, field, AN_QUOTE(e->string),
                         cJSON_IsNumber(e) ? v : -1.0, n - 1);
            break;
        }
        if (by_id[(int)v]) {
            rc = an_fail(err, "%s: %s: id %d is given to both %s and %s", file, field, (int)v,
                         AN_QUOTE(by_id[(int)v]->string), AN_QUOTE(e->string));
            break;
        }
        by_id[(int)v] = e;
    }
    for (int id = 0; id < n && rc == 0; id++)
        if (an_vocab_add(&t->vocab, by_id[id]->string, strlen(by_id[id]->string), 0, AN_PIECE_NORMAL) < 0)
            rc = an_fail(err, "%s: out of memory", file);
    free(by_id);
    if (rc == 0 && an_vocab_index(&t->vocab)) rc = an_fail(err, "%s: out of memory", file);
    return rc;
}

static const char *json_str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int json_bool(const cJSON *o, const char *key, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

/* A token given as "text" or {"content": "text", ...} (special_tokens_map.json, tokenizer_config.json). */
static const char *token_text(const cJSON *v) {
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) return json_str(v, "content");
    return NULL;
}

static void default_specials(an_tokenizer *t) {
    int32_t id;
    if ((id = an_vocab_find(&t->vocab, "<|endoftext|>", 13)) >= 0) {
        t->bos = t->eos = id;
        t->vocab.type[id] = AN_PIECE_ADDED; /* special for an_tokenizer_is_special; decodes as its text */
    }
    if ((id = an_vocab_find(&t->vocab, "<s>", 3)) >= 0) t->bos = id;
    if ((id = an_vocab_find(&t->vocab, "</s>", 4)) >= 0) t->eos = id;
    if ((id = an_vocab_find(&t->vocab, "<unk>", 5)) >= 0 && t->unk < 0) t->unk = id;
}

int an_load_vocab_merges(an_tokenizer *t, const char *vocab_path, const char *merges_path, an_error *err) {
    cJSON *j = read_json(vocab_path, err);
    if (!j) return -1;
    int rc = load_vocab_object(t, j, vocab_path, "the vocabulary", err);
    cJSON_Delete(j);
    if (rc) return -1;
    if (an_vocab_find(&t->vocab, "<|startoftext|>", 15) >= 0 || an_vocab_find(&t->vocab, "a</w>", 5) >= 0)
        return an_fail(err, "%s: CLIP-style vocabulary (</w> word ends) is not supported", vocab_path);
    t->kind = AN_TOK_BYTELEVEL;
    if (an_bytelevel_bytes(t, vocab_path, err)) return -1;
    size_t n = 0;
    char *s = an_read_file(merges_path, &n, err);
    if (!s) return -1;
    int rank = 0, line = 0;
    for (size_t i = 0; i < n && rc == 0;) {
        size_t e = i;
        while (e < n && s[e] != '\n') e++;
        size_t le = e > i && s[e - 1] == '\r' ? e - 1 : e;
        line++;
        if (!(line == 1 && le - i >= 8 && memcmp(s + i, "#version", 8) == 0) && le > i) {
            const char *sp = memchr(s + i, ' ', le - i);
            if (!sp || sp == s + i || sp + 1 == s + le)
                rc = an_fail(err, "%s: line %d: expected two tokens separated by a space", merges_path, line);
            else
                rc = an_add_ranked_merge(t, s + i, (size_t)(sp - (s + i)), sp + 1, (size_t)(s + le - sp - 1), rank++,
                                         merges_path, err);
        }
        i = e + 1;
    }
    free(s);
    if (rc) return -1;
    default_specials(t);
    return 0;
}

typedef struct added {
    int id;
    const char *content;
    int normalized;
} added;

static int cmp_added(const void *a, const void *b) {
    const added *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

/* Added tokens sorted by id: an id inside the vocabulary renames that piece (InternLM2's
 * [UNUSED_TOKEN_146] becomes <|im_start|>), the next id past the end extends it. All are matched in
 * text before BPE. */
static int add_tokens(an_tokenizer *t, added *a, int n, const char *file, const char *field, an_error *err) {
    qsort(a, (size_t)n, sizeof *a, cmp_added);
    for (int i = 0; i < n; i++) {
        size_t len = strlen(a[i].content);
        if (len == 0) return an_fail(err, "%s: %s: token %d has empty content", file, field, a[i].id);
        if (a[i].id > t->vocab.n)
            return an_fail(err, "%s: %s: token %s has id %d, past the vocabulary end %d", file, field, AN_QUOTE(a[i].content),
                           a[i].id, t->vocab.n);
        if (a[i].id == t->vocab.n) {
            if (an_vocab_add(&t->vocab, a[i].content, len, 0, AN_PIECE_ADDED) < 0) return an_fail(err, "%s: out of memory", file);
        } else {
            const an_vocab *v = &t->vocab;
            if (v->len[a[i].id] != len || memcmp(an_vocab_text(v, a[i].id), a[i].content, len) != 0)
                if (an_vocab_set_text(&t->vocab, a[i].id, a[i].content, len)) return an_fail(err, "%s: out of memory", file);
            t->vocab.type[a[i].id] = AN_PIECE_ADDED;
        }
        if (an_tokenizer_add_special(t, a[i].content, len, a[i].id, a[i].normalized, 0))
            return an_fail(err, "%s: out of memory", file);
    }
    return 0;
}

/* tokenizer.json's added_tokens: [{"id": 0, "content": "<unk>", "normalized": true, ...}, ...] */
static int load_added_tokens(an_tokenizer *t, const cJSON *arr, const char *file, an_error *err) {
    if (!arr || cJSON_IsNull(arr)) return 0;
    if (!cJSON_IsArray(arr)) return an_fail(err, "%s: added_tokens is not an array", file);
    int n = cJSON_GetArraySize(arr), i = 0, rc;
    added *a = calloc(n ? (size_t)n : 1, sizeof *a);
    if (!a) return an_fail(err, "%s: out of memory", file);
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        const cJSON *idv = cJSON_GetObjectItemCaseSensitive(e, "id");
        const char *content = json_str(e, "content");
        if (!cJSON_IsNumber(idv) || !content || idv->valuedouble < 0 || idv->valuedouble > 1e8) {
            free(a);
            return an_fail(err, "%s: added_tokens[%d] needs an integer \"id\" and a string \"content\"", file, i);
        }
        /* HF matches normalized tokens after normalization; its default is !special */
        a[i++] = (added){(int)idv->valuedouble, content, json_bool(e, "normalized", !json_bool(e, "special", 0))};
    }
    rc = add_tokens(t, a, n, file, "added_tokens", err);
    free(a);
    return rc;
}

static int load_merges(an_tokenizer *t, const cJSON *merges, const char *file, an_error *err) {
    if (!cJSON_IsArray(merges)) return an_fail(err, "%s: model.merges is missing or not an array", file);
    int rank = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, merges) {
        const char *a, *b;
        size_t alen, blen;
        if (cJSON_IsString(m)) {
            const char *sp = strchr(m->valuestring, ' ');
            if (!sp || sp == m->valuestring || !sp[1])
                return an_fail(err, "%s: model.merges[%d] %s is not two tokens separated by a space", file, rank,
                               AN_QUOTE(m->valuestring));
            a = m->valuestring, alen = (size_t)(sp - a), b = sp + 1, blen = strlen(b);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {
            a = m->child->valuestring, alen = strlen(a), b = m->child->next->valuestring, blen = strlen(b);
        } else {
            return an_fail(err, "%s: model.merges[%d] is neither \"a b\" nor [\"a\", \"b\"]", file, rank);
        }
        if (an_add_ranked_merge(t, a, alen, b, blen, rank++, file, err)) return -1;
    }
    return 0;
}

/* The normalizers we implement: none, or Prepend("▁") and/or Replace(" " -> "▁") (Llama-style
 * tokenizer.json), alone or in a Sequence. */
static int load_normalizer(an_tokenizer *t, const cJSON *nz, const char *file, int *prepend, an_error *err) {
    *prepend = 0;
    if (!nz || cJSON_IsNull(nz)) return 0;
    const char *type = json_str(nz, "type");
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(nz, "normalizers")) {
            int p = 0;
            if (load_normalizer(t, e, file, &p, err)) return -1;
            *prepend |= p;
        }
        return 0;
    }
    if (type && !strcmp(type, "Prepend")) {
        const char *s = json_str(nz, "prepend");
        if (!s || strcmp(s, "\xe2\x96\x81")) return an_fail(err, "%s: normalizer Prepend of %s is not supported (only \"\xe2\x96\x81\")", file, AN_QUOTE(s));
        *prepend = 1;
        return 0;
    }
    if (type && !strcmp(type, "Replace")) {
        const char *pat = json_str(cJSON_GetObjectItemCaseSensitive(nz, "pattern"), "String");
        const char *content = json_str(nz, "content");
        if (!pat || !content || strcmp(pat, " ") || strcmp(content, "\xe2\x96\x81"))
            return an_fail(err, "%s: normalizer Replace is supported only for \" \" -> \"\xe2\x96\x81\"", file);
        t->space_text = "\xe2\x96\x81";
        return 0;
    }
    return an_fail(err, "%s: normalizer type %s is not supported", file, type ? AN_QUOTE(type) : "(none)");
}

/* The pre-tokenizers we implement: none, or ByteLevel (alone or as the only step of a Sequence). */
static int load_pre_tokenizer(an_tokenizer *t, const cJSON *pt, const char *file, an_error *err) {
    if (!pt || cJSON_IsNull(pt)) return 0;
    const char *type = json_str(pt, "type");
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(pt, "pretokenizers");
        if (cJSON_GetArraySize(list) == 1) return load_pre_tokenizer(t, list->child, file, err);
    }
    if (type && !strcmp(type, "ByteLevel")) {
        if (!json_bool(pt, "use_regex", 1))
            return an_fail(err, "%s: pre_tokenizer ByteLevel without use_regex is not supported", file);
        t->kind = AN_TOK_BYTELEVEL;
        t->add_prefix_space = json_bool(pt, "add_prefix_space", 0);
        return 0;
    }
    if (type && !strcmp(type, "Metaspace")) {
        const char *rep = json_str(pt, "replacement"), *scheme = json_str(pt, "prepend_scheme");
        if (rep && strcmp(rep, "\xe2\x96\x81"))
            return an_fail(err, "%s: pre_tokenizer Metaspace with replacement %s is not supported", file, AN_QUOTE(rep));
        /* older files say add_prefix_space instead of prepend_scheme */
        if (!scheme) scheme = json_bool(pt, "add_prefix_space", 1) ? "always" : "never";
        if (!strcmp(scheme, "always")) t->prefix_mode = AN_PREFIX_PER_SEGMENT;
        else if (!strcmp(scheme, "first")) t->prefix_mode = AN_PREFIX_TEXT_START;
        else if (!strcmp(scheme, "never")) t->prefix_mode = AN_PREFIX_NONE;
        else return an_fail(err, "%s: pre_tokenizer Metaspace prepend_scheme %s is not known", file, AN_QUOTE(scheme));
        t->space_text = "\xe2\x96\x81";
        t->metaspace = 1;
        t->prefix_unless_space = 1;
        t->split_every_space = json_bool(pt, "split", 1);
        t->strip_leading_space = t->prefix_mode != AN_PREFIX_NONE;
        return 0;
    }
    return an_fail(err, "%s: pre_tokenizer type %s is not supported (ByteLevel, Metaspace or none)", file,
                   type ? AN_QUOTE(type) : "(none)");
}

/* TemplateProcessing whose single-sequence template starts with a special token adds BOS. */
static void load_post_processor(an_tokenizer *t, const cJSON *pp) {
    const char *type = json_str(pp, "type");
    if (!type || strcmp(type, "TemplateProcessing")) return;
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(pp, "single");
    const cJSON *first = cJSON_IsArray(single) ? single->child : NULL;
    const cJSON *sp = first ? cJSON_GetObjectItemCaseSensitive(first, "SpecialToken") : NULL;
    const char *name = sp ? json_str(sp, "id") : NULL;
    if (!name) return;
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(pp, "special_tokens"), name), "ids");
    if (cJSON_GetArraySize(ids) == 1 && cJSON_IsNumber(ids->child)) {
        t->bos = (int32_t)ids->child->valuedouble;
        t->add_bos = 1;
    }
}

int an_load_tokenizer_json(an_tokenizer *t, const char *path, an_error *err) {
    cJSON *j = read_json(path, err);
    if (!j) return -1;
    int rc = -1, prepend = 0;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    const char *type = json_str(model, "type");
    if (!cJSON_IsObject(model)) {
        an_fail(err, "%s: \"model\" is missing", path);
        goto done;
    }
    if (type && strcmp(type, "BPE")) {
        an_fail(err, "%s: model type %s is not supported (BPE only)", path, AN_QUOTE(type));
        goto done;
    }
    if (json_bool(model, "ignore_merges", 0)) {
        an_fail(err, "%s: model.ignore_merges true is not supported", path);
        goto done;
    }
    if (json_str(model, "continuing_subword_prefix") || json_str(model, "end_of_word_suffix")) {
        an_fail(err, "%s: model.continuing_subword_prefix / end_of_word_suffix are not supported", path);
        goto done;
    }
    t->kind = AN_TOK_SPM;
    t->space_text = " ";
    if (load_vocab_object(t, cJSON_GetObjectItemCaseSensitive(model, "vocab"), path, "model.vocab", err)) goto done;
    if (load_pre_tokenizer(t, cJSON_GetObjectItemCaseSensitive(j, "pre_tokenizer"), path, err)) goto done;
    if (load_normalizer(t, cJSON_GetObjectItemCaseSensitive(j, "normalizer"), path, &prepend, err)) goto done;
    if (load_merges(t, cJSON_GetObjectItemCaseSensitive(model, "merges"), path, err)) goto done;
    if (t->kind == AN_TOK_BYTELEVEL) {
        if (an_bytelevel_bytes(t, path, err)) goto done;
    } else {
        t->byte_fallback = json_bool(model, "byte_fallback", 0);
        t->fuse_unk = json_bool(model, "fuse_unk", 0);
        if (!t->metaspace) {
            t->prefix_mode = prepend ? AN_PREFIX_PER_UNIT : AN_PREFIX_NONE;
            t->strip_leading_space = prepend;
        } else if (prepend) {
            an_fail(err, "%s: a Prepend normalizer together with the Metaspace pre-tokenizer is not supported", path);
            goto done;
        }
        for (int b = 0; b < 256; b++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            t->byte_id[b] = an_vocab_find(&t->vocab, name, 6);
            if (t->byte_id[b] >= 0) t->vocab.type[t->byte_id[b]] = AN_PIECE_BYTE;
        }
    }
    const char *unk = json_str(model, "unk_token");
    if (unk) t->unk = an_vocab_find(&t->vocab, unk, strlen(unk));
    default_specials(t);
    if (load_added_tokens(t, cJSON_GetObjectItemCaseSensitive(j, "added_tokens"), path, err)) goto done;
    load_post_processor(t, cJSON_GetObjectItemCaseSensitive(j, "post_processor"));
    rc = 0;
done:
    cJSON_Delete(j);
    return rc;
}

static void set_named(an_tokenizer *t, const cJSON *o, const char *key, int32_t *dst) {
    const char *name = token_text(cJSON_GetObjectItemCaseSensitive(o, key));
    if (!name) return;
    int32_t id = an_tokenizer_token_id(t, name);
    if (id >= 0) *dst = id;
}

int an_load_special_tokens_map(an_tokenizer *t, const char *path, an_error *err) {
    cJSON *j = read_json(path, err);
    if (!j) return -1;
    set_named(t, j, "bos_token", &t->bos);
    set_named(t, j, "eos_token", &t->eos);
    set_named(t, j, "unk_token", &t->unk);
    cJSON_Delete(j);
    return 0;
}

int an_load_tokenizer_config(an_tokenizer *t, const char *path, an_error *err) {
    cJSON *j = read_json(path, err);
    if (!j) return -1;
    int rc = 0;
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(j, "added_tokens_decoder");
    if (cJSON_IsObject(dec)) {
        int n = cJSON_GetArraySize(dec), i = 0;
        added *a = calloc(n ? (size_t)n : 1, sizeof *a);
        if (!a) rc = an_fail(err, "%s: out of memory", path);
        for (const cJSON *e = dec->child; e && rc == 0; e = e->next) {
            char *end;
            long id = strtol(e->string, &end, 10);
            const char *content = json_str(e, "content");
            if (*end || end == e->string || id < 0 || id > 100000000 || !content)
                rc = an_fail(err, "%s: added_tokens_decoder entry %s needs an integer key and a \"content\"", path,
                             AN_QUOTE(e->string));
            else
                a[i++] = (added){(int)id, content, json_bool(e, "normalized", 0)};
        }
        if (rc == 0) rc = add_tokens(t, a, i, path, "added_tokens_decoder", err);
        free(a);
    }
    if (rc == 0) {
        set_named(t, j, "bos_token", &t->bos);
        set_named(t, j, "eos_token", &t->eos);
        set_named(t, j, "unk_token", &t->unk);
        const cJSON *ab = cJSON_GetObjectItemCaseSensitive(j, "add_bos_token");
        if (cJSON_IsBool(ab)) t->add_bos = cJSON_IsTrue(ab);
    }
    cJSON_Delete(j);
    return rc;
}
