/* RFC 4180 record reader. Outside the RFC it does what Python's csv module does: text after a
 * closing quote is kept, a quote inside an unquoted field is an ordinary character. */
#include "data/readers/csv.h"

#include <stdlib.h>
#include <string.h>

void an_csv_init(an_csv *c, an_stream *s) {
    memset(c, 0, sizeof *c);
    c->s = s;
    c->line = 1;
    c->pushback = -1;
}

void an_csv_free(an_csv *c) {
    an_strbuf_free(&c->data);
    free(c->off);
    c->off = NULL;
}

static int next_byte(an_csv *c, an_error *err) {
    int ch;
    if (c->pushback >= 0) {
        ch = c->pushback;
        c->pushback = -1;
    } else {
        ch = an_stream_getc(c->s, err);
    }
    if (ch == '\n') c->line++;
    return ch;
}

static int start_field(an_csv *c, an_error *err) {
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        size_t *o = realloc(c->off, cap * sizeof *o);
        if (!o) return an_fail(err, "%s: out of memory", c->s->name);
        c->off = o;
        c->cap = cap;
    }
    c->off[c->n++] = c->data.n;
    return 0;
}

static int put(an_csv *c, int ch, an_error *err) {
    if (c->data.n >= c->s->max_record)
        return an_fail(err, "%s: line %zu: record is longer than the limit of %zu bytes", c->s->name, c->record_line,
                       c->s->max_record);
    if (an_strbuf_putc(&c->data, (char)ch)) return an_fail(err, "%s: out of memory", c->s->name);
    return 0;
}

/* A "\r" ends the line when "\n" follows; otherwise it is data. Returns 1 at a line end. */
static int crlf(an_csv *c, an_error *err, int *fail) {
    int nx = next_byte(c, err);
    if (nx == -2) {
        *fail = 1;
        return 0;
    }
    if (nx == '\n') return 1;
    if (nx >= 0) c->pushback = nx;
    return 0;
}

int an_csv_next(an_csv *c, an_error *err) {
    enum { START, PLAIN, QUOTED, QUOTE_SEEN } st = START;
    c->n = 0;
    c->data.n = 0;
    c->record_line = c->line;
    size_t quote_line = 0;
    int any = 0, fail = 0;
    if (start_field(c, err)) return -1;
    for (;;) {
        int ch = next_byte(c, err);
        if (ch == -2) return -1;
        if (ch == -1) {
            if (st == QUOTED)
                return an_fail(err, "%s: line %zu: quoted field is never closed (unterminated quote)", c->s->name,
                               quote_line);
            if (!any) return 0;
            break;
        }
        any = 1;
        if (st == QUOTED) {
            if (ch == '"') st = QUOTE_SEEN;
            else if (put(c, ch, err)) return -1;
            continue;
        }
        if (st == QUOTE_SEEN && ch == '"') {
            if (put(c, '"', err)) return -1;
            st = QUOTED;
            continue;
        }
        if (ch == ',') {
            if (put(c, 0, err) || start_field(c, err)) return -1;
            st = START;
            continue;
        }
        if (ch == '\n') break;
        if (ch == '\r') {
            if (crlf(c, err, &fail)) break;
            if (fail) return -1;
        }
        if (st == START && ch == '"') {
            st = QUOTED;
            quote_line = c->line;
            continue;
        }
        if (put(c, ch, err)) return -1;
        st = PLAIN;
    }
    if (put(c, 0, err)) return -1;
    return 1;
}
