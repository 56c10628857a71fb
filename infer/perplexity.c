/* Perplexity through the training forward (an_model_forward with targets), window by window. */
#include "infer/perplexity.h"

#include <math.h>
#include <stdlib.h>

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
