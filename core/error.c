#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int an_fail(an_error *err, const char *fmt, ...) {
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

void *an_fail_null(an_error *err, const char *fmt, ...) {
    if (!err) return NULL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return NULL;
}

int an_fail_prefix(an_error *err, const char *fmt, ...) {
    if (!err) return -1;
    char prefix[512], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    /* truncation of a very long message is acceptable; say so to the compiler */
    int r = snprintf(err->msg, sizeof err->msg, "%.500s: %.500s", prefix, old);
    (void)r;
    return -1;
}
