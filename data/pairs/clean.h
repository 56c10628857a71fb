#ifndef AN_CLEAN_H
#define AN_CLEAN_H
/* `autoneg data clean`: infotext tails, comma and whitespace normalisation, empty rows, duplicates,
 * length limits and a word list (docs/data.md says what each rule does). */
#include <stddef.h>

#include "core/error.h"
#include "data/pairs/pairs.h"

typedef struct an_clean_opts {
    size_t min_words, max_words, max_chars; /* per side (prompt and negative); 0: no limit */
    const char *const *drop_words;          /* lower-case words / phrases; NULL when none */
    size_t n_drop_words;
} an_clean_opts;

typedef struct an_clean_report {
    size_t in, out;
    size_t infotext;   /* rows whose prompt or negative lost an infotext tail */
    size_t normalised; /* rows changed by comma / whitespace normalisation */
    /* rows dropped, by the first rule that dropped them */
    size_t empty, too_few_words, too_many_words, too_many_chars, word_list, exact_dup, normalised_dup;
} an_clean_report;

int an_pairs_clean(const an_pairs *in, an_pairs *out, const an_clean_opts *opts, an_clean_report *rep,
                   an_error *err);

/* Offset where an A1111 infotext tail ("Steps: 20, Sampler: Euler a, CFG scale: 7, ...", or a pasted
 * "Negative prompt: ...") starts in s, or strlen(s) when there is none. */
size_t an_clean_infotext_start(const char *s);
/* Copy of s with whitespace runs collapsed, full-width commas made ASCII, empty comma items dropped and
 * items joined by ", ": "a ,b,,  c" -> "a, b, c". Weight syntax such as "(x:1.2)" is untouched. */
char *an_clean_normalise(const char *s);
size_t an_count_words(const char *s); /* runs of characters other than whitespace and commas */
size_t an_count_chars(const char *s); /* UTF-8 code points */

/* Tags by a simple comma split (until the prompt-syntax parser replaces it): each comma item trimmed,
 * with surrounding ()[]{} and a ":weight" inside them removed, ASCII lower-cased, spaces collapsed.
 * Writes the tag into out (room for n bytes + NUL) and returns its length; *next is where the next
 * item starts (NULL at the end). */
size_t an_simple_tag(const char *s, char *out, const char **next);

/* Reads a word list: one word or phrase per line, '#' starts a comment; entries are lower-cased. */
int an_word_list_read(const char *path, char ***words, size_t *n, an_error *err);
void an_word_list_free(char **words, size_t n);

#endif
