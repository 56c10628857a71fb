/* Text rules of data clean: infotext tails, normalisation, counting, simple tags, word lists. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "data/pairs/clean.h"
#include "data/readers/reader.h"

/* Keys of A1111 / Forge / ComfyUI infotext as they appear scraped into civitai negatives. */
static const char *const info_keys[] = {
    "Steps", "Sampler", "CFG scale", "Seed", "Size", "Model hash", "Model", "Clip skip", "ENSD",
    "Denoising strength", "Version", "Mask blur", "Face restoration", "Eta", "VAE", "VAE hash",
    "Lora hashes", "TI hashes", "Schedule type", "Wildcard prompt", "Wildcard negative prompt",
    "Noise multiplier", "Batch size", "Batch pos", "Variation seed", "Variation seed strength",
    "Seed resize from", "Unprompted Seed", "RNG", "Token merging ratio", "NGMS", "Pad conds",
    "Postprocessing", "Postprocess upscaler", "Postprocess upscale by", "Conditional mask weight",
    "Sampler parameters", "Discard penultimate sigma", "Negative Template", "Template"};
/* Families of keys that carry a suffix ("Hires upscaler", "ADetailer model", ...). */
static const char *const info_prefixes[] = {"Hires ", "ADetailer ", "Ultimate SD upscale ", "ControlNet",
                                            "SD upscale ", "Dynamic thresholding ", "Unprompted "};

/* Length of "Key: " at s when Key is an infotext key, else 0. */
static size_t info_key_at(const char *s) {
    const char *colon = NULL;
    for (size_t i = 0; i < 48 && s[i]; i++) {
        if (s[i] == ':') {
            colon = s + i;
            break;
        }
        if (!isalnum((unsigned char)s[i]) && s[i] != ' ' && s[i] != '_' && s[i] != '-' && s[i] != '.') return 0;
    }
    if (!colon || colon[1] != ' ') return 0;
    size_t klen = (size_t)(colon - s);
    for (size_t k = 0; k < sizeof info_keys / sizeof *info_keys; k++)
        if (strlen(info_keys[k]) == klen && !strncmp(s, info_keys[k], klen)) return klen + 2;
    for (size_t k = 0; k < sizeof info_prefixes / sizeof *info_prefixes; k++) {
        size_t pl = strlen(info_prefixes[k]);
        if (klen > pl && !strncmp(s, info_prefixes[k], pl)) return klen + 2;
    }
    return 0;
}

/* Where the value that starts at v ends: at ", " or the end of the text (a quoted value may hold
 * commas). Returns the offset of the following key, or NULL when there is none. */
static const char *next_item(const char *v) {
    if (*v == '"') {
        const char *q = strchr(v + 1, '"');
        if (!q) return NULL;
        v = q + 1;
    }
    const char *c = strstr(v, ", ");
    return c ? c + 2 : NULL;
}

static int is_space_or_comma(char c) { return isspace((unsigned char)c) || c == ','; }

size_t an_clean_infotext_start(const char *s) {
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++) {
        /* A1111 infotext pasted whole: "prompt\nNegative prompt: negative\nSteps: ..." */
        if ((i == 0 || is_space_or_comma(s[i - 1])) && !strncmp(s + i, "Negative prompt: ", 17)) {
            while (i > 0 && is_space_or_comma(s[i - 1])) i--;
            return i;
        }
        int line_start = i == 0 || s[i - 1] == '\n';
        int after_comma = i >= 2 && s[i - 1] == ' ' && s[i - 2] == ',';
        if (!line_start && !after_comma) continue;
        size_t k = info_key_at(s + i);
        if (!k) continue;
        /* "Steps: 20" is A1111's own opening; anything else needs a second key right after it, so that a
         * tag such as "Size: small" stays. */
        int sure = !strncmp(s + i, "Steps: ", 7) && isdigit((unsigned char)s[i + 7]);
        const char *nx = next_item(s + i + k);
        if (!sure && !(nx && info_key_at(nx))) continue;
        /* cut there, with the separators before it */
        while (i > 0 && (isspace((unsigned char)s[i - 1]) || s[i - 1] == ',')) i--;
        return i;
    }
    return n;
}

static int is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

char *an_clean_normalise(const char *s) {
    an_strbuf b = {0};
    if (an_strbuf_reserve(&b, strlen(s) + 8)) return NULL;
    const char *p = s;
    int need_sep = 0; /* an item was written, a ", " goes before the next one */
    for (;;) {
        /* one comma item: trimmed, inner whitespace runs collapsed to one space */
        while (is_ws((unsigned char)*p)) p++;
        int wrote = 0, pending_space = 0;
        for (; *p && *p != ','; p++) {
            if (!strncmp(p, "\xEF\xBC\x8C", 3)) break; /* full-width comma U+FF0C */
            if (is_ws((unsigned char)*p)) {
                pending_space = 1;
                continue;
            }
            if (!wrote && need_sep && an_strbuf_put(&b, ", ", 2)) goto oom;
            if (wrote && pending_space && an_strbuf_putc(&b, ' ')) goto oom;
            if (an_strbuf_putc(&b, *p)) goto oom;
            wrote = 1;
            pending_space = 0;
        }
        if (wrote) need_sep = 1;
        if (!*p) break;
        p += *p == ',' ? 1 : 3;
    }
    return b.v;
oom:
    an_strbuf_free(&b);
    return NULL;
}

size_t an_count_words(const char *s) {
    size_t n = 0;
    int in = 0;
    for (; *s; s++) {
        int sep = is_ws((unsigned char)*s) || *s == ',';
        if (!sep && !in) n++;
        in = !sep;
    }
    return n;
}

size_t an_count_chars(const char *s) {
    size_t n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

size_t an_simple_tag(const char *s, char *out, const char **next) {
    const char *e = strchr(s, ',');
    *next = e ? e + 1 : NULL;
    if (!e) e = s + strlen(s);
    const char *a = s;
    int bracket = 0;
    for (;;) {
        while (a < e && is_ws((unsigned char)*a)) a++;
        while (e > a && is_ws((unsigned char)e[-1])) e--;
        if (a < e && strchr("([{", *a)) {
            a++, bracket = 1;
            continue;
        }
        if (e > a && strchr(")]}", e[-1])) {
            e--, bracket = 1;
            continue;
        }
        break;
    }
    if (bracket) {
        /* "(x:1.2)" -> "x": a weight is ":" and a number at the end of a bracketed item */
        const char *c = e;
        while (c > a && (isdigit((unsigned char)c[-1]) || c[-1] == '.' || c[-1] == '-')) c--;
        if (c < e && c > a && c[-1] == ':') {
            e = c - 1;
            while (e > a && is_ws((unsigned char)e[-1])) e--;
            while (e > a && strchr(")]}", e[-1])) e--;
        }
    }
    size_t n = 0;
    int space = 0;
    for (const char *p = a; p < e; p++) {
        if (is_ws((unsigned char)*p)) {
            space = n > 0;
            continue;
        }
        if (space) out[n++] = ' ';
        space = 0;
        out[n++] = (char)tolower((unsigned char)*p);
    }
    out[n] = 0;
    return n;
}

void an_word_list_free(char **words, size_t n) {
    for (size_t i = 0; i < n; i++) free(words[i]);
    free(words);
}

int an_word_list_read(const char *path, char ***words, size_t *n, an_error *err) {
    *words = NULL;
    *n = 0;
    size_t size = 0, cap = 0;
    char *text = an_read_file(path, &size, err);
    if (!text) return -1;
    if (an_utf8_check(text, size) != size) {
        free(text);
        return an_fail(err, "%s: not valid UTF-8", path);
    }
    for (char *line = text, *nl; line; line = nl) {
        nl = strchr(line, '\n');
        if (nl) *nl++ = 0;
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char tag[1024];
        const char *rest;
        if (strlen(line) >= sizeof tag) {
            an_word_list_free(*words, *n);
            free(text);
            return an_fail(err, "%s: entry longer than %zu bytes", path, sizeof tag - 1);
        }
        size_t len = an_simple_tag(line, tag, &rest);
        (void)rest;
        if (!len) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **w = realloc(*words, cap * sizeof *w);
            if (!w) goto oom;
            *words = w;
        }
        if (!((*words)[*n] = strdup(tag))) goto oom;
        (*n)++;
    }
    free(text);
    return 0;
oom:
    an_word_list_free(*words, *n);
    *words = NULL;
    *n = 0;
    free(text);
    return an_fail(err, "%s: out of memory", path);
}
