/* Double-precision references of the ops (tests/op_refs.h). */
#include "tests/op_refs.h"

#include <math.h>
#include <stdlib.h>

void oh_ref_matmul(void *vc, double *out) {
    oh_mm_ctx *c = vc;
    for (int n = 0; n < c->N; n++)
        for (int o = 0; o < c->OC; o++) {
            double s = c->bias ? c->bias[o] : 0.0;
            for (int k = 0; k < c->C; k++) s += c->inp[(size_t)n * c->C + k] * c->w[(size_t)o * c->C + k];
            out[(size_t)n * c->OC + o] = s;
        }
}

void oh_ref_embedding(void *vc, double *out) {
    oh_emb_ctx *c = vc;
    for (int n = 0; n < c->N; n++)
        for (int j = 0; j < c->C; j++) out[(size_t)n * c->C + j] = c->table[(size_t)c->ids[n] * c->C + j];
}

void oh_ref_norm(void *vc, double *out) {
    oh_norm_ctx *c = vc;
    for (int n = 0; n < c->N; n++) {
        const double *x = c->inp + (size_t)n * c->C;
        double m = 0.0, v = 0.0;
        if (!c->rms) {
            for (int j = 0; j < c->C; j++) m += x[j];
            m /= c->C;
        }
        for (int j = 0; j < c->C; j++) v += (x[j] - m) * (x[j] - m);
        v /= c->C;
        for (int j = 0; j < c->C; j++)
            out[(size_t)n * c->C + j] = (x[j] - m) / sqrt(v + c->eps) * c->w[j] + (c->b ? c->b[j] : 0.0);
    }
}

void oh_ref_rope(void *vc, double *out) {
    oh_rope_ctx *c = vc;
    int half = c->hd / 2;
    for (int n = 0; n < c->N; n++)
        for (int h = 0; h < c->nh; h++) {
            const double *x = c->x + ((size_t)n * c->nh + h) * c->hd;
            double *o = out + ((size_t)n * c->nh + h) * c->hd;
            for (int i = 0; i < half; i++) {
                double ang = c->pos[n] * pow(c->theta, -2.0 * i / c->hd);
                int a = c->interleaved ? 2 * i : i, b = c->interleaved ? 2 * i + 1 : i + half;
                o[a] = x[a] * cos(ang) - x[b] * sin(ang);
                o[b] = x[a] * sin(ang) + x[b] * cos(ang);
            }
        }
}

void oh_ref_attention_lse(oh_attn_ctx *c, double *out, double *lse) {
    int group = c->nh / c->nkv;
    double scale = 1.0 / sqrt((double)c->hd);
    double *p = malloc(sizeof(double) * (size_t)c->T);
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->nh; h++)
            for (int t = 0; t < c->T; t++) {
                const double *qr = c->q + (((size_t)b * c->T + t) * c->nh + h) * c->hd;
                int s0 = c->seg[b * c->T + t];
                double mx = -INFINITY, sum = 0.0;
                for (int u = s0; u <= t; u++) {
                    const double *kr = c->k + (((size_t)b * c->T + u) * c->nkv + h / group) * c->hd;
                    double s = 0.0;
                    for (int d = 0; d < c->hd; d++) s += qr[d] * kr[d];
                    p[u] = s * scale;
                    mx = p[u] > mx ? p[u] : mx;
                }
                for (int u = s0; u <= t; u++) sum += (p[u] = exp(p[u] - mx));
                if (lse) lse[((size_t)b * c->nh + h) * c->T + t] = mx + log(sum);
                double *o = out + (((size_t)b * c->T + t) * c->nh + h) * c->hd;
                for (int d = 0; d < c->hd; d++) o[d] = 0.0;
                for (int u = s0; u <= t; u++) {
                    const double *vr = c->v + (((size_t)b * c->T + u) * c->nkv + h / group) * c->hd;
                    for (int d = 0; d < c->hd; d++) o[d] += p[u] / sum * vr[d];
                }
            }
    free(p);
}

void oh_ref_attention(void *vc, double *out) { oh_ref_attention_lse(vc, out, NULL); }

void oh_ref_pointwise(void *vc, double *out) {
    oh_pw_ctx *c = vc;
    for (size_t i = 0; i < c->n; i++) {
        double x = c->a[i];
        if (c->kind == 0)
            out[i] = 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
        else
            out[i] = x / (1.0 + exp(-x)) * c->b[i];
    }
}

void oh_ref_adamw(double *p, const double *g, double *m, double *v, size_t n, double lr, double b1, double b2,
                  double eps, double wd, int step) {
    double bc1 = 1 - pow(b1, step), bc2 = 1 - pow(b2, step);
    for (size_t i = 0; i < n; i++) {
        p[i] *= 1 - lr * wd;
        m[i] += (1 - b1) * (g[i] - m[i]);
        v[i] = v[i] * b2 + (1 - b2) * g[i] * g[i];
        p[i] -= lr / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + eps);
    }
}
