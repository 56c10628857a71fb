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

const char *an_quote(char *buf, size_t cap, const char *text, size_t len) {
    if (!buf || cap == 0) return "";
    /* how much of text to show: all of it, or up to AN_QUOTE_MAX bytes ending on a character boundary
     * (a UTF-8 continuation byte 10xxxxxx at the cut means the character started before it) */
    size_t show = len;
    if (len > AN_QUOTE_MAX) {
        show = AN_QUOTE_MAX;
        while (show > 0 && ((unsigned char)text[show] & 0xC0) == 0x80) show--;
    }
    char tail[40] = "\"";
    if (show < len) snprintf(tail, sizeof tail, "...\" (%zu bytes)", len);
    size_t tl = strlen(tail), k = 0;
    /* room for the opening quote, the tail and the NUL; a tiny cap just shortens the text */
    size_t room = cap > tl + 2 ? cap - tl - 2 : 0;
    if (cap > 1) buf[k++] = '"';
    for (size_t i = 0; i < show; i++) {
        unsigned char c = (unsigned char)text[i];
        char e[5];
        int n;
        if (c == '\n') n = snprintf(e, sizeof e, "\\n");
        else if (c == '\t') n = snprintf(e, sizeof e, "\\t");
        else if (c == '\r') n = snprintf(e, sizeof e, "\\r");
        else if (c < 0x20 || c == 0x7f) n = snprintf(e, sizeof e, "\\x%02x", c);
        else e[0] = (char)c, e[1] = 0, n = 1;
        if (k + (size_t)n > room) break;
        memcpy(buf + k, e, (size_t)n);
        k += (size_t)n;
    }
    if (k + tl < cap) {
        memcpy(buf + k, tail, tl);
        k += tl;
    }
    buf[k < cap ? k : cap - 1] = 0;
    return buf;
}

const char *an_quote_str(char *buf, size_t cap, const char *s) { return an_quote(buf, cap, s, s ? strlen(s) : 0); }
