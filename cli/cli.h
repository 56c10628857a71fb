#ifndef AN_CLI_H
#define AN_CLI_H
/* cli/: the only place that parses argv, prints errors and exits. One file per subcommand,
 * each defining `int an_cmd_NAME(int argc, char **argv)` (argv[0] is the subcommand) that returns
 * the process exit status. */
#include "core/error.h"

int an_cmd_version(int argc, char **argv);
int an_cmd_tags(int argc, char **argv);
int an_cmd_tokenize(int argc, char **argv);
int an_cmd_tokenizer(int argc, char **argv);
int an_cmd_data(int argc, char **argv);
int an_cmd_bench(int argc, char **argv);
int an_bench_memory(int argc, char **argv); /* cli/cmd_bench_memory.c */
int an_bench_nf4(int argc, char **argv);    /* cli/cmd_bench_nf4.c */
int an_cmd_quantize(int argc, char **argv);
int an_cmd_export(int argc, char **argv);
int an_cmd_train(int argc, char **argv);
int an_bench_generate(int argc, char **argv); /* cli/cmd_bench_generate.c */
int an_bench_engine(int argc, char **argv);   /* cli/cmd_bench_engine.c */
int an_cmd_generate(int argc, char **argv);
int an_cmd_serve(int argc, char **argv);   /* cli/cmd_serve.c */
int an_cmd_perplexity(int argc, char **argv);
int an_cmd_eval(int argc, char **argv);
int an_cmd_merge(int argc, char **argv);
int an_cmd_gguf(int argc, char **argv);
int an_cmd_completion(int argc, char **argv); /* cli/cmd_completion.c */

/* cli/bench_timed_ops.c: ops whose matmul_forward / matmul_backward add their wall time to a total
 * (cli_matmul_seconds); everything else is ops' own. */
struct an_ops;
const struct an_ops *cli_timed_matmul_ops(const struct an_ops *ops);
double cli_matmul_seconds(void);

/* cli/backend.c: the backend --device names ("cpu" when NULL), opened for the rest of the process;
 * prints the error (which names the devices built in) and returns NULL when there is none. */
const struct an_ops *cli_backend(const char *device);

/* Prints "autoneg: message" to stderr and returns 1, for `return cli_fail(...)`. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints an an_error and returns 1. */
int cli_error(const an_error *err);

#endif
