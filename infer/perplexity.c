/* Perplexity through the training forward (an_model_forward with targets), window by window; and
 * every position's logits through the inference state. */
#include "infer/perplexity.h"

#include <math.h>
#include <stdlib.h>

#include "infer/infer.h"

int an_perplexity(an_model *m, const int32_t *ids, size_t n, int ctx, an_ppl *out, an_error *err) {
    if (n < 2) return an_fail(err, "perplexity: %zu token%s: at least 2 are needed", n, n == 1 ? "" : "s");
    if (ctx == 0) ctx = m->cfg.max_seq;
    if (ctx < 2 || ctx > m->cfg.max_seq)
        return an_fail(err, "perplexity: --ctx %d must be in [2, %d] (the model's context)", ctx, m->cfg.max_seq);
    if ((size_t)ctx > n) ctx = (int)n;
    if (an_model_plan(m, 1, ctx, err)) return -1;
    int32_t *targets = malloc((size_t)ctx * sizeof(int32_t));
    if (!targets) return an_fail(err, "perplexity: out of memory");
    double sum = 0;
    int rc = 0;
    for (size_t start = 0; start + 1 < n; start += (size_t)ctx - 1) {
        int len = n - start < (size_t)ctx ? (int)(n - start) : ctx;
        for (int t = 0; t < len; t++) targets[t] = t + 1 < len ? ids[start + t + 1] : AN_IGNORE_INDEX;
        an_batch b = {ids + start, NULL, NULL, targets, 1, len};
        if (an_model_forward(m, &b, 0, 1.0f, NULL, NULL, err)) {
            rc = -1;
            break;
        }
        const float *l = an_model_token_losses(m);
        for (int t = 0; t + 1 < len; t++) sum += l[t];
    }
    free(targets);
    if (rc) return -1;
    out->tokens = n;
    out->scored = n - 1;
    out->nll = sum / (double)(n - 1);
    out->ppl = exp(out->nll);
    return 0;
}

int an_position_logits(const an_model *m, const int32_t *ids, size_t n, float *out, an_error *err) {
    if (n < 1) return an_fail(err, "logits: no tokens");
    if (n > (size_t)m->cfg.max_seq)
        return an_fail(err, "logits: %zu tokens are more than the model's context (%d)", n, m->cfg.max_seq);
    an_infer *s = an_infer_create(m, m->lora, 1, (int)n, 0, err);
    if (!s) return -1;
    size_t V = (size_t)m->cfg.vocab_size;
    const int32_t slot = 0;
    const int32_t *first = ids;
    const int one = 1;
    int rc = an_infer_prefill(s, &slot, &first, &one, 1, out, err);
    for (size_t t = 1; rc == 0 && t < n; t++) rc = an_infer_decode(s, &slot, ids + t, 1, out + t * V, err);
    an_infer_free(s);
    return rc;
}
