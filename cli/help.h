#ifndef AN_CLI_HELP_H
#define AN_CLI_HELP_H
/* Each command's help is one table kept beside its parser: usage, a summary, one line per option
 * (what it does and its default) and an example. The same table also screens argv before the
 * command's own parser runs (cli_help_check), so an option the parser reads but the table leaves out
 * is refused, and the tests of that option fail: the help text cannot quietly fall behind. */
#include <stdio.h>

typedef struct cli_opt {
    const char *name; /* "--top-k" */
    const char *arg;  /* the value's placeholder ("K"), or NULL for a flag that takes none */
    const char *help; /* what it does; the default, where there is one */
} cli_opt;

typedef struct cli_help {
    const char *usage;       /* lines after "usage: ", '\n' between them, without "autoneg " */
    const char *summary;     /* what the command does, one or two sentences */
    const cli_opt *opts;     /* ends with a {NULL} entry */
    const char *more_title;  /* a second group (options shared with other commands), or NULL */
    const cli_opt *more;     /* ends with a {NULL} entry, or NULL */
    const char *example;     /* one command line, without "autoneg " */
} cli_help;

/* Whether argv[from..] holds -h or --help (before a "--" that ends the options). */
int cli_help_asked(int argc, char **argv, int from);
/* The full help on stdout; returns 0, the exit status of `--help`. */
int cli_help_print(const cli_help *h);
/* Usage lines and the pointer to --help, for errors. */
void cli_help_usage(const cli_help *h, FILE *f);
/* Prints "autoneg: message", the usage and "try --help" to stderr; returns 1. */
int cli_help_fail(const cli_help *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Answers --help/-h (prints the help, *rc = 0, returns 1), or refuses an option that is not in the
 * table or lacks its value (prints the error and usage, *rc = 1, returns 1); returns 0 when argv[from..]
 * may go on to the parser. Only words that start with "--" are options here: values such as "-1" and
 * positional arguments pass, and so does everything after "--". */
int cli_help_check(const cli_help *h, int argc, char **argv, int from, int *rc);

/* Every command and subcommand with its table (NULL: none), in the order `autoneg completion bash` and
 * `autoneg help man` list them (cli/cmd_completion.c). */
typedef struct cli_entry {
    const char *cmd, *sub; /* sub: the subcommand of a group (data clean), or NULL */
    const cli_help *h;
} cli_entry;
extern const cli_entry cli_entries[];
extern const size_t cli_n_entries;
/* The manual page autoneg(1) in roff, made from the tables (cli/man.c); summaries[i] is the one-line
 * summary of command names[i]. */
void cli_man_print(FILE *f, const char *version, const char *const *names, const char *const *summaries, size_t n);

/* Every command's table, for `autoneg completion` (each defined beside its parser). */
extern const cli_help cli_help_data_stats, cli_help_data_clean, cli_help_data_split, cli_help_data;
extern const cli_help cli_help_tags_step, cli_help_tags_aspect, cli_help_tags_norm, cli_help_tags;
extern const cli_help cli_help_bench_train, cli_help_bench, cli_help_bench_generate, cli_help_bench_memory, cli_help_bench_nf4,
    cli_help_bench_engine;
extern const cli_help cli_help_gguf_info;
extern const cli_help cli_help_serve;
extern const cli_help cli_help_tokenizer_train, cli_help_tokenizer, cli_help_generate, cli_help_eval, cli_help_perplexity, cli_help_merge, cli_help_quantize, cli_help_export, cli_help_tokenize, cli_help_train, cli_help_version;

#endif
