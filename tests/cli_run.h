#ifndef AN_TESTS_CLI_RUN_H
#define AN_TESTS_CLI_RUN_H
/* Running the autoneg binary from a test: `$BUILD/autoneg ARGS > out 2> err` (build/ by default),
 * with env (e.g. "OMP_NUM_THREADS=1", or NULL) in front. Returns the exit status, -1 when it could not
 * run at all. */
int test_autoneg(const char *env, const char *args, const char *out_path, const char *err_path);
/* The text of a file (malloc'd); "" (malloc'd) when it cannot be read, so checks on it simply fail. */
char *test_slurp(const char *path);

#endif
