#ifndef AN_SUBJECTS_H
#define AN_SUBJECTS_H
/* Subjects for style templates. A style's positive prompt is a template with a placeholder for what
 * the user types ({prompt}, AI-Horde's {p}); trained as written, a model only ever sees the literal
 * placeholder and none of the plain subjects it will be asked about. Filling the placeholder with
 * subjects from a list gives it both: the style words and an ordinary subject beside them. */
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "data/pairs/pairs.h"

typedef struct an_subjects {
    char **v;
    size_t n;
} an_subjects;

/* One subject per line; blank lines and lines starting with '#' are skipped, surrounding whitespace
 * is trimmed. Errors (naming the file and line): a file without any subject, invalid UTF-8, a
 * subject that itself holds a placeholder. */
int an_subjects_read(an_subjects *s, const char *path, an_error *err);
void an_subjects_free(an_subjects *s);

/* Whether the prompt holds a style placeholder ({prompt} or {p}). */
int an_prompt_has_placeholder(const char *prompt);

/* Replaces every pair whose prompt holds a placeholder by per_pair copies, each with every
 * placeholder replaced by one subject. The subjects are picked by hashing (seed, prompt, negative,
 * source, draw number), so the result depends only on the pair and the seed, never on the order or
 * the other pairs; the copies of one pair get different subjects while the list has per_pair of them,
 * and share the pair's source (a split by source keeps them together).
 * Pairs without a placeholder are kept as they are; the order is kept. */
int an_pairs_fill_subjects(an_pairs *p, const an_subjects *s, int per_pair, uint64_t seed, an_error *err);

#endif
