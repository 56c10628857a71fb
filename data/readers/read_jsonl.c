/* JSONL: one JSON object per line, any line length (up to opts->max_record). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "data/readers/reader.h"

int an_read_jsonl_line(an_reader *r, const char *line, size_t len, size_t line_no, an_error *err) {
    size_t i = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) i++;
    if (i == len) return 0;
    r->rep->records++;
    char where[48], *fixed = NULL;
    int stop = 0;
    snprintf(where, sizeof where, "line %zu", line_no);
    const char *text = an_reader_utf8(r, line, len, where, &fixed, &stop, err);
    if (!text) return stop ? -1 : 0;
    size_t tlen = fixed ? strlen(fixed) : len;
    size_t at = 0;
    cJSON *j = an_json_parse(text, tlen, &at);
    int rc;
    if (!j) rc = an_reader_skip(r, err, "line %zu: not valid JSON (at column %zu)", line_no, at + 1);
    else rc = an_read_object(r, j, where, err);
    cJSON_Delete(j);
    free(fixed);
    return rc;
}

int an_read_jsonl_stream(an_reader *r, an_stream *s, an_error *err) {
    int got;
    while ((got = an_stream_getline(s, err)) == 1) {
        const char *line = s->line.v;
        size_t len = s->line.n;
        /* a UTF-8 byte order mark may open the file */
        if (s->line_no == 1 && len >= 3 && !memcmp(line, "\xEF\xBB\xBF", 3)) line += 3, len -= 3;
        if (an_read_jsonl_line(r, line, len, s->line_no, err)) return -1;
    }
    return got < 0 ? -1 : 0;
}
