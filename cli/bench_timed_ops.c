/* An op table that times the linear layers' matmuls (matmul_forward / matmul_backward for trainable
 * float32 weights, and GPT-2's MLP products with their GELU, matmul_gelu_forward / matmul_backward_gelu;
 * linear_forward / linear_backward_input for frozen weights of any dtype: float32, NF4, bf16), the
 * products that are most of a training step, so
 * that `bench train` can say how much of the step they take and what is left for everything else.
 * The CPU backend runs each op to completion before it returns, so wall time around a call is the
 * op's time. The wrapped table and the accumulator are the timed table's context; the table itself
 * is global, which only cli/ may have: one benchmark runs at a time. */
#include <time.h>

#include "cli/cli.h"
#include "kernels/ops.h"

typedef struct timed_ctx {
    const an_ops *inner;
    double matmul_seconds;
} timed_ctx;

static timed_ctx ctx;
static an_ops timed;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void timed_matmul_forward(const an_ops *o, float *out, const float *inp, const float *w, const float *bias,
                                 int N, int C, int OC) {
    timed_ctx *c = o->ctx;
    double t = now_seconds();
    c->inner->matmul_forward(c->inner, out, inp, w, bias, N, C, OC);
    c->matmul_seconds += now_seconds() - t;
}

static void timed_matmul_backward(const an_ops *o, float *dinp, float *dw, float *dbias, const float *dout,
                                  const float *inp, const float *w, int N, int C, int OC) {
    timed_ctx *c = o->ctx;
    double t = now_seconds();
    c->inner->matmul_backward(c->inner, dinp, dw, dbias, dout, inp, w, N, C, OC);
    c->matmul_seconds += now_seconds() - t;
}

/* GPT-2's MLP products, with the GELU or its slope: one op, so the GELU's pass counts as the product's */
static void timed_matmul_gelu_forward(const an_ops *o, float *out, float *pre, const float *inp, const float *w,
                                      const float *bias, int N, int C, int OC) {
    timed_ctx *c = o->ctx;
    double t = now_seconds();
    c->inner->matmul_gelu_forward(c->inner, out, pre, inp, w, bias, N, C, OC);
    c->matmul_seconds += now_seconds() - t;
}

static void timed_matmul_backward_gelu(const an_ops *o, float *dpre, float *dw, float *dbias, const float *dout,
                                       const float *h, const float *pre, const float *w, int N, int C, int OC) {
    timed_ctx *c = o->ctx;
    double t = now_seconds();
    c->inner->matmul_backward_gelu(c->inner, dpre, dw, dbias, dout, h, pre, w, N, C, OC);
    c->matmul_seconds += now_seconds() - t;
}

static void timed_linear_forward(const an_ops *o, float *out, const float *inp, const an_weight *w, const float *bias,
                                 int N, void *work, size_t work_bytes, int mode) {
    timed_ctx *c = o->ctx;
    double t = now_seconds();
    c->inner->linear_forward(c->inner, out, inp, w, bias, N, work, work_bytes, mode);
    c->matmul_seconds += now_seconds() - t;
}

static void timed_linear_backward_input(const an_ops *o, float *dinp, const float *dout, const an_weight *w, int N,
                                        void *work, size_t work_bytes) {
    timed_ctx *c = o->ctx;
    double t = now_seconds();
    c->inner->linear_backward_input(c->inner, dinp, dout, w, N, work, work_bytes);
    c->matmul_seconds += now_seconds() - t;
}

/* The other ops are the inner backend's functions called with this table, whose ctx is ours: right
 * for the CPU backend, whose ops never read ctx; a backend with a context would need every op
 * forwarded (cli_timed_matmul_ops refuses one). */
static int timed_supports(const an_ops *o, an_op_id op, an_dtype weight) {
    const an_ops *in = ((timed_ctx *)o->ctx)->inner;
    return in->supports(in, op, weight);
}

const an_ops *cli_timed_matmul_ops(const an_ops *ops) {
    if (ops->ctx) return ops; /* not timed: see timed_supports */
    ctx.inner = ops;
    ctx.matmul_seconds = 0;
    timed = *ops;
    timed.ctx = &ctx;
    timed.supports = timed_supports;
    timed.matmul_forward = timed_matmul_forward;
    timed.matmul_backward = timed_matmul_backward;
    timed.matmul_gelu_forward = timed_matmul_gelu_forward;
    timed.matmul_backward_gelu = timed_matmul_backward_gelu;
    timed.linear_forward = timed_linear_forward;
    timed.linear_backward_input = timed_linear_backward_input;
    return &timed;
}

double cli_matmul_seconds(void) { return ctx.matmul_seconds; }
