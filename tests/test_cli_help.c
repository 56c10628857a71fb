/* autoneg's help through $BUILD/autoneg, as a new user meets it: every command and subcommand
 * answers --help and -h with its usage and options on stdout (exit 0, nothing on stderr); --version
 * names the build; an unknown option fails with the usage on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/file.h"
#include "test.h"

static const char *bin(void) {
    static char b[512];
    const char *build = getenv("BUILD");
    snprintf(b, sizeof b, "%s/autoneg", build && *build ? build : "build");
    return b;
}

/* Runs `autoneg ARGS`, stdout and stderr to files read back (malloc'd); returns the exit status. */
static int run(const char *args, char **out, char **err) {
    char cmd[2048], op[600], ep[600];
    snprintf(op, sizeof op, "%s/out.txt", test_tmpdir());
    snprintf(ep, sizeof ep, "%s/err.txt", test_tmpdir());
    snprintf(cmd, sizeof cmd, "%s %s > %s 2> %s < /dev/null", bin(), args, op, ep);
    int st = system(cmd);
    an_error e;
    *out = an_read_file(op, NULL, &e);
    *err = an_read_file(ep, NULL, &e);
    if (!*out) *out = strdup("");
    if (!*err) *err = strdup("");
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

typedef struct help_case {
    const char *args;       /* the command words */
    const char *keys[6];    /* text its help must hold: its key options */
} help_case;

static const help_case cases[] = {
    {"", {"train", "generate", "eval", "--version", "data", "bench"}},
    {"train", {"--base", "--data", "--method", "--steps", "--set", "--resume"}},
    {"generate", {"--model", "--prompt", "--file", "--temperature", "--top-k", "--max-tokens"}},
    {"eval", {"--model", "--data", "--out", "--train", "--mbr", "--temperature"}},
    {"perplexity", {"--model", "--file", "--ctx", "--tokenizer", "--device"}},
    {"merge", {"--model", "--adapter", "--out", "--device"}},
    {"quantize", {"--model", "--type", "--out", "--blocksize", "--no-double-quant"}},
    {"export", {"--model", "--adapter", "--out", "--type", "--name"}},
    {"tokenize", {"--tokenizer", "--text", "--file", "--bos"}},
    {"tokenizer", {"train"}},
    {"tokenizer train", {"--data", "--vocab", "--out"}},
    {"data", {"stats", "clean", "split"}},
    {"data stats", {"--tokenizer", "--top", "--format", "--prompt-field"}},
    {"data clean", {"--out", "--min-words", "--max-words", "--max-chars", "--drop-words", "--utf8"}},
    {"data split", {"--out-dir", "--val", "--by", "--seed"}},
    {"tags", {"step", "aspect", "norm"}},
    {"tags step", {"RATIO", "--each", "--out"}},
    {"tags aspect", {"W H", "--snap"}},
    {"tags norm", {"--novelai", "--underscores", "--networks"}},
    {"bench", {"train", "generate", "memory", "nf4"}},
    {"bench train", {"--preset", "--batch", "--seq", "--steps", "--method", "--json"}},
    {"bench generate", {"--preset", "--tokens", "--dtype", "--head", "--repeat"}},
    {"bench memory", {"--preset", "--method", "--recompute", "--measure", "--frozen-dtype"}},
    {"bench nf4", {"--preset", "--tokens", "--threads", "--seed"}},
    {"version", {"usage:"}},
    {"completion", {"bash"}},
};

static void test_every_help(void) {
    const char *flags[] = {"--help", "-h"};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int f = 0; f < 2; f++) {
            char args[256];
            snprintf(args, sizeof args, "%s%s%s", cases[c].args, *cases[c].args ? " " : "", flags[f]);
            char *out, *err;
            int rc = run(args, &out, &err);
            CHECK_MSG(rc == 0, "autoneg %s: exit %d (stderr: %s)", args, rc, err);
            CHECK_MSG(strstr(out, "usage:") != NULL, "autoneg %s: no usage on stdout: %s", args, out);
            CHECK_MSG(*err == 0, "autoneg %s: stderr not empty: %s", args, err);
            for (int k = 0; k < 6 && cases[c].keys[k]; k++)
                CHECK_MSG(strstr(out, cases[c].keys[k]) != NULL, "autoneg %s: help lacks '%s'", args, cases[c].keys[k]);
            /* a command's help has an example; the lists of subcommands name theirs */
            CHECK_MSG(strstr(out, "example") != NULL || strstr(out, "commands:") != NULL, "autoneg %s: no example", args);
            free(out);
            free(err);
        }
}

/* --help wins wherever it stands, also after other options and before required ones */
static void test_help_among_options(void) {
    char *out, *err;
    CHECK(run("data clean in.jsonl --help", &out, &err) == 0);
    CHECK_CONTAINS(out, "usage: autoneg data clean");
    CHECK(*err == 0);
    free(out);
    free(err);
    CHECK(run("generate --model nowhere --help", &out, &err) == 0);
    CHECK_CONTAINS(out, "--repeat-penalty");
    free(out);
    free(err);
}

static void test_version(void) {
    char *out, *err;
    CHECK(run("--version", &out, &err) == 0);
    CHECK_CONTAINS(out, "autoneg 0.");
    CHECK_CONTAINS(out, "BLAS:");
    CHECK_CONTAINS(out, "devices: cpu");
#if AN_CUDA
    CHECK_CONTAINS(out, "CUDA: built");
#else
    CHECK_CONTAINS(out, "CUDA: not built");
#endif
    CHECK_CONTAINS(out, "MPI: not built");
    CHECK(*err == 0);
    free(out);
    free(err);
    /* the version command says the same */
    char *out2;
    CHECK(run("version", &out2, &err) == 0);
    free(err);
    CHECK(run("--version", &out, &err) == 0);
    CHECK(strcmp(out, out2) == 0);
    free(out);
    free(out2);
    free(err);
}

static void test_unknown_option(void) {
    const char *cmds[] = {"eval", "generate", "train", "perplexity", "merge", "quantize", "export", "tokenize",
                          "tokenizer train", "data clean", "tags aspect", "bench train", "bench nf4"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char args[256];
        snprintf(args, sizeof args, "%s --no-such-option", cmds[i]);
        char *out, *err;
        int rc = run(args, &out, &err);
        CHECK_MSG(rc != 0, "autoneg %s: exit 0", args);
        CHECK_MSG(*out == 0, "autoneg %s: wrote to stdout: %s", args, out);
        CHECK_MSG(strstr(err, "--no-such-option") != NULL, "autoneg %s: the error does not name the option: %s", args, err);
        CHECK_MSG(strstr(err, "usage: autoneg ") != NULL, "autoneg %s: no usage on stderr: %s", args, err);
        free(out);
        free(err);
    }
    /* the pointer to --help names the level that has the options */
    const char *where[][2] = {{"data clean --bogus", "try 'autoneg data clean --help'"},
                              {"data bogus", "try 'autoneg data --help'"},
                              {"bench memory --bogus", "try 'autoneg bench memory --help'"},
                              {"tags", "try 'autoneg tags --help'"}};
    for (size_t i = 0; i < sizeof where / sizeof where[0]; i++) {
        char *out, *err;
        CHECK(run(where[i][0], &out, &err) == 1);
        CHECK_MSG(strstr(err, where[i][1]) != NULL, "autoneg %s: %s", where[i][0], err);
        free(out);
        free(err);
    }
    char *out, *err;
    CHECK(run("no-such-command", &out, &err) == 2);
    CHECK_CONTAINS(err, "unknown command 'no-such-command'");
    CHECK(*out == 0);
    free(out);
    free(err);
}

/* Results on stdout, progress and logs on stderr: a command that writes files says what it wrote on
 * stdout, so `autoneg ... > log` keeps it and scripts can read it. */
static void test_results_on_stdout(void) {
    char args[2048], *out, *err;
    const char *corpus = test_tmp_path("corpus.txt");
    FILE *f = fopen(corpus, "w");
    for (int i = 0; i < 200; i++) fprintf(f, "lowres, bad anatomy, blurry, watermark, text, jpeg artifacts %d\n", i);
    fclose(f);
    snprintf(args, sizeof args, "tokenizer train --data %s --vocab 280 --out %s", corpus, test_tmp_path("tok"));
    CHECK(run(args, &out, &err) == 0);
    CHECK_CONTAINS(out, "tokenizer.json");
    CHECK_MSG(strstr(err, "tokenizer.json") == NULL, "tokenizer train: the result went to stderr: %s", err);
    free(out);
    free(err);
    snprintf(args, sizeof args, "merge --model tests/ref/models/llama --adapter tests/ref/lora/llama --out %s",
             test_tmp_path("merged"));
    CHECK(run(args, &out, &err) == 0);
    CHECK_CONTAINS(out, test_tmp_path("merged"));
    CHECK_MSG(*err == 0, "merge: stderr not empty: %s", err);
    free(out);
    free(err);
    snprintf(args, sizeof args, "tokenize --tokenizer %s/tokenizer.json --text 'lowres, blurry'", test_tmp_path("tok"));
    CHECK(run(args, &out, &err) == 0);
    CHECK(out[0] >= '0' && out[0] <= '9');
    CHECK(*err == 0);
    free(out);
    free(err);
}

/* The completion script, run by bash as bash would on a Tab: options come from the same tables. */
static void test_bash_completion(void) {
    if (system("command -v bash > /dev/null 2>&1") != 0) return; /* nothing to run it with */
    char script[600], cmd[2048];
    snprintf(script, sizeof script, "%s/complete.sh", test_tmpdir());
    FILE *f = fopen(script, "w");
    fprintf(f, "source <(\"$1\" completion bash) || exit 3\n"
               "t() { COMP_WORDS=(\"$@\"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); _autoneg; echo \"$*: ${COMPREPLY[*]}\"; }\n"
               "t autoneg ev\n"
               "t autoneg data cl\n"
               "t autoneg data clean --mi\n"
               "t autoneg train --method ''\n"
               "t autoneg generate --repeat\n"
               "complete -p autoneg\n");
    fclose(f);
    const char *out = test_tmp_path("complete.txt");
    snprintf(cmd, sizeof cmd, "bash %s %s > %s 2>&1", script, bin(), out);
    CHECK(system(cmd) == 0);
    an_error e;
    char *s = an_read_file(out, NULL, &e);
    CHECK(s != NULL);
    if (!s) return;
    CHECK_CONTAINS(s, "autoneg ev: eval\n");
    CHECK_CONTAINS(s, "autoneg data cl: clean\n");
    CHECK_CONTAINS(s, "autoneg data clean --mi: --min-words\n");
    CHECK_CONTAINS(s, "autoneg train --method : full lora qlora\n");
    CHECK_CONTAINS(s, "autoneg generate --repeat: --repeat-penalty\n");
    CHECK_CONTAINS(s, "complete -o default -F _autoneg autoneg");
    free(s);
}

int main(void) {
    RUN(test_every_help);
    RUN(test_help_among_options);
    RUN(test_version);
    RUN(test_unknown_option);
    RUN(test_results_on_stdout);
    RUN(test_bash_completion);
    return test_finish();
}
