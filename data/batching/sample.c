#include "data/batching/sample.h"

#include <stdlib.h>
#include <string.h>

void an_samples_free(an_samples *s) {
    free(s->ids);
    free(s->labels);
    free(s->off);
    memset(s, 0, sizeof *s);
}

int an_samples_add(an_samples *s, const int32_t *ids, const int32_t *labels, size_t len, an_error *err) {
    if (s->n + 2 > s->cap_samples) {
        size_t cap = s->cap_samples ? 2 * s->cap_samples : 64;
        uint64_t *off = realloc(s->off, cap * sizeof *off);
        if (!off) return an_fail(err, "samples: out of memory");
        s->off = off;
        s->cap_samples = cap;
        if (s->n == 0) s->off[0] = 0;
    }
    if (s->n_tokens + len > s->cap_tokens) {
        size_t cap = s->cap_tokens ? s->cap_tokens : 1024;
        while (cap < s->n_tokens + len) cap *= 2;
        int32_t *a = realloc(s->ids, cap * sizeof *a);
        if (!a) return an_fail(err, "samples: out of memory");
        s->ids = a;
        int32_t *b = realloc(s->labels, cap * sizeof *b);
        if (!b) return an_fail(err, "samples: out of memory");
        s->labels = b;
        s->cap_tokens = cap;
    }
    if (len) {
        memcpy(s->ids + s->n_tokens, ids, len * sizeof *ids);
        memcpy(s->labels + s->n_tokens, labels, len * sizeof *labels);
    }
    s->n_tokens += len;
    s->off[++s->n] = s->n_tokens;
    return 0;
}

int an_samples_from_pairs(const an_template *t, const an_encoder *enc, const an_pairs *pairs, const char *system,
                          size_t max_len, an_samples *out, size_t *n_dropped, an_error *err) {
    an_ids ids = {0}, labels = {0};
    size_t dropped = 0;
    int rc = 0;
    for (size_t i = 0; i < pairs->n && !rc; i++) {
        rc = an_template_encode_sample(t, enc, pairs->v[i].prompt, pairs->v[i].negative, system, max_len, &ids,
                                       &labels, err);
        if (rc) {
            an_fail_prefix(err, "pair %zu", i + 1);
            break;
        }
        int trained = 0;
        for (size_t k = 0; k < labels.n && !trained; k++) trained = labels.v[k] >= 0;
        if (!trained) {
            dropped++;
            continue;
        }
        rc = an_samples_add(out, ids.v, labels.v, ids.n, err);
    }
    an_ids_free(&ids);
    an_ids_free(&labels);
    if (n_dropped) *n_dropped = dropped;
    return rc;
}
