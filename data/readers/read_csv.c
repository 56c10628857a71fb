/* CSV with a header row: A1111 styles.csv (name,prompt,negative_prompt), NegOpt's dataset.csv
 * (prompt,negative_prompt,likes,...), or any table with a prompt and a negative column. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "data/readers/csv.h"
#include "data/readers/reader.h"

/* Column whose trimmed header equals one of names (case-insensitive), or -1. */
static long find_column(const an_csv *c, const char *const *names, size_t n_names) {
    for (size_t k = 0; k < n_names; k++) {
        if (!names[k]) continue;
        for (size_t i = 0; i < c->n; i++) {
            const char *h = an_csv_field(c, i);
            if (i == 0 && !strncmp(h, "\xEF\xBB\xBF", 3)) h += 3;
            while (*h == ' ') h++;
            size_t len = strlen(h);
            while (len && h[len - 1] == ' ') len--;
            if (len == strlen(names[k]) && !strncasecmp(h, names[k], len)) return (long)i;
        }
    }
    return -1;
}

int an_read_csv_stream(an_reader *r, an_stream *s, an_error *err) {
    const an_read_opts *op = r->opts;
    an_csv c;
    an_csv_init(&c, s);
    int rc = an_csv_next(&c, err);
    if (rc <= 0) {
        an_csv_free(&c);
        return rc;
    }
    const char *pnames[] = {op->prompt_field ? op->prompt_field : "prompt"};
    const char *nnames[] = {op->negative_field, op->negative_field ? NULL : "negative_prompt",
                            op->negative_field ? NULL : "negative prompt", op->negative_field ? NULL : "negative"};
    const char *snames[] = {op->source_field, op->source_field ? NULL : "source", op->source_field ? NULL : "name"};
    long pc = find_column(&c, pnames, 1), nc = find_column(&c, nnames, 4), sc = find_column(&c, snames, 3);
    if (pc < 0 || nc < 0) {
        rc = an_fail(err, "%s: line 1: the header has no \"%s\" column (it has %zu columns, the first %s)",
                     s->name, pc < 0 ? pnames[0] : (op->negative_field ? op->negative_field : "negative_prompt"), c.n,
                     AN_QUOTE(an_csv_field(&c, 0)));
        an_csv_free(&c);
        return rc;
    }
    size_t need = (size_t)(pc > nc ? pc : nc);
    if (sc > (long)need) need = (size_t)sc;
    while ((rc = an_csv_next(&c, err)) == 1) {
        if (c.n == 1 && !an_csv_field(&c, 0)[0]) continue; /* blank line */
        r->rep->records++;
        char where[48];
        snprintf(where, sizeof where, "line %zu", c.record_line);
        if (c.n <= need) {
            if (an_reader_skip(r, err, "line %zu: %zu fields, but the header has %ld or more", c.record_line, c.n,
                               (long)need + 1)) {
                rc = -1;
                break;
            }
            continue;
        }
        /* the fields sit NUL-separated in one buffer, so one check covers them */
        size_t bad = an_utf8_check(c.data.v, c.data.n);
        const char *pf = an_csv_field(&c, (size_t)pc), *nf = an_csv_field(&c, (size_t)nc);
        const char *sf = sc >= 0 ? an_csv_field(&c, (size_t)sc) : NULL;
        char *fix[3] = {NULL, NULL, NULL};
        if (bad != c.data.n) {
            if (!op->utf8_replace) {
                if (an_reader_skip(r, err, "%s: invalid UTF-8 at byte %zu of the record (byte 0x%02x)", where, bad + 1,
                                   (unsigned char)c.data.v[bad])) {
                    rc = -1;
                    break;
                }
                continue;
            }
            fix[0] = an_utf8_replace(pf, strlen(pf), NULL);
            fix[1] = an_utf8_replace(nf, strlen(nf), NULL);
            fix[2] = sf ? an_utf8_replace(sf, strlen(sf), NULL) : NULL;
            if (!fix[0] || !fix[1] || (sf && !fix[2])) {
                free(fix[0]), free(fix[1]), free(fix[2]);
                rc = an_fail(err, "%s: out of memory", s->name);
                break;
            }
            pf = fix[0], nf = fix[1], sf = fix[2];
            r->rep->utf8_replaced++;
        }
        rc = an_reader_add(r, pf, nf, sf && *sf ? sf : NULL, err);
        free(fix[0]), free(fix[1]), free(fix[2]);
        if (rc) break;
    }
    an_csv_free(&c);
    return rc < 0 ? -1 : 0;
}
