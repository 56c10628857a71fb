/* The training pairs' index with their negatives, and the retrieval-augmented input text (see
 * retrieval_pairs.h). The negatives file is written and read here; the index by retrieval_io.c. */
#include "infer/retrieval_pairs.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "core/file.h"
#include "core/strbuf.h"
#include "data/pairs/stats_strmap.h"
#include "infer/packed_file.h"

#define HEADER 64
static const char magic[8] = {'A', 'N', 'R', 'N', 'E', 'G', 'S', 0};

void an_retrieval_free(an_retrieval *r) {
    if (!r) return;
    an_tfidf_free(r->ix);
    for (size_t i = 0; i < r->n_uniq; i++) free(r->uniq[i]);
    free(r->uniq);
    free(r->neg);
    free(r->neg_id);
    free(r);
}

/* Each pair's negative as an id into the distinct ones (many pairs share one: a user's standard
 * negative, an embedding name). */
static int intern_negatives(an_retrieval *r, const char *const *negatives, an_error *err) {
    an_strmap seen = {0};
    r->neg = calloc(r->n ? r->n : 1, sizeof *r->neg);
    r->uniq = calloc(r->n ? r->n : 1, sizeof *r->uniq);
    r->neg_id = calloc(r->n ? r->n : 1, sizeof *r->neg_id);
    if (!r->neg || !r->uniq || !r->neg_id) goto oom;
    for (size_t i = 0; i < r->n; i++) {
        const char *s = negatives[i] ? negatives[i] : "";
        size_t *val;
        int ins = an_strmap_get(&seen, s, strlen(s), &val);
        if (ins < 0) goto oom;
        if (ins == 1) {
            if (!(r->uniq[r->n_uniq] = strdup(s))) goto oom;
            *val = ++r->n_uniq;
        }
        r->neg_id[i] = *val - 1;
        r->neg[i] = r->uniq[*val - 1];
    }
    an_strmap_free(&seen);
    return 0;
oom:
    an_strmap_free(&seen);
    return an_fail(err, "retrieval: out of memory");
}

an_retrieval *an_retrieval_build(const char *const *prompts, const char *const *negatives, const char *const *sources,
                                 size_t n, int k, int max_tags, an_error *err) {
    if (k < 1 || k > AN_RETRIEVAL_MAX_K)
        return an_fail_null(err, "retrieval: %d neighbours: must be in [1, %d]", k, AN_RETRIEVAL_MAX_K);
    if (max_tags < 1) return an_fail_null(err, "retrieval: max_tags %d: must be at least 1", max_tags);
    an_retrieval *r = calloc(1, sizeof *r);
    if (!r) return an_fail_null(err, "retrieval: out of memory");
    r->n = n;
    r->k = k;
    r->max_tags = max_tags;
    if (!(r->ix = an_tfidf_build_src(prompts, sources, n, err)) || intern_negatives(r, negatives, err)) {
        an_retrieval_free(r);
        return NULL;
    }
    return r;
}

long an_retrieval_neighbours(const an_retrieval *r, const char *prompt, const char *exclude_source, long self, int k,
                             long *idx, double *score, an_error *err) {
    if (k <= 0) return 0;
    if (k > AN_RETRIEVAL_MAX_K) return an_fail(err, "retrieval: %d neighbours: at most %d", k, AN_RETRIEVAL_MAX_K);
    long got[AN_RETRIEVAL_MAX_K + 1];
    double sc[AN_RETRIEVAL_MAX_K + 1];
    /* one more than asked, in case the row itself is among them */
    long m = an_tfidf_topk(r->ix, prompt, exclude_source, (size_t)k + 1, got, sc, err);
    if (m < 0) return -1;
    long out = 0;
    for (long j = 0; j < m && out < k; j++) {
        if (got[j] == self) continue;
        idx[out] = got[j];
        if (score) score[out] = sc[j];
        out++;
    }
    return out;
}

char *an_retrieval_shown(const char *negative, int max_tags) {
    const char *s = negative ? negative : "";
    size_t n = strlen(s), end = n;
    int depth = 0, tags = 1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '(' || c == '[' || c == '{' || c == '<') depth++;
        else if ((c == ')' || c == ']' || c == '}' || c == '>') && depth > 0) depth--;
        else if (c == ',' && depth == 0 && ++tags > max_tags) {
            end = i;
            break;
        }
    }
    char *out = malloc(end + 1);
    if (!out) return NULL;
    size_t w = 0;
    for (size_t i = 0; i < end; i++) {
        char c = s[i];
        out[w++] = c == '\n' || c == '\r' || c == '\t' ? ' ' : c;
    }
    /* trimmed of spaces and a trailing comma */
    while (w && (out[w - 1] == ' ' || out[w - 1] == ',')) w--;
    out[w] = 0;
    size_t lead = 0;
    while (out[lead] == ' ') lead++;
    memmove(out, out + lead, w - lead + 1);
    return out;
}

char *an_retrieval_input(const an_retrieval *r, const char *prompt, const long *idx, long m, an_error *err) {
    const char *p = prompt ? prompt : "";
    an_strbuf b = {0};
    int bad = 0;
    if (m > 0) bad = an_strbuf_str(&b, "Negative prompts of similar prompts:\n");
    for (long j = 0; !bad && j < m; j++) {
        if (idx[j] < 0 || (size_t)idx[j] >= r->n) {
            an_strbuf_free(&b);
            an_fail(err, "retrieval: neighbour %ld is not a training pair (%zu)", idx[j], r->n);
            return NULL;
        }
        char *shown = an_retrieval_shown(r->neg[idx[j]], r->max_tags);
        bad = !shown || an_strbuf_str(&b, "- ") || an_strbuf_str(&b, shown) || an_strbuf_putc(&b, '\n');
        free(shown);
    }
    if (!bad && m > 0) bad = an_strbuf_str(&b, "Prompt: ");
    if (!bad) bad = an_strbuf_put(&b, p, strlen(p)) || an_strbuf_put(&b, "", 0);
    if (bad) {
        an_strbuf_free(&b);
        an_fail(err, "retrieval: out of memory");
        return NULL;
    }
    return b.v;
}

/* ---------- the files ---------- */

int an_retrieval_save(const an_retrieval *r, const char *dir, an_error *err) {
    char path[4096];
    if (an_path_join(path, sizeof path, dir, AN_RETRIEVAL_INDEX)) return an_fail(err, "%s: path too long", dir);
    if (an_tfidf_save(r->ix, path, err)) return -1;
    if (an_path_join(path, sizeof path, dir, AN_RETRIEVAL_NEGATIVES)) return an_fail(err, "%s: path too long", dir);
    /* ids of each pair's negative: its position among the distinct ones */
    an_strbuf b = {0};
    int bad = an_strbuf_rep(&b, 0, HEADER);
    for (size_t i = 0; !bad && i < r->n_uniq; i++)
        bad = an_packed_put_varint(&b, strlen(r->uniq[i])) || an_strbuf_put(&b, r->uniq[i], strlen(r->uniq[i]));
    for (size_t i = 0; !bad && i < r->n; i++) bad = an_packed_put_varint(&b, r->neg_id[i]);
    if (bad) {
        an_strbuf_free(&b);
        return an_fail(err, "%s: out of memory writing the negatives", path);
    }
    size_t raw = b.n - HEADER, packed;
    unsigned char *h = an_packed_deflate(&b, HEADER, &packed);
    an_strbuf_free(&b);
    if (!h) return an_fail(err, "%s: out of memory compressing the negatives", path);
    memcpy(h, magic, 8);
    an_packed_put_le(h + 8, AN_RETRIEVAL_NEGS_VERSION, 4);
    an_packed_put_le(h + 12, (uint64_t)r->k, 4);
    an_packed_put_le(h + 16, (uint64_t)r->max_tags, 4);
    an_packed_put_le(h + 24, r->n, 8);
    an_packed_put_le(h + 32, r->n_uniq, 8);
    an_packed_put_le(h + 40, raw, 8);
    an_packed_put_le(h + 48, packed, 8);
    an_packed_put_le(h + 56, an_hash_bytes(h + HEADER, packed), 8);
    int rc = an_write_file_atomic(path, h, HEADER + packed, err);
    free(h);
    return rc;
}

int an_retrieval_in_dir(const char *dir) {
    char path[4096];
    return dir && an_is_dir(dir) && !an_path_join(path, sizeof path, dir, AN_RETRIEVAL_INDEX) && an_file_exists(path);
}

/* The negatives file into r (r->ix already loaded: its document count must match). */
static int load_negatives(an_retrieval *r, const char *path, an_error *err) {
    size_t size;
    unsigned char *file = (unsigned char *)an_read_file(path, &size, err), *buf = NULL;
    if (!file) return -1;
    int rc = -1;
    if (size < HEADER || memcmp(file, magic, 8)) {
        an_fail(err, "%s: not an autoneg retrieval negatives file (no ANRNEGS header)", path);
        goto done;
    }
    uint64_t version = an_packed_get_le(file + 8, 4), k = an_packed_get_le(file + 12, 4), mt = an_packed_get_le(file + 16, 4);
    uint64_t nd = an_packed_get_le(file + 24, 8), nu = an_packed_get_le(file + 32, 8), pb = an_packed_get_le(file + 40, 8), packed = an_packed_get_le(file + 48, 8);
    if (version != AN_RETRIEVAL_NEGS_VERSION) {
        an_fail(err, "%s: version %llu, this build reads version %u", path, (unsigned long long)version,
                AN_RETRIEVAL_NEGS_VERSION);
        goto done;
    }
    if (k < 1 || k > AN_RETRIEVAL_MAX_K || mt < 1 || mt > (1u << 20)) {
        an_fail(err, "%s: k %llu or max_tags %llu out of range", path, (unsigned long long)k, (unsigned long long)mt);
        goto done;
    }
    if (packed != size - HEADER) {
        an_fail(err, "%s: the header says %llu payload bytes, the file has %zu (cut short or damaged)", path,
                (unsigned long long)packed, size - HEADER);
        goto done;
    }
    if (an_packed_get_le(file + 56, 8) != an_hash_bytes(file + HEADER, size - HEADER)) {
        an_fail(err, "%s: checksum mismatch: the negatives file is damaged", path);
        goto done;
    }
    if (nd != an_tfidf_n_docs(r->ix)) {
        an_fail(err, "%s: %llu pairs, but %s beside it indexes %zu prompts: the two files do not belong together", path,
                (unsigned long long)nd, AN_RETRIEVAL_INDEX, an_tfidf_n_docs(r->ix));
        goto done;
    }
    /* deflate expands at most about 1032:1; each string and id takes at least one byte */
    if (pb > 1032 * packed + 64 || pb > ((uint64_t)1 << 32) || nu > pb || nd > pb || (nd > 0 && nu == 0)) {
        an_fail(err, "%s: the header's sizes (%llu bytes, %llu negatives) do not fit the file", path,
                (unsigned long long)pb, (unsigned long long)nu);
        goto done;
    }
    uLongf got = (uLongf)pb;
    if (!(buf = malloc(pb + 1))) {
        an_fail(err, "%s: out of memory", path);
        goto done;
    }
    if (uncompress(buf, &got, file + HEADER, (uLong)packed) != Z_OK || got != pb) {
        an_fail(err, "%s: the payload does not inflate to the %llu bytes the header gives (damaged)", path,
                (unsigned long long)pb);
        goto done;
    }
    r->n = (size_t)nd;
    r->k = (int)k;
    r->max_tags = (int)mt;
    r->uniq = calloc((size_t)nu + 1, sizeof *r->uniq);
    r->neg = calloc((size_t)nd + 1, sizeof *r->neg);
    r->neg_id = calloc((size_t)nd + 1, sizeof *r->neg_id);
    if (!r->uniq || !r->neg || !r->neg_id) {
        an_fail(err, "%s: out of memory", path);
        goto done;
    }
    an_packed_reader rd = {buf, buf + pb};
    for (size_t i = 0; i < nu; i++) {
        uint64_t len;
        if (an_packed_get_varint(&rd, &len) || len > (uint64_t)(rd.end - rd.p)) {
            an_fail(err, "%s: negative %zu: length runs past the end of the file", path, i);
            goto done;
        }
        if (memchr(rd.p, 0, (size_t)len)) {
            an_fail(err, "%s: negative %zu holds a NUL byte", path, i);
            goto done;
        }
        if (!(r->uniq[i] = strndup((const char *)rd.p, (size_t)len))) {
            an_fail(err, "%s: out of memory", path);
            goto done;
        }
        r->n_uniq++;
        rd.p += len;
    }
    for (size_t i = 0; i < nd; i++) {
        uint64_t id;
        if (an_packed_get_varint(&rd, &id) || id >= nu) {
            an_fail(err, "%s: pair %zu: bad negative id", path, i);
            goto done;
        }
        r->neg_id[i] = (size_t)id;
        r->neg[i] = r->uniq[id];
    }
    if (rd.p != rd.end) {
        an_fail(err, "%s: %zu bytes left over after the negatives", path, (size_t)(rd.end - rd.p));
        goto done;
    }
    rc = 0;
done:
    free(file);
    free(buf);
    return rc;
}

an_retrieval *an_retrieval_load(const char *dir, an_error *err) {
    char path[4096];
    an_retrieval *r = calloc(1, sizeof *r);
    if (!r) return an_fail_null(err, "retrieval: out of memory");
    if (an_path_join(path, sizeof path, dir, AN_RETRIEVAL_INDEX)) {
        an_fail(err, "%s: path too long", dir);
        goto fail;
    }
    if (!(r->ix = an_tfidf_load(path, err))) goto fail;
    if (an_path_join(path, sizeof path, dir, AN_RETRIEVAL_NEGATIVES)) {
        an_fail(err, "%s: path too long", dir);
        goto fail;
    }
    if (!an_file_exists(path)) {
        an_fail(err, "%s: missing: %s is there without the negatives it retrieves", path, AN_RETRIEVAL_INDEX);
        goto fail;
    }
    if (load_negatives(r, path, err)) goto fail;
    return r;
fail:
    an_retrieval_free(r);
    return NULL;
}
