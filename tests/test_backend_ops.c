/* The backend-ops harness, after ggml's test-backend-ops: every op of the table (kernels/ops.h), by
 * id, on every backend this binary has, for every weight dtype of the ops that take a weight.
 *
 * For each backend and op (and dtype), when the backend supports it, a case runs the op on small,
 * odd-sized inputs and checks it two ways:
 *  1. against the CPU backend, the reference backend, on the same inputs (the vs_cpu_* helpers).
 *     For the CPU itself the two runs are the same deterministic code on the same data, so this is
 *     trivially equal; it stays because it is what a second backend (CUDA) is held to. Its tolerance
 *     is twice the independent one: when each backend is within tol of the exact result, the two are
 *     within 2 tol of each other. Ops whose result is exact (copies, one rounding, the dropout mask,
 *     which every backend must compute bit for bit) must match bit for bit.
 *  2. against an independent reference: a double-precision implementation written here for forward
 *     ops; for backward ops central finite differences in double of that forward (oh_fd_check in
 *     tests/op_harness.h, loss = sum(out * cotangent)), or the analytic double result where
 *     differences say nothing (the dropout mask, the optimizer, the softmax gradient). Gradient
 *     buffers start non-zero, so the += contract is checked too.
 *
 * The op list is the table's: cases[] is indexed by an_op_id, and an op without a case is a failure,
 * so adding an op to AN_OP_LIST without a case here fails the suite. An op a backend does not support
 * (supports() == 0 for that op and weight dtype) is reported as unsupported: neither passed nor
 * failed. Backends come from the registry by name (backend_names[] below); a name this build lacks,
 * or one it cannot open (a CUDA build without a GPU: "no CUDA device"), is skipped with the registry's
 * message, one line, and is not a failure.
 *
 * Tolerances are stated per op family next to the code. u = 2^-24 is float32's unit roundoff; a
 * wrong formula (a sign, an index, a missing term) gives errors of order 1, far above all of them.
 * tests/test_ops.c remains the detailed test of each op (larger shapes, thread counts, NULL
 * outputs); tests/test_ops_torch.c checks against PyTorch. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/rng.h"
#include "kernels/backend.h"
#include "kernels/dtype.h"
#include "kernels/nf4.h"
#include "infer/sampler.h"
#include "kernels/ops.h"
#include "tests/op_harness.h"
#include "tests/op_refs.h"
#include "tests/quant_fixture.h"
#include "tests/test.h"

#define U32 0x1p-24 /* float32 unit roundoff */

/* Backward ops against finite differences: the reference is double and h = 1e-4 (op_harness.c), so
 * the difference itself is good to ~1e-8; what is measured is the float32 rounding of the backward's
 * sums (at most a few hundred terms: worst case ~100 u = 6e-6 of their magnitudes, which stay within
 * a few times the largest gradient here), so 1e-4 leaves margin and is still 1e4 below a wrong
 * formula. The error is max |grad - fd| / max |fd| over the sampled entries. */
#define TOL_FD 1e-4

static const an_ops *g_o;   /* the backend under test */
static const an_ops *g_cpu; /* the reference backend */
static an_dtype g_dt;       /* the weight dtype of the current case (AN_F32 for ops without a weight) */
static char g_where[128];   /* the shape or variant being checked, for messages */

/* A backend whose matrix products round their inputs (an_ops.matmul_input_u: bf16, u = 2^-8) makes
 * gradients with relative errors of a few u: 16 u more than TOL_FD (0.0626 for bf16) is still well
 * below the O(1) error of a wrong formula. */
static double tol_fd(void) { return TOL_FD + 16.0 * g_o->matmul_input_u; }
static int g_verbose;       /* AN_OPS_VERBOSE=1: print every measured error and its tolerance */

/* the margin of one check, when asked: how close a backend runs to its tolerances */
static void note(const char *what, const char *against, double err, double tol) {
    if (g_verbose)
        fprintf(stderr, "       %-30s %-40s %-24s vs %-4s %9.3g of %.3g\n", test_g.current, g_where, what, against,
                err, tol);
}

static void where(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void where(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_where, sizeof g_where, fmt, ap);
    va_end(ap);
}

/* ---------- memory: everything a case allocates is released after it ---------- */

enum { MEM_HOST, MEM_BACKEND, MEM_NF4 };
typedef struct held {
    int kind;
    const an_ops *o;
    void *p;
} held;
static held *g_held;
static size_t g_nheld, g_capheld;

static void *hold(int kind, const an_ops *o, void *p) {
    if (g_nheld == g_capheld) {
        g_capheld = g_capheld ? 2 * g_capheld : 256;
        g_held = realloc(g_held, g_capheld * sizeof *g_held);
    }
    g_held[g_nheld++] = (held){kind, o, p};
    return p;
}

static void release_all(void) {
    for (size_t i = g_nheld; i-- > 0;) {
        held *h = &g_held[i];
        if (!h->p) continue;
        if (h->kind == MEM_BACKEND) h->o->free(h->o, h->p);
        else if (h->kind == MEM_NF4) an_nf4_tensor_free(h->p), free(h->p);
        else free(h->p);
    }
    g_nheld = 0;
}

static float *hf(size_t n) { return hold(MEM_HOST, NULL, calloc(n ? n : 1, sizeof(float))); }
static double *hd(size_t n) { return hold(MEM_HOST, NULL, calloc(n ? n : 1, sizeof(double))); }
static float *rnd(an_rng *r, size_t n, float lo, float hi) {
    float *x = hf(n);
    oh_fill(r, x, n, lo, hi);
    return x;
}
static double *dbl(const float *x, size_t n) {
    double *d = hd(n);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}
/* backend memory holding a copy of host (zeroed when host is NULL) */
static void *dev(const an_ops *o, const void *host, size_t bytes) {
    void *d = hold(MEM_BACKEND, o, o->alloc(o, bytes ? bytes : 1));
    if (d && host && bytes) o->upload(o, d, host, bytes);
    return d;
}
static float *devf(const an_ops *o, const float *host, size_t n) { return dev(o, host, n * sizeof(float)); }
static int32_t *devi(const an_ops *o, const int32_t *host, size_t n) { return dev(o, host, n * sizeof(int32_t)); }
static float *down(const an_ops *o, const float *d, size_t n) {
    float *h = hf(n);
    o->download(o, h, d, n * sizeof(float));
    return h;
}
/* an accumulated gradient less the value it started from, in double */
static double *delta(const float *got, const float *start, size_t n) {
    double *d = hd(n);
    for (size_t i = 0; i < n; i++) d[i] = (double)got[i] - (double)start[i];
    return d;
}

/* ---------- checks; every error measure is NaN-safe, so a NaN anywhere fails `e <= tol` ---------- */

/* independent reference: max |got - ref| / max(max |ref|, floor) <= tol */
static void expect_rel(const char *what, const float *got, const double *ref, size_t n, double floor, double tol) {
    double e = oh_rel_err_fd(got, ref, n, floor);
    note(what, "ref", e, tol);
    CHECK_MSG(e <= tol, "%s: %s off the double reference by %.3g > %.3g (relative)", g_where, what, e, tol);
}

/* element by element: |got[i] - ref[i]| <= bound[i] (a worst-case rounding bound) */
static void within(const char *what, const char *against, const float *got, const double *ref, const double *bound,
                   double k, size_t n) {
    double worst = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        double e = d == 0.0 ? 0.0 : d / (k * bound[i]); /* a zero bound allows only an exact result */
        if (test_nan_worse(e, worst)) worst = e, at = i;
    }
    note(what, k == 1.0 ? "ref" : "cpu", worst, 1.0);
    CHECK_MSG(worst <= 1.0, "%s: %s[%zu] = %.9g, %s %.9g: |diff| %.3g is %.3g times its bound %.3g", g_where, what,
              at, (double)got[at], against, ref[at], fabs((double)got[at] - ref[at]), worst, k * bound[at]);
}
static void expect_within(const char *what, const float *got, const double *ref, const double *bound, size_t n) {
    within(what, "reference", got, ref, bound, 1.0, n);
}

/* bit for bit (so -0 and 0 differ, as a copy must not change either) */
static void expect_exact(const char *what, const float *got, const float *want, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0) {
            CHECK_MSG(0, "%s: %s[%zu] = %.9g, expected exactly %.9g", g_where, what, i, (double)got[i],
                      (double)want[i]);
            return;
        }
}

/* a backward output against central finite differences of the double forward */
static void expect_fd(const char *what, oh_forward_fn f, void *ctx, double *x, size_t n, const double *grad,
                      const double *cot, size_t out_n, size_t samples, double tol) {
    double e = oh_fd_check(f, ctx, x, n, grad, cot, out_n, samples, 1e-3);
    note(what, "fd", e, tol);
    CHECK_MSG(e <= tol, "%s: %s off the finite differences by %.3g > %.3g (relative)", g_where, what, e, tol);
}

/* Check 1, the backend against the CPU backend (see the top of the file): twice the independent
 * tolerance, or bit for bit. */
static void vs_cpu_rel(const char *what, const float *got, const float *cpu, size_t n, double floor, double tol) {
    double e = test_max_rel_err(got, cpu, n, floor);
    note(what, "cpu", e, tol);
    CHECK_MSG(e <= tol, "%s: %s differs from the cpu backend by %.3g > %.3g (relative)", g_where, what, e, tol);
}
static void vs_cpu_within(const char *what, const float *got, const float *cpu, const double *bound, size_t n) {
    double *c = dbl(cpu, n);
    within(what, "cpu backend", got, c, bound, 2.0, n);
}
static void vs_cpu_exact(const char *what, const float *got, const float *cpu, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &cpu[i], sizeof(float)) != 0) {
            CHECK_MSG(0, "%s: %s[%zu] = %.9g, the cpu backend %.9g (must be bit for bit)", g_where, what, i,
                      (double)got[i], (double)cpu[i]);
            return;
        }
}

/* ---------- products in double, with their float32 error bound ---------- */

/* out[m, p] = start[m, p] + scale * sum_k A(m, k) B(p, k) + bias[p], A(m, k) = A[m * am + k * ak] and
 * B(p, k) = B[p * bp + k * bk] (start, bias may be NULL), and for each element Higham's worst-case
 * error of computing it in float32 in any order, with or without FMA (tests/op_harness.h):
 * (terms + 2) u (|start| + |scale| sum |A B| + |bias|), where terms counts the products plus one for
 * each further rounding the caller's op makes (the start, the bias, a scaling). */
typedef struct gemm_ref {
    double *val, *bound;
} gemm_ref;

static gemm_ref ref_gemm(const double *A, int am, int ak, const double *B, int bp, int bk, int M, int P, int K,
                         double scale, const double *start, const double *bias, int terms) {
    gemm_ref g = {hd((size_t)M * P), hd((size_t)M * P)};
    for (int m = 0; m < M; m++)
        for (int p = 0; p < P; p++) {
            double s = 0.0, a = 0.0;
            for (int k = 0; k < K; k++) {
                double t = A[(size_t)m * am + (size_t)k * ak] * B[(size_t)p * bp + (size_t)k * bk];
                s += t;
                a += fabs(t);
            }
            s *= scale, a *= fabs(scale);
            /* inputs rounded before multiplying (an_ops.matmul_input_u): each product off by 2u + u^2 */
            double u = g_o->matmul_input_u, rounded = (2 * u + u * u) * a;
            size_t i = (size_t)m * P + p;
            if (start) s += start[i], a += fabs(start[i]);
            if (bias) s += bias[p], a += fabs(bias[p]);
            g.val[i] = s;
            g.bound[i] = (terms + 2) * U32 * a + rounded;
        }
    return g;
}


/* ====================================== matmul ====================================== */

/* N, C, OC, with bias: odd sizes; the third is several rows and columns of the GEMM's micro-tiles */
/* N, C, OC, bias; the last has more rows than one slice of the CUDA bias gradient's column sums (64) */
static const int mm_shapes[][4] = {{7, 13, 19, 1}, {1, 37, 5, 0}, {21, 67, 33, 1}, {150, 11, 70, 1}};
enum { MM_SHAPES = sizeof mm_shapes / sizeof mm_shapes[0] };

static float *run_matmul_forward(const an_ops *o, const float *inp, const float *w, const float *bias, int N, int C,
                                 int OC) {
    float *out = devf(o, NULL, (size_t)N * OC);
    o->matmul_forward(o, out, devf(o, inp, (size_t)N * C), devf(o, w, (size_t)OC * C), bias ? devf(o, bias, OC) : NULL,
                      N, C, OC);
    return down(o, out, (size_t)N * OC);
}

/* Each output is a float32 dot product of length C plus the bias: Higham's bound with C + 1 terms,
 * element by element. */
static void case_matmul_forward(void) {
    for (int s = 0; s < MM_SHAPES; s++) {
        int N = mm_shapes[s][0], C = mm_shapes[s][1], OC = mm_shapes[s][2], hb = mm_shapes[s][3];
        where("N=%d C=%d OC=%d%s", N, C, OC, hb ? " bias" : "");
        an_rng r;
        an_rng_seed(&r, 100 + (uint64_t)s);
        float *inp = rnd(&r, (size_t)N * C, -1, 1), *w = rnd(&r, (size_t)OC * C, -1, 1), *b = rnd(&r, OC, -1, 1);
        float *got = run_matmul_forward(g_o, inp, w, hb ? b : NULL, N, C, OC);
        float *cpu = run_matmul_forward(g_cpu, inp, w, hb ? b : NULL, N, C, OC);
        gemm_ref ref = ref_gemm(dbl(inp, (size_t)N * C), C, 1, dbl(w, (size_t)OC * C), C, 1, N, OC, C, 1.0, NULL,
                                hb ? dbl(b, OC) : NULL, C + 1);
        expect_within("out", got, ref.val, ref.bound, (size_t)N * OC);
        vs_cpu_within("out", got, cpu, ref.bound, (size_t)N * OC);
    }
}

/* The product with GELU after it. pre: as matmul_forward (Higham's bound against the exact product).
 * out: GELU of the backend's own pre (in double), within the pointwise op's bound of 2e-6 of each
 * value (floor 1e-3) plus, where the GELU may run in the GEMM's epilogue on bf16-rounded inputs
 * (cuda-bf16's cuBLASLt, whose arithmetic is the library's own), 4 u of it; against the CPU, pre
 * within twice the product's bound and out within twice (that bound times GELU's largest slope, 1.13,
 * plus the GELU's own). The shapes take the epilogue (OC a multiple of 8, with and without bias) and the two ops
 * after each other (odd OC); a GELU applied before the bias, or to nothing, is off by O(1). */
static void run_matmul_gelu(const an_ops *o, const float *inp, const float *w, const float *bias, int N, int C, int OC,
                            float **out, float **pre) {
    float *dout = devf(o, NULL, (size_t)N * OC), *dpre = devf(o, NULL, (size_t)N * OC);
    o->matmul_gelu_forward(o, dout, dpre, devf(o, inp, (size_t)N * C), devf(o, w, (size_t)OC * C),
                           bias ? devf(o, bias, OC) : NULL, N, C, OC);
    *out = down(o, dout, (size_t)N * OC), *pre = down(o, dpre, (size_t)N * OC);
}

static void case_matmul_gelu_forward(void) {
    static const int shapes[][4] = {{7, 13, 24, 1}, {1, 37, 16, 0}, {21, 67, 33, 1}, {150, 11, 64, 1}};
    for (int s = 0; s < 4; s++) {
        int N = shapes[s][0], C = shapes[s][1], OC = shapes[s][2], hb = shapes[s][3];
        size_t no = (size_t)N * OC;
        where("N=%d C=%d OC=%d%s", N, C, OC, hb ? " bias" : "");
        an_rng r;
        an_rng_seed(&r, 130 + (uint64_t)s);
        /* products of a few units, so the GELU's curved middle and both tails are taken */
        float *inp = rnd(&r, (size_t)N * C, -1.5f, 1.5f), *w = rnd(&r, (size_t)OC * C, -1, 1), *b = rnd(&r, OC, -1, 1);
        float *out, *pre, *cpu_out, *cpu_pre;
        run_matmul_gelu(g_o, inp, w, hb ? b : NULL, N, C, OC, &out, &pre);
        run_matmul_gelu(g_cpu, inp, w, hb ? b : NULL, N, C, OC, &cpu_out, &cpu_pre);
        gemm_ref ref = ref_gemm(dbl(inp, (size_t)N * C), C, 1, dbl(w, (size_t)OC * C), C, 1, N, OC, C, 1.0, NULL,
                                hb ? dbl(b, OC) : NULL, C + 1);
        expect_within("pre", pre, ref.val, ref.bound, no);
        vs_cpu_within("pre", pre, cpu_pre, ref.bound, no);
        oh_pw_ctx c = {dbl(pre, no), NULL, no, 0};
        double *gelu = hd(no), *bound = hd(no), *cpu_bound = hd(no);
        oh_ref_pointwise(&c, gelu);
        for (size_t i = 0; i < no; i++) {
            bound[i] = (2e-6 + 4 * g_o->matmul_input_u) * test_nan_max(fabs(gelu[i]), 1e-3);
            cpu_bound[i] = bound[i] + 1.13 * ref.bound[i]; /* vs_cpu_within doubles it */
        }
        expect_within("out = gelu(pre)", out, gelu, bound, no);
        vs_cpu_within("out", out, cpu_out, cpu_bound, no);
    }
}

typedef struct mm_grads {
    float *dinp, *dw, *dbias;
} mm_grads;

static mm_grads run_matmul_backward(const an_ops *o, const float *dout, const float *inp, const float *w,
                                    const float *g0i, const float *g0w, const float *g0b, int hb, int N, int C, int OC) {
    float *di = devf(o, g0i, (size_t)N * C), *dw = devf(o, g0w, (size_t)OC * C), *db = devf(o, g0b, OC);
    o->matmul_backward(o, di, dw, hb ? db : NULL, devf(o, dout, (size_t)N * OC), devf(o, inp, (size_t)N * C),
                       devf(o, w, (size_t)OC * C), N, C, OC);
    return (mm_grads){down(o, di, (size_t)N * C), down(o, dw, (size_t)OC * C), down(o, db, OC)};
}

/* dinp = dout w (OC products), dw = dout^T inp (N products), dbias = column sums (N terms), each added
 * to its start value (one more term): Higham's bound element by element against the exact products,
 * and finite differences of the forward (linear, so exact up to double rounding): TOL_FD. */
static void case_matmul_backward(void) {
    for (int s = 0; s < MM_SHAPES; s++) {
        int N = mm_shapes[s][0], C = mm_shapes[s][1], OC = mm_shapes[s][2], hb = mm_shapes[s][3];
        where("N=%d C=%d OC=%d%s", N, C, OC, hb ? " bias" : " dbias NULL");
        size_t nc = (size_t)N * C, wc = (size_t)OC * C, no = (size_t)N * OC;
        an_rng r;
        an_rng_seed(&r, 110 + (uint64_t)s);
        float *inp = rnd(&r, nc, -1, 1), *w = rnd(&r, wc, -1, 1), *b = rnd(&r, OC, -1, 1), *dout = rnd(&r, no, -1, 1);
        float *g0i = rnd(&r, nc, -1, 1), *g0w = rnd(&r, wc, -1, 1), *g0b = rnd(&r, OC, -1, 1);
        mm_grads got = run_matmul_backward(g_o, dout, inp, w, g0i, g0w, g0b, hb, N, C, OC);
        mm_grads cpu = run_matmul_backward(g_cpu, dout, inp, w, g0i, g0w, g0b, hb, N, C, OC);
        double *inp_d = dbl(inp, nc), *w_d = dbl(w, wc), *b_d = dbl(b, OC), *dout_d = dbl(dout, no);
        double *ones = hd(N);
        for (int n = 0; n < N; n++) ones[n] = 1.0;
        gemm_ref ri = ref_gemm(dout_d, OC, 1, w_d, 1, C, N, C, OC, 1.0, dbl(g0i, nc), NULL, OC + 1);
        gemm_ref rw = ref_gemm(dout_d, 1, OC, inp_d, 1, C, OC, C, N, 1.0, dbl(g0w, wc), NULL, N + 1);
        gemm_ref rb = ref_gemm(dout_d, 1, OC, ones, 0, 1, OC, 1, N, 1.0, dbl(g0b, OC), NULL, N + 1);
        expect_within("dinp", got.dinp, ri.val, ri.bound, nc);
        expect_within("dw", got.dw, rw.val, rw.bound, wc);
        vs_cpu_within("dinp", got.dinp, cpu.dinp, ri.bound, nc);
        vs_cpu_within("dw", got.dw, cpu.dw, rw.bound, wc);
        if (hb) {
            expect_within("dbias", got.dbias, rb.val, rb.bound, OC);
            vs_cpu_within("dbias", got.dbias, cpu.dbias, rb.bound, OC);
        } else {
            expect_exact("dbias (NULL: untouched)", got.dbias, g0b, OC);
        }
        oh_mm_ctx c = {inp_d, w_d, hb ? b_d : NULL, N, C, OC};
        expect_fd("dinp", oh_ref_matmul, &c, inp_d, nc, delta(got.dinp, g0i, nc), dout_d, no, 200, tol_fd());
        expect_fd("dw", oh_ref_matmul, &c, w_d, wc, delta(got.dw, g0w, wc), dout_d, no, 200, tol_fd());
        if (hb) expect_fd("dbias", oh_ref_matmul, &c, b_d, OC, delta(got.dbias, g0b, OC), dout_d, no, 200, tol_fd());
    }
}

/* The backward of the MLP's second product through the GELU before it: dpre = (dout w) gelu'(pre),
 * overwritten (the buffer starts as NaN, which any read of it would spread). Against the product's
 * double reference times the slope's (tanh in double): the product's Higham bound times the largest
 * slope (1.13), plus the slope's own error (2e-6 of its magnitude, floor 1e-3, or with a backend whose
 * GEMM inputs are bf16 and whose epilogue's arithmetic is the library's, 4 u more) times the product,
 * plus the final rounding. dw and dbias as matmul_backward's (accumulated, Higham). Against the CPU
 * twice each. Shapes as matmul_gelu_forward's: the epilogue (C a multiple of 8) and the two steps. */
static mm_grads run_matmul_backward_gelu(const an_ops *o, const float *dout, const float *h, const float *pre, const float *w,
                                         const float *g0w, const float *g0b, int hb, int N, int C, int OC) {
    float *nan = hf((size_t)N * C);
    for (size_t i = 0; i < (size_t)N * C; i++) nan[i] = NAN;
    float *dp = devf(o, nan, (size_t)N * C), *dw = devf(o, g0w, (size_t)OC * C), *db = devf(o, g0b, OC);
    o->matmul_backward_gelu(o, dp, dw, hb ? db : NULL, devf(o, dout, (size_t)N * OC), devf(o, h, (size_t)N * C),
                            devf(o, pre, (size_t)N * C), devf(o, w, (size_t)OC * C), N, C, OC);
    return (mm_grads){down(o, dp, (size_t)N * C), down(o, dw, (size_t)OC * C), down(o, db, OC)};
}

static double gelu_slope_ref(double x) {
    double k = 0.7978845608028654, t = tanh(k * (x + 0.044715 * x * x * x));
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x);
}

static void case_matmul_backward_gelu(void) {
    static const int shapes[][4] = {{7, 24, 13, 1}, {1, 16, 37, 0}, {21, 33, 67, 1}, {150, 64, 11, 1}};
    for (int s = 0; s < 4; s++) {
        int N = shapes[s][0], C = shapes[s][1], OC = shapes[s][2], hb = shapes[s][3];
        size_t nc = (size_t)N * C, wc = (size_t)OC * C, no = (size_t)N * OC;
        where("N=%d C=%d OC=%d%s", N, C, OC, hb ? " dbias" : " dbias NULL");
        an_rng r;
        an_rng_seed(&r, 140 + (uint64_t)s);
        float *pre = rnd(&r, nc, -4, 4), *h = rnd(&r, nc, -1, 1), *w = rnd(&r, wc, -1, 1), *dout = rnd(&r, no, -1, 1);
        float *g0w = rnd(&r, wc, -1, 1), *g0b = rnd(&r, OC, -1, 1);
        mm_grads got = run_matmul_backward_gelu(g_o, dout, h, pre, w, g0w, g0b, hb, N, C, OC);
        mm_grads cpu = run_matmul_backward_gelu(g_cpu, dout, h, pre, w, g0w, g0b, hb, N, C, OC);
        double *dout_d = dbl(dout, no), *ones = hd(N);
        for (int n = 0; n < N; n++) ones[n] = 1.0;
        gemm_ref prod = ref_gemm(dout_d, OC, 1, dbl(w, wc), 1, C, N, C, OC, 1.0, NULL, NULL, OC);
        gemm_ref rw = ref_gemm(dout_d, 1, OC, dbl(h, nc), 1, C, OC, C, N, 1.0, dbl(g0w, wc), NULL, N + 1);
        gemm_ref rb = ref_gemm(dout_d, 1, OC, ones, 0, 1, OC, 1, N, 1.0, dbl(g0b, OC), NULL, N + 1);
        double *ref = hd(nc), *bound = hd(nc), slope_u = 2e-6 + 4 * g_o->matmul_input_u;
        for (size_t i = 0; i < nc; i++) {
            double sl = gelu_slope_ref(pre[i]);
            ref[i] = prod.val[i] * sl;
            bound[i] = 1.13 * prod.bound[i] + slope_u * test_nan_max(fabs(sl), 1e-3) * (fabs(prod.val[i]) + prod.bound[i]) +
                       U32 * fabs(ref[i]);
        }
        expect_within("dpre", got.dinp, ref, bound, nc);
        vs_cpu_within("dpre", got.dinp, cpu.dinp, bound, nc);
        expect_within("dw", got.dw, rw.val, rw.bound, wc);
        vs_cpu_within("dw", got.dw, cpu.dw, rw.bound, wc);
        if (hb) {
            expect_within("dbias", got.dbias, rb.val, rb.bound, OC);
            vs_cpu_within("dbias", got.dbias, cpu.dbias, rb.bound, OC);
        } else
            expect_exact("dbias untouched", got.dbias, g0b, OC);
    }
}


/* ====================================== embedding ====================================== */

enum { EMB_N = 11, EMB_V = 9, EMB_C = 37 };
/* repeats: the backward must add, not store */
static const int32_t emb_ids[EMB_N] = {3, 0, 8, 3, 3, 5, 8, 1, 0, 7, 3};


static float *run_embedding_forward(const an_ops *o, const float *table) {
    float *out = devf(o, NULL, EMB_N * EMB_C);
    o->embedding_forward(o, out, devi(o, emb_ids, EMB_N), devf(o, table, EMB_V * EMB_C), EMB_N, EMB_C);
    return down(o, out, EMB_N * EMB_C);
}

/* a copy: bit for bit */
static void case_embedding_forward(void) {
    where("N=%d V=%d C=%d", EMB_N, EMB_V, EMB_C);
    an_rng r;
    an_rng_seed(&r, 200);
    float *table = rnd(&r, EMB_V * EMB_C, -1, 1), *want = hf(EMB_N * EMB_C);
    for (int n = 0; n < EMB_N; n++) memcpy(want + n * EMB_C, table + emb_ids[n] * EMB_C, EMB_C * sizeof(float));
    float *got = run_embedding_forward(g_o, table), *cpu = run_embedding_forward(g_cpu, table);
    expect_exact("out", got, want, EMB_N * EMB_C);
    vs_cpu_exact("out", got, cpu, EMB_N * EMB_C);
}

static float *run_embedding_backward(const an_ops *o, const float *g0, const float *dout, const int32_t *ids, int N,
                                     int V, int C) {
    float *dt = devf(o, g0, (size_t)V * C);
    o->embedding_backward(o, dt, devf(o, dout, (size_t)N * C), devi(o, ids, N), N, C);
    return down(o, dt, (size_t)V * C);
}

/* dtable[v] = its start plus the rows of dout whose id is v: against the sum in double within
 * Higham's bound ((terms + 2) u sum |x|, any order), finite differences where fd (linear: exact up to
 * double rounding), and the CPU bit for bit: every backend adds a row's tokens in token order onto
 * the row's start, one rounding an add (the CUDA backend sorts the tokens by id first). */
static void embedding_backward_case(const int32_t *ids, int N, int V, int C, uint64_t seed, int fd) {
    where("N=%d V=%d C=%d", N, V, C);
    an_rng r;
    an_rng_seed(&r, seed);
    size_t tn = (size_t)V * C, dn = (size_t)N * C;
    float *table = rnd(&r, tn, -1, 1), *dout = rnd(&r, dn, -1, 1), *g0 = rnd(&r, tn, -1, 1);
    float *got = run_embedding_backward(g_o, g0, dout, ids, N, V, C), *cpu = run_embedding_backward(g_cpu, g0, dout, ids, N, V, C);
    double *ref = hd(tn), *sum_abs = hd(tn);
    int *terms = calloc((size_t)V, sizeof(int));
    for (size_t i = 0; i < tn; i++) ref[i] = g0[i], sum_abs[i] = fabs(g0[i]);
    for (int n = 0; n < N; n++) {
        terms[ids[n]]++;
        for (int j = 0; j < C; j++)
            ref[(size_t)ids[n] * C + j] += dout[(size_t)n * C + j], sum_abs[(size_t)ids[n] * C + j] += fabs(dout[(size_t)n * C + j]);
    }
    double *bound = hd(tn);
    for (int v = 0; v < V; v++)
        for (int j = 0; j < C; j++) bound[(size_t)v * C + j] = (terms[v] + 3) * U32 * sum_abs[(size_t)v * C + j];
    free(terms);
    expect_within("dtable", got, ref, bound, tn);
    vs_cpu_exact("dtable", got, cpu, tn);
    if (fd) {
        double *table_d = dbl(table, tn);
        oh_emb_ctx c = {ids, table_d, N, C};
        expect_fd("dtable", oh_ref_embedding, &c, table_d, tn, delta(got, g0, tn), dbl(dout, dn), dn, tn, tol_fd());
    }
}

/* the small case with finite differences; then 3,000 tokens with a third of them one id (one long run,
 * and the CUDA sort's merges past its shared-memory chunk) and 1,500 distinct ids in shuffled order (as
 * the LM head's input gradient is scattered back into its rows) */
static void case_embedding_backward(void) {
    embedding_backward_case(emb_ids, EMB_N, EMB_V, EMB_C, 210, 1);
    enum { LONG_N = 3000, LONG_V = 40, LONG_C = 150, PERM_N = 1500, PERM_C = 64 };
    an_rng r;
    an_rng_seed(&r, 211);
    int32_t *ids = malloc(sizeof(int32_t) * LONG_N);
    for (int n = 0; n < LONG_N; n++) ids[n] = n % 3 == 0 ? 7 : (int32_t)an_rng_below(&r, LONG_V);
    embedding_backward_case(ids, LONG_N, LONG_V, LONG_C, 212, 0);
    free(ids);
    ids = malloc(sizeof(int32_t) * PERM_N);
    for (int n = 0; n < PERM_N; n++) ids[n] = n;
    for (int n = PERM_N - 1; n > 0; n--) { /* Fisher-Yates */
        int k = (int)an_rng_below(&r, (uint64_t)n + 1);
        int32_t t = ids[n];
        ids[n] = ids[k], ids[k] = t;
    }
    embedding_backward_case(ids, PERM_N, PERM_N, PERM_C, 213, 0);
    free(ids);
}

/* ====================================== layernorm / rmsnorm ====================================== */

/* Forward tolerance 1e-5 relative to the largest value: the mean and the variance are float32 sums of
 * C terms (worst case (C + 2) u = 2e-5 of sum |x| at C = 300, ~sqrt(C) u in practice), then a
 * handful of roundings per output of magnitude ~3; statistics likewise. */
#define TOL_NORM 1e-5


/* N, C: odd; C = 300 spans more than one column block of the weight-gradient pass */
/* N, C; the last has more rows than one slice of the CUDA weight gradients' column sums (64) */
static const int norm_shapes[][2] = {{5, 37}, {3, 300}, {150, 29}};
enum { NORM_SHAPES = sizeof norm_shapes / sizeof norm_shapes[0] };

typedef struct norm_out {
    float *out, *mean, *rstd, *dinp, *dw, *db;
} norm_out;

typedef struct norm_in {
    const float *inp, *w, *b, *dout, *g0i, *g0w, *g0b;
    int N, C, rms;
    float eps;
} norm_in;

/* forward, then (backward) the backward with the forward's statistics, on backend o */
static norm_out run_norm(const an_ops *o, const norm_in *in, int backward) {
    size_t nc = (size_t)in->N * in->C;
    float *inp = devf(o, in->inp, nc), *w = devf(o, in->w, in->C), *b = devf(o, in->b, in->C);
    float *out = devf(o, NULL, nc), *mean = devf(o, NULL, in->N), *rstd = devf(o, NULL, in->N);
    if (in->rms)
        o->rmsnorm_forward(o, out, rstd, inp, w, in->N, in->C, in->eps);
    else
        o->layernorm_forward(o, out, mean, rstd, inp, w, b, in->N, in->C, in->eps);
    norm_out r = {down(o, out, nc), down(o, mean, in->N), down(o, rstd, in->N), NULL, NULL, NULL};
    if (backward) {
        float *di = devf(o, in->g0i, nc), *dw = devf(o, in->g0w, in->C), *db = devf(o, in->g0b, in->C);
        float *dout = devf(o, in->dout, nc);
        if (in->rms)
            o->rmsnorm_backward(o, di, dw, dout, inp, w, rstd, in->N, in->C);
        else
            o->layernorm_backward(o, di, dw, db, dout, inp, w, mean, rstd, in->N, in->C);
        r.dinp = down(o, di, nc), r.dw = down(o, dw, in->C), r.db = down(o, db, in->C);
    }
    return r;
}

static norm_in make_norm_in(an_rng *r, int rms, int N, int C) {
    size_t nc = (size_t)N * C;
    /* an offset mean and uneven scale, so centring and eps matter */
    norm_in in = {rnd(r, nc, -1.5f, 2.5f), rnd(r, C, 0.5f, 1.5f), rnd(r, C, -0.5f, 0.5f), rnd(r, nc, -1, 1),
                  rnd(r, nc, -1, 1), rnd(r, C, -1, 1), rnd(r, C, -1, 1), N, C, rms, 1e-5f};
    return in;
}

static void check_norm_forward(int rms) {
    for (int s = 0; s < NORM_SHAPES; s++) {
        int N = norm_shapes[s][0], C = norm_shapes[s][1];
        where("N=%d C=%d", N, C);
        an_rng r;
        an_rng_seed(&r, 300 + (uint64_t)(10 * rms + s));
        norm_in in = make_norm_in(&r, rms, N, C);
        norm_out got = run_norm(g_o, &in, 0), cpu = run_norm(g_cpu, &in, 0);
        size_t nc = (size_t)N * C;
        oh_norm_ctx c = {dbl(in.inp, nc), dbl(in.w, C), rms ? NULL : dbl(in.b, C), N, C, rms, in.eps};
        double *ref = hd(nc), *mean = hd(N), *rstd = hd(N);
        oh_ref_norm(&c, ref);
        for (int n = 0; n < N; n++) {
            double m = 0.0, v = 0.0;
            for (int j = 0; j < C; j++) m += rms ? 0.0 : c.inp[(size_t)n * C + j] / C;
            for (int j = 0; j < C; j++) v += (c.inp[(size_t)n * C + j] - m) * (c.inp[(size_t)n * C + j] - m) / C;
            mean[n] = m, rstd[n] = 1.0 / sqrt(v + c.eps);
        }
        expect_rel("out", got.out, ref, nc, 1.0, TOL_NORM);
        expect_rel("rstd", got.rstd, rstd, N, 1.0, TOL_NORM);
        vs_cpu_rel("out", got.out, cpu.out, nc, 1.0, 2 * TOL_NORM);
        vs_cpu_rel("rstd", got.rstd, cpu.rstd, N, 1.0, 2 * TOL_NORM);
        if (!rms) {
            expect_rel("mean", got.mean, mean, N, 1.0, TOL_NORM);
            vs_cpu_rel("mean", got.mean, cpu.mean, N, 1.0, 2 * TOL_NORM);
        }
    }
}

/* dinp, dw (and db) against finite differences: TOL_FD; against the CPU backend relative to the
 * largest gradient: 2 TOL_FD */
static void check_norm_backward(int rms) {
    for (int s = 0; s < NORM_SHAPES; s++) {
        int N = norm_shapes[s][0], C = norm_shapes[s][1];
        where("N=%d C=%d", N, C);
        an_rng r;
        an_rng_seed(&r, 320 + (uint64_t)(10 * rms + s));
        norm_in in = make_norm_in(&r, rms, N, C);
        norm_out got = run_norm(g_o, &in, 1), cpu = run_norm(g_cpu, &in, 1);
        size_t nc = (size_t)N * C;
        oh_norm_ctx c = {dbl(in.inp, nc), dbl(in.w, C), rms ? NULL : dbl(in.b, C), N, C, rms, in.eps};
        double *dout = dbl(in.dout, nc);
        double *gi = delta(got.dinp, in.g0i, nc), *gw = delta(got.dw, in.g0w, C), *gb = delta(got.db, in.g0b, C);
        expect_fd("dinp", oh_ref_norm, &c, (double *)c.inp, nc, gi, dout, nc, 300, tol_fd());
        expect_fd("dw", oh_ref_norm, &c, (double *)c.w, C, gw, dout, nc, 300, tol_fd());
        vs_cpu_rel("dinp", got.dinp, cpu.dinp, nc, 1.0, 2 * tol_fd());
        vs_cpu_rel("dw", got.dw, cpu.dw, C, 1.0, 2 * tol_fd());
        if (!rms) {
            expect_fd("db", oh_ref_norm, &c, (double *)c.b, C, gb, dout, nc, 300, tol_fd());
            vs_cpu_rel("db", got.db, cpu.db, C, 1.0, 2 * tol_fd());
        }
    }
}

/* The residual add and the norm in one op: res_out = res_in + delta, out = norm(res_out).
 * res_out must be the float sum bit for bit (one rounding, as add); out, mean and rstd must be the bits
 * this backend's add then norm give (the op's promise, on which a recomputed block relies), and so
 * within the norm's tolerances of the double reference over that sum and of the CPU. In place
 * (res_out = res_in) the same bits. */
static void run_add_norm(const an_ops *o, const norm_in *in, const float *res_in, const float *delta, int fused,
                         int in_place, float **res, norm_out *r) {
    size_t nc = (size_t)in->N * in->C;
    float *a = devf(o, res_in, nc), *d = devf(o, delta, nc), *w = devf(o, in->w, in->C), *b = devf(o, in->b, in->C);
    float *sum = in_place ? a : devf(o, NULL, nc), *out = devf(o, NULL, nc);
    float *mean = devf(o, NULL, in->N), *rstd = devf(o, NULL, in->N);
    if (fused && in->rms)
        o->add_rmsnorm_forward(o, sum, out, rstd, a, d, w, in->N, in->C, in->eps);
    else if (fused)
        o->add_layernorm_forward(o, sum, out, mean, rstd, a, d, w, b, in->N, in->C, in->eps);
    else {
        o->add(o, sum, a, d, nc);
        if (in->rms)
            o->rmsnorm_forward(o, out, rstd, sum, w, in->N, in->C, in->eps);
        else
            o->layernorm_forward(o, out, mean, rstd, sum, w, b, in->N, in->C, in->eps);
    }
    *res = down(o, sum, nc);
    *r = (norm_out){down(o, out, nc), down(o, mean, in->N), down(o, rstd, in->N), NULL, NULL, NULL};
}

static void check_add_norm_forward(int rms) {
    for (int s = 0; s < NORM_SHAPES; s++) {
        int N = norm_shapes[s][0], C = norm_shapes[s][1];
        an_rng r;
        an_rng_seed(&r, 340 + (uint64_t)(10 * rms + s));
        norm_in in = make_norm_in(&r, rms, N, C);
        size_t nc = (size_t)N * C;
        float *delta = rnd(&r, nc, -1, 1), *want = hf(nc);
        for (size_t i = 0; i < nc; i++) want[i] = (float)((double)in.inp[i] + (double)delta[i]);
        oh_norm_ctx c = {dbl(want, nc), dbl(in.w, C), rms ? NULL : dbl(in.b, C), N, C, rms, in.eps};
        double *ref = hd(nc);
        oh_ref_norm(&c, ref);
        float *res_apart, *res_cpu;
        norm_out apart, cpu;
        run_add_norm(g_o, &in, in.inp, delta, 0, 0, &res_apart, &apart);
        run_add_norm(g_cpu, &in, in.inp, delta, 1, 0, &res_cpu, &cpu);
        for (int in_place = 0; in_place < 2; in_place++) {
            where("N=%d C=%d%s", N, C, in_place ? ", res_out = res_in" : "");
            float *res;
            norm_out got;
            run_add_norm(g_o, &in, in.inp, delta, 1, in_place, &res, &got);
            expect_exact("res_out", res, want, nc);
            expect_exact("out vs add + norm", got.out, apart.out, nc);
            expect_exact("rstd vs add + norm", got.rstd, apart.rstd, N);
            if (!rms) expect_exact("mean vs add + norm", got.mean, apart.mean, N);
            expect_rel("out", got.out, ref, nc, 1.0, TOL_NORM);
            vs_cpu_exact("res_out", res, res_cpu, nc);
            vs_cpu_rel("out", got.out, cpu.out, nc, 1.0, 2 * TOL_NORM);
            vs_cpu_rel("rstd", got.rstd, cpu.rstd, N, 1.0, 2 * TOL_NORM);
        }
    }
}

static void case_layernorm_forward(void) { check_norm_forward(0); }
static void case_layernorm_backward(void) { check_norm_backward(0); }
static void case_rmsnorm_forward(void) { check_norm_forward(1); }
static void case_rmsnorm_backward(void) { check_norm_backward(1); }
static void case_add_layernorm_forward(void) { check_add_norm_forward(0); }
static void case_add_rmsnorm_forward(void) { check_add_norm_forward(1); }

/* ====================================== rope ====================================== */

/* The op forms its angles in float32 as PyTorch does: exponent 2i/hd, inv_freq = 1 / theta^exponent
 * and angle = pos * inv_freq, each rounded. The exponent's rounding moves the angle by
 * (2i/hd) ln(theta) u of itself, the power, the reciprocal and the product by u each; one more u for
 * the double pow and cos: |angle_f - angle| <= ((2i/hd) ln theta + 4) u |angle|. */
static double angle_err(int pos, int i, int hd, double theta) {
    double e = 2.0 * i / hd;
    return (e * log(theta) + 4.0) * U32 * fabs(pos * pow(theta, -e));
}

/* cos_sin[p, i] = (cos, sin) of p theta^(-2i/hd): within the angle's error plus the rounding of cos
 * and sin to float (u) and one u of margin, element by element */
static float *run_rope_table(const an_ops *o, int n_pos, int hd, float theta) {
    float *cs = devf(o, NULL, (size_t)n_pos * hd);
    o->rope_table(o, cs, n_pos, hd, theta);
    return down(o, cs, (size_t)n_pos * hd);
}

static void case_rope_table(void) {
    enum { NPOS = 23, HD = 18 };
    const float thetas[2] = {10000.0f, 500000.0f};
    for (int t = 0; t < 2; t++) {
        where("n_pos=%d hd=%d theta=%g", NPOS, HD, (double)thetas[t]);
        float *got = run_rope_table(g_o, NPOS, HD, thetas[t]), *cpu = run_rope_table(g_cpu, NPOS, HD, thetas[t]);
        double *ref = hd(NPOS * HD), *bound = hd(NPOS * HD);
        for (int p = 0; p < NPOS; p++)
            for (int i = 0; i < HD / 2; i++) {
                double ang = p * pow((double)thetas[t], -2.0 * i / HD), b = angle_err(p, i, HD, thetas[t]) + 2 * U32;
                ref[p * HD + 2 * i] = cos(ang), ref[p * HD + 2 * i + 1] = sin(ang);
                bound[p * HD + 2 * i] = bound[p * HD + 2 * i + 1] = b;
            }
        expect_within("cos_sin", got, ref, bound, NPOS * HD);
        vs_cpu_within("cos_sin", got, cpu, bound, NPOS * HD);
    }
}


enum { ROPE_N = 6, ROPE_NH = 3, ROPE_HD = 18, ROPE_TABLE = 13 };
/* the table covers positions 0..12, so 20 is computed on the spot even with it */
static const int32_t rope_pos[ROPE_N] = {0, 1, 2, 7, 12, 20};

/* forward (dir 1) or backward (dir -1, on dout) with or without the table */
static float *run_rope(const an_ops *o, const float *x, int dir, int interleaved, int tabled) {
    size_t n = (size_t)ROPE_N * ROPE_NH * ROPE_HD;
    float *d = devf(o, x, n), *cs = NULL;
    if (tabled) {
        cs = devf(o, NULL, (size_t)ROPE_TABLE * ROPE_HD);
        o->rope_table(o, cs, ROPE_TABLE, ROPE_HD, 10000.0f);
    }
    an_rope rope = {.theta = 10000.0f, .interleaved = interleaved, .cos_sin = cs, .n_pos = tabled ? ROPE_TABLE : 0};
    int32_t *pos = devi(o, rope_pos, ROPE_N);
    if (dir > 0)
        o->rope_forward(o, d, pos, ROPE_N, ROPE_NH, ROPE_HD, rope);
    else
        o->rope_backward(o, d, pos, ROPE_N, ROPE_NH, ROPE_HD, rope);
    return down(o, d, n);
}

/* Each output a*cos -+ b*sin: the angle's error times |a| + |b|, plus the float roundings of cos, sin,
 * two products and a sum (4 u (|a| + |b|)), element by element. */
static void case_rope_forward(void) {
    size_t n = (size_t)ROPE_N * ROPE_NH * ROPE_HD;
    for (int il = 0; il < 2; il++)
        for (int tabled = 0; tabled < 2; tabled++) {
            where("%s, %s", il ? "interleaved" : "rotate-half", tabled ? "table" : "no table");
            an_rng r;
            an_rng_seed(&r, 400 + (uint64_t)il);
            float *x = rnd(&r, n, -1, 1);
            float *got = run_rope(g_o, x, 1, il, tabled), *cpu = run_rope(g_cpu, x, 1, il, tabled);
            oh_rope_ctx c = {dbl(x, n), rope_pos, ROPE_N, ROPE_NH, ROPE_HD, il, 10000.0};
            double *ref = hd(n), *bound = hd(n);
            oh_ref_rope(&c, ref);
            int half = ROPE_HD / 2;
            for (int t = 0; t < ROPE_N; t++)
                for (int h = 0; h < ROPE_NH; h++)
                    for (int i = 0; i < half; i++) {
                        size_t base = ((size_t)t * ROPE_NH + h) * ROPE_HD;
                        size_t a = base + (il ? 2 * i : i), b = base + (il ? 2 * i + 1 : i + half);
                        double mag = fabs(x[a]) + fabs(x[b]);
                        bound[a] = bound[b] = (angle_err(rope_pos[t], i, ROPE_HD, 10000.0) + 4 * U32) * mag;
                    }
            expect_within("x", got, ref, bound, n);
            vs_cpu_within("x", got, cpu, bound, n);
        }
}

/* dx = R^T dout (overwrites): finite differences of the exact rotation (linear, so exact): the
 * angle error above is below 4 u * 20 = 5e-6 of the largest value, within TOL_FD */
static void case_rope_backward(void) {
    size_t n = (size_t)ROPE_N * ROPE_NH * ROPE_HD;
    for (int il = 0; il < 2; il++)
        for (int tabled = 0; tabled < 2; tabled++) {
            where("%s, %s", il ? "interleaved" : "rotate-half", tabled ? "table" : "no table");
            an_rng r;
            an_rng_seed(&r, 410 + (uint64_t)il);
            float *x = rnd(&r, n, -1, 1), *dout = rnd(&r, n, -1, 1);
            float *got = run_rope(g_o, dout, -1, il, tabled), *cpu = run_rope(g_cpu, dout, -1, il, tabled);
            oh_rope_ctx c = {dbl(x, n), rope_pos, ROPE_N, ROPE_NH, ROPE_HD, il, 10000.0};
            expect_fd("dx", oh_ref_rope, &c, (double *)c.x, n, dbl(got, n), dbl(dout, n), n, n, tol_fd());
            vs_cpu_rel("dx", got, cpu, n, 1.0, 2 * tol_fd());
        }
}

/* ====================================== attention ====================================== */

/* Forward 1e-5 relative to the largest output: the softmax weights come from an_expf (2e-7 relative)
 * and float32 dot products of hd terms, the output is a convex combination of values in [-1, 1]; the
 * log-sum-exp (|lse| up to ~10) likewise. */
#define TOL_ATTN 1e-5
/* A backend whose products round their inputs to bf16 (matmul_input_u = u = 2^-8: cuda-bf16, whose
 * forward rounds q, k, v and the probabilities where it takes the tensor cores): four roundings of
 * relative u each, the scores' (a few units here) moving the weights by about u times themselves, so
 * 4u (0.016) of the largest output and lse; measured 0.004 at most (hd 128). */
static double tol_attn(void) { return TOL_ATTN + 4.0 * g_o->matmul_input_u; }


/* B, T, nh, nkv, hd, packed: T = 67 spans two of the CPU's 64-query tiles, the last partial; 6 heads on
 * 2 kv heads (grouped-query); row 1 of the first holds three packed samples [0,20) [20,45) [45,67) */
static const int attn_shapes[][6] = {{2, 67, 6, 2, 10, 1}, {1, 5, 4, 1, 7, 0}, {1, 9, 3, 3, 5, 0},
                                     /* wider heads: the CUDA kernels' lane groups of 4, 8, 16 and 32 (2
                                      * above), each with a head that fills its lanes' registers and one
                                      * that does not */
                                     {1, 11, 2, 2, 24, 0}, {1, 21, 4, 2, 40, 0}, {1, 13, 2, 1, 70, 0}, {1, 9, 2, 1, 128, 0},
                                     {1, 6, 1, 1, 160, 0},
                                     /* heads of 16 k: cuda-bf16's tensor-core forward (blocks of 32
                                      * queries, tiles of 32 keys), over three blocks, packed, grouped */
                                     {2, 75, 4, 2, 32, 1}, {1, 40, 2, 1, 64, 0}};
enum { ATTN_SHAPES = sizeof attn_shapes / sizeof attn_shapes[0] };

typedef struct attn_in {
    const float *q, *k, *v, *dout, *g0q, *g0kv;
    int32_t *seg;
    int B, T, nh, nkv, hd;
} attn_in;

typedef struct attn_out {
    float *out, *lse, *dq, *dk, *dv;
} attn_out;

static attn_in make_attn_in(int s) {
    const int *sh = attn_shapes[s];
    attn_in in = {.B = sh[0], .T = sh[1], .nh = sh[2], .nkv = sh[3], .hd = sh[4]};
    size_t nq = (size_t)in.B * in.T * in.nh * in.hd, nk = (size_t)in.B * in.T * in.nkv * in.hd;
    an_rng r;
    an_rng_seed(&r, 500 + (uint64_t)s);
    /* q, k in [-2, 2): scores spread over several units, so the softmax is far from uniform */
    in.q = rnd(&r, nq, -2, 2), in.k = rnd(&r, nk, -2, 2), in.v = rnd(&r, nk, -1, 1);
    in.dout = rnd(&r, nq, -1, 1), in.g0q = rnd(&r, nq, -1, 1), in.g0kv = rnd(&r, nk, -1, 1);
    in.seg = hold(MEM_HOST, NULL, calloc((size_t)in.B * in.T, sizeof(int32_t)));
    if (sh[5])
        for (int t = 0; t < in.T; t++) in.seg[in.T + t] = t < 20 ? 0 : t < 45 ? 20 : 45;
    where("B=%d T=%d nh=%d nkv=%d hd=%d%s", in.B, in.T, in.nh, in.nkv, in.hd, sh[5] ? " packed" : "");
    return in;
}

static attn_out run_attention(const an_ops *o, const attn_in *in, int backward) {
    size_t nq = (size_t)in->B * in->T * in->nh * in->hd, nk = (size_t)in->B * in->T * in->nkv * in->hd;
    size_t nl = (size_t)in->B * in->nh * in->T;
    float *q = devf(o, in->q, nq), *k = devf(o, in->k, nk), *v = devf(o, in->v, nk);
    float *out = devf(o, NULL, nq), *lse = devf(o, NULL, nl);
    int32_t *seg = devi(o, in->seg, (size_t)in->B * in->T);
    size_t wb = o->attention_work_bytes(o, in->T, in->nh, in->hd);
    void *work = dev(o, NULL, wb);
    o->attention_forward(o, out, lse, q, k, v, seg, in->B, in->T, in->nh, in->nkv, in->hd, work, wb);
    attn_out r = {down(o, out, nq), down(o, lse, nl), NULL, NULL, NULL};
    if (backward) {
        float *dq = devf(o, in->g0q, nq), *dk = devf(o, in->g0kv, nk), *dv = devf(o, in->g0kv, nk);
        o->attention_backward(o, dq, dk, dv, devf(o, in->dout, nq), q, k, v, out, lse, seg, in->B, in->T, in->nh,
                              in->nkv, in->hd, work, wb);
        r.dq = down(o, dq, nq), r.dk = down(o, dk, nk), r.dv = down(o, dv, nk);
    }
    return r;
}

static void case_attention_forward(void) {
    for (int s = 0; s < ATTN_SHAPES; s++) {
        attn_in in = make_attn_in(s);
        size_t nq = (size_t)in.B * in.T * in.nh * in.hd, nk = (size_t)in.B * in.T * in.nkv * in.hd;
        size_t nl = (size_t)in.B * in.nh * in.T;
        attn_out got = run_attention(g_o, &in, 0), cpu = run_attention(g_cpu, &in, 0);
        oh_attn_ctx c = {dbl(in.q, nq), dbl(in.k, nk), dbl(in.v, nk), in.seg, in.B, in.T, in.nh, in.nkv, in.hd};
        double *ref = hd(nq), *lse = hd(nl);
        oh_ref_attention_lse(&c, ref, lse);
        expect_rel("out", got.out, ref, nq, 1e-3, tol_attn());
        expect_rel("lse", got.lse, lse, nl, 1.0, tol_attn());
        vs_cpu_rel("out", got.out, cpu.out, nq, 1e-3, 2 * tol_attn());
        vs_cpu_rel("lse", got.lse, cpu.lse, nl, 1.0, 2 * tol_attn());
    }
}

/* dq, dk, dv against finite differences at 24 entries each: TOL_FD */
static void case_attention_backward(void) {
    for (int s = 0; s < ATTN_SHAPES; s++) {
        attn_in in = make_attn_in(s);
        size_t nq = (size_t)in.B * in.T * in.nh * in.hd, nk = (size_t)in.B * in.T * in.nkv * in.hd;
        attn_out got = run_attention(g_o, &in, 1), cpu = run_attention(g_cpu, &in, 1);
        oh_attn_ctx c = {dbl(in.q, nq), dbl(in.k, nk), dbl(in.v, nk), in.seg, in.B, in.T, in.nh, in.nkv, in.hd};
        double *cot = dbl(in.dout, nq);
        expect_fd("dq", oh_ref_attention, &c, (double *)c.q, nq, delta(got.dq, in.g0q, nq), cot, nq, 24, tol_fd());
        expect_fd("dk", oh_ref_attention, &c, (double *)c.k, nk, delta(got.dk, in.g0kv, nk), cot, nq, 24, tol_fd());
        expect_fd("dv", oh_ref_attention, &c, (double *)c.v, nk, delta(got.dv, in.g0kv, nk), cot, nq, 24, tol_fd());
        vs_cpu_rel("dq", got.dq, cpu.dq, nq, 1.0, 2 * tol_fd());
        vs_cpu_rel("dk", got.dk, cpu.dk, nk, 1.0, 2 * tol_fd());
        vs_cpu_rel("dv", got.dv, cpu.dv, nk, 1.0, 2 * tol_fd());
    }
}

/* One query per row over a KV cache: cache rows 0..3 of max_T = 29 positions; query row b reads cache
 * row slot[b] (or b) and attends to its first len[b] keys: the whole cache, one key, a middle length.
 * Same tolerance as the attention forward. For each head width of dec_hds. */
enum { DEC_B = 3, DEC_ROWS = 4, DEC_T = 29, DEC_NH = 6, DEC_NKV = 2 };
/* head widths: 10, and two that fill the CUDA kernel's lane groups of 8 and 16 (kernels/cuda/lane_groups.h) */
static const int dec_hds[] = {10, 64, 100};

static float *run_decode(const an_ops *o, const float *q, const float *kc, const float *vc, const int32_t *slot,
                         const int32_t *len, int head_dim) {
    size_t nq = (size_t)DEC_B * DEC_NH * head_dim, nc = (size_t)DEC_ROWS * DEC_T * DEC_NKV * head_dim;
    float *out = devf(o, NULL, nq);
    size_t wb = o->attention_work_bytes(o, DEC_T, DEC_NH, head_dim);
    void *work = dev(o, NULL, wb);
    o->attention_decode_forward(o, out, devf(o, q, nq), devf(o, kc, nc), devf(o, vc, nc),
                                slot ? devi(o, slot, DEC_B) : NULL, devi(o, len, DEC_B), DEC_B, DEC_T, DEC_NH, DEC_NKV,
                                head_dim, work, wb);
    return down(o, out, nq);
}

static void case_attention_decode_forward(void) {
    const int32_t slots[DEC_B] = {3, 0, 2}, lens[2][DEC_B] = {{DEC_T, 1, 13}, {5, DEC_T, 2}};
    for (int w = 0; w < (int)(sizeof dec_hds / sizeof dec_hds[0]); w++)
    for (int s = 0; s < 2; s++) {
        int head_dim = dec_hds[w];
        size_t nq = (size_t)DEC_B * DEC_NH * head_dim, nc = (size_t)DEC_ROWS * DEC_T * DEC_NKV * head_dim;
        const int32_t *slot = s == 0 ? slots : NULL, *len = lens[s];
        where("hd %d, slot %s, len {%d, %d, %d}", head_dim, slot ? "{3, 0, 2}" : "NULL", len[0], len[1], len[2]);
        an_rng r;
        an_rng_seed(&r, 600 + (uint64_t)s + 10 * (uint64_t)w);
        float *q = rnd(&r, nq, -2, 2), *kc = rnd(&r, nc, -2, 2), *vc = rnd(&r, nc, -1, 1);
        float *got = run_decode(g_o, q, kc, vc, slot, len, head_dim), *cpu = run_decode(g_cpu, q, kc, vc, slot, len, head_dim);
        double *ref = hd(nq), sc[DEC_T];
        int group = DEC_NH / DEC_NKV;
        for (int b = 0; b < DEC_B; b++)
            for (int h = 0; h < DEC_NH; h++) {
                int row = slot ? slot[b] : b;
                const float *qr = q + ((size_t)b * DEC_NH + h) * head_dim;
                double mx = -INFINITY, sum = 0.0;
                for (int t = 0; t < len[b]; t++) {
                    const float *kr = kc + (((size_t)row * DEC_T + t) * DEC_NKV + h / group) * head_dim;
                    double d = 0.0;
                    for (int i = 0; i < head_dim; i++) d += (double)qr[i] * kr[i];
                    sc[t] = d / sqrt((double)head_dim);
                    mx = sc[t] > mx ? sc[t] : mx;
                }
                for (int t = 0; t < len[b]; t++) sum += (sc[t] = exp(sc[t] - mx));
                double *o = ref + ((size_t)b * DEC_NH + h) * head_dim;
                for (int t = 0; t < len[b]; t++) {
                    const float *vr = vc + (((size_t)row * DEC_T + t) * DEC_NKV + h / group) * head_dim;
                    for (int i = 0; i < head_dim; i++) o[i] += sc[t] / sum * vr[i];
                }
            }
        expect_rel("out", got, ref, nq, 1e-3, TOL_ATTN);
        vs_cpu_rel("out", got, cpu, nq, 1e-3, 2 * TOL_ATTN);
    }
}

/* ====================================== pointwise ====================================== */

enum { PW_N = 1001 };


typedef struct pw_out {
    float *out, *da, *db;
} pw_out;

static pw_out run_pointwise(const an_ops *o, int kind, int backward, const float *a, const float *b,
                            const float *dout, const float *g0a, const float *g0b) {
    float *da_ = devf(o, a, PW_N), *db_ = devf(o, b, PW_N), *out = devf(o, NULL, PW_N);
    pw_out r = {NULL, NULL, NULL};
    if (!backward) {
        if (kind == 0) o->gelu_forward(o, out, da_, PW_N);
        else o->swiglu_forward(o, out, da_, db_, PW_N);
        r.out = down(o, out, PW_N);
        return r;
    }
    float *ga = devf(o, g0a, PW_N), *gb = devf(o, g0b, PW_N), *dd = devf(o, dout, PW_N);
    if (kind == 0) o->gelu_backward(o, ga, da_, dd, PW_N);
    else o->swiglu_backward(o, ga, gb, dd, da_, db_, PW_N);
    r.da = down(o, ga, PW_N), r.db = down(o, gb, PW_N);
    return r;
}

/* Forward element by element: 2e-6 of each value (floor 1e-3 near 0): tanh or the sigmoid through
 * an_expf (2e-7 relative) and a handful of float roundings. Backward: finite differences of smooth
 * scalar functions at every element; the float32 derivative formulas are good to ~1e-6 of the
 * largest, so 1e-5. Inputs in [-9, 9): the saturated tails and the curved middle. */
static void check_pointwise(int kind, int backward) {
    where("n=%d", PW_N);
    an_rng r;
    an_rng_seed(&r, 700 + (uint64_t)kind);
    float *a = rnd(&r, PW_N, -9, 9), *b = rnd(&r, PW_N, -2, 2), *dout = rnd(&r, PW_N, -1, 1);
    float *g0a = rnd(&r, PW_N, -1, 1), *g0b = rnd(&r, PW_N, -1, 1);
    pw_out got = run_pointwise(g_o, kind, backward, a, b, dout, g0a, g0b);
    pw_out cpu = run_pointwise(g_cpu, kind, backward, a, b, dout, g0a, g0b);
    oh_pw_ctx c = {dbl(a, PW_N), dbl(b, PW_N), PW_N, kind};
    if (!backward) {
        double *ref = hd(PW_N), *bound = hd(PW_N);
        oh_ref_pointwise(&c, ref);
        for (int i = 0; i < PW_N; i++) bound[i] = 2e-6 * test_nan_max(fabs(ref[i]), 1e-3);
        expect_within("out", got.out, ref, bound, PW_N);
        vs_cpu_within("out", got.out, cpu.out, bound, PW_N);
        return;
    }
    double *cot = dbl(dout, PW_N);
    expect_fd(kind ? "dgate" : "dinp", oh_ref_pointwise, &c, (double *)c.a, PW_N, delta(got.da, g0a, PW_N), cot, PW_N,
              PW_N, 1e-5);
    vs_cpu_rel(kind ? "dgate" : "dinp", got.da, cpu.da, PW_N, 1.0, 2e-5);
    if (kind) {
        expect_fd("dup", oh_ref_pointwise, &c, (double *)c.b, PW_N, delta(got.db, g0b, PW_N), cot, PW_N, PW_N, 1e-5);
        vs_cpu_rel("dup", got.db, cpu.db, PW_N, 1.0, 2e-5);
    }
}

static void case_gelu_forward(void) { check_pointwise(0, 0); }
static void case_gelu_backward(void) { check_pointwise(0, 1); }
static void case_swiglu_forward(void) { check_pointwise(1, 0); }
static void case_swiglu_backward(void) { check_pointwise(1, 1); }

/* add, axpy, scale: one float operation per element, so the result is the exact (double) result
 * rounded to float, bit for bit (axpy's factor -0.25 makes its product exact, so an FMA or not gives
 * the same bits); out aliasing an input as well. */
enum { ADD_N = 1001 };

static float *run_add(const an_ops *o, const float *a, const float *b, int alias) {
    float *da = devf(o, a, ADD_N), *db = devf(o, b, ADD_N), *out = alias ? da : devf(o, NULL, ADD_N);
    o->add(o, out, da, db, ADD_N);
    return down(o, out, ADD_N);
}

static void case_add(void) {
    an_rng r;
    an_rng_seed(&r, 800);
    float *a = rnd(&r, ADD_N, -1, 1), *b = rnd(&r, ADD_N, -1, 1), *want = hf(ADD_N);
    for (int i = 0; i < ADD_N; i++) want[i] = (float)((double)a[i] + (double)b[i]);
    for (int alias = 0; alias < 2; alias++) {
        where("n=%d%s", ADD_N, alias ? ", out = a" : "");
        float *got = run_add(g_o, a, b, alias), *cpu = run_add(g_cpu, a, b, alias);
        expect_exact("out", got, want, ADD_N);
        vs_cpu_exact("out", got, cpu, ADD_N);
    }
}

static float *run_axpy(const an_ops *o, const float *a, const float *b, float s) {
    float *da = devf(o, a, ADD_N);
    o->axpy(o, da, devf(o, b, ADD_N), s, ADD_N);
    return down(o, da, ADD_N);
}

static void case_axpy(void) {
    where("n=%d", ADD_N);
    an_rng r;
    an_rng_seed(&r, 810);
    float *a = rnd(&r, ADD_N, -1, 1), *b = rnd(&r, ADD_N, -1, 1), *want = hf(ADD_N);
    for (int i = 0; i < ADD_N; i++) want[i] = (float)((double)a[i] - 0.25 * (double)b[i]);
    float *got = run_axpy(g_o, a, b, -0.25f), *cpu = run_axpy(g_cpu, a, b, -0.25f);
    expect_exact("dst", got, want, ADD_N);
    vs_cpu_exact("dst", got, cpu, ADD_N);
}

static float *run_scale(const an_ops *o, const float *a, float s) {
    float *da = devf(o, a, ADD_N);
    o->scale(o, da, s, ADD_N);
    return down(o, da, ADD_N);
}

static void case_scale(void) {
    where("n=%d", ADD_N);
    an_rng r;
    an_rng_seed(&r, 820);
    float *a = rnd(&r, ADD_N, -1, 1), *want = hf(ADD_N);
    for (int i = 0; i < ADD_N; i++) want[i] = (float)((double)a[i] * (double)0.1f);
    float *got = run_scale(g_o, a, 0.1f), *cpu = run_scale(g_cpu, a, 0.1f);
    expect_exact("x", got, want, ADD_N);
    vs_cpu_exact("x", got, cpu, ADD_N);
}

/* ====================================== cross-entropy ====================================== */

/* V = 2051: past one 2048-wide chunk of the CPU kernel; two ignored rows; a dominant logit in the
 * second chunk (the running max must move) and a very negative one. */
enum { CE_N = 5, CE_V = 2051 };
static const int32_t ce_targets[CE_N] = {3, AN_IGNORE_INDEX, CE_V - 1, 2049, AN_IGNORE_INDEX};

static float *make_logits(void) {
    an_rng r;
    an_rng_seed(&r, 900);
    float *lg = rnd(&r, (size_t)CE_N * CE_V, -4, 4);
    lg[3 * CE_V + 2050] = 30.0f;
    lg[2 * CE_V + 10] = -60.0f;
    return lg;
}

/* double log-sum-exp of each row */
static double ref_lse(const float *lg, int n) {
    double mx = -INFINITY, s = 0.0;
    for (int j = 0; j < CE_V; j++) mx = lg[(size_t)n * CE_V + j] > mx ? lg[(size_t)n * CE_V + j] : mx;
    for (int j = 0; j < CE_V; j++) s += exp(lg[(size_t)n * CE_V + j] - mx);
    return mx + log(s);
}

typedef struct ce_out {
    float *loss, *lse, *dlogits, *inplace;
} ce_out;

static ce_out run_cross_entropy(const an_ops *o, const float *logits, int backward, float dloss) {
    size_t nv = (size_t)CE_N * CE_V;
    float *lg = devf(o, logits, nv), *loss = devf(o, NULL, CE_N), *lse = devf(o, NULL, CE_N);
    int32_t *t = devi(o, ce_targets, CE_N);
    o->cross_entropy_forward(o, loss, lse, lg, t, CE_N, CE_V);
    ce_out r = {down(o, loss, CE_N), down(o, lse, CE_N), NULL, NULL};
    if (backward) {
        float *g = devf(o, NULL, nv);
        o->cross_entropy_backward(o, g, lg, lse, t, CE_N, CE_V, dloss);
        r.dlogits = down(o, g, nv);
        o->cross_entropy_backward(o, lg, lg, lse, t, CE_N, CE_V, dloss); /* dlogits aliasing logits */
        r.inplace = down(o, lg, nv);
    }
    return r;
}

/* losses ~ 10 from a float32 sum of 2051 exps (an_expf 2e-7): ~1e-6 absolute; 2e-6 relative to the
 * largest loss (floor 1). Ignored rows exactly 0. */
static void case_cross_entropy_forward(void) {
    where("N=%d V=%d", CE_N, CE_V);
    float *logits = make_logits();
    ce_out got = run_cross_entropy(g_o, logits, 0, 0), cpu = run_cross_entropy(g_cpu, logits, 0, 0);
    double loss[CE_N], lse[CE_N];
    for (int n = 0; n < CE_N; n++) {
        lse[n] = ref_lse(logits, n);
        loss[n] = ce_targets[n] == AN_IGNORE_INDEX ? 0.0 : lse[n] - logits[(size_t)n * CE_V + ce_targets[n]];
    }
    expect_rel("losses", got.loss, loss, CE_N, 1.0, 2e-6);
    CHECK_MSG(got.loss[1] == 0.0f && got.loss[4] == 0.0f, "%s: ignored rows must have loss 0", g_where);
    vs_cpu_rel("losses", got.loss, cpu.loss, CE_N, 1.0, 4e-6);
    /* lse of the rows that are trained (what backward reads) */
    float glse[3] = {got.lse[0], got.lse[2], got.lse[3]}, clse[3] = {cpu.lse[0], cpu.lse[2], cpu.lse[3]};
    double rlse[3] = {lse[0], lse[2], lse[3]};
    expect_rel("lse", glse, rlse, 3, 1.0, 2e-6);
    vs_cpu_rel("lse", glse, clse, 3, 1.0, 4e-6);
}

/* dlogits = dloss (softmax - onehot) against the double softmax: each probability exp(x - lse) with
 * the float lse's error (~1e-6 absolute) and an_expf's (2e-7): 1e-5 relative to the largest
 * gradient (~dloss). Ignored rows exactly 0; the in-place form the same bits. */
static void case_cross_entropy_backward(void) {
    where("N=%d V=%d", CE_N, CE_V);
    const float dloss = 0.2f;
    size_t nv = (size_t)CE_N * CE_V;
    float *logits = make_logits();
    ce_out got = run_cross_entropy(g_o, logits, 1, dloss), cpu = run_cross_entropy(g_cpu, logits, 1, dloss);
    double *ref = hd(nv);
    for (int n = 0; n < CE_N; n++) {
        if (ce_targets[n] == AN_IGNORE_INDEX) continue;
        double lse = ref_lse(logits, n);
        for (int j = 0; j < CE_V; j++)
            ref[(size_t)n * CE_V + j] = dloss * (exp(logits[(size_t)n * CE_V + j] - lse) - (j == ce_targets[n]));
    }
    expect_rel("dlogits", got.dlogits, ref, nv, 1e-3, 1e-5);
    vs_cpu_rel("dlogits", got.dlogits, cpu.dlogits, nv, 1e-3, 2e-5);
    int zero = 1;
    for (int j = 0; j < CE_V; j++) zero &= got.dlogits[CE_V + j] == 0.0f && got.dlogits[4 * CE_V + j] == 0.0f;
    CHECK_MSG(zero, "%s: ignored rows must get a zero gradient", g_where);
    expect_exact("dlogits in place", got.inplace, got.dlogits, nv);
}

/* ====================================== optimizer ====================================== */


/* One call updates a list of parts: a 600-value part spanning blocks of a device's grid, three tiny
 * ones (5, 1 and 7 values: several parts in one block) with and without decay, a 601-value part
 * ending the span, gaps between them, and the weights in an order of their own (the last part's first).
 * The gradient is non-zero in the gaps, whose moments must stay exactly 0. */
enum { ADAM_SPAN = 1301, ADAM_PARTS = 5, ADAM_W = 1214, ADAM_STEPS = 3 };
static const size_t adam_at[ADAM_PARTS] = {0, 603, 608, 609, 700}, adam_n[ADAM_PARTS] = {600, 5, 1, 7, 601};
static const size_t adam_woff[ADAM_PARTS] = {614, 601, 606, 607, 0}; /* where each part's weights lie */
static const int adam_decay[ADAM_PARTS] = {1, 0, 0, 1, 0};

typedef struct adam_out {
    float *w, *m, *v;
} adam_out;

static adam_out run_adamw(const an_ops *o, const float *w0, float *const g[ADAM_STEPS], const float clip[ADAM_STEPS]) {
    float *w = devf(o, w0, ADAM_W), *m = devf(o, NULL, ADAM_SPAN), *v = devf(o, NULL, ADAM_SPAN);
    an_adamw_part parts[ADAM_PARTS];
    for (int k = 0; k < ADAM_PARTS; k++) parts[k] = (an_adamw_part){w + adam_woff[k], adam_at[k], adam_n[k], adam_decay[k]};
    an_adamw_part *dparts = dev(o, parts, sizeof parts);
    for (int s = 0; s < ADAM_STEPS; s++)
        o->adamw_update(o, dparts, ADAM_PARTS, ADAM_SPAN, devf(o, g[s], ADAM_SPAN), clip[s], m, v, 1e-2f, 0.9f, 0.999f,
                        1e-8f, 0.1f, s + 1);
    return (adam_out){down(o, w, ADAM_W), down(o, m, ADAM_SPAN), down(o, v, ADAM_SPAN)};
}

/* Three steps, the second clipped (the gradient read as g * 0.3), gradients of mixed sizes with tiny
 * ones where eps matters; the reference is each part alone in double, weight decay 0.1 or 0. A handful
 * of float roundings per step on values ~1: ~1e-7 each, so 1e-6 of each weight (floor 1e-2) and
 * relative to the largest m and v. */
static void case_adamw_update(void) {
    where("%d parts in a span of %d, %d steps", ADAM_PARTS, ADAM_SPAN, ADAM_STEPS);
    an_rng r;
    an_rng_seed(&r, 1000);
    float *w0 = rnd(&r, ADAM_W, -1, 1), *g[ADAM_STEPS];
    const float clip[ADAM_STEPS] = {1.0f, 0.3f, 1.0f};
    for (int s = 0; s < ADAM_STEPS; s++) {
        g[s] = rnd(&r, ADAM_SPAN, -1, 1);
        for (int i = 0; i < ADAM_SPAN; i += 7) g[s][i] *= 1e-6f;
    }
    adam_out got = run_adamw(g_o, w0, g, clip), cpu = run_adamw(g_cpu, w0, g, clip);
    double *w = dbl(w0, ADAM_W), *m = hd(ADAM_SPAN), *v = hd(ADAM_SPAN), *bound = hd(ADAM_W);
    for (int s = 0; s < ADAM_STEPS; s++) {
        double *gd = dbl(g[s], ADAM_SPAN);
        for (int i = 0; i < ADAM_SPAN; i++) gd[i] *= (double)clip[s];
        for (int k = 0; k < ADAM_PARTS; k++)
            oh_ref_adamw(w + adam_woff[k], gd + adam_at[k], m + adam_at[k], v + adam_at[k], adam_n[k], 1e-2, 0.9, 0.999,
                         1e-8, adam_decay[k] ? 0.1 : 0.0, s + 1);
    }
    for (int i = 0; i < ADAM_W; i++) bound[i] = 1e-6 * test_nan_max(fabs(w[i]), 1e-2);
    expect_within("param", got.w, w, bound, ADAM_W);
    expect_rel("m", got.m, m, ADAM_SPAN, 1e-3, 1e-6); /* the gaps' reference is 0 */
    expect_rel("v", got.v, v, ADAM_SPAN, 1e-3, 1e-6);
    vs_cpu_within("param", got.w, cpu.w, bound, ADAM_W);
    vs_cpu_rel("m", got.m, cpu.m, ADAM_SPAN, 1e-3, 2e-6);
    vs_cpu_rel("v", got.v, cpu.v, ADAM_SPAN, 1e-3, 2e-6);
    int touched = 0; /* the gaps untouched, not merely small */
    for (int k = 0; k + 1 < ADAM_PARTS; k++)
        for (size_t i = adam_at[k] + adam_n[k]; i < adam_at[k + 1]; i++) touched += got.m[i] != 0.0f || got.v[i] != 0.0f;
    CHECK_MSG(touched == 0, "%s: %d moments of the gaps between parts were written", g_where, touched);
}

/* ====================================== sampling ====================================== */

/* The sampler's rows: the sets of parameters, each drawn with SMP_DRAWS seeds (case_sample_tokens says
 * what each covers), a history with repeats and stop ids. */
enum { SMP_V = 3000, SMP_SETS = 10, SMP_DRAWS = 3, SMP_B = SMP_SETS * SMP_DRAWS, SMP_HIST = 12, SMP_STOPS = 2 };
static const an_sampler_params smp_sets[SMP_SETS] = {
    {0.0f, 0, 1.0f, 0.0f, 1.0f},  {0.7f, 40, 1.0f, 0.0f, 1.0f},  {1.0f, 0, 0.9f, 0.0f, 1.0f},
    {1.3f, 0, 1.0f, 0.05f, 1.0f}, {0.9f, 50, 0.8f, 0.02f, 1.3f}, {1.0f, 1, 1.0f, 0.0f, 1.0f},
    {1.0f, 0, 1.0f, 0.0f, 1.0f},  {1.0f, 0, 0.95f, 0.0f, 1.0f},  {1e-45f, 0, 1.0f, 0.0f, 1.0f},
    {0.8f, 300, 0.7f, 0.0f, 1.0f},
};
static const int32_t smp_hist[SMP_HIST] = {7, 19, 7, 2999, 19, 0, 512, 7, 1000, 42, 42, 2048};
/* the op's list: the history's distinct ids, then the stop ids */
static const int32_t smp_ids[] = {7, 19, 2999, 0, 512, 1000, 42, 2048, 11, 2999};
enum { SMP_DISTINCT = 8 };

/* The rows' logits (written into logits), their parameters for the op, and what the host sampler draws
 * with them (want: id and count kept; advanced: whether it drew u). greedy: every row at temperature
 * 0, its penalty and stop ids kept. */
static void sample_rows(float *logits, an_sample_row *rows, int32_t *want, int32_t *advanced, int greedy) {
    an_rng r;
    an_rng_seed(&r, 1200);
    oh_fill(&r, logits, (size_t)SMP_B * SMP_V, -4, 4);
    for (int i = 0; i < SMP_B * SMP_V; i++) logits[i] *= fabsf(logits[i]); /* a few tokens stand out */
    an_error err;
    an_sampler *smp = an_sampler_create(SMP_V, &err);
    double *probs = hd(SMP_V);
    float *masked = hf(SMP_V);
    for (int b = 0; b < SMP_B; b++) {
        int set = b / SMP_DRAWS;
        an_sampler_params p = smp_sets[set];
        if (greedy) p.temperature = 0.0f;
        float *row = logits + (size_t)b * SMP_V;
        if (set == 0 && b % SMP_DRAWS < 2) row[17] = row[5] = 20.0f; /* greedy: a tie at the top */
        if (set == 0 && b % SMP_DRAWS == 2) { /* a tie of -0 and +0 at the top: equal logits, the lower id */
            for (int v = 0; v < SMP_V; v++) row[v] = -1.0f - fabsf(row[v]);
            row[3] = -0.0f, row[9] = 0.0f;
        }
        if (set == 1 && b % SMP_DRAWS == 1) /* top-k 40 of 60 equal best: the lower ids win, ids high first */
            for (int j = 0; j < 60; j++) row[SMP_V - 1 - 37 * j] = 16.5f;
        if (set == 4) /* the penalty and the mask decide: penalised ids on top, a stop id above them */
            row[42] = 18.0f, row[19] = 17.5f, row[7] = -30.0f, row[11] = 30.0f;
        if (set == 6 && b % SMP_DRAWS == 0)
            for (int v = 0; v < SMP_V; v++) row[v] = v % 2 ? NAN : -INFINITY;
        int penalised = p.repeat_penalty != 1.0f, stop = set == 4;
        an_rng g, peek;
        an_rng_seed(&g, 1300 + (uint64_t)b);
        peek = g;
        rows[b] = (an_sample_row){p.temperature, p.top_p, p.min_p, p.repeat_penalty, p.top_k,
                                  an_rng_uniform(&peek), 0, penalised ? SMP_DISTINCT : 0, stop ? SMP_STOPS : 0};
        /* the host's way (infer/generate.c's an_gen_pick): stop ids to -inf, then the sampler */
        memcpy(masked, row, SMP_V * sizeof(float));
        for (int i = 0; stop && i < SMP_STOPS; i++) masked[smp_ids[SMP_DISTINCT + i]] = -INFINITY;
        int n_hist = penalised ? SMP_HIST : 0;
        want[2 * b + 1] = an_sampler_distribution(smp, &p, masked, smp_hist, (size_t)n_hist, probs);
        want[2 * b] = an_sampler_sample(smp, &p, masked, smp_hist, (size_t)n_hist, &g);
        advanced[b] = memcmp(&g, &peek, sizeof g) == 0; /* the host drew u: its generator is where peek is */
    }
    an_sampler_free(smp);
}

/* the op on the rows, with the promise (AN_SAMPLE_ANY, _TOP, _GREEDY); work_short bytes less workspace
 * than asked for */
static void run_sample(const float *logits, const an_sample_row *rows, int promise, size_t work_short, int32_t *got) {
    int32_t *out = dev(g_o, NULL, 2 * SMP_B * sizeof(int32_t));
    size_t work = g_o->sample_work_bytes(g_o, SMP_B, SMP_V);
    g_o->sample_tokens(g_o, out, devf(g_o, logits, (size_t)SMP_B * SMP_V), SMP_B, SMP_V,
                       dev(g_o, rows, SMP_B * sizeof *rows), dev(g_o, smp_ids, sizeof smp_ids), promise,
                       dev(g_o, NULL, work), work - work_short);
    g_o->download(g_o, got, out, 2 * SMP_B * sizeof(int32_t));
}

/* Rows of logits against the host sampler (infer/sampler.c) with the same parameters, drawing from the
 * same generator: greedy with a tie at the top (the lower id wins; once a tie of -0 and +0, which the
 * host compares equal), top-k alone (once with a tie across its boundary), top-p alone (the whole row
 * sorted), min-p, all of them with the repetition penalty (a history with repeats) and stop ids
 * masked, top-k 1 (one token kept: the generator must not advance), no filter at all, a row of NaN and
 * -inf (none drawn), a temperature that overflows (none drawn), top-k 300. Each set of parameters draws with three seeds. V = 3000 pads the rows to 4096 keys
 * (sort.cu's wide stages and chunks). The id and the count kept must be the host's exactly: the device
 * sums the probabilities in another order, which moves a boundary by ~1e-15, so a uniform u lands that
 * close to one with probability ~1e-12. The batch runs with no promise (every row sorted) and with
 * AN_SAMPLE_TOP (top-k selected), under which the rows that order more than AN_SAMPLE_TOP_MAX
 * candidates (top-p alone, top-k 300) must draw none and the others the host's tokens. Then every row
 * greedy (penalties, stop ids and the NaN row kept) under each promise, all the host's tokens; a row
 * the greedy promise does not hold for draws none. */
static void case_sample_tokens(void) {
    static const char *const promises[3] = {"no promise", "the top promise", "the greedy promise"};
    float *logits = hf((size_t)SMP_B * SMP_V);
    an_sample_row rows[SMP_B];
    int32_t want[2 * SMP_B], advanced[SMP_B], got[2 * SMP_B];
    sample_rows(logits, rows, want, advanced, 0);
    for (int promise = AN_SAMPLE_ANY; promise <= AN_SAMPLE_TOP; promise++) {
        where("%d rows of %d logits, %s", SMP_B, SMP_V, promises[promise]);
        run_sample(logits, rows, promise, 0, got);
        int kinds[3] = {0}, broken = 0; /* rows with no token, one kept, several kept: the cases exist */
        for (int b = 0; b < SMP_B; b++) {
            int breaks = promise == AN_SAMPLE_TOP && AN_SAMPLE_ORDERED(&rows[b], SMP_V) > AN_SAMPLE_TOP_MAX;
            int32_t id = breaks ? -1 : want[2 * b], kept = breaks ? 0 : want[2 * b + 1];
            CHECK_MSG(got[2 * b] == id && got[2 * b + 1] == kept,
                      "%s: row %d (set %d): token %d of %d kept, the host sampler draws %d of %d%s", g_where, b,
                      b / SMP_DRAWS, got[2 * b], got[2 * b + 1], want[2 * b], want[2 * b + 1],
                      breaks ? " (the promise broken: none)" : "");
            CHECK_MSG(advanced[b] == (want[2 * b + 1] > 1), "row %d: the host drew u with %d kept", b, want[2 * b + 1]);
            kinds[want[2 * b] < 0 ? 0 : want[2 * b + 1] == 1 ? 1 : 2]++;
            broken += breaks;
        }
        CHECK(kinds[0] == 4 && kinds[1] >= 6 && kinds[2] >= 15);
        CHECK(broken == (promise == AN_SAMPLE_TOP ? 3 * SMP_DRAWS : 0)); /* top-p 0.9, top-p 0.95, top-k 300 */
    }
    /* too little workspace: no token rather than a wrong one */
    where("%d rows of %d logits, short workspace", SMP_B, SMP_V);
    run_sample(logits, rows, AN_SAMPLE_ANY, 8, got);
    int none = 0;
    for (int b = 0; b < SMP_B; b++) none += got[2 * b] == -1;
    CHECK_MSG(none == SMP_B, "short workspace: %d of %d rows drew no token", none, SMP_B);

    sample_rows(logits, rows, want, advanced, 1);
    for (int promise = AN_SAMPLE_ANY; promise <= AN_SAMPLE_GREEDY; promise++) {
        where("%d greedy rows of %d logits, %s", SMP_B, SMP_V, promises[promise]);
        run_sample(logits, rows, promise, 0, got);
        int none_drawn = 0;
        for (int b = 0; b < SMP_B; b++) {
            CHECK_MSG(got[2 * b] == want[2 * b] && got[2 * b + 1] == want[2 * b + 1],
                      "%s: row %d (set %d): token %d of %d kept, the host sampler draws %d of %d", g_where, b,
                      b / SMP_DRAWS, got[2 * b], got[2 * b + 1], want[2 * b], want[2 * b + 1]);
            none_drawn += want[2 * b] < 0;
        }
        CHECK(none_drawn == 1); /* the NaN / -inf row */
    }
    where("a row at temperature 1 under the greedy promise");
    rows[4].temperature = 1.0f;
    run_sample(logits, rows, AN_SAMPLE_GREEDY, 0, got);
    CHECK_MSG(got[8] == -1 && got[9] == 0 && got[10] == want[10], "%s: row 4 drew %d of %d, row 5 %d (host %d)", g_where,
              got[8], got[9], got[10], want[10]);
}

/* A sum of n squares against the double sum: squaring in float32 would round each (positive) term
 * by u and so the sum by at most u relative; double accumulation adds n 2^-53. 2u allows either. */
static void case_sum_squares(void) {
    const size_t sizes[3] = {1, 3, 10007};
    for (int s = 0; s < 3; s++) {
        size_t n = sizes[s];
        where("n=%zu", n);
        an_rng r;
        an_rng_seed(&r, 1100 + (uint64_t)s);
        float *x = rnd(&r, n, -1, 1);
        double ref = 0.0;
        for (size_t i = 0; i < n; i++) ref += (double)x[i] * x[i];
        double got = g_o->sum_squares(g_o, devf(g_o, x, n), n), cpu = g_cpu->sum_squares(g_cpu, devf(g_cpu, x, n), n);
        double e = fabs(got - ref) / ref, ec = fabs(got - cpu) / cpu;
        CHECK_MSG(e <= 2 * U32, "%s: sum %.17g, double reference %.17g: relative error %.3g > 2u", g_where, got, ref, e);
        CHECK_MSG(ec <= 4 * U32, "%s: sum %.17g, cpu backend %.17g: relative difference %.3g > 4u", g_where, got, cpu,
                  ec);
    }
}

/* ====================================== layout ====================================== */

/* a fused-projection split: 3 blocks of 7 columns from rows of 41 (offset 2, step 13) into rows of 25
 * (offset 1, step 8: a gap column between blocks, which must stay untouched) */
enum { GC_N = 5, GC_SRC_LD = 41, GC_DST_LD = 25 };
static const an_col_map gc_map = {.nblk = 3, .len = 7, .dst_ld = GC_DST_LD, .dst_off = 1, .dst_step = 8,
                                  .src_ld = GC_SRC_LD, .src_off = 2, .src_step = 13};

/* the index map: -1 where dst element i is not written */
static int gc_src_index(int i) {
    int n = i / GC_DST_LD, c = i % GC_DST_LD - gc_map.dst_off;
    if (c < 0) return -1;
    int j = c / gc_map.dst_step, k = c % gc_map.dst_step;
    if (j >= gc_map.nblk || k >= gc_map.len) return -1;
    return n * GC_SRC_LD + gc_map.src_off + j * gc_map.src_step + k;
}

static float *run_gather(const an_ops *o, int backward, const float *dst0, const float *src0) {
    size_t nd = (size_t)GC_N * GC_DST_LD, ns = (size_t)GC_N * GC_SRC_LD;
    float *d = devf(o, dst0, nd), *s = devf(o, src0, ns);
    if (!backward) {
        o->gather_cols_forward(o, d, s, GC_N, &gc_map);
        return down(o, d, nd);
    }
    o->gather_cols_backward(o, s, d, GC_N, &gc_map);
    return down(o, s, ns);
}

/* forward copies: bit for bit, unmapped elements untouched */
static void case_gather_cols_forward(void) {
    where("N=%d, 3 blocks of 7", GC_N);
    size_t nd = (size_t)GC_N * GC_DST_LD, ns = (size_t)GC_N * GC_SRC_LD;
    an_rng r;
    an_rng_seed(&r, 1200);
    float *src = rnd(&r, ns, -1, 1), *dst0 = rnd(&r, nd, 5, 6), *want = hf(nd);
    for (size_t i = 0; i < nd; i++) want[i] = gc_src_index((int)i) >= 0 ? src[gc_src_index((int)i)] : dst0[i];
    float *got = run_gather(g_o, 0, dst0, src), *cpu = run_gather(g_cpu, 0, dst0, src);
    expect_exact("dst", got, want, nd);
    vs_cpu_exact("dst", got, cpu, nd);
}

/* backward accumulates: one float addition per mapped element (bit for bit the rounded double
 * sum), the others untouched */
static void case_gather_cols_backward(void) {
    where("N=%d, 3 blocks of 7", GC_N);
    size_t nd = (size_t)GC_N * GC_DST_LD, ns = (size_t)GC_N * GC_SRC_LD;
    an_rng r;
    an_rng_seed(&r, 1210);
    float *ddst = rnd(&r, nd, -1, 1), *g0 = rnd(&r, ns, -1, 1), *want = hf(ns);
    memcpy(want, g0, ns * sizeof(float));
    for (size_t i = 0; i < nd; i++)
        if (gc_src_index((int)i) >= 0) {
            int k = gc_src_index((int)i);
            want[k] = (float)((double)want[k] + (double)ddst[i]);
        }
    float *got = run_gather(g_o, 1, ddst, g0), *cpu = run_gather(g_cpu, 1, ddst, g0);
    expect_exact("dsrc", got, want, ns);
    vs_cpu_exact("dsrc", got, cpu, ns);
}

/* ====================================== dropout ====================================== */

enum { DROP_N = 10007 };

static float *run_dropout(const an_ops *o, const float *x, size_t n, float p, uint64_t seed, uint64_t counter,
                          int alias) {
    float *in = devf(o, x, n), *out = alias ? in : devf(o, NULL, n);
    o->dropout(o, out, in, n, p, seed, counter);
    return down(o, out, n);
}

/* The mask has no double reference (it is a hash); what defines it: kept elements are inp / (1 - p)
 * (the op forms 1 / (1 - p) in float: 3 roundings, so within 3u of it), dropped ones exactly 0; the
 * same bits for the same seed and counter, in place or not; element i's fate depends on counter + i
 * only (a shifted call agrees on the overlap); another seed gives another mask; p = 0 is the
 * identity. The kept count is binomial(n, 1 - p): within 5 standard deviations of n (1 - p) (a
 * one-in-two-million event for a fair mask; the seeds are fixed, so it either always passes or
 * never). Against the CPU backend bit for bit: every backend computes the same mask (kernels/ops.h).
 * The counter starts 3000 below 2^32, so the mask crosses the point where its key changes. */
static void case_dropout(void) {
    const float p = 0.3f;
    const uint64_t seed = 1234, counter = (1ull << 32) - 3000;
    where("n=%d p=%g", DROP_N, (double)p);
    an_rng r;
    an_rng_seed(&r, 1300);
    float *x = rnd(&r, DROP_N, 0.5f, 1.5f);
    for (int i = 0; i < DROP_N; i += 2) x[i] = -x[i]; /* non-zero, both signs: a kept element is never 0 */
    float *got = run_dropout(g_o, x, DROP_N, p, seed, counter, 0);
    float *cpu = run_dropout(g_cpu, x, DROP_N, p, seed, counter, 0);
    vs_cpu_exact("out", got, cpu, DROP_N);
    double worst = 0.0;
    size_t kept = 0;
    for (int i = 0; i < DROP_N; i++) {
        if (got[i] == 0.0f) continue;
        kept++;
        double want = x[i] / (1.0 - (double)p);
        worst = test_nan_max(worst, fabs(got[i] - want) / (3 * U32 * fabs(want)));
    }
    CHECK_MSG(worst <= 1.0, "%s: a kept element is %.3g times 3u off inp / (1 - p)", g_where, worst);
    double mean = DROP_N * (1.0 - p), sd = sqrt(DROP_N * (double)p * (1.0 - p));
    CHECK_MSG(fabs((double)kept - mean) <= 5 * sd, "%s: kept %zu of %d, expected %.0f +- %.0f (5 sd)", g_where, kept,
              DROP_N, mean, 5 * sd);
    expect_exact("out (same seed and counter again)", run_dropout(g_o, x, DROP_N, p, seed, counter, 0), got, DROP_N);
    expect_exact("out (in place)", run_dropout(g_o, x, DROP_N, p, seed, counter, 1), got, DROP_N);
    enum { SHIFT = 1001 };
    expect_exact("out (counter + 1001 on inp + 1001)",
                 run_dropout(g_o, x + SHIFT, DROP_N - SHIFT, p, seed, counter + SHIFT, 0), got + SHIFT, DROP_N - SHIFT);
    float *other = run_dropout(g_o, x, DROP_N, p, seed + 1, counter, 0);
    size_t differ = 0;
    for (int i = 0; i < DROP_N; i++) differ += (other[i] == 0.0f) != (got[i] == 0.0f);
    /* two independent masks disagree on a fraction 2 p (1 - p) = 0.42 of the elements */
    CHECK_MSG(differ > DROP_N / 4, "%s: seed + 1 changes only %zu of %d mask bits", g_where, differ, DROP_N);
    expect_exact("out (p = 0)", run_dropout(g_o, x, DROP_N, 0.0f, seed, counter, 0), x, DROP_N);
}

/* ====================================== LoRA ====================================== */

/* N, C, OC, r: odd, not multiples of the kernel's blocks (4 rows, 8 lanes) */
enum { LO_N = 7, LO_C = 37, LO_OC = 19, LO_R = 5 };
static const float lora_scaling = 2.0f, lora_ps[2] = {0.0f, 0.25f};
static const uint64_t lora_seed = 77, lora_counter = 1000003;

typedef struct lora_ctx {
    const double *x, *a, *bt, *mask; /* mask: 1 / (1 - p) where kept, 0 where dropped */
    int N, C, OC, r;
    double scaling;
} lora_ctx;

/* the adapter's contribution scaling * (x .* mask) a^T bt (the op adds it to out) */
static void ref_lora(void *vc, double *out) {
    lora_ctx *c = vc;
    double u[LO_R];
    for (int n = 0; n < c->N; n++) {
        for (int j = 0; j < c->r; j++) {
            double s = 0.0;
            for (int k = 0; k < c->C; k++)
                s += c->x[(size_t)n * c->C + k] * c->mask[(size_t)n * c->C + k] * c->a[(size_t)j * c->C + k];
            u[j] = c->scaling * s;
        }
        for (int o = 0; o < c->OC; o++) {
            double s = 0.0;
            for (int j = 0; j < c->r; j++) s += u[j] * c->bt[(size_t)j * c->OC + o];
            out[(size_t)n * c->OC + o] = s;
        }
    }
}

/* The mask the LoRA ops must apply, from the CPU backend's dropout op (element (n, k) is numbered
 * counter + n C + k: one dropout call over the flattened x), so the p > 0 runs also check that the
 * fused ops and the dropout op agree. */
static double *lora_mask(float p) {
    size_t n = (size_t)LO_N * LO_C;
    float *ones = hf(n);
    for (size_t i = 0; i < n; i++) ones[i] = 1.0f;
    return dbl(p > 0 ? run_dropout(g_cpu, ones, n, p, lora_seed, lora_counter, 0) : ones, n);
}

typedef struct lora_in {
    const float *x, *a, *bt, *out0, *dout, *g0x, *g0a, *g0bt;
    float p;
} lora_in;

typedef struct lora_out {
    float *out, *u, *dinp, *da, *dbt, *du, *da_alone, *du_alone;
} lora_out;

static lora_in make_lora_in(int s) {
    an_rng r;
    an_rng_seed(&r, 1400 + (uint64_t)s);
    lora_in in = {rnd(&r, (size_t)LO_N * LO_C, -1, 1),  rnd(&r, (size_t)LO_R * LO_C, -1, 1),
                  rnd(&r, (size_t)LO_R * LO_OC, -1, 1), rnd(&r, (size_t)LO_N * LO_OC, -1, 1),
                  rnd(&r, (size_t)LO_N * LO_OC, -1, 1), rnd(&r, (size_t)LO_N * LO_C, -1, 1),
                  rnd(&r, (size_t)LO_R * LO_C, -1, 1),  rnd(&r, (size_t)LO_R * LO_OC, -1, 1),
                  lora_ps[s]};
    where("N=%d C=%d OC=%d r=%d p=%g", LO_N, LO_C, LO_OC, LO_R, (double)in.p);
    return in;
}

/* forward, then (backward) the backward with the forward's u; and (backward) a second backward that
 * wants da alone (dinp, dbt NULL). du is scratch: written when da or dinp is wanted. */
static lora_out run_lora(const an_ops *o, const lora_in *in, int backward) {
    size_t nx = (size_t)LO_N * LO_C, na = (size_t)LO_R * LO_C, nb = (size_t)LO_R * LO_OC, no = (size_t)LO_N * LO_OC;
    size_t nu = (size_t)LO_N * LO_R;
    float *x = devf(o, in->x, nx), *a = devf(o, in->a, na), *bt = devf(o, in->bt, nb), *out = devf(o, in->out0, no);
    float *u = devf(o, NULL, nu);
    o->lora_forward(o, out, u, x, a, bt, LO_N, LO_C, LO_OC, LO_R, lora_scaling, in->p, lora_seed, lora_counter);
    lora_out r = {down(o, out, no), down(o, u, nu), NULL, NULL, NULL, NULL, NULL, NULL};
    if (backward) {
        float *dx = devf(o, in->g0x, nx), *da = devf(o, in->g0a, na), *dbt = devf(o, in->g0bt, nb);
        float *du = devf(o, NULL, nu), *du2 = devf(o, NULL, nu), *da2 = devf(o, in->g0a, na);
        float *dout = devf(o, in->dout, no);
        o->lora_backward(o, dx, da, dbt, du, dout, x, u, a, bt, LO_N, LO_C, LO_OC, LO_R, lora_scaling, in->p,
                         lora_seed, lora_counter);
        o->lora_backward(o, NULL, da2, NULL, du2, dout, x, u, a, bt, LO_N, LO_C, LO_OC, LO_R, lora_scaling, in->p,
                         lora_seed, lora_counter);
        r.dinp = down(o, dx, nx), r.da = down(o, da, na), r.dbt = down(o, dbt, nb), r.du = down(o, du, nu);
        r.da_alone = down(o, da2, na), r.du_alone = down(o, du2, nu);
    }
    return r;
}

/* u = scaling * xd a^T element by element: Higham's bound with C products plus the masking and the
 * scaling (C + 2 terms). out = out0 + u bt: the error that u carries, times |bt|, plus Higham's bound
 * for r + 1 terms. p = 0 and p = 0.25 (against the dropout op's mask). */
static void case_lora_forward(void) {
    size_t nx = (size_t)LO_N * LO_C, no = (size_t)LO_N * LO_OC, nu = (size_t)LO_N * LO_R;
    for (int s = 0; s < 2; s++) {
        lora_in in = make_lora_in(s);
        lora_out got = run_lora(g_o, &in, 0), cpu = run_lora(g_cpu, &in, 0);
        double *mask = lora_mask(in.p), *xd = dbl(in.x, nx), *bt = dbl(in.bt, (size_t)LO_R * LO_OC);
        for (size_t i = 0; i < nx; i++) xd[i] *= mask[i];
        gemm_ref u = ref_gemm(xd, LO_C, 1, dbl(in.a, (size_t)LO_R * LO_C), LO_C, 1, LO_N, LO_R, LO_C, lora_scaling,
                              NULL, NULL, LO_C + 2);
        double *out = hd(no), *bound = hd(no);
        for (int n = 0; n < LO_N; n++)
            for (int o = 0; o < LO_OC; o++) {
                double s0 = in.out0[n * LO_OC + o], sum = s0, mag = fabs(s0), carried = 0.0;
                for (int j = 0; j < LO_R; j++) {
                    sum += u.val[n * LO_R + j] * bt[j * LO_OC + o];
                    mag += fabs(u.val[n * LO_R + j] * bt[j * LO_OC + o]);
                    carried += u.bound[n * LO_R + j] * fabs(bt[j * LO_OC + o]);
                }
                out[n * LO_OC + o] = sum;
                bound[n * LO_OC + o] = (LO_R + 1 + 2) * U32 * mag + carried;
            }
        expect_within("u", got.u, u.val, u.bound, nu);
        expect_within("out", got.out, out, bound, no);
        vs_cpu_within("u", got.u, cpu.u, u.bound, nu);
        vs_cpu_within("out", got.out, cpu.out, bound, no);
    }
}

/* dinp, da, dbt against finite differences of the forward (linear in each for a fixed mask): TOL_FD;
 * du (overwrites) = scaling dout bt^T element by element: Higham's bound with OC products and the
 * scaling; the same with dinp and dbt NULL. */
static void case_lora_backward(void) {
    size_t nx = (size_t)LO_N * LO_C, na = (size_t)LO_R * LO_C, nb = (size_t)LO_R * LO_OC, no = (size_t)LO_N * LO_OC;
    size_t nu = (size_t)LO_N * LO_R;
    for (int s = 0; s < 2; s++) {
        lora_in in = make_lora_in(s);
        lora_out got = run_lora(g_o, &in, 1), cpu = run_lora(g_cpu, &in, 1);
        lora_ctx c = {dbl(in.x, nx), dbl(in.a, na), dbl(in.bt, nb), lora_mask(in.p), LO_N, LO_C, LO_OC, LO_R,
                      lora_scaling};
        double *cot = dbl(in.dout, no);
        gemm_ref du = ref_gemm(cot, LO_OC, 1, c.bt, LO_OC, 1, LO_N, LO_R, LO_OC, lora_scaling, NULL, NULL, LO_OC + 1);
        expect_within("du", got.du, du.val, du.bound, nu);
        expect_within("du (dinp, dbt NULL)", got.du_alone, du.val, du.bound, nu);
        vs_cpu_within("du", got.du, cpu.du, du.bound, nu);
        expect_fd("dinp", ref_lora, &c, (double *)c.x, nx, delta(got.dinp, in.g0x, nx), cot, no, nx, tol_fd());
        expect_fd("da", ref_lora, &c, (double *)c.a, na, delta(got.da, in.g0a, na), cot, no, na, tol_fd());
        expect_fd("dbt", ref_lora, &c, (double *)c.bt, nb, delta(got.dbt, in.g0bt, nb), cot, no, nb, tol_fd());
        expect_fd("da (dinp, dbt NULL)", ref_lora, &c, (double *)c.a, na, delta(got.da_alone, in.g0a, na), cot, no,
                  na, tol_fd());
        vs_cpu_rel("dinp", got.dinp, cpu.dinp, nx, 1.0, 2 * tol_fd());
        vs_cpu_rel("da", got.da, cpu.da, na, 1.0, 2 * tol_fd());
        vs_cpu_rel("dbt", got.dbt, cpu.dbt, nb, 1.0, 2 * tol_fd());
    }
}

/* lora_grouped_forward: 13 rows in three segments of different ranks (4 rows r 5, 6 rows r 3, 2 rows
 * r 8) and one row (index 4) in none, which must stay as it was. Against (1) the double reference of
 * each segment with the bound of case_lora_forward (Higham for C + 2 products into u, then r + 3
 * terms and the carried error into out), and (2) per-row lora_forward on the same backend: bit for
 * bit, what the engine's exactness rests on (a row's adapter result must not depend on the other rows
 * or adapters of its batch). */
static void case_lora_grouped_forward(void) {
    enum { GN = 13, NSEG = 3 };
    static const int row0[NSEG] = {0, 5, 11}, nrows[NSEG] = {4, 6, 2}, rank[NSEG] = {5, 3, 8};
    static const float scal[NSEG] = {2.0f, 0.5f, 1.25f};
    an_rng g;
    an_rng_seed(&g, 1500);
    size_t nx = (size_t)GN * LO_C, no = (size_t)GN * LO_OC;
    float *x = rnd(&g, nx, -1, 1), *out0 = rnd(&g, no, -1, 1), *a[NSEG], *bt[NSEG];
    for (int s = 0; s < NSEG; s++) {
        a[s] = rnd(&g, (size_t)rank[s] * LO_C, -1, 1);
        bt[s] = rnd(&g, (size_t)rank[s] * LO_OC, -1, 1);
    }
    where("N=%d C=%d OC=%d, 3 segments of r 5, 3, 8 and a row in none", GN, LO_C, LO_OC);
    /* grouped on the backend under test */
    const an_ops *o = g_o;
    float *dx = devf(o, x, nx), *dout = devf(o, out0, no), *du = devf(o, NULL, (size_t)GN * 8);
    an_lora_seg segs[NSEG];
    for (int s = 0; s < NSEG; s++)
        segs[s] = (an_lora_seg){row0[s], nrows[s], rank[s], scal[s], devf(o, a[s], (size_t)rank[s] * LO_C),
                                devf(o, bt[s], (size_t)rank[s] * LO_OC)};
    o->lora_grouped_forward(o, dout, du, dx, LO_C, LO_OC, segs, NSEG);
    float *got = down(o, dout, no);
    /* per row, lora_forward alone */
    float *alone = hf(no);
    memcpy(alone, out0, no * sizeof(float));
    for (int s = 0; s < NSEG; s++)
        for (int i = 0; i < nrows[s]; i++) {
            int n = row0[s] + i;
            float *ro = devf(o, out0 + (size_t)n * LO_OC, LO_OC), *rx = devf(o, x + (size_t)n * LO_C, LO_C);
            float *ru = devf(o, NULL, (size_t)rank[s]);
            o->lora_forward(o, ro, ru, rx, segs[s].a, segs[s].bt, 1, LO_C, LO_OC, rank[s], scal[s], 0.0f, 0, 0);
            memcpy(alone + (size_t)n * LO_OC, down(o, ro, LO_OC), LO_OC * sizeof(float));
        }
    expect_exact("out (vs per-row lora_forward)", got, alone, no);
    /* the double reference */
    double *ref = hd(no), *bound = hd(no);
    for (size_t i = 0; i < no; i++) ref[i] = out0[i];
    for (int s = 0; s < NSEG; s++) {
        const float *xs = x + (size_t)row0[s] * LO_C;
        gemm_ref u = ref_gemm(dbl(xs, (size_t)nrows[s] * LO_C), LO_C, 1, dbl(a[s], (size_t)rank[s] * LO_C), LO_C, 1,
                              nrows[s], rank[s], LO_C, scal[s], NULL, NULL, LO_C + 2);
        for (int n = 0; n < nrows[s]; n++)
            for (int oc = 0; oc < LO_OC; oc++) {
                size_t at = (size_t)(row0[s] + n) * LO_OC + oc;
                double sum = out0[at], mag = fabs(sum), carried = 0.0;
                for (int j = 0; j < rank[s]; j++) {
                    double b = bt[s][(size_t)j * LO_OC + oc];
                    sum += u.val[n * rank[s] + j] * b;
                    mag += fabs(u.val[n * rank[s] + j] * b);
                    carried += u.bound[n * rank[s] + j] * fabs(b);
                }
                ref[at] = sum;
                bound[at] = (rank[s] + 3) * U32 * mag + carried;
            }
    }
    expect_within("out", got, ref, bound, no);
    expect_exact("out (row 4, in no segment)", got + 4 * LO_OC, out0 + 4 * LO_OC, LO_OC);
    if (g_o != g_cpu) {
        const an_ops *c = g_cpu;
        float *cx = devf(c, x, nx), *cout = devf(c, out0, no), *cu = devf(c, NULL, (size_t)GN * 8);
        an_lora_seg cs[NSEG];
        for (int s = 0; s < NSEG; s++)
            cs[s] = (an_lora_seg){row0[s], nrows[s], rank[s], scal[s], devf(c, a[s], (size_t)rank[s] * LO_C),
                                  devf(c, bt[s], (size_t)rank[s] * LO_OC)};
        c->lora_grouped_forward(c, cout, cu, cx, LO_C, LO_OC, cs, NSEG);
        vs_cpu_within("out", got, down(c, cout, no), bound, no);
    }
}

/* ====================================== typed weights ====================================== */

/* bf16 in the test itself, independent of the library's conversions: round to nearest even (finite
 * values), and widening is exact (the bits shifted up). */
static uint16_t bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static float bf16_widen(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* A weight of dtype dt on backend o made from float32 values w[rows, cols], and `wide`: the float32
 * values it stands for (f32: w; bf16: the rounded values widened; NF4: the dequantized weight), which
 * the references use. NF4 is an an_nf4_tensor in host memory (kernels/ops.h), with its copy in a
 * device backend's memory (an_nf4_tensor.device) for that backend. data is NULL on failure. */
typedef struct weight {
    an_weight w;
    float *wide;
    float *mag; /* GGUF block types: the magnitudes of the parts the kernels sum (tests/quant_fixture.h) */
} weight;

static weight make_weight(const an_ops *o, an_dtype dt, const float *w, int64_t rows, int64_t cols) {
    size_t n = (size_t)(rows * cols);
    weight r = {{dt, rows, cols, NULL}, hf(n), NULL};
    if (dt == AN_F32) {
        memcpy(r.wide, w, n * sizeof(float));
        r.w.data = devf(o, w, n);
    } else if (dt == AN_BF16) {
        uint16_t *h = hold(MEM_HOST, NULL, malloc(n * sizeof(uint16_t)));
        for (size_t i = 0; i < n; i++) h[i] = bf16_round(w[i]), r.wide[i] = bf16_widen(h[i]);
        r.w.data = dev(o, h, n * sizeof(uint16_t));
    } else if (dt == AN_NF4) {
        an_nf4_tensor *t = calloc(1, sizeof *t);
        an_error err;
        /* both kinds of scales: double quantization (QLoRA's default, the nested scales) where the
         * rows are of even length, plain float absmax where odd (the C = 67 cases, the lookup's 37) */
        if (an_nf4_tensor_quantize(t, w, rows, cols, AN_NF4_BLOCKSIZE, cols % 2 == 0, &err)) {
            CHECK_MSG(0, "%s: NF4 quantization failed: %s", g_where, err.msg);
            free(t);
            return r;
        }
        hold(MEM_NF4, NULL, t);
        an_nf4_tensor_dequantize(t, r.wide);
        if (o->device != AN_DEVICE_CPU) { /* a device backend reads its copy (kernels/nf4.h) */
            an_nf4_device_layout l = an_nf4_device_layout_of(t);
            uint8_t *img = hold(MEM_HOST, NULL, malloc(l.bytes));
            an_nf4_device_image(t, img);
            t->device = dev(o, img, l.bytes);
        }
        r.w.data = t;
    } else if (an_dtype_is_ggml(dt)) {
        /* random blocks (every byte pattern a GGUF file may hold, tests/quant_fixture.h), the same for
         * the same w; wide is their reference dequantization */
        uint32_t seed;
        memcpy(&seed, w, sizeof seed);
        an_rng rr;
        an_rng_seed(&rr, seed);
        size_t nb = tq_bytes(dt, rows, cols);
        uint8_t *q = hold(MEM_HOST, NULL, malloc(nb));
        r.mag = hf(n);
        tq_random(dt, rows, cols, &rr, q, r.wide, r.mag);
        r.w.data = dev(o, q, nb);
    } else {
        CHECK_MSG(0, "%s: the harness cannot make a %s weight (add it to make_weight)", g_where, an_dtype_name(dt));
    }
    return r;
}

/* Extra terms in Higham's bound for the dtype: NF4 kernels sum code * x within a block and apply the
 * block's scale once (one more rounding), and the reference's dequantized weights are themselves
 * rounded products (one more); bf16 widening is exact. */
static int dtype_terms(an_dtype dt) { return dt == AN_NF4 ? 2 : 0; }

/* N, C, bias; OC = 23. C = 67 is odd (NF4 blocks of 64 run across row ends, and the NF4
 * matrix-vector kernel dequantizes each row first); C = 128 is a multiple of the blocksize, as in
 * every real model, where the NF4 kernels decode blocks in place (AVX2 or plain). N = 1 and 3 take
 * the NF4 matrix-vector kernel (N <= 4; on CUDA the typed one, N <= 8), 13 the float32 one (N <= 16)
 * and NF4's tiled GEMM, 37 every GEMM; with and without bias. The workspace is sized once for the most rows, as a plan does. */
enum { LIN_OC = 23, LIN_NMAX = 37 };
static const int lin_fwd_shapes[][3] = {{3, 67, 1}, {13, 67, 1}, {37, 67, 1}, {13, 67, 0},
                                        {1, 67, 0}, {3, 128, 1}, {13, 128, 0}, {37, 128, 1}};
static const int lin_bwd_shapes[][2] = {{3, 67}, {13, 67}, {37, 67}, {3, 128}, {37, 128}};

/* The GGUF block types need whole blocks per row: their cases run C = 256 where the others run 67, and
 * 512 where they run 128 (whole 256-value blocks for the k-quants, several for all). */
static int lin_cols(int C) { return an_dtype_is_ggml(g_dt) ? (C == 67 ? 256 : 512) : C; }

/* GGUF block types: a backend may multiply with the activations quantized to 8 bits per block, as the
 * CPU does for up to AN_QUANT_MATVEC_MAX_ROWS rows (and any backend may for any N): that adds
 * tq_act_bound per output (tests/quant_fixture.h: half a quantization step of each block's x times
 * |w|, and the float sums of the quantized parts), on top of Higham's bound. */
static void add_act_bound(double *bound, const weight *w, const float *inp, int N, int C, int OC) {
    if (!an_dtype_is_ggml(g_dt)) return;
    for (int n = 0; n < N; n++)
        for (int oc = 0; oc < OC; oc++)
            bound[(size_t)n * OC + oc] += tq_act_bound(g_dt, w->wide + (size_t)oc * C, w->mag + (size_t)oc * C,
                                                       inp + (size_t)n * C, C);
}

/* A device's typed weights are widened a tile of rows at a time into the workspace: with the workspace
 * of 7 float32 rows (LIN_TILE_ROWS, 14 as bf16) instead of the asked size, the 23 rows take several
 * tiles, the last one short. (The CPU writes NaN rather than run with less than it asked.) */
enum { LIN_TILE_ROWS = 7 };
static size_t lin_work(const an_ops *o, const weight *w, int small) {
    size_t wb = o->linear_work_bytes(o, &w->w, LIN_NMAX);
    return small && wb ? (size_t)LIN_TILE_ROWS * w->w.cols * sizeof(float) : wb;
}

static float *run_linear_forward(const an_ops *o, const float *w32, const float *inp, const float *bias, int N,
                                 int C, int small) {
    weight w = make_weight(o, g_dt, w32, LIN_OC, C);
    if (!w.w.data) return NULL;
    size_t wb = lin_work(o, &w, small);
    float *out = devf(o, NULL, (size_t)N * LIN_OC);
    o->linear_forward(o, out, devf(o, inp, (size_t)N * C), &w.w, bias ? devf(o, bias, LIN_OC) : NULL, N,
                      dev(o, NULL, wb), wb, AN_LINEAR_INFER);
    return down(o, out, (size_t)N * LIN_OC);
}

/* out = inp W^T + bias against the double product with the weight's float32 values: Higham's bound
 * with C + 1 terms (+ the dtype's), element by element. */
static void case_linear_forward(void) {
    for (size_t s = 0; s < sizeof lin_fwd_shapes / sizeof lin_fwd_shapes[0]; s++) {
        int N = lin_fwd_shapes[s][0], C = lin_cols(lin_fwd_shapes[s][1]), hb = lin_fwd_shapes[s][2];
        where("N=%d C=%d OC=%d%s", N, C, LIN_OC, hb ? " bias" : "");
        an_rng r;
        an_rng_seed(&r, 1500 + (uint64_t)s);
        float *w = rnd(&r, (size_t)LIN_OC * C, -1, 1), *inp = rnd(&r, (size_t)N * C, -1, 1);
        float *bias = rnd(&r, LIN_OC, -1, 1);
        weight wide = make_weight(g_cpu, g_dt, w, LIN_OC, C); /* the values the weight stands for */
        float *got = run_linear_forward(g_o, w, inp, hb ? bias : NULL, N, C, 0);
        float *cpu = run_linear_forward(g_cpu, w, inp, hb ? bias : NULL, N, C, 0);
        float *tiled = g_o->device != AN_DEVICE_CPU ? run_linear_forward(g_o, w, inp, hb ? bias : NULL, N, C, 1) : NULL;
        if (!wide.w.data || !got || !cpu) return;
        gemm_ref ref = ref_gemm(dbl(inp, (size_t)N * C), C, 1, dbl(wide.wide, (size_t)LIN_OC * C), C, 1, N, LIN_OC, C,
                                1.0, NULL, hb ? dbl(bias, LIN_OC) : NULL, C + 1 + dtype_terms(g_dt));
        add_act_bound(ref.bound, &wide, inp, N, C, LIN_OC);
        expect_within("out", got, ref.val, ref.bound, (size_t)N * LIN_OC);
        vs_cpu_within("out", got, cpu, ref.bound, (size_t)N * LIN_OC);
        if (tiled) expect_within("out (small tiles)", tiled, ref.val, ref.bound, (size_t)N * LIN_OC);
    }
}

static float *run_linear_backward_input(const an_ops *o, const float *w32, const float *dout, const float *g0,
                                        int N, int C, int small) {
    weight w = make_weight(o, g_dt, w32, LIN_OC, C);
    if (!w.w.data) return NULL;
    size_t wb = lin_work(o, &w, small);
    float *dinp = devf(o, g0, (size_t)N * C);
    o->linear_backward_input(o, dinp, devf(o, dout, (size_t)N * LIN_OC), &w.w, N, dev(o, NULL, wb), wb);
    return down(o, dinp, (size_t)N * C);
}

/* dinp += dout W: Higham's bound with OC products plus the start value (+ the dtype's), element by
 * element, and finite differences of the forward with the weight's float32 values: TOL_FD. */
static void case_linear_backward_input(void) {
    for (size_t s = 0; s < sizeof lin_bwd_shapes / sizeof lin_bwd_shapes[0]; s++) {
        int N = lin_bwd_shapes[s][0], C = lin_cols(lin_bwd_shapes[s][1]);
        where("N=%d C=%d OC=%d", N, C, LIN_OC);
        size_t nc = (size_t)N * C, no = (size_t)N * LIN_OC, wc = (size_t)LIN_OC * C;
        an_rng r;
        an_rng_seed(&r, 1600 + (uint64_t)s);
        float *w = rnd(&r, wc, -1, 1), *dout = rnd(&r, no, -1, 1), *g0 = rnd(&r, nc, -1, 1);
        weight wide = make_weight(g_cpu, g_dt, w, LIN_OC, C);
        float *got = run_linear_backward_input(g_o, w, dout, g0, N, C, 0);
        float *cpu = run_linear_backward_input(g_cpu, w, dout, g0, N, C, 0);
        float *tiled = g_o->device != AN_DEVICE_CPU ? run_linear_backward_input(g_o, w, dout, g0, N, C, 1) : NULL;
        if (!wide.w.data || !got || !cpu) return;
        double *w_d = dbl(wide.wide, wc), *dout_d = dbl(dout, no);
        gemm_ref ref = ref_gemm(dout_d, LIN_OC, 1, w_d, 1, C, N, C, LIN_OC, 1.0, dbl(g0, nc), NULL,
                                LIN_OC + 1 + dtype_terms(g_dt));
        expect_within("dinp", got, ref.val, ref.bound, nc);
        vs_cpu_within("dinp", got, cpu, ref.bound, nc);
        if (tiled) expect_within("dinp (small tiles)", tiled, ref.val, ref.bound, nc);
        double *inp_d = hd(nc); /* the forward is linear: any point will do */
        oh_mm_ctx c = {inp_d, w_d, NULL, N, C, LIN_OC};
        expect_fd("dinp", oh_ref_matmul, &c, inp_d, nc, delta(got, g0, nc), dout_d, no, 200, tol_fd());
    }
}

/* out = the table's rows widened to float32: bit-identical to its float32 values (kernels/ops.h) */
enum { LK_N = 9, LK_V = 11, LK_C = 37 };
static const int32_t lk_ids[LK_N] = {10, 0, 4, 4, 7, 0, 3, 10, 1};

/* the GGUF block types' rows hold whole blocks: 256 values */
static int lk_cols(void) { return an_dtype_is_ggml(g_dt) ? 256 : LK_C; }

static float *run_embedding_lookup(const an_ops *o, const float *t32) {
    int C = lk_cols();
    weight t = make_weight(o, g_dt, t32, LK_V, C);
    if (!t.w.data) return NULL;
    float *out = devf(o, NULL, (size_t)LK_N * C);
    o->embedding_lookup(o, out, devi(o, lk_ids, LK_N), &t.w, LK_N);
    return down(o, out, (size_t)LK_N * C);
}

static void case_embedding_lookup(void) {
    int C = lk_cols();
    where("N=%d V=%d C=%d", LK_N, LK_V, C);
    an_rng r;
    an_rng_seed(&r, 1700);
    float *t32 = rnd(&r, (size_t)LK_V * C, -1, 1);
    weight wide = make_weight(g_cpu, g_dt, t32, LK_V, C);
    float *got = run_embedding_lookup(g_o, t32);
    /* the CPU may not support this dtype (NF4 tables): then there is nothing to compare with */
    int cpu_has = g_cpu->supports(g_cpu, AN_OP_embedding_lookup, g_dt);
    float *cpu = cpu_has ? run_embedding_lookup(g_cpu, t32) : NULL;
    if (!wide.w.data || !got || (cpu_has && !cpu)) return;
    float *want = hf((size_t)LK_N * C);
    for (int n = 0; n < LK_N; n++) memcpy(want + n * C, wide.wide + lk_ids[n] * C, C * sizeof(float));
    expect_exact("out", got, want, (size_t)LK_N * C);
    if (cpu_has) vs_cpu_exact("out", got, cpu, (size_t)LK_N * C);
}

/* ====================================== the harness ====================================== */

typedef void (*case_fn)(void);

/* One case per op id. A NULL entry (an op added to AN_OP_LIST with no case here) fails the suite. */
static const case_fn cases[AN_OP_COUNT] = {
    [AN_OP_matmul_forward] = case_matmul_forward,
    [AN_OP_matmul_backward] = case_matmul_backward,
    [AN_OP_matmul_gelu_forward] = case_matmul_gelu_forward,
    [AN_OP_matmul_backward_gelu] = case_matmul_backward_gelu,
    [AN_OP_embedding_forward] = case_embedding_forward,
    [AN_OP_embedding_backward] = case_embedding_backward,
    [AN_OP_layernorm_forward] = case_layernorm_forward,
    [AN_OP_layernorm_backward] = case_layernorm_backward,
    [AN_OP_rmsnorm_forward] = case_rmsnorm_forward,
    [AN_OP_rmsnorm_backward] = case_rmsnorm_backward,
    [AN_OP_add_layernorm_forward] = case_add_layernorm_forward,
    [AN_OP_add_rmsnorm_forward] = case_add_rmsnorm_forward,
    [AN_OP_rope_table] = case_rope_table,
    [AN_OP_rope_forward] = case_rope_forward,
    [AN_OP_rope_backward] = case_rope_backward,
    [AN_OP_attention_forward] = case_attention_forward,
    [AN_OP_attention_backward] = case_attention_backward,
    [AN_OP_gelu_forward] = case_gelu_forward,
    [AN_OP_gelu_backward] = case_gelu_backward,
    [AN_OP_swiglu_forward] = case_swiglu_forward,
    [AN_OP_swiglu_backward] = case_swiglu_backward,
    [AN_OP_add] = case_add,
    [AN_OP_axpy] = case_axpy,
    [AN_OP_scale] = case_scale,
    [AN_OP_cross_entropy_forward] = case_cross_entropy_forward,
    [AN_OP_cross_entropy_backward] = case_cross_entropy_backward,
    [AN_OP_adamw_update] = case_adamw_update,
    [AN_OP_sum_squares] = case_sum_squares,
    [AN_OP_gather_cols_forward] = case_gather_cols_forward,
    [AN_OP_gather_cols_backward] = case_gather_cols_backward,
    [AN_OP_attention_decode_forward] = case_attention_decode_forward,
    [AN_OP_dropout] = case_dropout,
    [AN_OP_lora_forward] = case_lora_forward,
    [AN_OP_lora_backward] = case_lora_backward,
    [AN_OP_linear_forward] = case_linear_forward,
    [AN_OP_linear_backward_input] = case_linear_backward_input,
    [AN_OP_embedding_lookup] = case_embedding_lookup,
    [AN_OP_lora_grouped_forward] = case_lora_grouped_forward,
    [AN_OP_sample_tokens] = case_sample_tokens,
};

/* The ops that take an an_weight run once per weight dtype; every other op once, as AN_F32 (what
 * supports() is asked for them). */
static const an_dtype weight_dtypes[] = {AN_F32, AN_BF16, AN_NF4, AN_Q8_0, AN_Q4_0, AN_Q4_1, AN_Q4_K, AN_Q6_K};
static int takes_weight(an_op_id op) {
    return op == AN_OP_linear_forward || op == AN_OP_linear_backward_input || op == AN_OP_embedding_lookup;
}

/* Every backend this harness knows of, by registry name: one line per backend. A name the build lacks
 * (cuda without `make CUDA=1`) is skipped with the registry's message; it is not a failure. */
static const char *const backend_names[] = {
    "cpu",
    "cuda",
    "cuda-bf16",
};
#define N_BACKENDS (sizeof backend_names / sizeof backend_names[0])

typedef struct backend_summary {
    const char *name;
    int opened, ops_checked, cases_run, cases_failed, unsupported;
    char unsupported_names[512];
    char skipped[sizeof(an_error)]; /* why it did not open: not built in, or no device */
} backend_summary;

static case_fn g_case;

static void run_current_case(void) {
    g_where[0] = '\0';
    g_case();
    release_all();
}

static void fail_missing_case(void) {
    CHECK_MSG(0, "no case for this op in tests/test_backend_ops.c (cases[]): every op of AN_OP_LIST needs one");
}

static void run_backend(const an_ops *o, backend_summary *sum) {
    static char name[160];
    g_o = o;
    for (int op = 0; op < AN_OP_COUNT; op++) {
        int ran = 0;
        size_t ndt = takes_weight((an_op_id)op) ? sizeof weight_dtypes / sizeof weight_dtypes[0] : 1;
        if (!cases[op]) {
            snprintf(name, sizeof name, "%s %s", o->name, an_op_name((an_op_id)op));
            int failed = test_g.failed;
            test_run(fail_missing_case, name);
            sum->cases_failed += test_g.failed - failed;
            continue;
        }
        for (size_t d = 0; d < ndt; d++) {
            an_dtype dt = weight_dtypes[d];
            const char *dname = an_dtype_name(dt);
            if (!o->supports(o, (an_op_id)op, dt)) {
                fprintf(stderr, "[ -- ] %s %s %s: unsupported\n", o->name, an_op_name((an_op_id)op), dname);
                size_t len = strlen(sum->unsupported_names);
                snprintf(sum->unsupported_names + len, sizeof sum->unsupported_names - len, "%s%s %s",
                         sum->unsupported ? ", " : "", an_op_name((an_op_id)op), dname);
                sum->unsupported++;
                continue;
            }
            if (ndt > 1)
                snprintf(name, sizeof name, "%s %s %s", o->name, an_op_name((an_op_id)op), dname);
            else
                snprintf(name, sizeof name, "%s %s", o->name, an_op_name((an_op_id)op));
            g_dt = dt;
            g_case = cases[op];
            int failed = test_g.failed;
            test_run(run_current_case, name);
            sum->cases_run++;
            sum->cases_failed += test_g.failed - failed;
            ran = 1;
        }
        sum->ops_checked += ran;
    }
}

int main(void) {
    an_error err;
    const char *v = getenv("AN_OPS_VERBOSE");
    g_verbose = v && *v && strcmp(v, "0") != 0;
    /* the reference backend, opened through the registry like every other */
    g_cpu = an_backend_open("cpu", &err);
    if (!g_cpu) {
        fprintf(stderr, "cannot open the cpu backend: %s\n", err.msg);
        test_g.failed++;
        return test_finish();
    }
    backend_summary sums[N_BACKENDS];
    memset(sums, 0, sizeof sums);
    for (size_t b = 0; b < N_BACKENDS; b++) {
        sums[b].name = backend_names[b];
        const an_ops *o = an_backend_open(backend_names[b], &err);
        if (!o) {
            snprintf(sums[b].skipped, sizeof sums[b].skipped, "%s", err.msg);
            continue;
        }
        sums[b].opened = 1;
        fprintf(stderr, "backend %s: %s\n", o->name, o->description);
        run_backend(o, &sums[b]);
        if (o != g_cpu) an_backend_close(o);
    }
    for (size_t b = 0; b < N_BACKENDS; b++) {
        if (!sums[b].opened) { /* a CUDA build on a machine without a GPU says "no CUDA device" here */
            printf("backend %s: skipped: %s\n", sums[b].name, sums[b].skipped);
            continue;
        }
        printf("backend %s: %d ops checked, %d unsupported (%s); %d op/dtype cases, %d failed\n", sums[b].name,
               sums[b].ops_checked, sums[b].unsupported, sums[b].unsupported ? sums[b].unsupported_names : "none",
               sums[b].cases_run, sums[b].cases_failed);
    }
    an_backend_close(g_cpu);
    free(g_held);
    return test_finish();
}
