#include "data/prompts/subjects.h"

#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/strbuf.h"
#include "data/batching/token_cache.h"
#include "data/readers/reader.h"

void an_subjects_free(an_subjects *s) {
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

int an_prompt_has_placeholder(const char *prompt) {
    return strstr(prompt, "{prompt}") != NULL || strstr(prompt, "{p}") != NULL;
}

int an_subjects_read(an_subjects *s, const char *path, an_error *err) {
    memset(s, 0, sizeof *s);
    size_t size = 0;
    char *text = an_read_file(path, &size, err);
    if (!text) return -1;
    size_t bad = an_utf8_check(text, size);
    if (bad != size) {
        size_t line = 1;
        for (size_t i = 0; i < bad; i++) line += text[i] == '\n';
        an_fail(err, "%s: line %zu: invalid UTF-8", path, line);
        goto fail;
    }
    size_t cap = 0, line = 0;
    for (char *p = text; p < text + size;) {
        char *end = memchr(p, '\n', (size_t)(text + size - p));
        if (!end) end = text + size;
        line++;
        char *a = p, *b = end;
        p = end + 1;
        while (a < b && is_space(*a)) a++;
        while (b > a && is_space(b[-1])) b--;
        if (a == b || *a == '#') continue;
        *b = 0;
        if (memchr(a, 0, (size_t)(b - a))) {
            an_fail(err, "%s: line %zu: a NUL byte", path, line);
            goto fail;
        }
        if (an_prompt_has_placeholder(a)) {
            an_fail(err, "%s: line %zu: a subject must not hold a placeholder ({prompt} or {p})", path, line);
            goto fail;
        }
        if (s->n == cap) {
            size_t nc = cap ? 2 * cap : 64;
            char **nv = realloc(s->v, nc * sizeof *nv);
            if (!nv) goto oom;
            s->v = nv;
            cap = nc;
        }
        if (!(s->v[s->n] = strdup(a))) goto oom;
        s->n++;
    }
    if (s->n == 0) {
        an_fail(err, "%s: no subject in the file (one per line; '#' starts a comment)", path);
        goto fail;
    }
    free(text);
    return 0;
oom:
    an_fail(err, "%s: out of memory", path);
fail:
    free(text);
    an_subjects_free(s);
    return -1;
}

/* s with every {prompt} and {p} replaced by with; NULL when out of memory. */
static char *fill(const char *s, const char *with) {
    an_strbuf b = {0};
    size_t wn = strlen(with);
    if (an_strbuf_reserve(&b, strlen(s) + wn)) return NULL;
    for (const char *p = s; *p;) {
        size_t skip = !strncmp(p, "{prompt}", 8) ? 8 : !strncmp(p, "{p}", 3) ? 3 : 0;
        if (skip) {
            if (an_strbuf_put(&b, with, wn)) goto oom;
            p += skip;
        } else if (an_strbuf_putc(&b, *p++)) {
            goto oom;
        }
    }
    return b.v;
oom:
    an_strbuf_free(&b);
    return NULL;
}

static size_t pick(const an_pair *e, const an_subjects *s, uint64_t seed, uint64_t draw) {
    an_hasher h;
    an_hasher_init(&h);
    an_hasher_u64(&h, seed);
    an_hasher_str(&h, e->prompt);
    an_hasher_str(&h, e->negative);
    an_hasher_str(&h, e->source ? e->source : "");
    an_hasher_u64(&h, draw);
    return (size_t)(an_hasher_final(&h) % s->n);
}

int an_pairs_fill_subjects(an_pairs *p, const an_subjects *s, int per_pair, uint64_t seed, an_error *err) {
    if (per_pair < 1) return an_fail(err, "subjects: %d copies per pair; must be >= 1", per_pair);
    if (!s || s->n == 0) return an_fail(err, "subjects: the subject list is empty");
    an_pairs out = {0};
    size_t *picked = malloc((size_t)per_pair * sizeof *picked);
    if (!picked) return an_fail(err, "subjects: out of memory");
    for (size_t i = 0; i < p->n; i++) {
        const an_pair *e = &p->v[i];
        if (!an_prompt_has_placeholder(e->prompt)) {
            if (an_pairs_add(&out, e->prompt, e->negative, e->source)) goto oom;
            continue;
        }
        /* Draw k is the hash of (pair, k); while the list has enough subjects, a draw that repeats an
         * earlier copy's subject is redrawn, so the copies of one template differ. */
        uint64_t draw = 0;
        for (int k = 0; k < per_pair; k++) {
            size_t idx;
            for (;;) {
                idx = pick(e, s, seed, draw++);
                int seen = 0;
                for (int j = 0; j < k && (size_t)per_pair <= s->n; j++) seen |= picked[j] == idx;
                if (!seen) break;
            }
            picked[k] = idx;
            char *prompt = fill(e->prompt, s->v[idx]);
            int rc = prompt ? an_pairs_add(&out, prompt, e->negative, e->source) : -1;
            free(prompt);
            if (rc) goto oom;
        }
    }
    free(picked);
    an_pairs_free(p);
    *p = out;
    return 0;
oom:
    free(picked);
    an_pairs_free(&out);
    return an_fail(err, "subjects: out of memory");
}
