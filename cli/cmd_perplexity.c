/* autoneg perplexity --model M [--adapter A] --file F [--ctx N] [--tokenizer T] [--device cpu|cuda]
 * prints "tokens=N nll=X ppl=Y": the file tokenised as one text (BOS first only when the tokenizer's
 * own configuration adds it, as Hugging Face does; N counts it), and the mean negative log-likelihood
 * of every token after the first, scored in consecutive windows of N positions (infer/perplexity.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/help.h"
#include "core/file.h"
#include "infer/perplexity.h"
#include "infer/session.h"

static const cli_opt ppl_opts[] = {
    {"--model", "M", "model: Hugging Face folder, GGUF or llama2.c .bin (required)"},
    {"--file", "F", "the text to score, tokenised as one text (required)"},
    {"--adapter", "A", "PEFT LoRA adapter folder to apply (default: none)"},
    {"--ctx", "N", "positions per scoring window, >= 2 (default: the model's maximum)"},
    {"--tokenizer", "T", "tokenizer file or folder (default: the model's own)"},
    {"--device", "cpu|cuda", "backend to compute on (default: cpu)"},
    {NULL, NULL, NULL},
};

const cli_help cli_help_perplexity = {
    "perplexity --model M [--adapter A] --file F [--ctx N] [--tokenizer T] [--device cpu|cuda]",
    "Prints 'tokens=N nll=X ppl=Y' on stdout: the mean negative log-likelihood of every token after\n"
    "the first, scored in consecutive windows of N positions, and its exponential.",
    ppl_opts, NULL, NULL,
    "perplexity --model ../shared/models/TinyStories-656K --file story.txt --ctx 256",
};

int an_cmd_perplexity(int argc, char **argv) {
    int hrc;
    if (cli_help_check(&cli_help_perplexity, argc, argv, 1, &hrc)) return hrc;
    const char *model = NULL, *adapter = NULL, *file = NULL, *tokenizer = NULL, *device = NULL;
    int ctx = 0;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (i + 1 >= argc) return cli_help_fail(&cli_help_perplexity, "perplexity: unexpected argument '%s'", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--model")) model = v;
        else if (!strcmp(f, "--adapter")) adapter = v;
        else if (!strcmp(f, "--file")) file = v;
        else if (!strcmp(f, "--tokenizer")) tokenizer = v;
        else if (!strcmp(f, "--device")) device = v;
        else if (!strcmp(f, "--ctx")) {
            char *end;
            long c = strtol(v, &end, 10);
            if (!*v || *end || c < 2 || c > (1 << 24)) return cli_fail("--ctx: expected an integer >= 2, got '%s'", v);
            ctx = (int)c;
        } else {
            return cli_help_fail(&cli_help_perplexity, "perplexity: unknown option '%s'", f);
        }
    }
    if (!model || !file) return cli_help_fail(&cli_help_perplexity, "perplexity: --model and --file are required");
    an_error err;
    size_t len = 0;
    char *text = an_read_file(file, &len, &err);
    if (!text) return cli_error(&err);
    const an_ops *ops = cli_backend(device);
    if (!ops) {
        free(text);
        return 1;
    }
    an_session s;
    if (an_session_open(&s, ops, model, tokenizer, adapter, NULL, &err)) {
        free(text);
        return cli_error(&err);
    }
    an_ids ids = {0};
    int rc = 0;
    int32_t bos = an_tokenizer_bos(s.tok);
    if (an_tokenizer_adds_bos(s.tok) && an_ids_push(&ids, bos)) rc = cli_fail("perplexity: out of memory");
    if (rc == 0 && an_tokenizer_encode(s.tok, text, len, &ids, &err)) rc = cli_error(&err);
    an_ppl r;
    if (rc == 0 && ids.n < 2)
        rc = cli_fail("%s: %zu token%s: perplexity needs at least 2", file, ids.n, ids.n == 1 ? "" : "s");
    if (rc == 0 && an_perplexity(s.model, ids.v, ids.n, ctx, &r, &err)) rc = cli_error(&err);
    if (rc == 0) printf("tokens=%zu nll=%.6f ppl=%.4f\n", r.tokens, r.nll, r.ppl);
    an_ids_free(&ids);
    an_session_close(&s);
    free(text);
    return rc;
}
