#include "tests/op_harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/test.h" /* test_nan_max */

void oh_fill(an_rng *r, float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * an_rng_uniform(r);
}

void oh_fill_d(an_rng *r, double *x, size_t n, double lo, double hi) {
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * (double)an_rng_uniform(r);
}

double *oh_to_double(const float *x, size_t n) {
    double *d = malloc((n ? n : 1) * sizeof(double));
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

void *oh_upload(const an_ops *ops, const void *host, size_t bytes) {
    void *d = ops->alloc(ops, bytes);
    if (d && host) ops->upload(ops, d, host, bytes);
    return d;
}

void oh_adamw_one(const an_ops *ops, float *param, const float *grad, float grad_scale, float *m, float *v, size_t n,
                  float lr, float beta1, float beta2, float eps, float wd, int step) {
    an_adamw_part part = {param, 0, n, 1};
    an_adamw_part *d = oh_upload(ops, &part, sizeof part);
    ops->adamw_update(ops, d, 1, n, grad, grad_scale, m, v, lr, beta1, beta2, eps, wd, step);
    ops->free(ops, d);
}

void *oh_download(const an_ops *ops, const void *dev, size_t bytes) {
    void *h = malloc(bytes ? bytes : 1);
    ops->download(ops, h, dev, bytes);
    return h;
}

static double loss_of(oh_forward_fn f, void *ctx, const double *cot, double *out, size_t out_n) {
    f(ctx, out);
    double s = 0.0;
    for (size_t j = 0; j < out_n; j++) s += out[j] * cot[j];
    return s;
}

double oh_fd_check(oh_forward_fn f, void *ctx, double *x, size_t n, const double *grad, const double *cot,
                   size_t out_n, size_t samples, double floor) {
    double *out = malloc(out_n * sizeof(double));
    size_t count = n < samples ? n : samples;
    double maxfd = floor, maxdiff = 0.0;
    for (size_t s = 0; s < count; s++) {
        size_t i = count == n ? s : (size_t)((double)s * (double)(n - 1) / (double)(count - 1));
        double x0 = x[i];
        /* h = 1e-4 relative to the scale of the inputs: truncation error h^2 f''' ~ 1e-8, rounding
         * error eps * |loss| / h ~ 1e-11, both far below the float32 errors being tested */
        double h = 1e-4 * (fabs(x0) > 1.0 ? fabs(x0) : 1.0);
        x[i] = x0 + h;
        double lp = loss_of(f, ctx, cot, out, out_n);
        x[i] = x0 - h;
        double lm = loss_of(f, ctx, cot, out, out_n);
        x[i] = x0;
        double fd = (lp - lm) / (2.0 * h);
        maxfd = test_nan_max(maxfd, fabs(fd));
        maxdiff = test_nan_max(maxdiff, fabs(fd - grad[i]));
    }
    free(out);
    return maxdiff / maxfd;
}

double oh_rel_err_d(const double *a, const double *b, size_t n, double floor) {
    double maxb = floor, maxd = 0.0;
    for (size_t i = 0; i < n; i++) {
        maxb = test_nan_max(maxb, fabs(b[i]));
        maxd = test_nan_max(maxd, fabs(a[i] - b[i]));
    }
    return maxd / maxb;
}

double oh_rel_err_fd(const float *a, const double *b, size_t n, double floor) {
    double maxb = floor, maxd = 0.0;
    for (size_t i = 0; i < n; i++) {
        maxb = test_nan_max(maxb, fabs(b[i]));
        maxd = test_nan_max(maxd, fabs((double)a[i] - b[i]));
    }
    return maxd / maxb;
}

float *oh_rand_f(an_rng *r, size_t n, float lo, float hi) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    oh_fill(r, x, n, lo, hi);
    return x;
}

double *oh_grad_delta(const an_ops *ops, const float *dev, const float *start, size_t n) {
    float *h = oh_download(ops, dev, n * sizeof(float));
    double *d = malloc((n ? n : 1) * sizeof(double));
    for (size_t i = 0; i < n; i++) d[i] = (double)h[i] - (double)start[i];
    free(h);
    return d;
}

int oh_within_dot_bound(const float *got, const double *ref, const double *absdot, size_t n, int K) {
    double u = ldexp(1.0, -24);
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)got[i] - ref[i]) <= (K + 2) * u * absdot[i] + 1e-30)) return 0;
    return 1;
}
