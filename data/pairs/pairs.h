#ifndef AN_PAIRS_H
#define AN_PAIRS_H
/* Prompt pairs: a positive prompt and the negative prompt written for it, plus where it came from. */
#include <stddef.h>
#include "core/error.h"

typedef struct an_pair {
    char *prompt;
    char *negative;
    char *source; /* group field used by split (author, style file, ...); may be NULL */
} an_pair;

typedef struct an_pairs {
    an_pair *v;
    size_t n, cap;
} an_pairs;

/* Takes ownership copies of the strings. */
int an_pairs_add(an_pairs *p, const char *prompt, const char *negative, const char *source);
void an_pairs_free(an_pairs *p);

/* ---- reading (data/readers/reader.c and data/read_*.c; formats in docs/data.md) ---- */

typedef enum an_pairs_format {
    AN_FORMAT_AUTO = 0, /* from the extension (after .gz / inside .zip) */
    AN_FORMAT_JSONL,    /* one JSON object per line */
    AN_FORMAT_JSON,     /* one JSON document: array of objects, of [sentence, prompt, negative, score]
                           rows, or an AI-Horde style dict */
    AN_FORMAT_CSV       /* RFC 4180 with a header row */
} an_pairs_format;

typedef struct an_read_opts {
    an_pairs_format format;
    /* NULL: look for prompt / negative_prompt (also negativePrompt, negative), then XTuner
     * input/output, XTuner conversation[0], OpenAI messages. Set: use only these fields. */
    const char *prompt_field, *negative_field;
    const char *source_field; /* NULL: "source", else "name" (style templates) */
    int strict;               /* stop at the first bad record instead of skipping it */
    int utf8_replace;         /* invalid UTF-8 becomes U+FFFD instead of rejecting the record */
    /* Style templates carry a placeholder ({prompt}, AI-Horde {p}) for the user's subject.
     * NULL keeps it as written; a string (possibly "") replaces it. */
    const char *subject;
    size_t max_record; /* longest line / CSV record / JSON document in bytes; 0: 256 MiB */
} an_read_opts;

#define AN_READ_REASONS 4
typedef struct an_read_report {
    size_t records; /* lines, rows or elements looked at */
    size_t pairs;   /* pairs added */
    size_t skipped; /* records that gave no pair */
    size_t utf8_replaced; /* records in which invalid UTF-8 was replaced */
    int n_reasons;  /* the first AN_READ_REASONS skip reasons, "file: line N: what" */
    char reasons[AN_READ_REASONS][320];
} an_read_report;

/* Appends the pairs of path (plain, .gz, or .zip) to out. Bad records are skipped and counted in rep
 * (which may be NULL), or fail the read when opts->strict. opts may be NULL (defaults). A file
 * that is empty or yields no pair at all is an error. */
int an_pairs_read(an_pairs *out, const char *path, const an_read_opts *opts, an_read_report *rep,
                  an_error *err);

/* Writes one {"prompt", "negative_prompt", "source"} object per line (source omitted when NULL),
 * atomically. */
int an_pairs_write_jsonl(const an_pairs *p, const char *path, an_error *err);

#endif
