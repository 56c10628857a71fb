/* GPT-2 pre-tokenization without a regex engine: the pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * is tried alternative by alternative at each start, as a backtracking engine would. */
#include "data/tokenizers/tokenizer_impl.h"
#include "data/tokenizers/unicode.h"

enum { C_SPACE = AN_PRETOK_SPACE, C_LETTER = AN_PRETOK_LETTER, C_NUMBER = AN_PRETOK_NUMBER, C_OTHER = AN_PRETOK_OTHER };

int an_pretok_class(const unsigned char *s, size_t n, size_t i, int *len) {
    uint32_t cp;
    *len = an_utf8_decode(s + i, n - i, &cp);
    if (an_unicode_is_letter(cp)) return C_LETTER;
    if (an_unicode_is_number(cp)) return C_NUMBER;
    if (an_unicode_is_space(cp)) return C_SPACE;
    return C_OTHER;
}

static int char_class(const unsigned char *s, size_t n, size_t i, int *len) { return an_pretok_class(s, n, i, len); }

/* End of the run of characters of class cls starting at i. */
static size_t run_end(const unsigned char *s, size_t n, size_t i, int cls) {
    while (i < n) {
        int len;
        if (char_class(s, n, i, &len) != cls) break;
        i += (size_t)len;
    }
    return i;
}

size_t an_gpt2_piece_end(const unsigned char *s, size_t n, size_t i) {
    if (s[i] == '\'' && i + 1 < n) {
        unsigned char a = s[i + 1], b = i + 2 < n ? s[i + 2] : 0;
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    }
    int len, cls = char_class(s, n, i, &len);
    if (s[i] == ' ' && i + 1 < n) {
        int len2, cls2 = char_class(s, n, i + 1, &len2);
        if (cls2 != C_SPACE) return run_end(s, n, i + 1 + (size_t)len2, cls2);
    }
    if (cls != C_SPACE) return run_end(s, n, i + (size_t)len, cls);
    /* whitespace: \s+(?!\S) takes the run but leaves its last character to the next piece when a
     * non-space follows; a lone whitespace character before a non-space is \s+ */
    size_t last = i, j = i + (size_t)len;
    while (j < n) {
        int l2;
        if (char_class(s, n, j, &l2) != C_SPACE) break;
        last = j;
        j += (size_t)l2;
    }
    if (j == n) return n;
    return last > i ? last : j;
}
