#ifndef AN_TEST_H
#define AN_TEST_H
/* A small test harness. Each tests/test_*.c is its own binary:
 *
 *   static void test_something(void) { CHECK(x == 1); CHECK_NEAR(a, b, 1e-6); }
 *   int main(void) { RUN(test_something); return test_finish(); }
 *
 * test_finish() prints "N passed, N failed" (tests/run.sh adds those lines up) and returns non-zero
 * when anything failed. Tests run from the repository root. AN_TEST_ONLY=test_a,test_b runs only the
 * tests of those names. */
#include <math.h>
#include <stdio.h>

typedef struct test_state {
    int checks_failed; /* in the current test */
    int passed, failed;
    const char *current;
} test_state;

extern test_state test_g;

void test_fail_at(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void test_run(void (*fn)(void), const char *name);
int test_finish(void);
/* Path of a file in ../shared (or $AN_SHARED), in a static buffer per call slot (0..3). */
const char *test_shared(const char *rel);
/* A fresh empty folder under /tmp for this test binary; removed by nobody (tests are cheap). */
const char *test_tmpdir(void);
/* test_tmpdir()/name, in a static buffer per call slot (0..3). */
const char *test_tmp_path(const char *name);
/* Largest |a - b| / max(|b|_inf, floor) over n values: the relative error used by model tests.
 * NaN when any a[i] or b[i] is NaN, NaN or infinite when one is infinite, so `err < tol` fails. */
double test_max_rel_err(const float *a, const float *b, size_t n, double floor);

/* Error loops take their maximum with these, never with fmax or `e > worst ? e : worst`: both of
 * those drop a NaN (fmax(0, NaN) is 0, NaN > worst is false), so a test whose every output was NaN
 * would report a worst error of 0 and pass. Here a NaN sticks: once one is seen, the maximum stays
 * NaN, and a CHECK of the form `worst < tol` (false for NaN) fails.
 *
 * test_nan_worse(e, worst): whether e should replace worst as the largest error so far -- e is
 * larger, or e is NaN and worst is not yet. For loops that also remember where the worst one was. */
static inline int test_nan_worse(double e, double worst) { return !isnan(worst) && !(e <= worst); }
/* max(a, b), NaN when either is NaN */
static inline double test_nan_max(double a, double b) { return test_nan_worse(b, a) ? b : a; }

#define RUN(fn) test_run(fn, #fn)
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) test_fail_at(__FILE__, __LINE__, "CHECK(%s)", #cond);                         \
    } while (0)
#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) test_fail_at(__FILE__, __LINE__, __VA_ARGS__);                                \
    } while (0)
#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double a_ = (double)(a), b_ = (double)(b), t_ = (double)(tol);                             \
        if (!(fabs(a_ - b_) <= t_))                                                                \
            test_fail_at(__FILE__, __LINE__, "%s = %.9g, %s = %.9g, |diff| %.3g > %.3g", #a, a_, #b, \
                         b_, fabs(a_ - b_), t_);                                                   \
    } while (0)
#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                                     \
            test_fail_at(__FILE__, __LINE__, "%s = \"%s\", expected \"%s\"", #a, a_ ? a_ : "(null)", \
                         b_ ? b_ : "(null)");                                                      \
    } while (0)
/* Checks that an error message mentions a substring (the file name, the field, ...). */
#define CHECK_CONTAINS(hay, needle)                                                                \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (!h_ || !strstr(h_, n_))                                                                \
            test_fail_at(__FILE__, __LINE__, "\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)", n_); \
    } while (0)

#endif
