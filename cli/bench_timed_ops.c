/* An op table that times the linear layers' matmuls, the GEMMs that are most of a training step, so
 * that `bench train` can say how much of the step they take and what is left for everything else.
 * The CPU backend runs each op to completion before it returns, so wall time around a call is the
 * op's time. The accumulator is global, which only cli/ may have: one benchmark runs at a time. */
#include <time.h>

#include "cli/cli.h"
#include "kernels/ops.h"

static const an_ops *inner;
static an_ops timed;
static double matmul_seconds;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void timed_matmul_forward(float *out, const float *inp, const float *w, const float *bias, int N, int C,
                                 int OC) {
    double t = now_seconds();
    inner->matmul_forward(out, inp, w, bias, N, C, OC);
    matmul_seconds += now_seconds() - t;
}

static void timed_matmul_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                                  const float *w, int N, int C, int OC) {
    double t = now_seconds();
    inner->matmul_backward(dinp, dw, dbias, dout, inp, w, N, C, OC);
    matmul_seconds += now_seconds() - t;
}

const an_ops *cli_timed_matmul_ops(const an_ops *ops) {
    inner = ops;
    timed = *ops;
    timed.matmul_forward = timed_matmul_forward;
    timed.matmul_backward = timed_matmul_backward;
    return &timed;
}

double cli_matmul_seconds(void) { return matmul_seconds; }
