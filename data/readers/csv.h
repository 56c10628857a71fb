#ifndef AN_CSV_H
#define AN_CSV_H
/* RFC 4180 records from a stream: quoted fields may hold commas, doubled quotes and newlines; CRLF
 * and LF line ends; a record may be of any length up to the stream's max_record. */
#include "data/readers/reader.h"

typedef struct an_csv {
    an_stream *s;
    an_strbuf data;   /* the fields of the current record, each NUL-terminated */
    size_t *off;      /* start of each field in data */
    size_t n, cap;
    size_t line;      /* line being read (1-based) */
    size_t record_line; /* line where the current record started */
    int pushback;     /* a byte read ahead, or -1 */
} an_csv;

void an_csv_init(an_csv *c, an_stream *s);
void an_csv_free(an_csv *c);
/* 1: a record is in c; 0: end of input; -1: error (an unterminated quote names its line). */
int an_csv_next(an_csv *c, an_error *err);
static inline const char *an_csv_field(const an_csv *c, size_t i) { return c->data.v + c->off[i]; }

#endif
