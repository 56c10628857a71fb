/* The tokenizer interface: loading by path, special tokens, encoding by segments, decoding. */
#include "data/tokenizers/tokenizer.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "data/tokenizers/tokenizer_impl.h"
#include "data/tokenizers/unicode.h"

int an_tokenizer_add_special(an_tokenizer *t, const char *text, size_t len, int32_t id, int normalized, int always) {
    if (len == 0) return 0;
    for (int i = 0; i < t->n_special; i++) {
        if (t->special[i].len == len && memcmp(t->special[i].text, text, len) == 0) {
            t->special[i].id = id; /* a later file names the same text: its id wins */
            t->special[i].normalized = normalized;
            t->special[i].always |= always;
            return 0;
        }
    }
    an_special *s = realloc(t->special, (size_t)(t->n_special + 1) * sizeof *s);
    if (!s) return -1;
    t->special = s;
    char *copy = malloc(len + 1);
    if (!copy) return -1;
    memcpy(copy, text, len);
    copy[len] = 0;
    s[t->n_special++] = (an_special){copy, len, id, normalized, 0, always};
    return 0;
}

static int cmp_special_len(const void *a, const void *b) {
    const an_special *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return memcmp(x->text, y->text, x->len);
}

/* Decoded bytes of each id: byte-level pieces map code points back to bytes, SentencePiece pieces
 * turn "▁" into a space and <0xXX> into its byte, control tokens decode to nothing. */
static int build_decode_table(an_tokenizer *t) {
    const an_vocab *v = &t->vocab;
    t->dec_off = malloc((size_t)v->n * sizeof *t->dec_off);
    t->dec_len = malloc((size_t)v->n * sizeof *t->dec_len);
    t->dec_arena = malloc(v->arena_len + 1); /* a decoded piece is never longer than its text */
    uint8_t *special = calloc((size_t)v->n + 1, 1);
    if (!t->dec_off || !t->dec_len || !t->dec_arena || !special) {
        free(special);
        return -1;
    }
    for (int i = 0; i < t->n_special; i++) special[t->special[i].id] = 1;
    uint32_t cp_to_byte[512];
    memset(cp_to_byte, 0xff, sizeof cp_to_byte);
    uint32_t b2c[256];
    an_bytelevel_table(b2c);
    for (int b = 0; b < 256; b++) cp_to_byte[b2c[b]] = (uint32_t)b;
    size_t pos = 0;
    size_t sp_len = t->space_text ? strlen(t->space_text) : 0;
    for (int id = 0; id < v->n; id++) {
        const char *s = an_vocab_text(v, id);
        size_t len = v->len[id];
        char *o = t->dec_arena + pos;
        size_t k = 0;
        int type = v->type[id];
        if (special[id] || type == AN_PIECE_ADDED) {
            memcpy(o, s, len);
            k = len;
        } else if (type == AN_PIECE_CONTROL) {
            k = 0;
        } else if (t->kind == AN_TOK_BYTELEVEL) {
            for (size_t i = 0; i < len;) {
                uint32_t cp;
                int l = an_utf8_decode((const unsigned char *)s + i, len - i, &cp);
                if (cp < 512 && cp_to_byte[cp] != 0xffffffffu)
                    o[k++] = (char)cp_to_byte[cp];
                else
                    memcpy(o + k, s + i, (size_t)l), k += (size_t)l;
                i += (size_t)l;
            }
        } else if (type == AN_PIECE_BYTE && an_parse_byte_piece(s, len) >= 0) {
            o[k++] = (char)an_parse_byte_piece(s, len);
        } else {
            for (size_t i = 0; i < len;) {
                if (sp_len && i + sp_len <= len && memcmp(s + i, t->space_text, sp_len) == 0) {
                    o[k++] = ' ';
                    i += sp_len;
                } else {
                    o[k++] = s[i++];
                }
            }
        }
        t->dec_off[id] = (uint32_t)pos;
        t->dec_len[id] = (uint32_t)k;
        pos += k;
    }
    free(special);
    return 0;
}

/* Collects the characters that some mergeable piece has right before a "▁" (InternLM2: "\t▁▁▁");
 * a word boundary after any other character can never be merged across. Returns 0 when there are
 * too many to keep, which turns word splitting off. */
static int find_glue_chars(an_tokenizer *t) {
    const an_vocab *v = &t->vocab;
    size_t sp = strlen(t->space_text);
    t->n_glue = 0;
    for (int id = 0; id < v->n; id++) {
        if (v->type[id] != AN_PIECE_NORMAL) continue;
        const char *s = an_vocab_text(v, id);
        size_t len = v->len[id];
        for (size_t i = 0, prev = 0, prev_len = 0; i < len;) {
            if (i + sp <= len && memcmp(s + i, t->space_text, sp) == 0) {
                if (prev_len && !(prev_len == sp && memcmp(s + prev, t->space_text, sp) == 0)) {
                    int known = 0;
                    for (int g = 0; g < t->n_glue && !known; g++)
                        known = t->glue_len[g] == prev_len && memcmp(t->glue[g], s + prev, prev_len) == 0;
                    if (!known) {
                        if (t->n_glue == AN_MAX_GLUE || prev_len > 4) return 0;
                        memcpy(t->glue[t->n_glue], s + prev, prev_len);
                        t->glue_len[t->n_glue++] = (uint8_t)prev_len;
                    }
                }
                prev = i, prev_len = sp, i += sp;
            } else {
                uint32_t cp;
                int l = an_utf8_decode((const unsigned char *)s + i, len - i, &cp);
                prev = i, prev_len = (size_t)l, i += (size_t)l;
            }
        }
    }
    return 1;
}

int an_tokenizer_finish(an_tokenizer *t, an_error *err) {
    if (t->n_special > 1) qsort(t->special, (size_t)t->n_special, sizeof *t->special, cmp_special_len);
    memset(t->special_first, 0, sizeof t->special_first);
    for (int i = 0; i < t->n_special; i++) {
        if (t->special[i].id < 0 || t->special[i].id >= t->vocab.n)
            return an_fail(err, "%s: special token %s has id %d outside the vocabulary (%d)", t->path,
                           AN_QUOTE(t->special[i].text), t->special[i].id, t->vocab.n);
        t->special[i].lead_space = t->special[i].normalized && t->prefix_mode == AN_PREFIX_PER_UNIT;
        t->special_first[(unsigned char)t->special[i].text[0]] = 1;
        if (t->special[i].lead_space) t->special_first[' '] = 1;
    }
    if (an_vocab_index(&t->vocab) || build_decode_table(t)) return an_fail(err, "%s: out of memory", t->path);
    if (t->kind == AN_TOK_SPM) t->split_at_space = find_glue_chars(t);
    return 0;
}

static int has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

/* The one *.model file in a folder (InternLM ships tokenizer_internlm2.model), or "" */
static void find_model_file(const char *dir, char *out, size_t outsz) {
    out[0] = 0;
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)))
        if (has_suffix(e->d_name, ".model") && !out[0]) an_path_join(out, outsz, dir, e->d_name);
    closedir(d);
}

static int load_dir(an_tokenizer *t, const char *dir, an_error *err) {
    char p[4096], q[4096];
    if (an_path_join(p, sizeof p, dir, "tokenizer.json") == 0 && an_file_exists(p)) {
        if (an_load_tokenizer_json(t, p, err)) return -1;
    } else if ((an_path_join(p, sizeof p, dir, "tokenizer.model") == 0 && an_file_exists(p)) ||
               (find_model_file(dir, p, sizeof p), p[0])) {
        if (an_load_sentencepiece(t, p, err)) return -1;
    } else if (an_path_join(p, sizeof p, dir, "vocab.json") == 0 && an_file_exists(p) &&
               an_path_join(q, sizeof q, dir, "merges.txt") == 0 && an_file_exists(q)) {
        if (an_load_vocab_merges(t, p, q, err)) return -1;
    } else if (an_path_join(p, sizeof p, dir, "encoder.json") == 0 && an_file_exists(p) &&
               an_path_join(q, sizeof q, dir, "vocab.bpe") == 0 && an_file_exists(q)) {
        if (an_load_vocab_merges(t, p, q, err)) return -1;
    } else if (an_path_join(p, sizeof p, dir, "tokenizer.bin") == 0 && an_file_exists(p)) {
        if (an_load_llama2c(t, p, err)) return -1;
    } else {
        return an_fail(err, "%s: no tokenizer files (tokenizer.json, *.model, vocab.json + merges.txt, "
                            "encoder.json + vocab.bpe or tokenizer.bin)", dir);
    }
    if (an_path_join(p, sizeof p, dir, "special_tokens_map.json") == 0 && an_file_exists(p))
        if (an_load_special_tokens_map(t, p, err)) return -1;
    if (an_path_join(p, sizeof p, dir, "tokenizer_config.json") == 0 && an_file_exists(p))
        if (an_load_tokenizer_config(t, p, err)) return -1;
    return 0;
}

an_tokenizer *an_tokenizer_load(const char *path, an_error *err) {
    an_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        an_fail(err, "%s: out of memory", path);
        return NULL;
    }
    snprintf(t->path, sizeof t->path, "%s", path);
    t->bos = t->eos = t->unk = -1;
    memset(t->byte_id, 0xff, sizeof t->byte_id);
    int rc;
    if (an_is_dir(path)) rc = load_dir(t, path, err);
    else if (!an_file_exists(path)) rc = an_fail(err, "%s: no such file or folder", path);
    else if (has_suffix(path, ".json")) rc = an_load_tokenizer_json(t, path, err);
    else if (has_suffix(path, ".model")) rc = an_load_sentencepiece(t, path, err);
    else if (has_suffix(path, ".gguf")) rc = an_load_gguf(t, path, err);
    else rc = an_load_llama2c(t, path, err);
    if (rc == 0) rc = an_tokenizer_finish(t, err);
    if (rc) {
        an_tokenizer_free(t);
        return NULL;
    }
    return t;
}

void an_tokenizer_free(an_tokenizer *t) {
    if (!t) return;
    an_vocab_free(&t->vocab);
    an_pairmap_free(&t->merges);
    for (int i = 0; i < t->n_special; i++) free(t->special[i].text);
    free(t->special);
    free(t->dec_arena);
    free(t->dec_off);
    free(t->dec_len);
    free(t);
}

int an_tokenizer_vocab_size(const an_tokenizer *t) { return t->vocab.n; }
int32_t an_tokenizer_bos(const an_tokenizer *t) { return t->bos; }
int32_t an_tokenizer_eos(const an_tokenizer *t) { return t->eos; }
int an_tokenizer_adds_bos(const an_tokenizer *t) { return t->add_bos && t->bos >= 0; }
int32_t an_tokenizer_template_bos(const an_tokenizer *t) { return t->no_template_bos ? -1 : t->bos; }

int32_t an_tokenizer_token_id(const an_tokenizer *t, const char *piece) {
    size_t len = strlen(piece);
    for (int i = 0; i < t->n_special; i++)
        if (t->special[i].len == len && memcmp(t->special[i].text, piece, len) == 0) return t->special[i].id;
    return an_vocab_find(&t->vocab, piece, len);
}

const char *an_tokenizer_piece(const an_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->vocab.n ? an_vocab_text(&t->vocab, id) : NULL;
}

int an_tokenizer_is_special(const an_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->vocab.n) return 0;
    int ty = t->vocab.type[id];
    return ty == AN_PIECE_CONTROL || ty == AN_PIECE_ADDED || ty == AN_PIECE_UNKNOWN;
}

/* The longest special token at s[0..n), or NULL; *mlen is the length it takes (with the space
 * before it for lead_space tokens away from a unit start). */
static const an_special *match_special(const an_tokenizer *t, const char *s, size_t n, int unit_start, int all,
                                       size_t *mlen, int *took_space) {
    if (!t->special_first[(unsigned char)s[0]]) return NULL;
    const an_special *best = NULL;
    size_t best_len = 0;
    for (int i = 0; i < t->n_special; i++) {
        const an_special *sp = &t->special[i];
        size_t len = 0;
        if (!all && !sp->always) continue;
        if (sp->lead_space && s[0] == ' ' && sp->len + 1 <= n && memcmp(sp->text, s + 1, sp->len) == 0)
            len = sp->len + 1;
        else if ((!sp->lead_space || unit_start) && sp->len <= n && memcmp(sp->text, s, sp->len) == 0)
            len = sp->len;
        if (len > best_len) best = sp, best_len = len;
    }
    *mlen = best_len;
    *took_space = best && best->lead_space && best_len == best->len + 1;
    return best;
}

static int encode_segment(const an_tokenizer *t, const char *s, size_t n, int prefix, an_ids *out, an_bpe_scratch *sc) {
    if (t->kind == AN_TOK_BYTELEVEL) return an_encode_bytelevel(t, s, n, out, sc);
    return an_encode_spm(t, s, n, prefix, out, sc);
}

/* Text is cut at special tokens; the pieces between are encoded separately. With HF's Prepend
 * normalizer a "unit" (the text between non-normalized special tokens) gets the "▁" prefix once. */
static int segment_prefix(const an_tokenizer *t, size_t seg, size_t unit) {
    switch (t->prefix_mode) {
    case AN_PREFIX_TEXT_START: return seg == 0;
    case AN_PREFIX_PER_UNIT: return seg == unit;
    case AN_PREFIX_PER_SEGMENT: return 1;
    default: return 0;
    }
}

static int encode(const an_tokenizer *t, const char *text, size_t len, int specials, an_ids *out, an_error *err) {
    an_bpe_scratch sc = {0};
    size_t seg = 0, i = 0, unit = 0;
    int rc = 0;
    while (i < len) {
        size_t mlen;
        int took_space;
        const an_special *sp = match_special(t, text + i, len - i, i == unit, specials, &mlen, &took_space);
        if (!sp) {
            i++;
            continue;
        }
        int prefix = segment_prefix(t, seg, unit);
        if (i > seg) rc = encode_segment(t, text + seg, i - seg, prefix, out, &sc);
        else if (prefix && took_space && t->prefix_mode == AN_PREFIX_PER_UNIT) /* the unit's "▁" stands alone */
            rc = encode_segment(t, "", 0, 1, out, &sc);
        if (rc || an_ids_push(out, sp->id)) goto oom;
        i += mlen;
        seg = i;
        if (!sp->normalized) unit = i;
    }
    if (len > seg) {
        int prefix = segment_prefix(t, seg, unit);
        if (encode_segment(t, text + seg, len - seg, prefix, out, &sc)) goto oom;
    }
    an_bpe_scratch_free(&sc);
    return 0;
oom:
    an_bpe_scratch_free(&sc);
    return an_fail(err, "%s: out of memory while encoding %zu bytes", t->path, len);
}

int an_tokenizer_encode(const an_tokenizer *t, const char *text, size_t len, an_ids *out, an_error *err) {
    return encode(t, text, len, 1, out, err);
}

int an_tokenizer_encode_plain(const an_tokenizer *t, const char *text, size_t len, an_ids *out, an_error *err) {
    return encode(t, text, len, 0, out, err);
}

/* ---- decoding ---- */

typedef struct sink {
    char *out;
    size_t cap, n;
} sink;

static void put(sink *k, const char *s, size_t n) {
    if (k->n + n < k->cap) memcpy(k->out + k->n, s, n);
    k->n += n;
}

static const char REPLACEMENT[] = "\xEF\xBF\xBD";

/* Whether b may follow the pending bytes p[0..np) in well-formed UTF-8 (Unicode table 3-7). */
static int continues(const unsigned char *p, int np, unsigned char b) {
    if ((b & 0xC0) != 0x80) return 0;
    if (np == 1) {
        if (p[0] == 0xE0) return b >= 0xA0;
        if (p[0] == 0xED) return b <= 0x9F;
        if (p[0] == 0xF0) return b >= 0x90;
        if (p[0] == 0xF4) return b <= 0x8F;
    }
    return 1;
}

static int seq_len(unsigned char c) { return c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0; }

/* Runs bytes through the UTF-8 assembler of d, writing complete characters (and U+FFFD for each
 * maximal ill-formed subsequence) to k. */
static void assemble(an_detok *d, const unsigned char *s, size_t n, sink *k) {
    for (size_t i = 0; i < n;) {
        unsigned char b = s[i];
        if (d->n_pending == 0) {
            if (b < 0x80) put(k, (const char *)&b, 1);
            else if (seq_len(b)) d->pending[d->n_pending++] = b;
            else put(k, REPLACEMENT, 3);
            i++;
            continue;
        }
        if (!continues(d->pending, d->n_pending, b)) {
            put(k, REPLACEMENT, 3);
            d->n_pending = 0;
            continue; /* b starts afresh */
        }
        d->pending[d->n_pending++] = b;
        i++;
        if (d->n_pending == seq_len(d->pending[0])) {
            put(k, (const char *)d->pending, (size_t)d->n_pending);
            d->n_pending = 0;
        }
    }
}

void an_detok_init(an_detok *d, const an_tokenizer *t) {
    memset(d, 0, sizeof *d);
    d->tok = t;
}

static void feed(an_detok *d, int32_t id, sink *k) {
    const an_tokenizer *t = d->tok;
    d->n_fed++;
    if (id < 0 || id >= t->vocab.n) {
        assemble(d, (const unsigned char *)"\xFF", 1, k); /* unknown id: one U+FFFD, never garbage */
        d->started = 1;
        return;
    }
    const unsigned char *s = (const unsigned char *)t->dec_arena + t->dec_off[id];
    size_t n = t->dec_len[id];
    if (n == 0) return;
    if (!d->started && t->strip_leading_space && t->vocab.type[id] != AN_PIECE_ADDED && s[0] == ' ') s++, n--;
    d->started = 1;
    assemble(d, s, n, k);
}

int an_detok_feed(an_detok *d, int32_t id, char *out, size_t outsz) {
    an_detok copy = *d;
    sink k = {out, outsz, 0};
    feed(&copy, id, &k);
    if (k.n >= outsz) return -1; /* state untouched, so the caller can retry with more room */
    out[k.n] = 0;
    *d = copy;
    return (int)k.n;
}

int an_detok_flush(an_detok *d, char *out, size_t outsz) {
    size_t n = d->n_pending ? 3 : 0;
    if (n >= outsz) return -1;
    memcpy(out, REPLACEMENT, n);
    out[n] = 0;
    d->n_pending = 0;
    return (int)n;
}

char *an_tokenizer_decode(const an_tokenizer *t, const int32_t *ids, size_t n, an_error *err) {
    size_t len;
    return an_tokenizer_decode_len(t, ids, n, &len, err);
}

char *an_tokenizer_decode_len(const an_tokenizer *t, const int32_t *ids, size_t n, size_t *len, an_error *err) {
    an_detok d;
    an_detok_init(&d, t);
    size_t cap = 64;
    for (size_t i = 0; i < n; i++)
        cap += ids[i] >= 0 && ids[i] < t->vocab.n ? 3 * (size_t)t->dec_len[ids[i]] : 3;
    char *out = malloc(cap + 4);
    if (!out) {
        an_fail(err, "%s: out of memory decoding %zu ids", t->path, n);
        return NULL;
    }
    sink k = {out, cap + 4, 0};
    for (size_t i = 0; i < n; i++) feed(&d, ids[i], &k);
    if (d.n_pending) put(&k, REPLACEMENT, 3);
    out[k.n] = 0;
    *len = k.n;
    return out;
}
