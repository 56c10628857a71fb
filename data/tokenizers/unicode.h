#ifndef AN_UNICODE_H
#define AN_UNICODE_H
/* Unicode character classes for pre-tokenization (\p{L}, \p{N}, White_Space) and UTF-8 decoding.
 * The range tables are generated (data/tokenizers/unicode_tables.c); see that file for the Unicode version. */
#include <stddef.h>
#include <stdint.h>

typedef struct an_unicode_range {
    uint32_t lo, hi;
} an_unicode_range;

extern const an_unicode_range an_unicode_letters[], an_unicode_numbers[], an_unicode_white_space[];
extern const int an_unicode_letters_count, an_unicode_numbers_count, an_unicode_white_space_count;

int an_unicode_is_letter(uint32_t cp);
int an_unicode_is_number(uint32_t cp);
int an_unicode_is_space(uint32_t cp);

/* Decodes one UTF-8 character at s[0..n) (n >= 1) into *cp and returns its length in bytes.
 * A malformed or truncated sequence decodes as one byte with *cp = 0xFFFD, so callers always
 * advance and every input byte is kept. */
int an_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
/* Writes cp as UTF-8 into out (4 bytes room) and returns the length. */
int an_utf8_encode(uint32_t cp, char *out);

#endif
