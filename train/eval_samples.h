#ifndef AN_EVAL_SAMPLES_H
#define AN_EVAL_SAMPLES_H
/* Negatives written by the model being trained, for the recipe's eval.prompts: each prompt rendered
 * with the training template (BOS + input, exactly as in training), greedy decoding until EOS, a
 * single-token stop word or max_tokens. Shown at each evaluation so a run can be judged by eye. */
#include "core/error.h"

struct an_model;
struct an_tokenizer;
struct an_template;

/* out: n malloc'd strings (free each, then nothing else). */
int an_eval_samples(struct an_model *m, const struct an_tokenizer *tok, const struct an_template *t, const char *system,
                    const char *const *prompts, int n, int max_tokens, char **out, an_error *err);

#endif
