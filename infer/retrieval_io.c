/* Saving and loading the tf-idf index (format in retrieval.h). Every count, length and id read from
 * the file is checked against what is left of it before it is used. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "core/file.h"
#include "core/strbuf.h"
#include "infer/packed_file.h"
#include "infer/retrieval_impl.h"

#define HEADER 64
static const char magic[8] = {'A', 'N', 'T', 'F', 'I', 'D', 'F', 0};

static int put_strings(an_strbuf *b, const char *const *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (an_packed_put_varint(b, strlen(v[i])) || an_strbuf_put(b, v[i], strlen(v[i]))) return -1;
    return 0;
}

int an_tfidf_save(const an_tfidf *ix, const char *path, an_error *err) {
    an_strbuf b = {0};
    int bad = an_strbuf_rep(&b, 0, HEADER) || put_strings(&b, ix->terms, ix->n_terms) ||
              put_strings(&b, ix->sources, ix->n_sources);
    for (size_t d = 0; !bad && d < ix->n_docs; d++) bad = an_packed_put_varint(&b, ix->doc_src[d]);
    for (size_t t = 0; !bad && t < ix->n_terms; t++) {
        bad = an_packed_put_varint(&b, ix->post_off[t + 1] - ix->post_off[t]);
        size_t prev = 0;
        for (size_t k = ix->post_off[t]; !bad && k < ix->post_off[t + 1]; k++) {
            bad = an_packed_put_varint(&b, ix->post[k] - prev);
            prev = ix->post[k];
        }
    }
    if (bad) {
        an_strbuf_free(&b);
        return an_fail(err, "%s: out of memory writing the tf-idf index", path);
    }
    /* the payload deflated (zlib): the tag and source strings are most of it and compress well */
    size_t raw = b.n - HEADER, packed;
    unsigned char *h = an_packed_deflate(&b, HEADER, &packed);
    an_strbuf_free(&b);
    if (!h) return an_fail(err, "%s: out of memory compressing the tf-idf index", path);
    memcpy(h, magic, 8);
    an_packed_put_le(h + 8, AN_TFIDF_VERSION, 4);
    an_packed_put_le(h + 12, 0, 4);
    an_packed_put_le(h + 16, ix->n_docs, 8);
    an_packed_put_le(h + 24, ix->n_terms, 8);
    an_packed_put_le(h + 32, ix->n_sources, 8);
    an_packed_put_le(h + 40, raw, 8);
    an_packed_put_le(h + 48, packed, 8);
    an_packed_put_le(h + 56, an_hash_bytes(h + HEADER, packed), 8);
    int rc = an_write_file_atomic(path, h, HEADER + packed, err);
    free(h);
    return rc;
}

/* n strings into map m (ids 1..n in file order); 0, or -1 with err set. */
static int get_strings(an_packed_reader *r, an_strmap *m, size_t n, const char *path, const char *what, an_error *err) {
    for (size_t i = 0; i < n; i++) {
        uint64_t len;
        if (an_packed_get_varint(r, &len) || len > (uint64_t)(r->end - r->p))
            return an_fail(err, "%s: %s %zu: length runs past the end of the file", path, what, i);
        size_t *val;
        int ins = an_strmap_get(m, (const char *)r->p, (size_t)len, &val);
        if (ins < 0) return an_fail(err, "%s: out of memory", path);
        if (ins == 0) return an_fail(err, "%s: %s %zu appears twice", path, what, i);
        if (memchr(r->p, 0, (size_t)len)) return an_fail(err, "%s: %s %zu holds a NUL byte", path, what, i);
        *val = i + 1;
        r->p += len;
    }
    return 0;
}

an_tfidf *an_tfidf_load(const char *path, an_error *err) {
    size_t size;
    unsigned char *file = (unsigned char *)an_read_file(path, &size, err), *buf = NULL;
    if (!file) return NULL;
    an_tfidf *ix = calloc(1, sizeof *ix);
    if (!ix) {
        free(file);
        return an_fail_null(err, "%s: out of memory", path);
    }
    if (size < HEADER || memcmp(file, magic, 8)) {
        an_fail(err, "%s: not an autoneg tf-idf index (no ANTFIDF header)", path);
        goto fail;
    }
    uint32_t version = an_packed_get_le(file + 8, 4);
    if (version != AN_TFIDF_VERSION || an_packed_get_le(file + 12, 4) != 0) {
        an_fail(err, "%s: tf-idf index version %u, this build reads version %u", path, version, AN_TFIDF_VERSION);
        goto fail;
    }
    uint64_t nd = an_packed_get_le(file + 16, 8), nt = an_packed_get_le(file + 24, 8), ns = an_packed_get_le(file + 32, 8), pb = an_packed_get_le(file + 40, 8);
    uint64_t packed = an_packed_get_le(file + 48, 8);
    if (packed != size - HEADER) {
        an_fail(err, "%s: the header says %llu payload bytes, the file has %zu (cut short or damaged)", path,
                (unsigned long long)packed, size - HEADER);
        goto fail;
    }
    if (an_packed_get_le(file + 56, 8) != an_hash_bytes(file + HEADER, size - HEADER)) {
        an_fail(err, "%s: checksum mismatch: the tf-idf index is damaged (rebuild it)", path);
        goto fail;
    }
    /* deflate expands at most about 1032:1; a larger claim is damage, not a reason to allocate */
    if (pb > 1032 * packed + 64 || pb > ((uint64_t)1 << 32)) {
        an_fail(err, "%s: the header claims %llu bytes unpacked from %llu", path, (unsigned long long)pb,
                (unsigned long long)packed);
        goto fail;
    }
    buf = malloc(pb + 1);
    uLongf got = (uLongf)pb;
    if (!buf) {
        an_fail(err, "%s: out of memory", path);
        goto fail;
    }
    if (uncompress(buf, &got, file + HEADER, (uLong)packed) != Z_OK || got != pb) {
        an_fail(err, "%s: the payload does not inflate to the %llu bytes the header gives (damaged)", path,
                (unsigned long long)pb);
        goto fail;
    }
    free(file);
    file = NULL;
    /* every document, term and source takes at least one byte of the payload */
    if (nd > pb || nt > pb || ns > pb) {
        an_fail(err, "%s: counts (%llu documents, %llu terms, %llu sources) larger than the file", path,
                (unsigned long long)nd, (unsigned long long)nt, (unsigned long long)ns);
        goto fail;
    }
    ix->n_docs = nd, ix->n_terms = nt, ix->n_sources = ns;
    an_packed_reader r = {buf, buf + pb};
    if (get_strings(&r, &ix->vocab, nt, path, "term", err) || get_strings(&r, &ix->srcmap, ns, path, "source", err))
        goto fail;
    ix->doc_src = calloc(nd + 1, sizeof *ix->doc_src);
    ix->post_off = calloc(nt + 2, sizeof *ix->post_off);
    size_t cap = (size_t)(r.end - r.p) + 1; /* each posting takes at least one byte */
    ix->post = malloc(cap * sizeof *ix->post);
    if (!ix->doc_src || !ix->post_off || !ix->post) {
        an_fail(err, "%s: out of memory", path);
        goto fail;
    }
    for (size_t d = 0; d < nd; d++) {
        uint64_t s;
        if (an_packed_get_varint(&r, &s) || s > ns) {
            an_fail(err, "%s: document %zu: bad source id", path, d);
            goto fail;
        }
        ix->doc_src[d] = (size_t)s;
    }
    size_t total = 0;
    for (size_t t = 0; t < nt; t++) {
        uint64_t df;
        if (an_packed_get_varint(&r, &df) || df > nd || df > (uint64_t)(r.end - r.p)) {
            an_fail(err, "%s: term %zu: bad document count", path, t);
            goto fail;
        }
        uint64_t prev = 0;
        for (uint64_t k = 0; k < df; k++) {
            uint64_t gap;
            if (an_packed_get_varint(&r, &gap) || (k > 0 && gap == 0) || gap >= nd - prev) {
                an_fail(err, "%s: term %zu: document ids out of range or not ascending", path, t);
                goto fail;
            }
            prev += gap;
            ix->post[total++] = (size_t)prev;
        }
        ix->post_off[t + 1] = total;
    }
    if (r.p != r.end) {
        an_fail(err, "%s: %zu bytes left over after the index", path, (size_t)(r.end - r.p));
        goto fail;
    }
    if (an_tfidf_finish(ix)) {
        an_fail(err, "%s: out of memory", path);
        goto fail;
    }
    free(buf);
    return ix;
fail:
    free(file);
    free(buf);
    an_tfidf_free(ix);
    return NULL;
}
