/* Encoding one text segment (special tokens already split off): byte-level BPE with GPT-2
 * pre-tokenization, and the SentencePiece family (characters, "▁" for spaces, byte fallback). */
#include <stdlib.h>
#include <string.h>

#include "data/tokenizers/tokenizer_impl.h"
#include "data/tokenizers/unicode.h"

static int encode_word(const an_tokenizer *t, const unsigned char *w, size_t n, an_ids *out, an_bpe_scratch *sc) {
    int32_t stack[128];
    if (n > INT32_MAX) return -1;
    int32_t *ids = n <= 128 ? stack : malloc(n * sizeof *ids);
    if (!ids) return -1;
    size_t k = 0;
    /* a byte without a token (SmolLM2's GGUF lacks some control bytes) is dropped before merging,
     * as HF's BPE without an unk token drops it */
    for (size_t i = 0; i < n; i++)
        if (t->byte_id[w[i]] >= 0) ids[k++] = t->byte_id[w[i]];
    int m = an_bpe_merge(&t->merges, ids, (int)k, sc);
    int rc = m < 0 || an_ids_append(out, ids, (size_t)m) ? -1 : 0;
    if (ids != stack) free(ids);
    return rc;
}

int an_encode_bytelevel(const an_tokenizer *t, const char *s, size_t n, an_ids *out, an_bpe_scratch *sc) {
    const unsigned char *u = (const unsigned char *)s;
    unsigned char *copy = NULL;
    if (t->add_prefix_space && n > 0 && s[0] != ' ') {
        copy = malloc(n + 1);
        if (!copy) return -1;
        copy[0] = ' ';
        memcpy(copy + 1, s, n);
        u = copy;
        n++;
    }
    int rc = 0;
    if (t->llama3_digits > 0) {
        for (size_t i = 0; i < n && rc == 0;) {
            size_t j = an_llama3_piece_end(u, n, i, t->llama3_digits);
            rc = encode_word(t, u + i, j - i, out, sc);
            i = j;
        }
    } else if (!t->split_digits) {
        for (size_t i = 0; i < n && rc == 0;) {
            size_t j = an_gpt2_piece_end(u, n, i);
            rc = encode_word(t, u + i, j - i, out, sc);
            i = j;
        }
    } else {
        /* HF Digits(individual_digits) then ByteLevel: each number character alone, the GPT-2 regex
         * on the runs between them (so " 12" is " ", "1", "2", as llama.cpp's smollm does) */
        for (size_t i = 0; i < n && rc == 0;) {
            uint32_t cp;
            int l = an_utf8_decode(u + i, n - i, &cp);
            if (an_unicode_is_number(cp)) {
                rc = encode_word(t, u + i, (size_t)l, out, sc);
                i += (size_t)l;
                continue;
            }
            size_t e = i + (size_t)l;
            while (e < n) {
                l = an_utf8_decode(u + e, n - e, &cp);
                if (an_unicode_is_number(cp)) break;
                e += (size_t)l;
            }
            for (size_t k = 0; k < e - i && rc == 0;) {
                size_t j = an_gpt2_piece_end(u + i, e - i, k);
                rc = encode_word(t, u + i + k, j - k, out, sc);
                k = j;
            }
            i = e;
        }
    }
    free(copy);
    return rc;
}

/* SentencePiece's remove_extra_whitespaces: no leading or trailing spaces, runs become one. */
static size_t squeeze_spaces(const char *s, size_t n, char *o) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ' && (k == 0 || o[k - 1] == ' ')) continue;
        o[k++] = s[i];
    }
    while (k > 0 && o[k - 1] == ' ') k--;
    return k;
}

static int push_symbol(const an_tokenizer *t, const char *p, size_t len, int32_t *ids, uint8_t *ws, int is_ws, size_t *k) {
    int32_t id = an_vocab_find(&t->vocab, p, len);
    int ty = id >= 0 ? t->vocab.type[id] : 0;
    size_t k0 = *k;
    int rc = 0;
    if (id >= 0 && ty != AN_PIECE_CONTROL && ty != AN_PIECE_UNKNOWN && ty != AN_PIECE_UNUSED) {
        ids[(*k)++] = id;
    } else if (!t->byte_fallback) {
        if (!(t->fuse_unk && *k > 0 && ids[*k - 1] == t->unk)) ids[(*k)++] = t->unk;
        rc = t->unk < 0 ? -2 : 0;
    } else {
        /* byte fallback only when every byte has its piece, else one unk for the character (HF) */
        size_t i = 0;
        while (i < len && t->byte_id[(unsigned char)p[i]] >= 0) i++;
        if (i < len) {
            if (!(t->fuse_unk && *k > 0 && ids[*k - 1] == t->unk)) ids[(*k)++] = t->unk;
            rc = t->unk < 0 ? -2 : 0;
        } else {
            for (i = 0; i < len; i++) ids[(*k)++] = t->byte_id[(unsigned char)p[i]];
        }
    }
    for (size_t i = k0; i < *k; i++) ws[i] = (uint8_t)is_ws;
    return rc;
}

static int is_glue(const an_tokenizer *t, const char *c, size_t len) {
    for (int g = 0; g < t->n_glue; g++)
        if (t->glue_len[g] == len && memcmp(t->glue[g], c, len) == 0) return 1;
    return 0;
}

int an_encode_spm(const an_tokenizer *t, const char *s, size_t n, int prefix, an_ids *out, an_bpe_scratch *sc) {
    char *clean = NULL;
    if (t->remove_extra_ws) {
        clean = malloc(n + 1);
        if (!clean) return -1;
        n = squeeze_spaces(s, n, clean);
        s = clean;
    }
    size_t sp_len = strlen(t->space_text);
    /* each input byte gives at most one symbol; the prefix at most sp_len */
    int32_t *ids = malloc((n + sp_len + 1) * (sizeof *ids + 1));
    if (!ids || n + sp_len > INT32_MAX) {
        free(clean);
        free(ids);
        return -1;
    }
    /* per symbol: 1 the space symbol, 2 a glue character, 0 anything else */
    uint8_t *ws = (uint8_t *)(ids + n + sp_len + 1);
    size_t k = 0;
    int missing = 0, rc = 0;
    /* Metaspace looks at the text after spaces became "▁": a typed "▁" counts as a space too */
    if (t->prefix_unless_space && n > 0 && (s[0] == ' ' || (n >= sp_len && memcmp(s, t->space_text, sp_len) == 0)))
        prefix = 0;
    if (prefix) missing |= push_symbol(t, t->space_text, sp_len, ids, ws, 1, &k);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int l = an_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (s[i] == ' ') missing |= push_symbol(t, t->space_text, sp_len, ids, ws, 1, &k);
        else if ((size_t)l == sp_len && memcmp(s + i, t->space_text, sp_len) == 0)
            missing |= push_symbol(t, s + i, (size_t)l, ids, ws, 1, &k);
        else missing |= push_symbol(t, s + i, (size_t)l, ids, ws, is_glue(t, s + i, (size_t)l) ? 2 : 0, &k);
        i += (size_t)l;
    }
/* a symbol without a token (no byte fallback, no unk) is dropped rather than invented */
    if (missing) {
        size_t j = 0;
        for (size_t i = 0; i < k; i++)
            if (ids[i] >= 0) ws[j] = ws[i], ids[j++] = ids[i];
        k = j;
    }
    if (t->split_at_space || t->split_every_space) {
        /* words start where the space symbol follows a character that no piece joins to it */
        size_t start = 0;
        for (size_t i = 1; i <= k && rc == 0; i++) {
            if (i < k && !(ws[i] == 1 && (ws[i - 1] == 0 || t->split_every_space))) continue;
            int m = an_bpe_merge(&t->merges, ids + start, (int)(i - start), sc);
            if (m < 0 || an_ids_append(out, ids + start, (size_t)m)) rc = -1;
            start = i;
        }
    } else {
        int m = an_bpe_merge(&t->merges, ids, (int)k, sc);
        if (m < 0 || an_ids_append(out, ids, (size_t)m)) rc = -1;
    }
    free(ids);
    free(clean);
    return rc;
}
