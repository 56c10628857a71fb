/* autoneg perplexity --model M [--adapter A] --file F [--ctx N] [--tokenizer T] [--logits OUT]
 *                    [--device cpu|cuda|cuda-bf16]
 * prints "tokens=N nll=X ppl=Y": the file tokenised as one text (BOS first only when the tokenizer's
 * own configuration adds it, as Hugging Face does; N counts it), and the mean negative log-likelihood
 * of every token after the first, scored in consecutive windows of N positions (infer/perplexity.h).
 * --logits also writes every position's logits, for comparing with another implementation. */
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
    {"--logits", "OUT", "also write the logits after every token to OUT: tokens x vocab float32, little-endian"},
    {"--device", "cpu|cuda|cuda-bf16", "backend to compute on (default: cpu)"},
    {NULL, NULL, NULL},
};

const cli_help cli_help_perplexity = {
    "perplexity --model M [--adapter A] --file F [--ctx N] [--tokenizer T] [--logits OUT] [--device cpu|cuda|cuda-bf16]",
    "Prints 'tokens=N nll=X ppl=Y' on stdout: the mean negative log-likelihood of every token after\n"
    "the first, scored in consecutive windows of N positions, and its exponential. With --logits, the\n"
    "logits after every token, as generation computes them (KV cache, one decode step per token), go\n"
    "to a file: row t scores token t+1 of the ids scored (BOS first when the tokenizer adds one, then\n"
    "those 'autoneg tokenize' prints); the text must fit the model's context.",
    ppl_opts, NULL, NULL,
    "perplexity --model ../shared/models/TinyStories-656K --file story.txt --ctx 256",
};

/* The logits of every position, as the raw float32 rows an_position_logits fills: little-endian on
 * the hosts autoneg builds for (x86-64, AArch64), as its safetensors and GGUF writers assume too. */
static int write_logits(const an_model *m, const int32_t *ids, size_t n, const char *path) {
    an_error err;
    size_t V = (size_t)m->cfg.vocab_size;
    float *l = malloc(n * V * sizeof(float));
    if (!l) return cli_fail("perplexity --logits: out of memory for %zu x %zu logits", n, V);
    int rc = an_position_logits(m, ids, n, l, &err) || an_write_file_atomic(path, l, n * V * sizeof(float), &err)
                 ? cli_error(&err)
                 : 0;
    free(l);
    return rc;
}

int an_cmd_perplexity(int argc, char **argv) {
    int hrc;
    if (cli_help_check(&cli_help_perplexity, argc, argv, 1, &hrc)) return hrc;
    const char *model = NULL, *adapter = NULL, *file = NULL, *tokenizer = NULL, *device = NULL, *logits = NULL;
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
        else if (!strcmp(f, "--logits")) logits = v;
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
    if (rc == 0 && logits) rc = write_logits(s.model, ids.v, ids.n, logits);
    if (rc == 0) printf("tokens=%zu nll=%.6f ppl=%.4f\n", r.tokens, r.nll, r.ppl);
    an_ids_free(&ids);
    an_session_close(&s);
    free(text);
    return rc;
}
