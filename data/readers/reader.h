#ifndef AN_READER_H
#define AN_READER_H
/* Private to the pair readers: a growable byte buffer, a byte stream over a plain file, a .gz file
 * or a zip member, UTF-8 checks, and the per-format readers that an_pairs_read dispatches to. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <zlib.h>

#include "core/error.h"
#include "core/strbuf.h"
#include "data/pairs/pairs.h"

/* ---- growable byte buffer: core/strbuf.h ---- */
/* Appends s as a JSON string literal (quotes included). */
int an_strbuf_put_json_string(an_strbuf *b, const char *s);

/* ---- byte streams ---- */
typedef enum { AN_STREAM_FILE, AN_STREAM_GZ, AN_STREAM_MEM_INFLATE, AN_STREAM_MEM } an_stream_kind;

typedef struct an_stream {
    char name[1024]; /* for messages: the path, or "archive.zip:member" */
    an_stream_kind kind;
    FILE *f;
    gzFile gz;
    /* zip members: compressed bytes in memory (a mapped archive) */
    const unsigned char *src;
    size_t src_len, src_pos;
    z_stream zs;
    int zs_init, z_done;
    uint32_t crc, want_crc;
    uint64_t out_total, want_size;
    /* read buffer */
    unsigned char *buf;
    size_t buf_len, buf_pos, buf_cap;
    int eof;
    uint64_t bytes_read; /* bytes handed out so far */
    size_t max_record;
    an_strbuf line;
    size_t line_no; /* number of the line last returned by an_stream_getline */
} an_stream;

int an_stream_open_file(an_stream *s, const char *path, int gz, size_t max_record, an_error *err);
/* method 0 (stored) or 8 (deflate); crc and size are checked at the end of the member. */
int an_stream_open_zip_member(an_stream *s, const char *name, const unsigned char *data, size_t len,
                              int method, uint32_t crc, uint64_t size, size_t max_record, an_error *err);
void an_stream_close(an_stream *s);

/* Next byte, or -1 at the end, or -2 on error (err filled). */
int an_stream_getc(an_stream *s, an_error *err);
/* Next line without its "\n" (and a "\r" before it) in s->line; 1 line, 0 end, -1 error. Lines may be
 * of any length up to s->max_record. */
int an_stream_getline(an_stream *s, an_error *err);
/* The rest of the stream into a malloc'd NUL-terminated buffer (at most max_record bytes). */
char *an_stream_slurp(an_stream *s, size_t *len, an_error *err);

/* ---- UTF-8 ---- */
/* Offset of the first invalid byte of s[0..n), or n when all is valid (overlongs, surrogates and
 * code points past U+10FFFF are invalid). */
size_t an_utf8_check(const char *s, size_t n);
/* Copy of s with each invalid byte replaced by U+FFFD. */
char *an_utf8_replace(const char *s, size_t n, size_t *out_len);

/* ---- reader context shared by the formats ---- */
typedef struct an_reader {
    an_pairs *out;
    const an_read_opts *opts;
    an_read_report *rep;
    const char *name; /* stream name for messages */
} an_reader;

/* A record that gave no pair: counted and remembered in the report, or (strict) an error.
 * Returns 0 to go on, -1 to stop. */
int an_reader_skip(an_reader *r, an_error *err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Adds a pair after placeholder substitution; 0 or -1 (out of memory). */
int an_reader_add(an_reader *r, const char *prompt, const char *negative, const char *source, an_error *err);
/* Checks UTF-8 of a record: returns the text to use (rec itself, or *fixed when replaced, which the
 * caller frees), or NULL when the record was rejected (*stop tells whether reading must stop). */
const char *an_reader_utf8(an_reader *r, const char *rec, size_t n, const char *where, char **fixed, int *stop,
                           an_error *err);

int an_read_jsonl_stream(an_reader *r, an_stream *s, an_error *err);
/* One JSONL line (line_no counts from 1); blank lines are ignored. */
int an_read_jsonl_line(an_reader *r, const char *line, size_t len, size_t line_no, an_error *err);
/* One JSON object that should hold a pair (prompt/negative_prompt, input/output, conversation,
 * messages). where names it in messages ("line 3", "element 7"). */
struct cJSON;
int an_read_object(an_reader *r, const struct cJSON *o, const char *where, an_error *err);
/* Parses text as JSON, accepting the bare NaN / Infinity tokens Python's json module writes (they
 * become null). On failure returns NULL and sets *err_at to the offset where parsing stopped. */
struct cJSON *an_json_parse(const char *text, size_t len, size_t *err_at);
int an_read_json_buffer(an_reader *r, char *buf, size_t len, an_error *err);
int an_read_csv_stream(an_reader *r, an_stream *s, an_error *err);

#endif
