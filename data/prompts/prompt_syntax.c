/* Prompt attention syntax: a scanner that mirrors A1111's parse_prompt_attention (token order,
 * bracket stacks, multiply-to-the-end for unclosed brackets, BREAK splitting), and a tag layer on top. */
#include "data/prompts/prompt_syntax.h"

#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/strbuf.h"

static char *dup_n(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* ---------- pieces: the unmerged output of the scanner ---------- */

enum { PIECE_TEXT, PIECE_BREAK, PIECE_NETWORK };

typedef struct piece {
    int kind;
    char *text; /* TEXT: the text; NETWORK: the network name */
    double weight;
    char *net_type, *net_args;
} piece;

typedef struct pieces {
    piece *v;
    size_t n, cap;
} pieces;

static void pieces_free(pieces *p) {
    for (size_t i = 0; i < p->n; i++) {
        free(p->v[i].text);
        free(p->v[i].net_type);
        free(p->v[i].net_args);
    }
    free(p->v);
    memset(p, 0, sizeof *p);
}

static piece *pieces_push(pieces *p, int kind, const char *text, size_t len, double w) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 16;
        piece *v = realloc(p->v, cap * sizeof *v);
        if (!v) return NULL;
        p->v = v;
        p->cap = cap;
    }
    piece *x = &p->v[p->n];
    memset(x, 0, sizeof *x);
    x->kind = kind;
    x->weight = w;
    x->text = dup_n(text, len);
    if (!x->text) return NULL;
    p->n++;
    return x;
}

typedef struct stack {
    size_t *v;
    size_t n, cap;
} stack;

static int stack_push(stack *s, size_t x) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 8;
        size_t *v = realloc(s->v, cap * sizeof *v);
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
    return 0;
}

static void multiply_range(pieces *p, size_t start, double m) {
    for (size_t i = start; i < p->n; i++)
        if (p->v[i].kind != PIECE_NETWORK) p->v[i].weight *= m;
}

/* Python's \w on text: ASCII letters, digits, underscore; bytes of multi-byte UTF-8 count as letters. */
static int is_word(unsigned char c) { return isalnum(c) || c == '_' || c >= 0x80; }
static int is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

/* re.split(r"\s*\bBREAK\b\s*", text): BREAK pieces carry weight -1 as in A1111. */
static int push_text_split_break(pieces *p, const char *s, size_t n) {
    size_t cur = 0;
    for (;;) {
        size_t found = n, mstart = n, mend = n;
        for (size_t i = cur; i + 5 <= n; i++) {
            if (memcmp(s + i, "BREAK", 5) != 0) continue;
            if (i > 0 && is_word((unsigned char)s[i - 1])) continue;
            if (i + 5 < n && is_word((unsigned char)s[i + 5])) continue;
            found = i;
            break;
        }
        if (found == n) break;
        mstart = found;
        while (mstart > cur && is_space((unsigned char)s[mstart - 1])) mstart--;
        mend = found + 5;
        while (mend < n && is_space((unsigned char)s[mend])) mend++;
        if (!pieces_push(p, PIECE_TEXT, s + cur, mstart - cur, 1.0)) return -1;
        if (!pieces_push(p, PIECE_BREAK, "BREAK", 5, -1.0)) return -1;
        cur = mend;
    }
    return pieces_push(p, PIECE_TEXT, s + cur, n - cur, 1.0) ? 0 : -1;
}

/* <(\w+):([^>]+)> at s[i]; returns the length of the match or 0. */
static size_t network_at(const char *s, size_t i, size_t *type_len) {
    if (s[i] != '<') return 0;
    size_t j = i + 1;
    while (s[j] && is_word((unsigned char)s[j])) j++;
    if (j == i + 1 || s[j] != ':') return 0;
    *type_len = j - i - 1;
    size_t k = j + 1;
    while (s[k] && s[k] != '>') k++;
    if (k == j + 1 || s[k] != '>') return 0;
    return k + 1 - i;
}

static int push_network(pieces *p, const char *s, size_t len, size_t type_len) {
    /* A1111 reads <type:name:multiplier[:...]>; a missing or unreadable multiplier means 1. */
    const char *args = s + 1 + type_len + 1;
    size_t args_len = len - type_len - 3;
    const char *colon = memchr(args, ':', args_len);
    size_t name_len = colon ? (size_t)(colon - args) : args_len;
    double w = 1.0;
    if (colon) {
        size_t rest = args_len - name_len - 1;
        const char *c2 = memchr(colon + 1, ':', rest);
        size_t wl = c2 ? (size_t)(c2 - colon - 1) : rest;
        char tmp[64];
        if (wl > 0 && wl < sizeof tmp) {
            memcpy(tmp, colon + 1, wl);
            tmp[wl] = 0;
            char *end;
            double v = strtod(tmp, &end);
            while (is_space((unsigned char)*end)) end++;
            if (end != tmp && *end == 0) w = v;
        }
    }
    piece *x = pieces_push(p, PIECE_NETWORK, args, name_len, w);
    if (!x) return -1;
    x->net_type = dup_n(s + 1, type_len);
    x->net_args = dup_n(args, args_len);
    return x->net_type && x->net_args ? 0 : -1;
}

/* `:\s*([+-]?[.\d]+)\s*\)` at s[i]: returns the match length and the number's span, or 0. */
static size_t weight_at(const char *s, size_t i, size_t *num_start, size_t *num_end) {
    size_t j = i + 1;
    while (is_space((unsigned char)s[j])) j++;
    *num_start = j;
    if (s[j] == '+' || s[j] == '-') j++;
    size_t d = j;
    while (s[j] == '.' || isdigit((unsigned char)s[j])) j++;
    if (j == d) return 0;
    *num_end = j;
    while (is_space((unsigned char)s[j])) j++;
    if (s[j] != ')') return 0;
    return j + 1 - i;
}

typedef struct syntax {
    char open, close; /* the up-weight brackets */
    double up, down;
    const char *escapable;
} syntax;

static syntax syntax_of(an_prompt_mode mode) {
    /* "\\<" is a literal '<' that starts no extra network (A1111 drops the backslash alike) */
    if (mode == AN_PROMPT_NOVELAI) return (syntax){'{', '}', 1.05, 1 / 1.05, "{}[]()<\\"};
    return (syntax){'(', ')', 1.1, 1 / 1.1, "()[]<\\"};
}

static int scan(const char *s, an_prompt_mode mode, int networks, pieces *out) {
    syntax sy = syntax_of(mode);
    stack round = {0}, square = {0};
    int rc = -1;
    size_t i = 0, n = strlen(s);
    while (i < n) {
        char c = s[i];
        size_t tl = 0, ml = 0, ns = 0, ne = 0;
        if (c == '\\') {
            if (i + 1 < n && strchr(sy.escapable, s[i + 1])) {
                if (!pieces_push(out, PIECE_TEXT, s + i + 1, 1, 1.0)) goto done;
                i += 2;
            } else { /* A1111 turns a lone backslash into an empty piece */
                if (!pieces_push(out, PIECE_TEXT, "", 0, 1.0)) goto done;
                i++;
            }
        } else if (c == sy.open) {
            if (stack_push(&round, out->n)) goto done;
            i++;
        } else if (c == '[') {
            if (stack_push(&square, out->n)) goto done;
            i++;
        } else if (c == ':' && mode == AN_PROMPT_A1111 && (ml = weight_at(s, i, &ns, &ne)) > 0) {
            char num[64];
            size_t nl = ne - ns;
            char *end = NULL;
            double w = 0;
            int ok = nl < sizeof num;
            if (ok) {
                memcpy(num, s + ns, nl);
                num[nl] = 0;
                w = strtod(num, &end);
                ok = end == num + nl;
            }
            if (ok && round.n) {
                multiply_range(out, round.v[--round.n], w);
                i += ml;
            } else if (ok) { /* no open bracket: the whole ":1.2)" is text, as in A1111 */
                if (push_text_split_break(out, s + i, ml)) goto done;
                i += ml;
            } else { /* "1.2.3" is no number (A1111 raises here): keep the colon as text */
                if (!pieces_push(out, PIECE_TEXT, ":", 1, 1.0)) goto done;
                i++;
            }
        } else if (c == sy.close && round.n) {
            multiply_range(out, round.v[--round.n], sy.up);
            i++;
        } else if (c == ']' && square.n) {
            multiply_range(out, square.v[--square.n], sy.down);
            i++;
        } else if (c == sy.close || c == ']' || c == ':') {
            if (!pieces_push(out, PIECE_TEXT, s + i, 1, 1.0)) goto done;
            i++;
        } else if (networks && c == '<' && (ml = network_at(s, i, &tl)) > 0) {
            if (push_network(out, s + i, ml, tl)) goto done;
            i += ml;
        } else {
            size_t j = i + 1;
            while (j < n) {
                char d = s[j];
                if (d == '\\' || d == sy.open || d == sy.close || d == '[' || d == ']' || d == ':') break;
                if (networks && d == '<' && network_at(s, j, &tl)) break;
                j++;
            }
            if (push_text_split_break(out, s + i, j - i)) goto done;
            i = j;
        }
    }
    for (size_t k = 0; k < round.n; k++) multiply_range(out, round.v[k], sy.up);
    for (size_t k = 0; k < square.n; k++) multiply_range(out, square.v[k], sy.down);
    rc = 0;
done:
    free(round.v);
    free(square.v);
    return rc;
}

/* ---------- layer 1: A1111 chunks ---------- */

void an_attn_chunks_free(an_attn_chunks *c) {
    for (size_t i = 0; i < c->n; i++) free(c->v[i].text);
    free(c->v);
    memset(c, 0, sizeof *c);
}

int an_prompt_attention(const char *text, an_prompt_mode mode, an_attn_chunks *out, an_error *err) {
    pieces p = {0};
    memset(out, 0, sizeof *out);
    if (scan(text ? text : "", mode, 0, &p)) goto oom;
    if (p.n == 0 && !pieces_push(&p, PIECE_TEXT, "", 0, 1.0)) goto oom;
    /* merge runs of exactly equal weights, as A1111 does after parsing */
    out->v = calloc(p.n, sizeof *out->v);
    if (!out->v) goto oom;
    out->cap = p.n;
    for (size_t i = 0; i < p.n; i++) {
        if (out->n && out->v[out->n - 1].weight == p.v[i].weight) {
            an_attn_chunk *c = &out->v[out->n - 1];
            size_t a = strlen(c->text), b = strlen(p.v[i].text);
            char *t = realloc(c->text, a + b + 1);
            if (!t) goto oom;
            memcpy(t + a, p.v[i].text, b + 1);
            c->text = t;
        } else {
            out->v[out->n].text = p.v[i].text;
            out->v[out->n].weight = p.v[i].weight;
            p.v[i].text = NULL;
            out->n++;
        }
    }
    pieces_free(&p);
    return 0;
oom:
    pieces_free(&p);
    an_attn_chunks_free(out);
    return an_fail(err, "prompt: out of memory");
}

/* ---------- layer 2: items ---------- */

/* Negative embeddings that show up in shared prompts (civitai, A1111 infotext). Lowercase. */
static const char *const known_embeddings[] = {
    "easynegative", "easynegativev2", "badhandv4", "bad-hands-5", "bad_prompt", "bad_prompt_version2",
    "bad-artist", "bad-artist-anime", "bad-image-v2-39000", "ng_deepnegative_v1_75t", "ng_deepnegative_v1_4t",
    "verybadimagenegative_v1.3", "negative_hand-neg", "negative_hand", "fastnegativev2", "fastnegative",
    "baddream", "unrealisticdream", "bad_pictures", "bad-picture-chill-75v", "deepnegative",
    "cyberrealistic_negative", "epicnegative", "negativexl_d", "unaestheticxl_v13", "unaestheticxlv31",
    "ac_neg1", "ac_neg2", "badv5", "bad_quality", "realisticvision-negative-embedding", "boring_e621",
    "verybadimagenegative_v1.2-6400", "easynegative_v2", "aid28", "bad-hands-4", "bad_hands_5",
};

static int ieq(const char *a, const char *b) {
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return 0;
    return *a == *b;
}

int an_prompt_is_known_embedding(const char *name) {
    for (size_t i = 0; i < sizeof known_embeddings / sizeof known_embeddings[0]; i++)
        if (ieq(name, known_embeddings[i])) return 1;
    return 0;
}

void an_prompt_free(an_prompt *p) {
    for (size_t i = 0; i < p->n; i++) {
        free(p->v[i].text);
        free(p->v[i].net_type);
        free(p->v[i].net_args);
    }
    free(p->v);
    memset(p, 0, sizeof *p);
}

static an_prompt_item *items_push(an_prompt *p) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 16;
        an_prompt_item *v = realloc(p->v, cap * sizeof *v);
        if (!v) return NULL;
        p->v = v;
        p->cap = cap;
    }
    an_prompt_item *x = &p->v[p->n++];
    memset(x, 0, sizeof *x);
    return x;
}

enum { PEND_NEW, PEND_CONT };

typedef struct builder {
    an_prompt *out;
    an_strbuf cur;
    double cur_w;
    int cur_join;
    int pending; /* PEND_NEW after a comma or BREAK, PEND_CONT after a weight change or network */
    int ws;      /* whitespace seen since the last character kept */
} builder;

static int join_now(builder *b) {
    if (b->pending == PEND_NEW || b->out->n == 0) return AN_JOIN_NEW;
    return b->ws ? AN_JOIN_SPACE : AN_JOIN_TIGHT;
}

static int flush(builder *b) {
    if (b->cur.n == 0) return 0;
    an_prompt_item *x = items_push(b->out);
    if (!x) return -1;
    x->text = b->cur.v;
    x->weight = b->cur_w;
    x->kind = AN_ITEM_TAG;
    x->join = (an_prompt_join)b->cur_join;
    memset(&b->cur, 0, sizeof b->cur);
    b->pending = PEND_CONT;
    return 0;
}

static int feed_text(builder *b, const char *s, double w) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == ',') {
            if (flush(b)) return -1;
            b->pending = PEND_NEW;
            b->ws = 0;
        } else if (is_space(c)) {
            b->ws = 1;
        } else {
            if (b->cur.n && b->cur_w != w) {
                if (flush(b)) return -1;
            }
            if (b->cur.n == 0) {
                b->cur_join = join_now(b);
                b->cur_w = w;
            } else if (b->ws && an_strbuf_putc(&b->cur, ' ')) {
                return -1;
            }
            b->ws = 0;
            if (an_strbuf_putc(&b->cur, (char)c)) return -1;
        }
    }
    return 0;
}

static const char *strip_prefix_ci(const char *s, const char *prefix) {
    size_t n = strlen(prefix);
    for (size_t i = 0; i < n; i++)
        if (tolower((unsigned char)s[i]) != prefix[i]) return NULL;
    return s + n;
}

static int in_list_ci(const char *name, const char *const *list) {
    for (; list && *list; list++)
        if (ieq(name, *list)) return 1;
    return 0;
}

/* A whole tag (not joined to neighbours) that names an embedding becomes an EMBEDDING item. */
static int mark_embeddings(an_prompt *p, const char *const *extra) {
    for (size_t i = 0; i < p->n; i++) {
        an_prompt_item *x = &p->v[i];
        if (x->kind != AN_ITEM_TAG || x->join != AN_JOIN_NEW) continue;
        if (i + 1 < p->n && p->v[i + 1].join != AN_JOIN_NEW) continue;
        const char *name = strip_prefix_ci(x->text, "embedding:");
        if (name) {
            while (*name == ' ') name++;
            size_t len = strlen(name);
            static const char *const exts[] = {".safetensors", ".pt", ".bin"};
            for (size_t e = 0; e < 3; e++) {
                size_t el = strlen(exts[e]);
                if (len > el && ieq(name + len - el, exts[e])) {
                    len -= el;
                    break;
                }
            }
            if (len == 0) continue;
            char *t = dup_n(name, len);
            if (!t) return -1;
            free(x->text);
            x->text = t;
            x->kind = AN_ITEM_EMBEDDING;
        } else if (an_prompt_is_known_embedding(x->text) || in_list_ci(x->text, extra)) {
            x->kind = AN_ITEM_EMBEDDING;
        }
    }
    return 0;
}

int an_prompt_parse(const char *text, an_prompt_mode mode, const char *const *extra_embeddings, an_prompt *out,
                    an_error *err) {
    pieces p = {0};
    builder b = {0};
    memset(out, 0, sizeof *out);
    b.out = out;
    if (scan(text ? text : "", mode, 1, &p)) goto oom;
    for (size_t i = 0; i < p.n; i++) {
        piece *x = &p.v[i];
        if (x->kind == PIECE_TEXT) {
            if (feed_text(&b, x->text, x->weight)) goto oom;
            continue;
        }
        if (flush(&b)) goto oom;
        int join = x->kind == PIECE_BREAK ? AN_JOIN_NEW : join_now(&b);
        an_prompt_item *it = items_push(out);
        if (!it) goto oom;
        it->join = (an_prompt_join)join;
        if (x->kind == PIECE_BREAK) {
            it->kind = AN_ITEM_BREAK;
            it->weight = 1.0;
            it->text = x->text;
            x->text = NULL;
            b.pending = PEND_NEW;
        } else {
            it->kind = AN_ITEM_NETWORK;
            it->weight = x->weight;
            it->text = x->text;
            it->net_type = x->net_type;
            it->net_args = x->net_args;
            x->text = x->net_type = x->net_args = NULL;
            b.pending = PEND_CONT;
        }
        b.ws = 0;
    }
    if (flush(&b)) goto oom;
    if (mark_embeddings(out, extra_embeddings)) goto oom;
    pieces_free(&p);
    return 0;
oom:
    free(b.cur.v);
    pieces_free(&p);
    an_prompt_free(out);
    return an_fail(err, "prompt: out of memory");
}

/* ---------- numbers ---------- */

/* JavaScript's Number#toString digits (the shortest that read back to the same double), written
 * without an exponent: 1e-7 -> "0.0000001". */
void an_prompt_plain_number(double v, char *buf, size_t bufsz) {
    if (isnan(v)) {
        snprintf(buf, bufsz, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, bufsz, v < 0 ? "-Infinity" : "Infinity");
        return;
    }
    if (v == 0) {
        snprintf(buf, bufsz, "0");
        return;
    }
    char e[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, v);
        if (strtod(e, NULL) == v) break;
    }
    /* e is "[-]d.ddde[+-]xx": collect digits and the exponent */
    char digits[24];
    int nd = 0, neg = 0;
    const char *q = e;
    if (*q == '-') {
        neg = 1;
        q++;
    }
    for (; *q && *q != 'e'; q++)
        if (isdigit((unsigned char)*q)) digits[nd++] = *q;
    int exp10 = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    char tmp[400];
    size_t t = 0;
    if (neg) tmp[t++] = '-';
    if (exp10 < 0) {
        tmp[t++] = '0';
        tmp[t++] = '.';
        for (int k = 0; k < -exp10 - 1 && t < sizeof tmp - 30; k++) tmp[t++] = '0';
        for (int k = 0; k < nd; k++) tmp[t++] = digits[k];
    } else {
        for (int k = 0; k <= exp10 || k < nd; k++) {
            if (k == exp10 + 1) tmp[t++] = '.';
            tmp[t++] = k < nd ? digits[k] : '0';
            if (t >= sizeof tmp - 2) break;
        }
    }
    tmp[t] = 0;
    snprintf(buf, bufsz, "%s", tmp);
}

void an_prompt_format_weight(double w, char *buf, size_t bufsz) {
    /* A1111's attention editor: parseFloat(w.toPrecision(12)), and ".0" after a whole number. */
    char p12[40];
    snprintf(p12, sizeof p12, "%.12g", w);
    double r = strtod(p12, NULL);
    an_prompt_plain_number(r, buf, bufsz);
    if (isfinite(r) && r == floor(r) && strlen(buf) + 3 <= bufsz) strcat(buf, ".0");
}

/* ---------- writing ---------- */

/* Escapes the syntax characters; '<' too where it could start an extra network ("<word:"). */
static int put_escaped(an_strbuf *b, const char *s, const char *special) {
    for (; *s; s++) {
        int esc = strchr(special, *s) || (*s == '<' && is_word((unsigned char)s[1]));
        if (esc && an_strbuf_putc(b, '\\')) return -1;
        if (an_strbuf_putc(b, *s)) return -1;
    }
    return 0;
}

static int novelai_power(double w) {
    if (!(w > 0)) return -30;
    double n = round(log(w) / log(1.05));
    if (n > 30) n = 30;
    if (n < -30) n = -30;
    return (int)n;
}

/* The weight as it will be written: A1111 number text ("" for 1), or NovelAI bracket count. */
static void weight_level(double w, an_prompt_mode mode, char *buf, size_t n) {
    if (mode == AN_PROMPT_NOVELAI) {
        int k = novelai_power(w);
        snprintf(buf, n, "%d", w == 1.0 ? 0 : k);
        if (k == 0 || w == 1.0) buf[0] = 0;
        return;
    }
    an_prompt_format_weight(w, buf, n);
    if (w == 1.0 || !strcmp(buf, "1.0")) buf[0] = 0;
}

static int is_text_item(const an_prompt_item *x) { return x->kind == AN_ITEM_TAG || x->kind == AN_ITEM_EMBEDDING; }

static const char *join_text(an_prompt_join j) { return j == AN_JOIN_NEW ? ", " : j == AN_JOIN_SPACE ? " " : ""; }

char *an_prompt_write(const an_prompt *p, an_prompt_mode mode, an_error *err) {
    an_strbuf b = {0};
    if (an_strbuf_str(&b, "")) goto oom;
    const char *special = mode == AN_PROMPT_NOVELAI ? "{}[]\\" : "()[]\\";
    for (size_t i = 0; i < p->n;) {
        const an_prompt_item *x = &p->v[i];
        if (i > 0) {
            const char *sep = join_text(x->join);
            if (x->kind == AN_ITEM_BREAK || p->v[i - 1].kind == AN_ITEM_BREAK) sep = " ";
            if (an_strbuf_str(&b, sep)) goto oom;
        }
        if (x->kind == AN_ITEM_BREAK) {
            if (an_strbuf_str(&b, "BREAK")) goto oom;
            i++;
            continue;
        }
        if (x->kind == AN_ITEM_NETWORK) {
            if (an_strbuf_putc(&b, '<') || an_strbuf_str(&b, x->net_type ? x->net_type : "lora") || an_strbuf_putc(&b, ':') ||
                an_strbuf_str(&b, x->net_args ? x->net_args : x->text) || an_strbuf_putc(&b, '>'))
                goto oom;
            i++;
            continue;
        }
        /* pieces of one tag that will be written with the same weight go in one bracket, so the text
         * reads back as the same items */
        char level[48], next[48];
        weight_level(x->weight, mode, level, sizeof level);
        size_t end = i + 1;
        while (end < p->n && is_text_item(&p->v[end]) && p->v[end].join != AN_JOIN_NEW) {
            weight_level(p->v[end].weight, mode, next, sizeof next);
            if (strcmp(level, next)) break;
            end++;
        }
        int k = mode == AN_PROMPT_NOVELAI && level[0] ? atoi(level) : 0;
        if (level[0] && mode == AN_PROMPT_NOVELAI && an_strbuf_rep(&b, k > 0 ? '{' : '[', abs(k))) goto oom;
        if (level[0] && mode == AN_PROMPT_A1111 && an_strbuf_putc(&b, '(')) goto oom;
        for (size_t j = i; j < end; j++)
            if ((j > i && an_strbuf_str(&b, join_text(p->v[j].join))) || put_escaped(&b, p->v[j].text, special)) goto oom;
        if (level[0] && mode == AN_PROMPT_NOVELAI && an_strbuf_rep(&b, k > 0 ? '}' : ']', abs(k))) goto oom;
        if (level[0] && mode == AN_PROMPT_A1111 && (an_strbuf_putc(&b, ':') || an_strbuf_str(&b, level) || an_strbuf_putc(&b, ')'))) goto oom;
        i = end;
    }
    return b.v;
oom:
    free(b.v);
    an_fail(err, "prompt: out of memory");
    return NULL;
}

/* ---------- normalised tags ---------- */

void an_tags_free(an_tags *t) {
    for (size_t i = 0; i < t->n; i++) free(t->v[i]);
    free(t->v);
    memset(t, 0, sizeof *t);
}

static int tags_add_unique(an_tags *t, char *s) {
    for (size_t i = 0; i < t->n; i++)
        if (!strcmp(t->v[i], s)) {
            free(s);
            return 0;
        }
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 16;
        char **v = realloc(t->v, cap * sizeof *v);
        if (!v) {
            free(s);
            return -1;
        }
        t->v = v;
        t->cap = cap;
    }
    t->v[t->n++] = s;
    return 0;
}

static int finish_tag(an_tags *t, an_strbuf *cur, const an_tag_opts *o) {
    if (!cur->n) return 0;
    an_strbuf clean = {0};
    int ws = 0;
    if (an_strbuf_str(&clean, "")) return -1;
    for (size_t i = 0; i < cur->n; i++) {
        unsigned char c = (unsigned char)cur->v[i];
        if (o && o->underscores_to_spaces && c == '_') c = ' ';
        if (is_space(c)) {
            ws = clean.n > 0;
            continue;
        }
        if (ws && an_strbuf_putc(&clean, ' ')) goto oom;
        ws = 0;
        if (an_strbuf_putc(&clean, (char)tolower(c))) goto oom;
    }
    cur->n = 0;
    if (clean.n == 0) {
        free(clean.v);
        return 0;
    }
    return tags_add_unique(t, clean.v);
oom:
    free(clean.v);
    return -1;
}

int an_prompt_tags(const char *text, an_prompt_mode mode, const an_tag_opts *opts, an_tags *out, an_error *err) {
    an_prompt p;
    memset(out, 0, sizeof *out);
    if (an_prompt_parse(text, mode, NULL, &p, err)) return -1;
    an_strbuf cur = {0};
    for (size_t i = 0; i < p.n; i++) {
        const an_prompt_item *x = &p.v[i];
        if (x->join == AN_JOIN_NEW || x->kind == AN_ITEM_BREAK || x->kind == AN_ITEM_NETWORK) {
            if (finish_tag(out, &cur, opts)) goto oom;
        }
        if (x->kind == AN_ITEM_BREAK) continue;
        if (x->kind == AN_ITEM_NETWORK) {
            if (!opts || !opts->keep_networks) continue;
            if (an_strbuf_str(&cur, x->net_type) || an_strbuf_putc(&cur, ':') || an_strbuf_str(&cur, x->text)) goto oom;
            if (finish_tag(out, &cur, opts)) goto oom;
            continue;
        }
        if (x->join == AN_JOIN_SPACE && cur.n && an_strbuf_putc(&cur, ' ')) goto oom;
        if (an_strbuf_str(&cur, x->text)) goto oom;
    }
    if (finish_tag(out, &cur, opts)) goto oom;
    free(cur.v);
    an_prompt_free(&p);
    return 0;
oom:
    free(cur.v);
    an_prompt_free(&p);
    an_tags_free(out);
    return an_fail(err, "prompt: out of memory");
}
