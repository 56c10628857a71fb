#include "tests/test.h"

#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

test_state test_g;
static char test_dir[256]; /* the binary's scratch folder, made on first use (test_tmpdir) */

void test_fail_at(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  FAIL %s (%s:%d): ", test_g.current ? test_g.current : "?", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    test_g.checks_failed++;
}

/* AN_TEST_ONLY=name,name,...: run only the tests of those names (the slow binaries' few tests that a
 * run on an emulated device needs); test_finish fails when a name matched no test. */
static int only_count(void) {
    const char *only = getenv("AN_TEST_ONLY");
    if (!only || !*only) return 0;
    int n = 1;
    for (const char *c = only; *c; c++) n += *c == ',';
    return n;
}
static int selected(const char *name) {
    const char *only = getenv("AN_TEST_ONLY");
    if (!only || !*only) return 1;
    size_t len = strlen(name);
    for (const char *c = only; c;) {
        const char *end = strchr(c, ',');
        size_t n = end ? (size_t)(end - c) : strlen(c);
        if (n == len && strncmp(c, name, len) == 0) return 1;
        c = end ? end + 1 : NULL;
    }
    return 0;
}

void test_run(void (*fn)(void), const char *name) {
    if (!selected(name)) return;
    test_g.current = name;
    test_g.checks_failed = 0;
    fn();
    if (test_g.checks_failed) {
        test_g.failed++;
        fprintf(stderr, "[FAIL] %s\n", name);
    } else {
        test_g.passed++;
        fprintf(stderr, "[ ok ] %s\n", name);
    }
}

/* nftw callbacks: first make every folder writable (a test may leave one read-only on purpose), then
 * remove bottom-up */
static int open_up(const char *path, const struct stat *sb, int type, struct FTW *f) {
    (void)f;
    if (type == FTW_D) chmod(path, (sb->st_mode & 07777) | S_IRWXU);
    return 0;
}
static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *f) {
    (void)sb, (void)type, (void)f;
    remove(path);
    return 0;
}

int test_finish(void) {
    int wanted = only_count();
    if (wanted && test_g.passed + test_g.failed != wanted) {
        fprintf(stderr, "  FAIL AN_TEST_ONLY=%s: %d names, %d tests of this binary ran\n", getenv("AN_TEST_ONLY"),
                wanted, test_g.passed + test_g.failed);
        test_g.failed++;
    }
    printf("%d passed, %d failed\n", test_g.passed, test_g.failed);
    /* every binary's scratch folder went on filling /tmp (thousands of them, some of 300 MB, until the
     * disk was full): it goes when all passed, and stays to be looked at when something failed */
    if (test_dir[0] && !test_g.failed) {
        nftw(test_dir, open_up, 16, FTW_PHYS);
        nftw(test_dir, remove_entry, 16, FTW_PHYS | FTW_DEPTH);
    } else if (test_dir[0]) {
        fprintf(stderr, "test files kept in %s\n", test_dir);
    }
    return test_g.failed ? 1 : 0;
}

const char *test_shared(const char *rel) {
    static char buf[4][4096];
    static int slot;
    const char *root = getenv("AN_SHARED");
    if (!root || !*root) root = "../shared";
    char *b = buf[slot++ & 3];
    snprintf(b, sizeof buf[0], "%s/%s", root, rel);
    return b;
}

const char *test_tmpdir(void) {
    if (!test_dir[0]) {
        snprintf(test_dir, sizeof test_dir, "/tmp/autoneg-test-XXXXXX");
        if (!mkdtemp(test_dir)) {
            perror("mkdtemp");
            exit(2);
        }
    }
    return test_dir;
}

const char *test_tmp_path(const char *name) {
    static char buf[4][512];
    static int slot;
    char *b = buf[slot++ & 3];
    snprintf(b, sizeof buf[0], "%s/%s", test_tmpdir(), name);
    return b;
}

double test_max_rel_err(const float *a, const float *b, size_t n, double floor) {
    double maxb = floor, maxd = 0;
    for (size_t i = 0; i < n; i++) {
        maxb = test_nan_max(maxb, fabs((double)b[i]));
        maxd = test_nan_max(maxd, fabs((double)a[i] - (double)b[i])); /* a NaN anywhere, not only last */
    }
    return maxd / maxb;
}
