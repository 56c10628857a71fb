/* Llama 3 and Qwen2 pre-tokenization without a regex engine: the pattern
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,D}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 *   \s*[\r\n]+|\s+(?!\S)|\s+
 * with D = 3 (Llama 3) or 1 (Qwen2), tried alternative by alternative at each start, as a backtracking
 * engine would (the first alternative that matches wins, not the longest). */
#include <ctype.h>

#include "data/tokenizers/tokenizer_impl.h"
#include "data/tokenizers/unicode.h"

enum { C_SPACE = AN_PRETOK_SPACE, C_LETTER = AN_PRETOK_LETTER, C_NUMBER = AN_PRETOK_NUMBER, C_OTHER = AN_PRETOK_OTHER };

static int char_class(const unsigned char *s, size_t n, size_t i, int *len) { return an_pretok_class(s, n, i, len); }

static int is_newline(unsigned char c) { return c == '\r' || c == '\n'; }

/* End of the run of characters of class cls starting at i, at most max of them (0: no limit). */
static size_t run_end(const unsigned char *s, size_t n, size_t i, int cls, int max) {
    for (int k = 0; i < n && (max == 0 || k < max); k++) {
        int len;
        if (char_class(s, n, i, &len) != cls) break;
        i += (size_t)len;
    }
    return i;
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d): the end of a contraction at i, or 0. */
static size_t contraction_end(const unsigned char *s, size_t n, size_t i) {
    if (s[i] != '\'' || i + 1 >= n) return 0;
    int a = tolower(s[i + 1]), b = i + 2 < n ? tolower(s[i + 2]) : 0;
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    return 0;
}

size_t an_llama3_piece_end(const unsigned char *s, size_t n, size_t i, int max_digits) {
    size_t e = contraction_end(s, n, i);
    if (e) return e;
    int len, cls = char_class(s, n, i, &len);
    /* [^\r\n\p{L}\p{N}]?\p{L}+ : one optional character that is neither a newline, a letter nor a
     * number (a space, punctuation), then letters */
    if (cls == C_LETTER) return run_end(s, n, i, C_LETTER, 0);
    if (cls != C_NUMBER && !is_newline(s[i]) && i + (size_t)len < n) {
        int l2;
        if (char_class(s, n, i + (size_t)len, &l2) == C_LETTER) return run_end(s, n, i + (size_t)len, C_LETTER, 0);
    }
    /* \p{N}{1,D} */
    if (cls == C_NUMBER) return run_end(s, n, i, C_NUMBER, max_digits);
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    size_t j = i;
    if (s[i] == ' ' && i + 1 < n) {
        int l2;
        if (char_class(s, n, i + 1, &l2) == C_OTHER) j = i + 1;
    }
    int lj;
    if (char_class(s, n, j, &lj) == C_OTHER) {
        j = run_end(s, n, j, C_OTHER, 0);
        while (j < n && is_newline(s[j])) j++;
        return j;
    }
    /* what is left starts with whitespace. \s*[\r\n]+ : up to and including the last newline of the
     * whitespace run (the greedy \s* gives characters back until [\r\n]+ can match) */
    size_t end = run_end(s, n, i, C_SPACE, 0), last_nl = 0;
    int has_nl = 0;
    for (size_t k = i; k < end; k++)
        if (is_newline(s[k])) last_nl = k, has_nl = 1;
    if (has_nl) return last_nl + 1;
    /* \s+(?!\S) : the run, less its last character when a non-space follows; \s+ : a lone one */
    if (end == n) return n;
    size_t last = i;
    for (size_t k = i; k < end;) {
        int l2;
        char_class(s, n, k, &l2);
        last = k;
        k += (size_t)l2;
    }
    return last > i ? last : end;
}
