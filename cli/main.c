/* autoneg: fine-tune language models on prompt pairs and write negative prompts. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/help.h"
#include "kernels/backend.h"

#define AN_VERSION "0.1.0"

static int an_cmd_help(int argc, char **argv);

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary; /* one line for `autoneg --help`; each command's own --help has the rest */
} command;

static const command commands[] = {
    {"train", an_cmd_train, "fine-tune a model on prompt pairs (full, LoRA, QLoRA) from a recipe"},
    {"generate", an_cmd_generate, "write negative prompts for positive prompts (or continue text with --raw)"},
    {"serve", an_cmd_serve, "serve the model over HTTP: OpenAI-compatible API, /v1/negatives, adapters, a web page"},
    {"eval", an_cmd_eval, "score generated negatives against reference ones by tag precision, recall, F1"},
    {"perplexity", an_cmd_perplexity, "perplexity of a model on a text file"},
    {"merge", an_cmd_merge, "fold a LoRA adapter into its base model"},
    {"quantize", an_cmd_quantize, "write a model with NF4 linear weights (bitsandbytes format)"},
    {"export", an_cmd_export, "write a llama-family model (and a merged adapter) as a GGUF file for llama.cpp"},
    {"tokenize", an_cmd_tokenize, "print the token ids of text"},
    {"tokenizer", an_cmd_tokenizer, "tokenizer train: a byte-level BPE from prompt pairs or text"},
    {"data", an_cmd_data, "data stats|clean|split: look at, clean and split prompt-pair files"},
    {"tags", an_cmd_tags, "tags step|aspect|norm: prompt-tag tools"},
    {"bench", an_cmd_bench, "bench train|generate|memory|nf4: speed and memory on random presets"},
    {"gguf", an_cmd_gguf, "gguf info F.gguf [--full]: a GGUF file's metadata and tensor table"},
    {"completion", an_cmd_completion, "completion bash: a bash completion script from the option tables"},
    {"version", an_cmd_version, "the version and the build options (also --version)"},
    {"help", an_cmd_help, "help [COMMAND [SUBCOMMAND]]: a command's help; help man: this manual page in roff"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

int cli_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("autoneg: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_error(const an_error *err) { return cli_fail("%s", err->msg); }

const cli_help cli_help_version = {
    "version | autoneg --version",
    "Prints the version and how this binary was built: its GEMM, the devices --device can name, and\n"
    "whether CUDA and MPI are in it.",
    NULL, NULL, NULL,
    "--version",
};

int an_cmd_version(int argc, char **argv) {
    int rc;
    if (cli_help_check(&cli_help_version, argc, argv, 1, &rc)) return rc;
    if (argc > 1) return cli_help_fail(&cli_help_version, "version: unexpected argument '%s'", argv[1]);
    printf("autoneg %s\n", AN_VERSION);
    /* the build options a bug report needs, from what this binary was compiled with */
#ifdef AN_BLAS
    printf("BLAS: OpenBLAS\n");
#else
    printf("BLAS: none (plain-C GEMM, make BLAS=0)\n");
#endif
    const char *devices = an_backend_names();
    printf("devices: %s\n", devices);
    printf("CUDA: %s\n", strstr(devices, "cuda") ? "built" : "not built");
    printf("MPI: not built\n"); /* no data-parallel code exists yet (DESIGN.md's make MPI=1) */
    return 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: autoneg COMMAND [OPTIONS]\n"
               "       autoneg COMMAND --help\n"
               "       autoneg --version\n\n"
               "Fine-tunes language models on Stable Diffusion prompt pairs and writes negative prompts.\n"
               "Results go to stdout; progress, warnings and errors to stderr.\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\noptions:\n  -h, --help  this help\n  --version   the version and build options\n"
               "\nexample:\n  autoneg generate --model ../shared/models/TinyStories-656K --prompt \"a cat, sunlight\"\n");
}

/* OpenMP threads that spin while they wait take the cores from everything else on a shared or
 * oversubscribed machine. libgomp reads its wait policy when the program loads, so a policy can only
 * be chosen by running again with it in the environment: a short spin (GOMP_SPINCOUNT) keeps the
 * hand-off between back-to-back parallel regions fast, then threads sleep. A user's own
 * OMP_WAIT_POLICY or GOMP_SPINCOUNT is left alone. */
static void wait_politely(char **argv) {
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    if (setenv("GOMP_SPINCOUNT", "10000", 1) != 0) return;
    execv("/proc/self/exe", argv); /* if that fails, carry on with the default policy */
}

static const cli_help help_help = {
    "help [COMMAND [SUBCOMMAND]]\nhelp man",
    "help COMMAND is COMMAND --help; help alone, autoneg --help. help man prints the manual page autoneg(1) in\n"
    "roff, made from the same option tables as --help (make install puts it in PREFIX/share/man/man1).",
    NULL, NULL, NULL,
    "help man > autoneg.1 && man -l autoneg.1",
};

/* autoneg help [COMMAND [SUB]] | autoneg help man */
static int an_cmd_help(int argc, char **argv) {
    int rc;
    if (cli_help_check(&help_help, argc, argv, 1, &rc)) return rc;
    if (argc == 1) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "man")) {
        if (argc > 2) return cli_help_fail(&help_help, "help man: unexpected argument '%s'", argv[2]);
        const char *names[N_COMMANDS], *summaries[N_COMMANDS];
        for (size_t i = 0; i < N_COMMANDS; i++) {
            names[i] = commands[i].name;
            summaries[i] = commands[i].summary;
        }
        cli_man_print(stdout, AN_VERSION, names, summaries, N_COMMANDS);
        return fflush(stdout) ? cli_fail("help man: cannot write output") : 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(argv[1], commands[i].name) || commands[i].run == an_cmd_help) continue;
        /* COMMAND [SUB] --help */
        char *args[4] = {argv[1], argc > 2 ? argv[2] : "--help", argc > 2 ? "--help" : NULL, NULL};
        if (argc > 3) return cli_help_fail(&help_help, "help: unexpected argument '%s'", argv[3]);
        return commands[i].run(argc > 2 ? 3 : 2, args);
    }
    return cli_help_fail(&help_help, "help: unknown command '%s'", argv[1]);
}

int main(int argc, char **argv) {
    wait_politely(argv);
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) return an_cmd_version(1, argv + 1);
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "autoneg: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
