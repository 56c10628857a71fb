/* The pair list and its JSONL writer. */
#include "data/pairs/pairs.h"

#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "data/readers/reader.h"

int an_pairs_add(an_pairs *p, const char *prompt, const char *negative, const char *source) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        an_pair *v = realloc(p->v, cap * sizeof *v);
        if (!v) return -1;
        p->v = v;
        p->cap = cap;
    }
    an_pair *e = &p->v[p->n];
    e->prompt = strdup(prompt ? prompt : "");
    e->negative = strdup(negative ? negative : "");
    e->source = source ? strdup(source) : NULL;
    if (!e->prompt || !e->negative || (source && !e->source)) {
        free(e->prompt);
        free(e->negative);
        free(e->source);
        return -1;
    }
    p->n++;
    return 0;
}

void an_pairs_free(an_pairs *p) {
    for (size_t i = 0; i < p->n; i++) {
        free(p->v[i].prompt);
        free(p->v[i].negative);
        free(p->v[i].source);
    }
    free(p->v);
    p->v = NULL;
    p->n = p->cap = 0;
}

int an_pairs_write_jsonl(const an_pairs *p, const char *path, an_error *err) {
    an_strbuf b = {0};
    int bad = an_strbuf_reserve(&b, 0);
    for (size_t i = 0; !bad && i < p->n; i++) {
        const an_pair *e = &p->v[i];
        bad = an_strbuf_put(&b, "{\"prompt\": ", 11) || an_strbuf_put_json_string(&b, e->prompt) ||
              an_strbuf_put(&b, ", \"negative_prompt\": ", 21) || an_strbuf_put_json_string(&b, e->negative);
        if (!bad && e->source)
            bad = an_strbuf_put(&b, ", \"source\": ", 12) || an_strbuf_put_json_string(&b, e->source);
        if (!bad) bad = an_strbuf_put(&b, "}\n", 2);
    }
    if (bad) {
        an_strbuf_free(&b);
        return an_fail(err, "%s: out of memory", path);
    }
    int rc = an_write_file_atomic(path, b.v, b.n, err);
    an_strbuf_free(&b);
    return rc;
}
