/* Random initialisation for presets (benchmarks, training from scratch), the GPT-2 recipe:
 * N(0, 0.02) for embeddings and linear weights, with the projections that write into the residual
 * stream (attention output, MLP down) scaled by 1/sqrt(2 * n_layers) so the stream's variance does not
 * grow with depth; norm weights 1; biases 0. Values are drawn on the host in tensor order from one
 * seeded generator, so a seed gives the same model on every backend. */
#include <math.h>
#include <stdlib.h>

#include "core/rng.h"
#include "model/model.h"

static int is_norm_weight(const an_model *m, const an_param *p) {
    if (p == m->final_norm_w) return 1;
    for (int l = 0; l < m->cfg.n_layers; l++)
        if (p == m->layers[l].attn_norm_w || p == m->layers[l].ffn_norm_w) return 1;
    return 0;
}

static int is_residual_projection(const an_model *m, const an_param *p) {
    for (int l = 0; l < m->cfg.n_layers; l++)
        if (p == m->layers[l].wo || p == m->layers[l].w_down) return 1;
    return 0;
}

an_model *an_model_init_random(const an_model_config *cfg, const an_ops *ops, uint64_t seed, an_error *err) {
    an_model *m = an_model_create(cfg, ops, err);
    if (!m) return NULL;
    size_t maxn = 0;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].numel > maxn) maxn = m->params[i].numel;
    float *buf = malloc(maxn * sizeof(float));
    if (!buf) {
        an_fail(err, "model init: out of memory");
        an_model_free(m);
        return NULL;
    }
    an_rng rng;
    an_rng_seed(&rng, seed);
    float resid_std = 0.02f / sqrtf(2.0f * (float)(cfg->n_layers > 0 ? cfg->n_layers : 1));
    for (int i = 0; i < m->n_params; i++) {
        an_param *p = &m->params[i];
        if (p->ndim == 1) {
            float v = is_norm_weight(m, p) ? 1.0f : 0.0f;
            for (size_t j = 0; j < p->numel; j++) buf[j] = v;
        } else {
            float std = is_residual_projection(m, p) ? resid_std : 0.02f;
            for (size_t j = 0; j < p->numel; j++) buf[j] = std * an_rng_normal(&rng);
        }
        ops->upload(ops, p->data, buf, p->numel * sizeof(float));
    }
    free(buf);
    return m;
}
