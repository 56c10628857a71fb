/* autoneg tokenize --tokenizer T (--text S | --file F) [--bos]: ids of each input line, one line each. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/help.h"
#include "core/file.h"
#include "data/tokenizers/tokenizer.h"

static int print_ids(const an_tokenizer *t, const char *s, size_t n, int bos, an_error *err) {
    an_ids ids = {0};
    if (bos && an_tokenizer_bos(t) >= 0 && an_ids_push(&ids, an_tokenizer_bos(t))) return an_fail(err, "out of memory");
    if (an_tokenizer_encode(t, s, n, &ids, err)) {
        an_ids_free(&ids);
        return -1;
    }
    for (size_t i = 0; i < ids.n; i++) printf(i ? " %d" : "%d", ids.v[i]);
    putchar('\n');
    an_ids_free(&ids);
    return 0;
}

static const cli_opt tokenize_opts[] = {
    {"--tokenizer", "T", "tokenizer file (tokenizer.json, tokenizer.model, llama2.c .bin) or a folder with one (required)"},
    {"--text", "S", "the text to encode (one of --text and --file)"},
    {"--file", "F", "encode every line of F, one output line each"},
    {"--bos", NULL, "put the BOS id first (default: neither BOS nor EOS)"},
    {NULL, NULL, NULL},
};

const cli_help cli_help_tokenize = {
    "tokenize --tokenizer T (--text S | --file F) [--bos]",
    "Prints the token ids of each input line on one line of stdout, space separated.",
    tokenize_opts, NULL, NULL,
    "tokenize --tokenizer ../shared/models/TinyStories-656K --text \"a cat, sunlight\"",
};

int an_cmd_tokenize(int argc, char **argv) {
    int hrc;
    if (cli_help_check(&cli_help_tokenize, argc, argv, 1, &hrc)) return hrc;
    const char *tok = NULL, *text = NULL, *file = NULL;
    int bos = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) tok = argv[++i];
        else if (!strcmp(argv[i], "--text") && i + 1 < argc) text = argv[++i];
        else if (!strcmp(argv[i], "--file") && i + 1 < argc) file = argv[++i];
        else if (!strcmp(argv[i], "--bos")) bos = 1;
        else return cli_help_fail(&cli_help_tokenize, "tokenize: unknown or incomplete argument '%s'", argv[i]);
    }
    if (!tok || (!text == !file))
        return cli_help_fail(&cli_help_tokenize, "tokenize: give --tokenizer and one of --text and --file");
    an_error err;
    an_tokenizer *t = an_tokenizer_load(tok, &err);
    if (!t) return cli_error(&err);
    int rc = 0;
    if (text) {
        rc = print_ids(t, text, strlen(text), bos, &err);
    } else {
        size_t n = 0;
        char *s = an_read_file(file, &n, &err);
        if (!s) rc = -1;
        /* one output line per input line; "\r\n" endings count as "\n" */
        for (size_t i = 0; s && i < n && rc == 0;) {
            size_t e = i;
            while (e < n && s[e] != '\n') e++;
            size_t le = e > i && e < n && s[e - 1] == '\r' ? e - 1 : e;
            rc = print_ids(t, s + i, le - i, bos, &err);
            i = e + 1;
        }
        free(s);
    }
    an_tokenizer_free(t);
    if (fflush(stdout)) return cli_fail("tokenize: cannot write output");
    return rc ? cli_error(&err) : 0;
}
