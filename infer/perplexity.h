#ifndef AN_PERPLEXITY_H
#define AN_PERPLEXITY_H
/* Perplexity of a token sequence: the mean negative log-likelihood of every token after the first,
 * scored in consecutive windows of ctx tokens that overlap by one token (window k covers tokens
 * k(ctx-1) .. k(ctx-1)+ctx-1 and scores all but its first), so each token after the first is
 * predicted exactly once, from at most ctx-1 tokens before it, and the windows start afresh. */
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "model/model.h"

typedef struct an_ppl {
    size_t tokens; /* tokens in the sequence */
    size_t scored; /* tokens - 1 */
    double nll;    /* mean negative log-likelihood (nats) */
    double ppl;    /* exp(nll) */
} an_ppl;

/* ctx: window length (2 .. the model's max_seq; 0 = max_seq). Plans the model for 1 x ctx. */
int an_perplexity(an_model *m, const int32_t *ids, size_t n, int ctx, an_ppl *out, an_error *err);

/* The logits after each of the n tokens (out: n x V floats, row t predicts token t+1), with the
 * adapter attached to m, through the decoding path generation uses (infer/infer.h: the first token
 * prefilled, then one decode step per token over the KV cache), so they are the logits greedy
 * decoding takes its argmax of. For comparing with another implementation token by token (llama.cpp's
 * logits_all, transformers' forward). n <= the model's max_seq: one window, nothing cut. */
int an_position_logits(const an_model *m, const int32_t *ids, size_t n, float *out, an_error *err);

#endif
