/* step.js and aspect512.js, and the pieces of JavaScript semantics they depend on. */
#include "data/prompts/tags.h"

#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/strbuf.h"

#include "data/prompts/prompt_syntax.h"

/* ---------- JavaScript whitespace, trim, numbers ---------- */

/* Length of the JS WhiteSpace/LineTerminator character at s, or 0. */
static size_t js_space_len(const unsigned char *s) {
    if (*s == ' ' || (*s >= 0x09 && *s <= 0x0d)) return 1;
    if (s[0] == 0xc2 && s[1] == 0xa0) return 2;             /* U+00A0 */
    if (s[0] == 0xef && s[1] == 0xbb && s[2] == 0xbf) return 3; /* U+FEFF */
    if (s[0] == 0xe1 && s[1] == 0x9a && s[2] == 0x80) return 3; /* U+1680 */
    if (s[0] == 0xe3 && s[1] == 0x80 && s[2] == 0x80) return 3; /* U+3000 */
    if (s[0] == 0xe2 && s[1] == 0x80 && (s[2] <= 0x8a || s[2] == 0xa8 || s[2] == 0xa9 || s[2] == 0xaf))
        return 3; /* U+2000..200A, 2028, 2029, 202F */
    if (s[0] == 0xe2 && s[1] == 0x81 && s[2] == 0x9f) return 3; /* U+205F */
    return 0;
}

static const char *js_skip_space(const char *s) {
    size_t k;
    while (*s && (k = js_space_len((const unsigned char *)s)) > 0) s += k;
    return s;
}

/* End of the trimmed text [s, s+n). */
static size_t js_trim_end(const char *s, size_t n) {
    size_t end = n;
    while (end > 0) {
        /* walk back over one whitespace character of 1 to 3 bytes */
        size_t k = 0;
        for (size_t len = 1; len <= 3 && len <= end; len++)
            if (js_space_len((const unsigned char *)s + end - len) == len) {
                k = len;
                break;
            }
        if (!k) break;
        end -= k;
    }
    return end;
}

/* Length of the StrDecimalLiteral prefix of s (sign, Infinity, digits, fraction, exponent), 0 if none. */
static size_t decimal_prefix(const char *s) {
    size_t i = 0;
    if (s[i] == '+' || s[i] == '-') i++;
    if (!strncmp(s + i, "Infinity", 8)) return i + 8;
    size_t d = 0;
    while (isdigit((unsigned char)s[i])) i++, d++;
    if (s[i] == '.') {
        size_t j = i + 1, f = 0;
        while (isdigit((unsigned char)s[j])) j++, f++;
        if (d + f == 0) return 0;
        i = j;
    } else if (d == 0) {
        return 0;
    }
    if (s[i] == 'e' || s[i] == 'E') {
        size_t j = i + 1;
        if (s[j] == '+' || s[j] == '-') j++;
        if (isdigit((unsigned char)s[j])) {
            while (isdigit((unsigned char)s[j])) j++;
            i = j;
        }
    }
    return i;
}

static double decimal_value(const char *s, size_t n) {
    char *tmp = malloc(n + 1);
    if (!tmp) return NAN;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    const char *p = tmp + (tmp[0] == '+' || tmp[0] == '-');
    double v = !strcmp(p, "Infinity") ? INFINITY : strtod(p, NULL);
    if (tmp[0] == '-') v = -v;
    free(tmp);
    return v;
}

double an_js_parse_float(const char *s) {
    if (!s) return NAN;
    s = js_skip_space(s);
    size_t n = decimal_prefix(s);
    return n ? decimal_value(s, n) : NAN;
}

double an_js_number(const char *s) {
    if (!s) return NAN;
    s = js_skip_space(s);
    size_t n = js_trim_end(s, strlen(s));
    if (n == 0) return 0;
    if (n > 2 && s[0] == '0' && strchr("xXoObB", s[1])) {
        int base = strchr("xX", s[1]) ? 16 : strchr("oO", s[1]) ? 8 : 2;
        double v = 0;
        for (size_t i = 2; i < n; i++) {
            int c = tolower((unsigned char)s[i]);
            int d = isdigit(c) ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : 99;
            if (d >= base) return NAN;
            v = v * base + d;
        }
        return v;
    }
    return decimal_prefix(s) == n ? decimal_value(s, n) : NAN;
}

/* ---------- localeCompare ---------- */

/* Primary weights of ASCII in the CLDR root collation (checked against node's localeCompare:
 * tests/ref/step_ref.js). 0 = ignorable. */
static const char root_order[] = "\t\n\v\f\r _-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$0123456789";

static uint32_t primary(uint32_t cp) {
    if (cp < 0x80) {
        if (isalpha((int)cp)) return 200 + (uint32_t)(tolower((int)cp) - 'a');
        const char *p = strchr(root_order, (int)cp);
        if (cp && p) return 1 + (uint32_t)(p - root_order);
        return 0;
    }
    return 1000 + cp;
}

static uint32_t next_cp(const unsigned char **s) {
    const unsigned char *p = *s;
    uint32_t c = *p++;
    int extra = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;
    if (extra) c &= 0x3f >> extra;
    for (int i = 0; i < extra && (*p & 0xc0) == 0x80; i++) c = (c << 6) | (*p++ & 0x3f);
    *s = p;
    return c;
}

/* Compares at one level: level 1 primaries, level 3 case (lower first). */
static int compare_level(const char *a, const char *b, int level) {
    const unsigned char *p = (const unsigned char *)a, *q = (const unsigned char *)b;
    for (;;) {
        uint32_t ca = 0, cb = 0, wa = 0, wb = 0;
        while (*p && !(wa = primary(ca = next_cp(&p)))) {
        }
        while (*q && !(wb = primary(cb = next_cp(&q)))) {
        }
        if (!wa || !wb) return wa ? 1 : wb ? -1 : 0;
        if (level == 3) {
            wa = ca < 0x80 && isupper((int)ca);
            wb = cb < 0x80 && isupper((int)cb);
        }
        if (wa != wb) return wa < wb ? -1 : 1;
    }
}

int an_js_locale_compare(const char *a, const char *b) {
    int c = compare_level(a, b, 1);
    return c ? c : compare_level(a, b, 3);
}

/* ---------- step.js ---------- */

/* The tag list, with a hash set of its strings so deduplicating a long list piped in stays linear. */
typedef struct strlist {
    char **v;
    size_t n, cap;
    size_t *slots; /* index + 1 into v, 0 = empty; n_slots a power of two */
    size_t n_slots;
} strlist;

static void strlist_free(strlist *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    free(l->slots);
}

static uint64_t str_hash(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int rehash(strlist *l, size_t n_slots) {
    size_t *slots = calloc(n_slots, sizeof *slots);
    if (!slots) return -1;
    for (size_t i = 0; i < l->n; i++) {
        size_t k = (size_t)str_hash(l->v[i]) & (n_slots - 1);
        while (slots[k]) k = (k + 1) & (n_slots - 1);
        slots[k] = i + 1;
    }
    free(l->slots);
    l->slots = slots;
    l->n_slots = n_slots;
    return 0;
}

/* Takes s; keeps the first of equal strings, as indexOf-based filtering does. */
static int strlist_add_unique(strlist *l, char *s) {
    if (2 * (l->n + 1) > l->n_slots && rehash(l, l->n_slots ? 2 * l->n_slots : 64)) {
        free(s);
        return -1;
    }
    size_t k = (size_t)str_hash(s) & (l->n_slots - 1);
    for (; l->slots[k]; k = (k + 1) & (l->n_slots - 1))
        if (!strcmp(l->v[l->slots[k] - 1], s)) {
            free(s);
            return 0;
        }
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            free(s);
            return -1;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = s;
    l->slots[k] = l->n;
    return 0;
}

static char *trim_copy(const char *s, size_t n) {
    const char *b = js_skip_space(s);
    /* js_skip_space stops at NUL, not at n: clamp */
    if ((size_t)(b - s) > n) b = s + n;
    size_t len = js_trim_end(b, n - (size_t)(b - s));
    char *out = malloc(len + 1);
    if (!out) return NULL;
    memcpy(out, b, len);
    out[len] = 0;
    return out;
}

/* String.prototype.replace(pattern, "") with a string pattern: the first match only. */
static void remove_first(char *s, const char *pat) {
    char *p = strstr(s, pat);
    if (p) memmove(p, p + strlen(pat), strlen(p + strlen(pat)) + 1);
}

static int add_pieces(strlist *tags, const char *text) {
    const char *s = text;
    for (;;) {
        const char *sep = strstr(s, ", ");
        size_t n = sep ? (size_t)(sep - s) : strlen(s);
        char *t = trim_copy(s, n);
        if (!t) return -1;
        remove_first(t, "\r\n");
        remove_first(t, "\n");
        remove_first(t, ",");
        char *t2 = trim_copy(t, strlen(t));
        free(t);
        if (!t2 || strlist_add_unique(tags, t2)) return -1;
        if (!sep) return 0;
        s = sep + 2;
    }
}


/* Writes one bracketed unit: open x k, body, close x k, or (body:num). */
static int put_unit(an_strbuf *b, const char *body, char open, char close, long k, const char *num) {
    if (num) return an_strbuf_str(b, "(") || an_strbuf_str(b, body) || an_strbuf_str(b, ":") || an_strbuf_str(b, num) || an_strbuf_str(b, ")");
    return an_strbuf_rep(b, open, k) || an_strbuf_str(b, body) || an_strbuf_rep(b, close, k);
}

static void merge_pass(char **a, char **tmp, size_t lo, size_t mid, size_t hi) {
    size_t i = lo, j = mid, k = lo;
    while (i < mid && j < hi) tmp[k++] = an_js_locale_compare(a[j], a[i]) < 0 ? a[j++] : a[i++];
    while (i < mid) tmp[k++] = a[i++];
    while (j < hi) tmp[k++] = a[j++];
    memcpy(a + lo, tmp + lo, (hi - lo) * sizeof *a);
}

/* Bottom-up merge sort: stable, O(n log n) for long tag lists piped in. */
static int stable_sort(char **a, size_t n) {
    if (n < 2) return 0;
    char **tmp = malloc(n * sizeof *tmp);
    if (!tmp) return -1;
    for (size_t w = 1; w < n; w *= 2)
        for (size_t lo = 0; lo + w < n; lo += 2 * w) merge_pass(a, tmp, lo, lo + w, lo + 2 * w < n ? lo + 2 * w : n);
    free(tmp);
    return 0;
}

char *an_tags_step(const char *const *inputs, size_t n_inputs, const char *ratio_text, int each, size_t *n_tags,
                   an_error *err) {
    double step = an_js_parse_float(ratio_text);
    if (isnan(step)) step = 1.0;
    if (!isfinite(step)) {
        an_fail(err, "tags step: ratio %s is not finite", ratio_text);
        return NULL;
    }
    strlist tags = {0};
    an_strbuf out = {0};
    for (size_t i = 0; i < n_inputs; i++)
        if (add_pieces(&tags, inputs[i])) goto oom;
    /* V8's sort is stable: ties under localeCompare (text that differs only in ignorable control
     * characters) keep their order */
    if (stable_sort(tags.v, tags.n)) goto oom;
    char open = 0, close = 0, num[400];
    const char *numtext = NULL;
    long k = 0;
    if (step < 0) {
        open = '[', close = ']';
        k = (long)floor(fabs(step) > 1e9 ? 1e9 : fabs(step));
    } else if (step > 1 && step == floor(step)) {
        open = '{', close = '}';
        k = step > 1e9 ? 1000000000L : (long)step;
    } else {
        an_prompt_plain_number(step, num, sizeof num);
        numtext = num;
    }
    if (k > 10000) {
        strlist_free(&tags);
        an_fail(err, "tags step: %ld brackets per tag is too many (at most 10000)", k);
        return NULL;
    }
    if (an_strbuf_str(&out, "")) goto oom;
    if (each) {
        for (size_t i = 0; i < tags.n; i++)
            if ((i && an_strbuf_str(&out, ", ")) || put_unit(&out, tags.v[i], open, close, k, numtext)) goto oom;
    } else {
        an_strbuf joined = {0};
        int bad = an_strbuf_str(&joined, "");
        for (size_t i = 0; i < tags.n && !bad; i++) bad = (i && an_strbuf_str(&joined, ", ")) || an_strbuf_str(&joined, tags.v[i]);
        bad = bad || put_unit(&out, joined.v, open, close, k, numtext);
        free(joined.v);
        if (bad) goto oom;
    }
    if (n_tags) *n_tags = tags.n;
    strlist_free(&tags);
    return out.v;
oom:
    strlist_free(&tags);
    free(out.v);
    an_fail(err, "tags step: out of memory");
    return NULL;
}

/* ---------- aspect512.js ---------- */

int an_tags_aspect(const char *w_text, const char *h_text, int snap, long *width, long *height, an_error *err) {
    /* argv[i] || 1: a missing or empty argument is 1 */
    double a1 = (w_text && *w_text) ? an_js_number(w_text) : 1;
    double a2 = (h_text && *h_text) ? an_js_number(h_text) : 1;
    double ar = a1 / a2;
    const double area = 512.0 * 512.0;
    double x = sqrt(4 * ar * area) / (2 * ar);
    double w = floor(ar * x), h = floor(x);
    if (!isfinite(w) || !isfinite(h) || !(ar > 0))
        return an_fail(err, "tags aspect: %s / %s is not a positive aspect ratio", w_text ? w_text : "1",
                       h_text ? h_text : "1");
    if (snap < 0) return an_fail(err, "tags aspect: snap %d is negative", snap);
    if (snap > 0) {
        w = floor(w / snap) * snap;
        h = floor(h / snap) * snap;
    }
    if (w > 1e15 || h > 1e15) return an_fail(err, "tags aspect: %s / %s gives a size beyond range", w_text, h_text);
    *width = (long)w;
    *height = (long)h;
    return 0;
}
