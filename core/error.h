#ifndef AN_ERROR_H
#define AN_ERROR_H
/* Library code never prints or exits: it fills an an_error and returns -1 (or NULL).
 * Messages name the file and the problem, "path: what is wrong", so cli/ can print them as they are. */
#include <stddef.h>

typedef struct an_error {
    char msg[1024];
} an_error;

/* Formats into err (which may be NULL) and returns -1, so callers can `return an_fail(...)`. */
int an_fail(an_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The same, returning NULL: `return an_fail_null(...)` in functions that return a pointer. */
void *an_fail_null(an_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes an existing message: "prefix: old message". Returns -1. */
int an_fail_prefix(an_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Input text quoted for an error message: "text" in double quotes when it is at most AN_QUOTE_MAX
 * bytes, else its first AN_QUOTE_MAX bytes (cut before a UTF-8 sequence that does not fit), "...",
 * and the total length: "zzz...zzz..." (100000 bytes). A 100 KB bad line in a file must not become
 * a 1 KB message whose reason is cut off. Control bytes are escaped (\n, \t, \xNN) so the message
 * stays one line. Writes into buf (AN_QUOTE_CAP bytes hold any result; a smaller cap shortens it)
 * and returns buf, so it goes straight into a format: an_fail(err, "%s: token %s ...", path,
 * an_quote(q, sizeof q, tok, len)). text may be NULL when len is 0. */
#define AN_QUOTE_MAX 80
#define AN_QUOTE_CAP (4 * AN_QUOTE_MAX + 48)
const char *an_quote(char *buf, size_t cap, const char *text, size_t len);
/* The same for a NUL-terminated string (NULL quotes as ""). */
const char *an_quote_str(char *buf, size_t cap, const char *s);
/* Inside an argument list, with a buffer that lives until the end of the enclosing block:
 *   return an_fail(err, "%s: token %s is unknown", path, AN_QUOTE(tok)); */
#define AN_QUOTE(s) an_quote_str((char[AN_QUOTE_CAP]){0}, AN_QUOTE_CAP, (s))
#define AN_QUOTE_N(s, n) an_quote((char[AN_QUOTE_CAP]){0}, AN_QUOTE_CAP, (s), (n))

#endif
