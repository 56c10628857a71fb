/* Loading a model with its tokenizer and template (see session.h). */
#include "infer/session.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "model/io/gguf.h"
#include "model/lora.h"

/* autoneg.json beside the weights: {"template": "name"} or {"template": {...}}. 1 found, 0 none. */
static int template_from_folder(an_session *s, const char *model, an_error *err) {
    char path[4096];
    if (!an_is_dir(model) || an_path_join(path, sizeof path, model, "autoneg.json") || !an_file_exists(path)) return 0;
    char *text = an_read_file(path, NULL, err);
    if (!text) return -1;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root) return an_fail(err, "%s: not valid JSON", path);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "template");
    int rc = 0;
    if (!t) {
        rc = 0;
    } else if (cJSON_IsString(t)) {
        rc = an_template_builtin(t->valuestring, &s->tpl, err) ? an_fail_prefix(err, "%s: template", path) : 1;
    } else if (cJSON_IsObject(t)) {
        char where[4200];
        snprintf(where, sizeof where, "%s: template", path);
        rc = an_template_from_json(t, where, &s->tpl, err) ? -1 : 1;
    } else {
        rc = an_fail(err, "%s: template must be a built-in name or an object", path);
    }
    cJSON_Delete(root);
    return rc;
}

/* A .gguf model's own chat template (tokenizer.chat_template) as the default template. 1 found, 0 the
 * file has none (or is not a GGUF), -1 one that is not recognised. */
static int template_from_gguf(an_session *s, const char *model, an_error *err) {
    size_t n = strlen(model);
    if (n < 5 || strcmp(model + n - 5, ".gguf")) return 0;
    an_gguf g;
    if (an_gguf_open(&g, model, err)) return -1;
    const char *jinja;
    uint64_t len;
    int rc = 0;
    if (an_gguf_find_key(&g, "tokenizer.chat_template") &&
        an_gguf_get_str(&g, "tokenizer.chat_template", &jinja, &len, err) == 0) {
        char *j = strndup(jinja, (size_t)len);
        rc = !j ? an_fail(err, "%s: out of memory", model)
             : an_template_from_chat_template(j, &s->tpl, err) ? an_fail_prefix(err, "%s: tokenizer.chat_template (--template NAME overrides it)", model)
                                                                : 1;
        free(j);
    }
    an_gguf_close(&g);
    return rc;
}

int an_session_open(an_session *s, const an_ops *ops, const char *model, const char *tokenizer, const char *adapter,
                    const char *template_name, an_error *err) {
    memset(s, 0, sizeof *s);
    int is_dir = an_is_dir(model);
    if (!is_dir && !an_file_exists(model)) return an_fail(err, "%s: no such model folder or file", model);
    /* A GGUF file carries its tokenizer (tokenizer.ggml.*), so like a folder it is its own default
     * tokenizer path; only a llama2.c .bin has none. */
    size_t len = strlen(model);
    int is_gguf = !is_dir && len >= 5 && strcmp(model + len - 5, ".gguf") == 0;
    if (!is_dir && !is_gguf && !tokenizer)
        return an_fail(err, "%s: a llama2.c model needs --tokenizer (its tokenizer.bin, e.g. tok512.bin)", model);
    s->model = an_model_load(model, ops, err);
    if (!s->model) goto fail;
    if (adapter && an_lora_load(s->model, adapter, err)) goto fail;
    s->tok = an_tokenizer_load(tokenizer ? tokenizer : model, err);
    if (!s->tok) goto fail;
    int tv = an_tokenizer_vocab_size(s->tok), mv = s->model->cfg.vocab_size;
    if (tv > mv) {
        an_fail(err, "%s: the tokenizer has %d tokens but the model only %d: they do not belong together",
                tokenizer ? tokenizer : model, tv, mv);
        goto fail;
    }
    int found = 0;
    if (template_name) {
        if (an_template_builtin(template_name, &s->tpl, err)) goto fail;
        found = 1;
    } else {
        found = template_from_folder(s, model, err);
        if (found < 0) goto fail;
        if (!found && (found = template_from_gguf(s, model, err)) < 0) goto fail;
        if (!found && an_template_builtin("infotext", &s->tpl, err)) goto fail;
    }
    s->has_tpl = 1;
    /* the index a retrieval run stored beside what it trained: the adapter, or the whole model */
    const char *rdir = adapter && an_retrieval_in_dir(adapter) ? adapter : an_retrieval_in_dir(model) ? model : NULL;
    if (rdir && !(s->retr = an_retrieval_load(rdir, err))) goto fail;
    s->enc = an_encoder_of(s->tok);
    if (an_template_stop_ids(&s->tpl, &s->enc, &s->stop_ids, err)) goto fail;
    return 0;
fail:
    an_session_close(s);
    return -1;
}

void an_session_close(an_session *s) {
    an_model_free(s->model);
    an_tokenizer_free(s->tok);
    if (s->has_tpl) an_template_free(&s->tpl);
    an_ids_free(&s->stop_ids);
    an_retrieval_free(s->retr);
    memset(s, 0, sizeof *s);
}

int an_session_encode(const an_session *s, const char *text, int raw, an_ids *out, an_error *err) {
    out->n = 0;
    if (!raw) return an_template_encode_input(&s->tpl, &s->enc, text, NULL, out, err);
    int32_t bos = an_tokenizer_bos(s->tok);
    size_t len = strlen(text);
    if ((an_tokenizer_adds_bos(s->tok) || len == 0) && bos >= 0 && an_ids_push(out, bos))
        return an_fail(err, "out of memory");
    if (len && an_tokenizer_encode(s->tok, text, len, out, err)) return -1;
    if (out->n == 0) return an_fail(err, "generate: an empty prompt needs a BOS token, and the tokenizer has none");
    return 0;
}

/* ---- text in, text out ---- */

typedef struct text_buf {
    char *s;
    size_t n, cap;
} text_buf;

static int buf_add(text_buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) return -1;
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
    return 0;
}

typedef struct stream {
    const an_session *s;
    an_detok *dt;   /* one per sequence */
    text_buf *buf;
    size_t *cut;    /* where a stop word starts, or (size_t)-1 */
    int oom;
} stream;

static int on_token(void *ctx, int seq, int32_t id) {
    stream *st = ctx;
    char piece[256];
    int k = an_detok_feed(&st->dt[seq], id, piece, sizeof piece);
    if (k > 0 && buf_add(&st->buf[seq], piece, (size_t)k)) st->oom = 1;
    const an_template *t = &st->s->tpl;
    for (size_t w = 0; w < t->n_stop_words && st->buf[seq].s; w++) {
        const char *hit = strstr(st->buf[seq].s, t->stop_words[w]);
        if (hit && *t->stop_words[w]) {
            st->cut[seq] = (size_t)(hit - st->buf[seq].s);
            return 1;
        }
    }
    return 0;
}

static char *trimmed(const char *s, size_t n) {
    while (n && (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')) s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t' || s[n - 1] == '\r')) n--;
    char *out = malloc(n + 1);
    if (out) {
        memcpy(out, s, n);
        out[n] = 0;
    }
    return out;
}

void an_text_results_free(an_text_result *r, int n) {
    for (int i = 0; r && i < n; i++) {
        free(r[i].text);
        r[i].text = NULL;
    }
}

int an_session_generate(an_session *s, const char *const *texts, int n, int raw, const an_gen_opts *o,
                        an_text_result *out, an_error *err) {
    if (n <= 0) return an_fail(err, "generate: no prompts");
    int J = n * o->n_samples, rc = -1;
    an_ids *enc = calloc((size_t)n, sizeof *enc);
    an_gen_prompt *pr = calloc((size_t)n, sizeof *pr);
    an_gen_output *go = calloc((size_t)J, sizeof *go);
    stream st = {s, calloc((size_t)J, sizeof(an_detok)), calloc((size_t)J, sizeof(text_buf)),
                 malloc((size_t)J * sizeof(size_t)), 0};
    if (!enc || !pr || !go || !st.dt || !st.buf || !st.cut) {
        an_fail(err, "generate: out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        if (an_session_encode(s, texts[i], raw, &enc[i], err)) {
            an_fail_prefix(err, "prompt %d", i + 1);
            goto done;
        }
        pr[i] = (an_gen_prompt){enc[i].v, (int)enc[i].n};
    }
    for (int j = 0; j < J; j++) {
        an_detok_init(&st.dt[j], s->tok);
        st.cut[j] = (size_t)-1;
    }
    an_gen_opts oo = *o;
    oo.stop_ids = s->stop_ids.v;
    oo.n_stop_ids = (int)s->stop_ids.n;
    oo.on_token = on_token;
    oo.ctx = &st;
    if (an_generate(s->model, s->model->lora, pr, n, an_tokenizer_bos(s->tok), &oo, go, err)) goto done;
    for (int j = 0; j < J && !st.oom; j++) {
        char tail[64];
        int k = an_detok_flush(&st.dt[j], tail, sizeof tail);
        if (k > 0 && st.cut[j] == (size_t)-1 && buf_add(&st.buf[j], tail, (size_t)k)) st.oom = 1;
        size_t len = st.cut[j] != (size_t)-1 ? st.cut[j] : st.buf[j].n;
        const char *txt = st.buf[j].s ? st.buf[j].s : "";
        /* raw: the continuation exactly as decoded; with the template: one negative prompt, trimmed */
        out[j].text = raw ? strndup(txt, len) : trimmed(txt, len);
        if (!out[j].text) st.oom = 1;
        out[j].n_tokens = go[j].n;
        out[j].prompt_tokens = go[j].prompt_tokens;
        out[j].truncated = go[j].truncated;
        out[j].stop = go[j].stop;
    }
    if (st.oom) {
        an_text_results_free(out, J);
        an_fail(err, "generate: out of memory");
        goto done;
    }
    rc = 0;
done:
    for (int i = 0; enc && i < n; i++) an_ids_free(&enc[i]);
    for (int j = 0; st.buf && j < J; j++) free(st.buf[j].s);
    an_gen_outputs_free(go, go ? J : 0);
    free(enc);
    free(pr);
    free(go);
    free(st.dt);
    free(st.buf);
    free(st.cut);
    return rc;
}
