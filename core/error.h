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

#endif
