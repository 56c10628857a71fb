#ifndef AN_GENERATE_H
#define AN_GENERATE_H
/* Batched generation: many prompts of different lengths, n samples each, decoded together with one KV
 * cache. Up to `batch` sequences run at once; a finished one frees its slot for the next prompt
 * (continuous batching), and each new prompt is prefilled in a forward of its own.
 *
 * Each (prompt, sample) draws from its own random stream, seeded from (seed, prompt index, sample
 * index), so the text of a sequence depends on the seed alone: not on the batch size, the order in
 * which sequences finish, or the thread count (up to float rounding of the logits). With a batch of
 * at most 16 and the same thread count a sequence's logits are bit for bit those it has alone: the
 * CPU's decode kernel for up to 16 rows computes each row on its own, and a prompt is prefilled
 * alone because OpenBLAS's GEMM rounds a row differently with other rows beside it (and with another
 * thread count). */
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "infer/sampler.h"
#include "model/model.h"

typedef enum an_stop_reason {
    AN_STOP_NONE = 0,
    AN_STOP_EOS,        /* a stop id (EOS or a template's stop token); not included in the output */
    AN_STOP_MAX_TOKENS, /* --max-tokens reached */
    AN_STOP_CONTEXT,    /* the context is full */
    AN_STOP_CALLER,     /* the token callback asked to stop (a multi-token stop word) */
    AN_STOP_CANCELLED,  /* the engine's caller cancelled the request (infer/engine.h) */
    AN_STOP_ERROR,      /* the model failed while the request ran (infer/engine.h) */
} an_stop_reason;

typedef struct an_gen_opts {
    an_sampler_params sampling;
    uint64_t seed;
    int max_tokens;        /* new tokens per sequence (>= 0) */
    int min_tokens;        /* stop ids are masked (logit -inf) until a sequence has this many new tokens, as
                            * Hugging Face's min_new_tokens; 0 = off, at most max_tokens */
    int n_samples;         /* sequences per prompt (>= 1) */
    int batch;             /* sequences decoded at once (>= 1) */
    int context;           /* positions per sequence: 0 = the model's max_seq */
    int strict;            /* a prompt that leaves no room in the context is an error, not truncated */
    int host_sampling;     /* 1: the host's sampler even where the backend samples on the device (a GPU
                            * draws the same tokens; tests compare the two) */
    const int32_t *stop_ids; /* ids that end a sequence */
    int n_stop_ids;
    /* Called for every generated token of sequence `seq` (= prompt * n_samples + sample), in order;
     * returning non-zero ends that sequence (the token stays in the output). May be NULL. */
    int (*on_token)(void *ctx, int seq, int32_t id);
    void *ctx;
} an_gen_opts;

typedef struct an_gen_output {
    int32_t *ids; /* generated ids (malloc'd), without the prompt and without the stop id */
    int n;
    int prompt_tokens;   /* tokens of the prompt actually used */
    int truncated;       /* tokens dropped from the left of the prompt to fit the context */
    an_stop_reason stop;
} an_gen_output;

typedef struct an_gen_prompt {
    const int32_t *ids;
    int n;
} an_gen_prompt;

an_gen_opts an_gen_defaults(void);
/* A clear error for each length option out of range (--max-tokens, --min-tokens, --n), named as the
 * CLI spells it. */
int an_gen_check(const an_gen_opts *o, an_error *err);

/* Generates for every prompt with m and the adapter lora (NULL for none; it may be m->lora); out: n_prompts * n_samples outputs (zeroed by the caller), sequence
 * p * n_samples + s. A prompt longer than the context less max_tokens (at least half the context is
 * kept for it) is cut from the left, keeping a leading BOS (bos_id, -1 for none), and reported in
 * `truncated`; with strict it is an error naming the prompt. An empty prompt is an error. */
int an_generate(const an_model *m, const struct an_lora *lora, const an_gen_prompt *prompts, int n_prompts,
                int32_t bos_id, const an_gen_opts *o, an_gen_output *out, an_error *err);
void an_gen_outputs_free(an_gen_output *out, int n);

/* Pieces an_generate and the engine (infer/engine.h) share, so that a request decodes exactly as
 * an_generate would:
 * the seed of sequence seq's random stream (an_generate's sequence p * n_samples + s); */
uint64_t an_gen_stream_seed(uint64_t seed, int seq);
/* 1 when id is one of the stop ids; */
int an_gen_is_stop(const int32_t *stop_ids, int n_stop_ids, int32_t id);
/* the next token from logits: the stop ids masked (-inf) while n_generated < min_tokens (masked: V
 * floats of scratch), then the sampler over the history (prompt + generated); -1 when no token can
 * be drawn (an_sampler_no_token). */
int32_t an_gen_pick(an_sampler *smp, const an_sampler_params *p, const float *logits, float *masked,
                    const int32_t *stop_ids, int n_stop_ids, int min_tokens, int n_generated, const int32_t *hist,
                    size_t n_hist, an_rng *rng);
/* the same pick as a row of the backend's sample_tokens (kernels/ops.h): the parameters, u drawn from
 * *peek (a copy of the sequence's generator, to keep when more than one token was kept), and appended
 * to ids at *n_ids the history's distinct ids (with a penalty) and the stop ids while n_generated <
 * min_tokens. seen: V zeroed bytes, left zeroed. */
an_sample_row an_gen_sample_row(const an_sampler_params *p, an_rng *peek, const int32_t *stop_ids, int n_stop_ids,
                                int min_tokens, int n_generated, const int32_t *hist, int n_hist, int V,
                                unsigned char *seen, int32_t *ids, int *n_ids);

#endif
