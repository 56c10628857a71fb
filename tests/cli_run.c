/* Running the autoneg binary from a test (tests/cli_run.h). */
#include "tests/cli_run.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/error.h"
#include "core/file.h"

int test_autoneg(const char *env, const char *args, const char *out_path, const char *err_path) {
    const char *build = getenv("BUILD");
    size_t n = strlen(args) + strlen(out_path) + strlen(err_path) + 1024;
    char *cmd = malloc(n);
    if (!cmd) return -1;
    snprintf(cmd, n, "%s%s%s/autoneg %s > %s 2> %s", env ? env : "", env ? " " : "", build && *build ? build : "build",
             args, out_path, err_path);
    int st = system(cmd);
    free(cmd);
    return st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

char *test_slurp(const char *path) {
    an_error e;
    char *s = an_read_file(path, NULL, &e);
    if (!s) {
        s = malloc(1);
        if (s) s[0] = 0;
    }
    return s;
}
