/* The harness's own error measures: a NaN anywhere in the inputs must come out as an error that fails
 * a CHECK of the usual `err < tol` form. The old folds (fmax, `e > worst ? e : worst`, and
 * `if (!(d <= m)) m = d`, which keeps a NaN only when it comes last) reported a finite error for
 * outputs that were NaN, so each measure is tried with the NaN first, in the middle and last. */
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "tests/op_harness.h"
#include "tests/test.h"

/* Whether CHECK_MSG(err < tol) fails: runs the real macro with stderr sent to /dev/null, then takes
 * the failure back out of the count, so the expected failure does not fail this suite. */
static int check_fails(double err, double tol) {
    int before = test_g.checks_failed;
    fflush(stderr);
    int saved = dup(2), devnull = open("/dev/null", O_WRONLY);
    if (saved < 0 || devnull < 0) {
        test_fail_at(__FILE__, __LINE__, "cannot silence stderr");
        return -1;
    }
    dup2(devnull, 2);
    CHECK_MSG(err < tol, "harness self-test: err %g, tol %g (an expected failure)", err, tol);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(devnull);
    int failed = test_g.checks_failed - before;
    test_g.checks_failed = before;
    return failed;
}

static void test_nan_max_keeps_nan(void) {
    CHECK(fmax(0.0, NAN) == 0.0); /* why the helper exists: C's fmax treats NaN as missing */
    CHECK(test_nan_max(1, 2) == 2 && test_nan_max(2, 1) == 2 && test_nan_max(-1, -1) == -1);
    CHECK(test_nan_max(INFINITY, 1) == INFINITY);
    CHECK(isnan(test_nan_max(NAN, 1)) && isnan(test_nan_max(1, NAN)) && isnan(test_nan_max(NAN, NAN)));
    CHECK(test_nan_worse(2, 1) && !test_nan_worse(1, 2) && !test_nan_worse(1, 1));
    CHECK(test_nan_worse(NAN, 1) && !test_nan_worse(1, NAN) && !test_nan_worse(NAN, NAN));
    /* a fold over errors stays NaN wherever the NaN is, however large what follows */
    for (int at = 0; at < 5; at++) {
        double worst = 0;
        for (int i = 0; i < 5; i++) worst = test_nan_max(worst, i == at ? NAN : 1e300 * (i + 1));
        CHECK_MSG(isnan(worst), "NaN at %d: fold gives %g", at, worst);
        CHECK(check_fails(worst, 1e-6) == 1);
    }
    CHECK(check_fails(1e-7, 1e-6) == 0); /* and the check itself passes a small error */
}

static void test_rel_err_measures_report_nan(void) {
    enum { N = 7 };
    float a[N], b[N];
    double ad[N], bd[N];
    for (int i = 0; i < N; i++) a[i] = b[i] = (float)(i + 1), ad[i] = bd[i] = i + 1;
    a[3] = 4.5f; /* largest |b| is 7: error 0.5 / 7 */
    ad[3] = 4.5;
    CHECK_NEAR(test_max_rel_err(a, b, N, 1e-12), 0.5 / 7, 1e-15);
    CHECK_NEAR(oh_rel_err_d(ad, bd, N, 1e-12), 0.5 / 7, 1e-15);
    CHECK_NEAR(oh_rel_err_fd(a, bd, N, 1e-12), 0.5 / 7, 1e-15);
    CHECK_NEAR(test_max_rel_err(a, b, N, 100), 0.5 / 100, 1e-15); /* a floor above max |b| divides instead */
    const int where[3] = {0, 3, N - 1};
    for (int k = 0; k < 3; k++) {
        int at = where[k];
        for (int side = 0; side < 2; side++) { /* NaN in the result, then in the reference */
            float *fx = side ? b : a, fsaved = fx[at];
            double *dx = side ? bd : ad, dsaved = dx[at];
            fx[at] = NAN;
            dx[at] = NAN;
            double e1 = test_max_rel_err(a, b, N, 1e-12), e2 = oh_rel_err_d(ad, bd, N, 1e-12),
                   e3 = oh_rel_err_fd(a, bd, N, 1e-12);
            CHECK_MSG(isnan(e1) && isnan(e2) && isnan(e3), "NaN in %s at %d: %g %g %g", side ? "b" : "a", at, e1, e2, e3);
            CHECK(check_fails(e1, 1e-3) == 1 && check_fails(e2, 1e-3) == 1 && check_fails(e3, 1e-3) == 1);
            fx[at] = fsaved;
            dx[at] = dsaved;
        }
    }
    /* infinities: never an error below a tolerance */
    a[2] = INFINITY;
    CHECK(check_fails(test_max_rel_err(a, b, N, 1e-12), 1e-3) == 1);
    b[2] = INFINITY;
    CHECK(check_fails(test_max_rel_err(a, b, N, 1e-12), 1e-3) == 1);
    a[2] = 3;
    CHECK(check_fails(test_max_rel_err(a, b, N, 1e-12), 1e-3) == 1);
}

/* oh_fd_check of out = 2x (gradient 2 everywhere): exact for a right gradient, NaN for a NaN one at
 * the first, a middle or the last sampled entry. */
static void twice(void *ctx, double *out) {
    const double *x = ctx;
    for (int i = 0; i < 5; i++) out[i] = 2 * x[i];
}

static void test_fd_check_reports_nan(void) {
    double x[5] = {0.1, -0.2, 0.3, 0.4, -0.5}, cot[5] = {1, 1, 1, 1, 1}, g[5];
    for (int i = 0; i < 5; i++) g[i] = 2;
    CHECK(oh_fd_check(twice, x, x, 5, g, cot, 5, 5, 1e-3) < 1e-8);
    const int where[3] = {0, 2, 4};
    for (int k = 0; k < 3; k++) {
        g[where[k]] = NAN;
        double e = oh_fd_check(twice, x, x, 5, g, cot, 5, 5, 1e-3);
        CHECK_MSG(isnan(e), "NaN gradient at %d: %g", where[k], e);
        CHECK(check_fails(e, 1e-4) == 1);
        g[where[k]] = 2;
    }
}

int main(void) {
    RUN(test_nan_max_keeps_nan);
    RUN(test_rel_err_measures_report_nan);
    RUN(test_fd_check_reports_nan);
    return test_finish();
}
