#ifndef AN_OP_HARNESS_H
#define AN_OP_HARNESS_H
/* Helpers for testing an op table against double-precision references: random data, moving buffers
 * to and from a backend through its own memory functions, and central finite differences.
 * A backend is any an_ops; tests/test_ops.c runs its checks on each backend present. */
#include <stddef.h>
#include <stdint.h>

#include "core/rng.h"
#include "kernels/ops.h"

/* a malloc'd host buffer of n uniform values in [lo, hi) */
float *oh_rand_f(an_rng *r, size_t n, float lo, float hi);
/* download an accumulated gradient (malloc'd, double) less the values it started from */
double *oh_grad_delta(const an_ops *ops, const float *dev, const float *start, size_t n);
/* Worst-case float32 error of dot products of length K in any order, with or without FMA:
 * |got - ref| <= (K + 2) u sum |a_k b_k| (Higham's gamma_K, u = 2^-24), element by element, given
 * absdot = sum |a_k b_k|. Returns 1 when every element is within it. */
int oh_within_dot_bound(const float *got, const double *ref, const double *absdot, size_t n, int K);

/* uniform in [lo, hi) */
void oh_fill(an_rng *r, float *x, size_t n, float lo, float hi);
void oh_fill_d(an_rng *r, double *x, size_t n, double lo, double hi);
double *oh_to_double(const float *x, size_t n); /* malloc'd */

/* backend buffer holding a copy of host data (bytes = n * elem) */
void *oh_upload(const an_ops *ops, const void *host, size_t bytes);
/* malloc'd host copy of a backend buffer */
void *oh_download(const an_ops *ops, const void *dev, size_t bytes);

/* adamw_update on one tensor: param, grad, m, v of n floats, weight decay wd (a one-part list in
 * backend memory, allocated and freed around the call) */
void oh_adamw_one(const an_ops *ops, float *param, const float *grad, float grad_scale, float *m, float *v, size_t n,
                  float lr, float beta1, float beta2, float eps, float wd, int step);

/* A reference forward in double: reads its inputs through ctx and writes out[out_n]. */
typedef void (*oh_forward_fn)(void *ctx, double *out);

/* Checks grad[i] (the backend's gradient with respect to x) against the central difference of
 * loss(x) = sum_j out_j * cot_j at `samples` evenly spread entries of x (all when n <= samples).
 * x is perturbed in place (and restored). Returns max |grad - fd| / max(max |fd|, floor). */
double oh_fd_check(oh_forward_fn f, void *ctx, double *x, size_t n, const double *grad, const double *cot,
                   size_t out_n, size_t samples, double floor);

/* max |a - b| / max(max |b|, floor) for double arrays; NaN when any value is NaN (test_nan_max), as
 * for oh_fd_check and oh_rel_err_fd */
double oh_rel_err_d(const double *a, const double *b, size_t n, double floor);
/* a float result against a double reference, same measure */
double oh_rel_err_fd(const float *a, const double *b, size_t n, double floor);

#endif
