#ifndef AN_TAGS_H
#define AN_TAGS_H
/* Re-implementations of the two scripts of 6DammK9/nai-anime-pure-negative-prompt (ch97/step.js and
 * ch97/aspect512.js), with the JavaScript number rules they rely on, so `autoneg tags step|aspect`
 * prints what the scripts print. The tags come from the caller instead of a list fixed in the script. */
#include <stddef.h>
#include "core/error.h"

/* JavaScript parseFloat: the longest numeric prefix after leading whitespace, NaN when there is none. */
double an_js_parse_float(const char *s);
/* JavaScript Number(string): the whole trimmed string must be a number ("" is 0), else NaN. */
double an_js_number(const char *s);
/* String.prototype.localeCompare in the root (and en-US) ICU collation, for ASCII text: whitespace <
 * punctuation < symbols < digits < letters, letters case-blind first and lower before upper on a tie,
 * control characters ignored. Characters beyond ASCII sort after Z by code point (ICU would interleave
 * accented letters with their base letters). */
int an_js_locale_compare(const char *a, const char *b);

/* step.js: each input is split on ", ", each piece trimmed, its first "\r\n", "\n" and "," removed and
 * trimmed again; pieces deduplicated (first kept) and sorted with localeCompare; then written as
 *   ratio < 0:             [..[T]..] with floor(|ratio|) brackets (each tag bracketed with each)
 *   ratio > 1, integer:    {..{T}..} with ratio braces
 *   otherwise:             (T:ratio)
 * ratio_text is read with parseFloat (missing or not a number: 1). Returns the text step.js writes to
 * step.txt (malloc'd, no newline) and the tag count in *n_tags. Errors on non-finite ratios and on
 * more than 10000 brackets. */
char *an_tags_step(const char *const *inputs, size_t n_inputs, const char *ratio_text, int each, size_t *n_tags,
                   an_error *err);

/* aspect512.js: width and height with the aspect ratio w_text / h_text (read with Number(); a missing
 * or empty one is 1) and an area of 512 x 512, each floored; snap > 0 floors both to multiples of snap.
 * Errors when the ratio is not a positive finite number (the script prints NaN). */
int an_tags_aspect(const char *w_text, const char *h_text, int snap, long *width, long *height, an_error *err);

#endif
