#ifndef AN_CLI_CMD_GENERATE_H
#define AN_CLI_CMD_GENERATE_H
/* The options generate and eval share: model, tokenizer, template, sampling, limits. */
#include "cli/help.h"
#include "infer/session.h"

typedef struct cli_gen_args {
    const char *model, *adapter, *tokenizer, *template_name, *device;
    int raw, jsonl;
    int head_bf16; /* --head-dtype bf16: embedding and head stored in bf16 after loading (QLoRA decoding) */
    an_gen_opts opts;
} cli_gen_args;

/* The shared options, for the help of generate and eval (cli/help.h). */
extern const cli_opt cli_gen_opts[];

void cli_gen_defaults(cli_gen_args *a);
/* Consumes argv[*i] (and its value) when it is one of the shared options: 1 consumed, 0 not one of
 * them, -1 bad value (already reported). */
int cli_gen_flag(cli_gen_args *a, int argc, char **argv, int *i);
/* Checks the sampling values and opens the session; prints the error and returns 1 on failure. */
int cli_gen_open(const cli_gen_args *a, an_session *s);

#endif
