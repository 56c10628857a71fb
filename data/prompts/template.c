/* Templates: built-ins, the JSON form, rendering with Python str.format rules, and XTuner's encode_fn. */
#include "data/prompts/template.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/strbuf.h"

#include "data/batching/token_cache.h"

typedef struct builtin {
    const char *name, *system, *instruction, *suffix, *sep;
    int suffix_as_eos;
    const char *stop_words[2];
} builtin;

/* Strings from XTuner's PROMPT_TEMPLATE (xtuner/utils/templates.py), see
 * ../shared/reference/anchor-xtuner-qlora.md section 1.2; "infotext" follows A1111's infotext
 * ("prompt\nNegative prompt: negative"). */
static const builtin builtins[] = {
    {"infotext", "{system}\n", "{input}\nNegative prompt: ", "", "", 0, {NULL}},
    {"default", "<|System|>:{system}\n", "<|User|>:{input}\n<|Bot|>:", "", "\n", 0, {NULL}},
    {"internlm2_chat", "<|im_start|>system\n{system}<|im_end|>\n",
     "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>", "\n", 1, {"<|im_end|>", NULL}},
    {"internlm_chat", "<|System|>:{system}\n", "<|User|>:{input}<eoh>\n<|Bot|>:", "<eoa>", "\n", 1, {"<eoa>", NULL}},
    /* ChatML (SmolLM2, Qwen2): the same strings as internlm2_chat, named for what GGUF files carry */
    {"chatml", "<|im_start|>system\n{system}<|im_end|>\n",
     "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>", "\n", 1, {"<|im_end|>", NULL}},
    /* XTuner's llama2_chat, its fixed system preamble included */
    {"llama2_chat",
     "[INST] <<SYS>>\n You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, "
     "while being safe. Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or "
     "illegal content. Please ensure that your responses are socially unbiased and positive in nature.\n{system}\n"
     "<</SYS>>\n [/INST] ",
     "[INST] {input} [/INST]", "", "\n", 0, {NULL}},
    /* Meta's Llama 3 Instruct format (the <|begin_of_text|> BOS is the tokenizer's) */
    {"llama3_chat", "<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>",
     "<|start_header_id|>user<|end_header_id|>\n\n{input}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
     "<|eot_id|>", "", 1, {"<|eot_id|>", NULL}},
};

#define BUILTIN_NAMES "infotext, default, internlm2_chat, internlm_chat, chatml, llama2_chat, llama3_chat"

void an_template_free(an_template *t) {
    free(t->name);
    free(t->system);
    free(t->instruction);
    free(t->suffix);
    free(t->sep);
    for (size_t i = 0; i < t->n_stop_words; i++) free(t->stop_words[i]);
    free(t->stop_words);
    memset(t, 0, sizeof *t);
}

static int set_str(char **dst, const char *src) {
    char *s = strdup(src ? src : "");
    if (!s) return -1;
    free(*dst);
    *dst = s;
    return 0;
}

static int add_stop(an_template *t, const char *w) {
    char **v = realloc(t->stop_words, (t->n_stop_words + 1) * sizeof *v);
    if (!v) return -1;
    t->stop_words = v;
    if (!(v[t->n_stop_words] = strdup(w))) return -1;
    t->n_stop_words++;
    return 0;
}

static int from_builtin(const builtin *b, an_template *out) {
    memset(out, 0, sizeof *out);
    if (set_str(&out->name, b->name) || set_str(&out->system, b->system) ||
        set_str(&out->instruction, b->instruction) || set_str(&out->suffix, b->suffix) || set_str(&out->sep, b->sep))
        return -1;
    out->suffix_as_eos = b->suffix_as_eos;
    for (int i = 0; b->stop_words[i]; i++)
        if (add_stop(out, b->stop_words[i])) return -1;
    return 0;
}

int an_template_builtin(const char *name, an_template *out, an_error *err) {
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++) {
        if (strcmp(name, builtins[i].name)) continue;
        if (from_builtin(&builtins[i], out)) {
            an_template_free(out);
            return an_fail(err, "template %s: out of memory", name);
        }
        return 0;
    }
    return an_fail(err, "template %s: no such built-in template (" BUILTIN_NAMES ")", name);
}

/* A Jinja chat template is not run: its kind is recognised by the markers only that kind writes,
 * most specific first (InternLM2 and Qwen2 both write ChatML's <|im_start|>; InternLM2's starts with
 * the BOS token). */
int an_template_from_chat_template(const char *jinja, an_template *out, an_error *err) {
    memset(out, 0, sizeof *out);
    if (!jinja || !*jinja) return an_fail(err, "chat template: empty; set data.template in the recipe (" BUILTIN_NAMES ")");
    const char *name = NULL;
    if (strstr(jinja, "<|start_header_id|>") && strstr(jinja, "<|eot_id|>")) name = "llama3_chat";
    else if (strstr(jinja, "<|im_start|>") && strstr(jinja, "<|im_end|>")) name = strstr(jinja, "bos_token") ? "internlm2_chat" : "chatml";
    else if (strstr(jinja, "[INST]") && strstr(jinja, "[/INST]")) name = "llama2_chat";
    else if (strstr(jinja, "<eoh>") && strstr(jinja, "<eoa>")) name = "internlm_chat";
    if (!name) {
        char head[64];
        size_t n = strcspn(jinja, "\n");
        snprintf(head, sizeof head, "%.*s", (int)(n < 48 ? n : 48), jinja);
        return an_fail(err, "chat template %s...: not a kind autoneg recognises (ChatML, Llama 2, Llama 3, InternLM2); "
                            "set data.template in the recipe (" BUILTIN_NAMES ", or an object)", AN_QUOTE(head));
    }
    return an_template_builtin(name, out, err);
}

int an_template_copy(const an_template *src, an_template *dst, an_error *err) {
    memset(dst, 0, sizeof *dst);
    int bad = set_str(&dst->name, src->name) || set_str(&dst->system, src->system) ||
              set_str(&dst->instruction, src->instruction) || set_str(&dst->suffix, src->suffix) ||
              set_str(&dst->sep, src->sep);
    dst->suffix_as_eos = src->suffix_as_eos;
    for (size_t i = 0; !bad && i < src->n_stop_words; i++) bad = add_stop(dst, src->stop_words[i]);
    if (bad) {
        an_template_free(dst);
        return an_fail(err, "template: out of memory");
    }
    return 0;
}

/* ---------- Python str.format for {input}, {system}, {round} ---------- */

/* Returns 0, -1 out of memory, -2 a bad placeholder (its text in bad[64]). */
static int format_into(an_strbuf *b, const char *fmt, const char *input, const char *system, char *bad) {
    for (const char *p = fmt; *p;) {
        if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
            if (an_strbuf_put(b, p, 1)) return -1;
            p += 2;
        } else if (*p == '{') {
            const char *e = strchr(p, '}');
            size_t n = e ? (size_t)(e - p - 1) : 0;
            const char *val = NULL;
            if (e && n == 5 && !strncmp(p + 1, "input", 5)) val = input;
            else if (e && n == 6 && !strncmp(p + 1, "system", 6)) val = system;
            else if (e && n == 5 && !strncmp(p + 1, "round", 5)) val = "1";
            if (!val) {
                snprintf(bad, 64, "%.40s", p);
                return -2;
            }
            if (an_strbuf_put(b, val, strlen(val))) return -1;
            p = e + 1;
        } else if (*p == '}') {
            snprintf(bad, 64, "a single '}'");
            return -2;
        } else {
            if (an_strbuf_put(b, p, 1)) return -1;
            p++;
        }
    }
    return an_strbuf_put(b, "", 0);
}

/* XTuner's literal strings are not formatted (SUFFIX, SEP); only SYSTEM and INSTRUCTION are. */
static int check_format(const char *fmt, const char *where, const char *field, an_error *err) {
    an_strbuf b = {0};
    char bad[64];
    int rc = format_into(&b, fmt, "", "", bad);
    free(b.v);
    if (rc == -2) return an_fail(err, "%s: %s: bad placeholder %s (use {input}, {system}, {round}, {{ or }})", where,
                                 field, bad);
    if (rc) return an_fail(err, "%s: out of memory", where);
    return 0;
}

char *an_template_render_input(const an_template *t, const char *prompt, const char *system, an_error *err) {
    an_strbuf b = {0};
    char bad[64];
    int rc = 0;
    if (system && *system && t->system && *t->system) rc = format_into(&b, t->system, "", system, bad);
    if (!rc) rc = format_into(&b, t->instruction, prompt ? prompt : "", "", bad);
    if (rc) {
        free(b.v);
        if (rc == -2) an_fail(err, "template %s: bad placeholder %s", t->name, bad);
        else an_fail(err, "template %s: out of memory", t->name);
        return NULL;
    }
    return b.v;
}

char *an_template_render_output(const an_template *t, const char *negative, an_error *err) {
    an_strbuf b = {0};
    const char *n = negative ? negative : "";
    if (an_strbuf_put(&b, n, strlen(n)) || an_strbuf_put(&b, t->suffix ? t->suffix : "", t->suffix ? strlen(t->suffix) : 0)) {
        free(b.v);
        an_fail(err, "template %s: out of memory", t->name);
        return NULL;
    }
    return b.v;
}

/* ---------- JSON ---------- */

static int key_is(const char *key, const char *name) {
    for (; *key && *name; key++, name++)
        if (toupper((unsigned char)*key) != *name) return 0;
    return *key == *name;
}

int an_template_from_json(const cJSON *obj, const char *where, an_template *out, an_error *err) {
    memset(out, 0, sizeof *out);
    if (!cJSON_IsObject(obj)) return an_fail(err, "%s: a template must be a JSON object", where);
    const cJSON *base = NULL, *it;
    cJSON_ArrayForEach(it, obj) if (key_is(it->string, "BASE")) base = it;
    if (base) {
        if (!cJSON_IsString(base)) return an_fail(err, "%s: base must be the name of a built-in template", where);
        if (an_template_builtin(base->valuestring, out, err)) return an_fail_prefix(err, "%s", where);
    } else {
        memset(out, 0, sizeof *out);
        if (set_str(&out->name, "custom") || set_str(&out->system, "") || set_str(&out->instruction, "") ||
            set_str(&out->suffix, "") || set_str(&out->sep, ""))
            goto oom;
    }
    int have_instruction = base != NULL;
    cJSON_ArrayForEach(it, obj) {
        const char *k = it->string;
        char **field = NULL;
        if (key_is(k, "BASE")) continue;
        if (key_is(k, "NAME")) field = &out->name;
        else if (key_is(k, "SYSTEM")) field = &out->system;
        else if (key_is(k, "INSTRUCTION")) field = &out->instruction, have_instruction = 1;
        else if (key_is(k, "SUFFIX")) field = &out->suffix;
        else if (key_is(k, "SEP")) field = &out->sep;
        if (field) {
            if (!cJSON_IsString(it) && !cJSON_IsNull(it)) {
                an_template_free(out);
                return an_fail(err, "%s: %s must be a string", where, k);
            }
            if (set_str(field, cJSON_IsString(it) ? it->valuestring : "")) goto oom;
        } else if (key_is(k, "SUFFIX_AS_EOS")) {
            if (!cJSON_IsBool(it)) {
                an_template_free(out);
                return an_fail(err, "%s: %s must be true or false", where, k);
            }
            out->suffix_as_eos = cJSON_IsTrue(it);
        } else if (key_is(k, "STOP_WORDS")) {
            for (size_t i = 0; i < out->n_stop_words; i++) free(out->stop_words[i]);
            out->n_stop_words = 0;
            if (!cJSON_IsArray(it)) {
                an_template_free(out);
                return an_fail(err, "%s: %s must be a list of strings", where, k);
            }
            const cJSON *w;
            cJSON_ArrayForEach(w, it) {
                if (!cJSON_IsString(w) || !*w->valuestring) {
                    an_template_free(out);
                    return an_fail(err, "%s: %s must hold non-empty strings", where, k);
                }
                if (add_stop(out, w->valuestring)) goto oom;
            }
        } else {
            an_template_free(out);
            return an_fail(err,
                           "%s: unknown template field \"%s\" (SYSTEM, INSTRUCTION, SUFFIX, SUFFIX_AS_EOS, SEP, "
                           "STOP_WORDS, name, base)",
                           where, k);
        }
    }
    if (!have_instruction) {
        an_template_free(out);
        return an_fail(err, "%s: the template has no INSTRUCTION", where);
    }
    if (!strstr(out->instruction, "{input}")) {
        an_template_free(out);
        return an_fail(err, "%s: INSTRUCTION has no {input} placeholder", where);
    }
    if (check_format(out->instruction, where, "INSTRUCTION", err) || check_format(out->system, where, "SYSTEM", err)) {
        an_template_free(out);
        return -1;
    }
    return 0;
oom:
    an_template_free(out);
    return an_fail(err, "%s: out of memory", where);
}

/* ---------- encoding ---------- */

static int encode_str(const an_encoder *enc, const char *s, an_ids *out, an_error *err) {
    return enc->encode(enc->ctx, s, strlen(s), out, err);
}

int an_template_encode_input(const an_template *t, const an_encoder *enc, const char *prompt, const char *system,
                             an_ids *out, an_error *err) {
    char *input = an_template_render_input(t, prompt, system, err);
    if (!input) return -1;
    int rc = 0;
    if (enc->bos >= 0 && an_ids_push(out, enc->bos)) rc = an_fail(err, "template: out of memory");
    if (!rc) rc = encode_str(enc, input, out, err);
    free(input);
    return rc;
}

int an_template_stop_ids(const an_template *t, const an_encoder *enc, an_ids *out, an_error *err) {
    if (enc->eos >= 0 && an_ids_push(out, enc->eos)) return an_fail(err, "template: out of memory");
    for (size_t i = 0; i < t->n_stop_words; i++) {
        int32_t id = enc->token_id ? enc->token_id(enc->ctx, t->stop_words[i]) : -1;
        if (id < 0) {
            /* a stop word the tokenizer writes as one token counts too */
            an_ids tmp = {0};
            if (encode_str(enc, t->stop_words[i], &tmp, err)) {
                an_ids_free(&tmp);
                return -1;
            }
            if (tmp.n == 1) id = tmp.v[0];
            an_ids_free(&tmp);
        }
        if (id < 0) continue;
        int seen = 0;
        for (size_t k = 0; k < out->n; k++) seen |= out->v[k] == id;
        if (!seen && an_ids_push(out, id)) return an_fail(err, "template: out of memory");
    }
    return 0;
}

static int push_masked(an_ids *ids, an_ids *labels, const int32_t *v, size_t n, int trained) {
    for (size_t i = 0; i < n; i++)
        if (an_ids_push(ids, v[i]) || an_ids_push(labels, trained ? v[i] : AN_IGNORE_INDEX)) return -1;
    return 0;
}

int an_template_encode_sample(const an_template *t, const an_encoder *enc, const char *prompt, const char *negative,
                              const char *system, size_t max_len, an_ids *out_ids, an_ids *out_labels,
                              an_error *err) {
    out_ids->n = 0;
    out_labels->n = 0;
    an_ids part = {0};
    char *output = NULL;
    int rc = -1;
    if (enc->bos >= 0 && push_masked(out_ids, out_labels, &enc->bos, 1, 0)) goto oom;
    if (an_template_encode_input(t, enc, prompt, system, &part, err)) goto done;
    /* encode_input put BOS first; it is already in out_ids */
    size_t skip = enc->bos >= 0 ? 1 : 0;
    if (push_masked(out_ids, out_labels, part.v + skip, part.n - skip, 0)) goto oom;
    part.n = 0;
    if (!(output = an_template_render_output(t, negative, err))) goto done;
    if (encode_str(enc, output, &part, err)) goto done;
    if (push_masked(out_ids, out_labels, part.v, part.n, 1)) goto oom;
    if (!t->suffix_as_eos && enc->eos >= 0 && push_masked(out_ids, out_labels, &enc->eos, 1, 1)) goto oom;
    if (t->sep && *t->sep) {
        part.n = 0;
        if (encode_str(enc, t->sep, &part, err)) goto done;
        if (push_masked(out_ids, out_labels, part.v, part.n, 0)) goto oom;
    }
    if (max_len && out_ids->n > max_len) {
        out_ids->n = max_len;
        out_labels->n = max_len;
    }
    rc = 0;
    goto done;
oom:
    an_fail(err, "template: out of memory");
done:
    free(output);
    an_ids_free(&part);
    return rc;
}

uint64_t an_template_hash(const an_template *t) {
    an_hasher h;
    an_hasher_init(&h);
    const char *fields[] = {t->system, t->instruction, t->suffix, t->sep};
    for (size_t i = 0; i < 4; i++) an_hasher_str(&h, fields[i] ? fields[i] : "");
    an_hasher_u64(&h, (uint64_t)t->suffix_as_eos);
    an_hasher_u64(&h, t->n_stop_words);
    for (size_t i = 0; i < t->n_stop_words; i++) an_hasher_str(&h, t->stop_words[i]);
    return an_hasher_final(&h);
}
