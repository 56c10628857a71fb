/* Softmax cross-entropy over a vocabulary, fused: no copy of a row of logits is ever made.
 *
 * The forward reads each row once, in chunks, with an online max/sum: a chunk's max and its sum of
 * exp(x - chunk max) are computed in vector lanes, then merged into the running (max, sum) of the row
 * in double. The backward writes the softmax minus the one-hot in place (dlogits may alias logits). */
#include <math.h>

#include "kernels/cpu.h"
#include "kernels/ops.h"

enum { CHUNK = 2048 };

static float row_lse(const float *x, int V) {
    double run_max = -INFINITY, run_sum = 0.0;
    for (int c0 = 0; c0 < V; c0 += CHUNK) {
        int len = V - c0 < CHUNK ? V - c0 : CHUNK;
        const float *xc = x + c0;
        float m = an_max(xc, len);
        float acc[8] = {0};
        int i = 0;
        for (; i + 8 <= len; i += 8)
            for (int l = 0; l < 8; l++) acc[l] += an_expf(xc[i + l] - m);
        float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        for (; i < len; i++) s += an_expf(xc[i] - m);
        if (m > run_max) {
            run_sum = run_sum * exp(run_max - m) + s;
            run_max = m;
        } else {
            run_sum += s * exp(m - run_max);
        }
    }
    return (float)(run_max + log(run_sum));
}

void an_cpu_cross_entropy_forward(const an_ops *o, float *losses, float *lse, const float *logits, const int32_t *targets, int N, int V) {
    (void)o;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        int t = targets[n];
        if (t == AN_IGNORE_INDEX) {
            losses[n] = 0.0f;
            if (lse) lse[n] = 0.0f;
            continue;
        }
        const float *x = logits + (size_t)n * V;
        if (t < 0 || t >= V) { /* a bad target must not read out of bounds, nor pass unnoticed */
            losses[n] = NAN;
            if (lse) lse[n] = NAN;
            continue;
        }
        float l = row_lse(x, V);
        if (lse) lse[n] = l;
        losses[n] = l - x[t];
    }
}

void an_cpu_cross_entropy_backward(const an_ops *o, float *dlogits, const float *logits, const float *lse, const int32_t *targets,
                                   int N, int V, float dloss) {
    (void)o;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        int t = targets[n];
        float *d = dlogits + (size_t)n * V;
        if (t == AN_IGNORE_INDEX) {
            for (int j = 0; j < V; j++) d[j] = 0.0f;
            continue;
        }
        const float *x = logits + (size_t)n * V;
        float l = lse[n];
        if (t < 0 || t >= V) l = NAN;
        for (int j = 0; j < V; j++) d[j] = dloss * an_expf(x[j] - l);
        if (t >= 0 && t < V) d[t] -= dloss;
    }
}
