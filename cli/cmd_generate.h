#ifndef AN_CLI_CMD_GENERATE_H
#define AN_CLI_CMD_GENERATE_H
/* The options generate and eval share: model, tokenizer, template, sampling, limits. */
#include "cli/help.h"
#include "infer/session.h"

typedef struct cli_gen_args {
    const char *model, *adapter, *tokenizer, *template_name, *device;
    int raw, jsonl;
    int head_bf16; /* --head-dtype bf16: embedding and head stored in bf16 after loading (QLoRA decoding) */
    int retrieve;  /* --retrieve K; -1: the K the run was trained with (0 without an index) */
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

/* The neighbours generation uses: --retrieve K, else the K the model's retrieval index was trained
 * with, else 0 (off). */
int cli_gen_retrieve_k(const cli_gen_args *a, const an_session *s);

/* What the template gets for each prompt: with retrieval on (k > 0), the negatives of its k most
 * similar training prompts in front (infer/retrieval_pairs.h), leaving out those of sources[i]
 * (sources may be NULL); with it off, a copy of the prompt. text: n malloc'd strings; nb: prompt i's
 * neighbour ids at nb[i * max(k, 1)], nb_score their similarities, n_nb[i] how many it got.
 * cli_gen_make_inputs returns 0, or the command's exit status (already reported). */
typedef struct cli_gen_inputs {
    char **text;
    long *nb, *n_nb;
    double *nb_score;
    int n, k;
} cli_gen_inputs;
int cli_gen_make_inputs(const cli_gen_args *a, const an_session *s, const char *const *prompts,
                        const char *const *sources, int n, cli_gen_inputs *out);
void cli_gen_inputs_free(cli_gen_inputs *in);

#endif
