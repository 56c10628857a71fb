/* an_pairs_read: picks the container (plain, .gz, .zip) and the format (extension or opts), and
 * holds what the format readers share: skip accounting, UTF-8 policy, placeholder substitution. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/file.h"
#include "data/readers/reader.h"
#include "data/readers/zip.h"

int an_reader_skip(an_reader *r, an_error *err, const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (r->opts->strict) return an_fail(err, "%s: %s", r->name, what);
    an_read_report *rep = r->rep;
    rep->skipped++;
    if (rep->n_reasons < AN_READ_REASONS)
        snprintf(rep->reasons[rep->n_reasons++], sizeof rep->reasons[0], "%.100s: %.200s", r->name, what);
    return 0;
}

/* s with every occurrence of ph replaced by with; NULL when out of memory. */
static char *replace_all(const char *s, const char *ph, const char *with) {
    an_strbuf b = {0};
    size_t phn = strlen(ph), wn = strlen(with);
    const char *p = s, *hit;
    if (an_strbuf_reserve(&b, strlen(s))) return NULL;
    while ((hit = strstr(p, ph))) {
        if (an_strbuf_put(&b, p, (size_t)(hit - p)) || an_strbuf_put(&b, with, wn)) goto oom;
        p = hit + phn;
    }
    if (an_strbuf_put(&b, p, strlen(p))) goto oom;
    return b.v;
oom:
    an_strbuf_free(&b);
    return NULL;
}

int an_reader_add(an_reader *r, const char *prompt, const char *negative, const char *source, an_error *err) {
    char *sub = NULL;
    if (r->opts->subject && strstr(prompt, "{prompt}")) {
        sub = replace_all(prompt, "{prompt}", r->opts->subject);
        if (!sub) return an_fail(err, "%s: out of memory", r->name);
        prompt = sub;
    }
    int rc = an_pairs_add(r->out, prompt, negative, source);
    free(sub);
    if (rc) return an_fail(err, "%s: out of memory", r->name);
    r->rep->pairs++;
    return 0;
}

const char *an_reader_utf8(an_reader *r, const char *rec, size_t n, const char *where, char **fixed, int *stop,
                           an_error *err) {
    *fixed = NULL;
    *stop = 0;
    size_t bad = an_utf8_check(rec, n);
    if (bad == n) return rec;
    if (r->opts->utf8_replace) {
        *fixed = an_utf8_replace(rec, n, NULL);
        if (!*fixed) {
            *stop = 1;
            an_fail(err, "%s: out of memory", r->name);
            return NULL;
        }
        r->rep->utf8_replaced++;
        return *fixed;
    }
    *stop = an_reader_skip(r, err, "%s: invalid UTF-8 at byte %zu (byte 0x%02x)", where, bad + 1,
                           (unsigned char)rec[bad]) != 0;
    return NULL;
}

/* Whether s[0..n) ends with suffix, ignoring case. */
static int ends_with_n(const char *s, size_t n, const char *suffix) {
    size_t k = strlen(suffix);
    return n >= k && strncasecmp(s + n - k, suffix, k) == 0;
}

static int ends_with(const char *s, const char *suffix) { return ends_with_n(s, strlen(s), suffix); }

/* Format from the first n bytes of a (member) name, AN_FORMAT_AUTO when unknown. */
static an_pairs_format format_of_name(const char *name, size_t n) {
    if (ends_with_n(name, n, ".jsonl") || ends_with_n(name, n, ".ndjson")) return AN_FORMAT_JSONL;
    if (ends_with_n(name, n, ".json")) return AN_FORMAT_JSON;
    if (ends_with_n(name, n, ".csv")) return AN_FORMAT_CSV;
    return AN_FORMAT_AUTO;
}

static int read_stream(an_reader *r, an_stream *s, an_pairs_format fmt, an_error *err) {
    size_t before = r->rep->pairs, skipped_before = r->rep->skipped;
    int rc;
    if (fmt == AN_FORMAT_JSONL) {
        rc = an_read_jsonl_stream(r, s, err);
    } else if (fmt == AN_FORMAT_CSV) {
        rc = an_read_csv_stream(r, s, err);
    } else {
        size_t len = 0;
        char *buf = an_stream_slurp(s, &len, err);
        if (!buf) return -1;
        rc = len ? an_read_json_buffer(r, buf, len, err) : 0;
        free(buf);
    }
    if (rc) return -1;
    if (s->bytes_read == 0) return an_fail(err, "%s: file is empty", s->name);
    if (r->rep->pairs == before) {
        if (r->rep->skipped > skipped_before && r->rep->n_reasons > 0)
            return an_fail(err, "%s: no prompt pairs found (%zu records skipped; first: %s)", s->name,
                           r->rep->skipped - skipped_before, r->rep->reasons[0]);
        return an_fail(err, "%s: no prompt pairs found", s->name);
    }
    return 0;
}

static int read_zip(an_reader *r, const char *path, an_error *err) {
    an_mapped_file mf;
    if (an_map_file(&mf, path, err)) return -1;
    if (mf.size == 0) return an_fail(err, "%s: file is empty", path);
    an_zip z;
    int rc = an_zip_open(&z, mf.data, mf.size, path, err);
    size_t used = 0;
    for (size_t i = 0; rc == 0 && i < z.n; i++) {
        const an_zip_member *m = &z.m[i];
        size_t nl = strlen(m->name);
        if (!nl || m->name[nl - 1] == '/' || !strncmp(m->name, "__MACOSX/", 9) || m->usize == 0) continue;
        const char *base = strrchr(m->name, '/');
        base = base ? base + 1 : m->name;
        if (base[0] == '.') continue;
        an_pairs_format fmt = r->opts->format ? r->opts->format : format_of_name(m->name, nl);
        if (fmt == AN_FORMAT_AUTO) continue;
        char name[1024];
        snprintf(name, sizeof name, "%.500s:%.500s", path, m->name);
        an_stream s;
        if (m->csize > (uint64_t)(size_t)-1 ||
            an_stream_open_zip_member(&s, name, m->data, (size_t)m->csize, m->method, m->crc, m->usize,
                                      r->opts->max_record, err)) {
            rc = -1;
            break;
        }
        r->name = s.name;
        rc = read_stream(r, &s, fmt, err);
        /* Read the member to its end, so that its CRC-32 is checked even when parsing stopped early;
         * a damaged member is the better explanation of a parse error, so its message wins. */
        an_error drain_err;
        int c;
        while ((c = an_stream_getc(&s, &drain_err)) >= 0) {
        }
        if (c == -2) {
            if (err) *err = drain_err;
            rc = -1;
        }
        an_stream_close(&s);
        used++;
    }
    if (rc == 0 && used == 0)
        rc = an_fail(err, "%s: no member with a known extension (.jsonl, .ndjson, .json, .csv) among %zu; use --format",
                     path, z.n);
    an_zip_free(&z);
    an_unmap_file(&mf);
    return rc;
}

int an_pairs_read(an_pairs *out, const char *path, const an_read_opts *opts, an_read_report *rep, an_error *err) {
    static const an_read_opts defaults = {0};
    an_read_report local;
    if (!opts) opts = &defaults;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    an_reader r = {out, opts, rep, path};
    if (ends_with(path, ".zip")) return read_zip(&r, path, err);
    int gz = ends_with(path, ".gz");
    an_pairs_format fmt = opts->format ? opts->format : format_of_name(path, strlen(path) - (gz ? 3 : 0));
    if (fmt == AN_FORMAT_AUTO)
        return an_fail(err, "%s: cannot tell the format from the name (expected .jsonl, .ndjson, .json, .csv, "
                            "optionally .gz, or .zip); give it with --format", path);
    an_stream s;
    if (an_stream_open_file(&s, path, gz, opts->max_record, err)) return -1;
    r.name = s.name;
    int rc = read_stream(&r, &s, fmt, err);
    an_stream_close(&s);
    return rc;
}
