/* an_pairs_clean: the row rules in the order docs/data.md gives them. */
#include "data/pairs/clean.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "data/prompts/prompt_syntax.h"
#include "data/readers/reader.h"
#include "data/pairs/stats_strmap.h"

/* Infotext cut, then normalisation; *cut / *changed tell which rule touched the text. */
static char *clean_side(const char *s, int *cut, int *changed) {
    size_t n = an_clean_infotext_start(s);
    *cut = n != strlen(s);
    char *head = strndup(s, n);
    if (!head) return NULL;
    char *norm = an_clean_normalise(head);
    if (norm) *changed = strcmp(norm, head) != 0;
    free(head);
    return norm;
}

/* Whether word (lower case) occurs in tag as whole words. */
static int has_word(const char *tag, const char *word) {
    size_t wl = strlen(word);
    if (!wl) return 0;
    for (const char *p = strstr(tag, word); p; p = strstr(p + 1, word)) {
        int left = p == tag || !isalnum((unsigned char)p[-1]);
        int right = !isalnum((unsigned char)p[wl]);
        if (left && right) return 1;
    }
    return 0;
}

/* Whether a tag of text (as the prompt-syntax parser normalises it) contains a listed word. */
static int listed(const char *text, const an_clean_opts *o) {
    an_tags t = {0};
    if (an_prompt_tags(text, AN_PROMPT_A1111, NULL, &t, NULL)) return -1;
    int hit = 0;
    for (size_t i = 0; i < t.n && !hit; i++)
        for (size_t j = 0; j < o->n_drop_words && !hit; j++) hit = has_word(t.v[i], o->drop_words[j]);
    an_tags_free(&t);
    return hit;
}

static int out_of_limits(const char *s, const an_clean_opts *o, an_clean_report *r) {
    size_t w = an_count_words(s);
    if (o->min_words && w < o->min_words) return r->too_few_words++, 1;
    if (o->max_words && w > o->max_words) return r->too_many_words++, 1;
    if (o->max_chars && an_count_chars(s) > o->max_chars) return r->too_many_chars++, 1;
    return 0;
}

/* "prompt\x1fnegative", lower-cased when fold (CLIP lower-cases text, so case is not a difference). */
static char *pair_key(const char *p, const char *n, int fold, size_t *len) {
    size_t a = strlen(p), b = strlen(n);
    char *k = malloc(a + b + 2);
    if (!k) return NULL;
    memcpy(k, p, a);
    k[a] = 0x1f;
    memcpy(k + a + 1, n, b + 1);
    if (fold)
        for (char *c = k; *c; c++) *c = (char)tolower((unsigned char)*c);
    *len = a + b + 1;
    return k;
}

/* 1 when the pair's key was seen before, 0 when new, -1 out of memory. */
static int seen(an_strmap *m, const char *p, const char *n, int fold) {
    size_t len = 0;
    char *key = pair_key(p, n, fold, &len);
    if (!key) return -1;
    size_t *v;
    int r = an_strmap_get(m, key, len, &v);
    free(key);
    return r < 0 ? -1 : r == 0;
}

int an_pairs_clean(const an_pairs *in, an_pairs *out, const an_clean_opts *opts, an_clean_report *rep,
                   an_error *err) {
    static const an_clean_opts none = {0};
    if (!opts) opts = &none;
    memset(rep, 0, sizeof *rep);
    rep->in = in->n;
    an_strmap raw = {0}, norm = {0};
    int rc = 0;
    for (size_t i = 0; i < in->n && !rc; i++) {
        const an_pair *e = &in->v[i];
        int cut_p = 0, cut_n = 0, ch_p = 0, ch_n = 0;
        char *p = clean_side(e->prompt, &cut_p, &ch_p), *n = clean_side(e->negative, &cut_n, &ch_n);
        if (!p || !n) {
            rc = an_fail(err, "data clean: out of memory");
        } else {
            rep->infotext += cut_p || cut_n;
            rep->normalised += ch_p || ch_n;
            int drop = 0, d;
            if (!*p || !*n) drop = 1, rep->empty++;
            if (!drop) drop = out_of_limits(p, opts, rep) || out_of_limits(n, opts, rep);
            if (!drop && opts->n_drop_words) {
                int lp = listed(p, opts), ln = lp ? 0 : listed(n, opts);
                if (lp < 0 || ln < 0) rc = an_fail(err, "data clean: out of memory");
                else if (lp || ln) drop = 1, rep->word_list++;
            }
            if (!drop && (d = seen(&raw, e->prompt, e->negative, 0)) != 0) {
                if (d < 0) rc = an_fail(err, "data clean: out of memory");
                drop = 1, rep->exact_dup++;
            }
            if (!drop && (d = seen(&norm, p, n, 1)) != 0) {
                if (d < 0) rc = an_fail(err, "data clean: out of memory");
                drop = 1, rep->normalised_dup++;
            }
            if (!drop && !rc && an_pairs_add(out, p, n, e->source)) rc = an_fail(err, "data clean: out of memory");
            if (!drop && !rc) rep->out++;
        }
        free(p);
        free(n);
    }
    an_strmap_free(&raw);
    an_strmap_free(&norm);
    return rc;
}
