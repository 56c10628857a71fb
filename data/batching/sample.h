#ifndef AN_SAMPLE_H
#define AN_SAMPLE_H
/* Tokenised training samples, stored back to back: sample i is ids[off[i] .. off[i+1]) with labels of
 * the same length (AN_IGNORE_INDEX = -100 where no loss is taken). */
#include <stddef.h>
#include <stdint.h>
#include "core/error.h"
#include "data/pairs/pairs.h"
#include "data/prompts/template.h"

typedef struct an_samples {
    int32_t *ids, *labels;
    uint64_t *off; /* n + 1 entries once anything is added */
    size_t n, n_tokens;
    size_t cap_samples, cap_tokens;
} an_samples;

int an_samples_add(an_samples *s, const int32_t *ids, const int32_t *labels, size_t len, an_error *err);
void an_samples_free(an_samples *s);

static inline size_t an_sample_len(const an_samples *s, size_t i) { return (size_t)(s->off[i + 1] - s->off[i]); }

/* Encodes every pair with the template (see an_template_encode_sample). Samples left with no trained
 * token (an empty negative cut off by max_len) are dropped, as XTuner drops them; *n_dropped counts them. */
int an_samples_from_pairs(const an_template *t, const an_encoder *enc, const an_pairs *pairs, const char *system,
                          size_t max_len, an_samples *out, size_t *n_dropped, an_error *err);

#endif
