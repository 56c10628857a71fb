#ifndef AN_SAMPLER_H
#define AN_SAMPLER_H
/* Choosing the next token from logits, in the order of Hugging Face's generate:
 *   repetition penalty -> temperature -> top-k -> top-p -> min-p -> draw.
 * - repetition penalty r (1 = off): for every token already in the sequence (prompt included), a
 *   positive logit is divided by r and a negative one multiplied by r (HF RepetitionPenalty, llama.cpp);
 * - temperature 0 means greedy: the argmax of the penalised logits (lowest id on a tie);
 * - top-k (0 = off): the k most likely tokens;
 * - top-p (1 = off): the smallest set of most likely tokens whose probability reaches p;
 * - min-p (0 = off): tokens at least min_p times as likely as the most likely one;
 * then the kept probabilities are renormalised and one token is drawn with the caller's an_rng.
 *
 * Logits that are not numbers: a NaN logit is a token that is never drawn (as if it were -inf). When
 * no token can be drawn -- every logit NaN or -inf, or the temperature so small that a logit divided
 * by it overflows to +inf (--temperature 1e-45), leaving the softmax undefined -- the distribution
 * is empty (0 tokens kept, all probabilities 0) and an_sampler_sample returns -1; the caller reports
 * it (an_sampler_no_token_message). */
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/rng.h"

typedef struct an_sampler_params {
    float temperature;    /* >= 0; 0 = greedy */
    int top_k;            /* >= 0; 0 = off */
    float top_p;          /* (0, 1]; 1 = off */
    float min_p;          /* [0, 1]; 0 = off */
    float repeat_penalty; /* > 0; 1 = off */
} an_sampler_params;

/* temperature 1, no filters, no penalty */
an_sampler_params an_sampler_defaults(void);
/* A clear error for each value out of range (names the flag as the CLI spells it). */
int an_sampler_check(const an_sampler_params *p, an_error *err);

typedef struct an_candidate {
    float logit; /* penalised and scaled */
    int32_t id;
} an_candidate;

typedef struct an_sampler {
    int V;
    an_candidate *cand;   /* [V] candidates, most likely first once sorted */
    double *prob;         /* [V] candidate probabilities */
    unsigned char *seen;  /* [V] repetition marks */
} an_sampler;

an_sampler *an_sampler_create(int V, an_error *err);
void an_sampler_free(an_sampler *s);

/* The distribution the next token is drawn from: fills probs_out[V] (0 for filtered tokens; one-hot
 * for greedy). history: the ids of the sequence so far (for the penalty). Returns the number of
 * tokens kept. */
int an_sampler_distribution(an_sampler *s, const an_sampler_params *p, const float *logits, const int32_t *history,
                            size_t n_history, double *probs_out);
/* Draws the next token; -1 when no token can be drawn (see the top of this file). */
int32_t an_sampler_sample(an_sampler *s, const an_sampler_params *p, const float *logits, const int32_t *history,
                          size_t n_history, an_rng *rng);

/* The message for a -1 from an_sampler_sample, naming the likely cause for these params. */
int an_sampler_no_token(const an_sampler_params *p, an_error *err);

#endif
