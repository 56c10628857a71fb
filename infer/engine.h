#ifndef AN_ENGINE_H
#define AN_ENGINE_H
/* A generation engine that takes requests as they come (what `autoneg serve` runs on).
 *
 * Continuous batching over one base model: a submitted request waits in a queue, joins the running
 * batch at the next step (its prompt prefilled in that step, in a forward of its own, as an_generate
 * prefills each prompt), decodes one token per step with every other running request
 * (forwards of at most AN_ENGINE_DECODE_ROWS rows), and leaves the batch when it finishes, freeing
 * its slot.
 * Each request carries its own sampling options, stop ids, token budget, seed and adapter.
 *
 * Many adapters over one base: adapters are registered by name; every row of a batch carries its own
 * adapter (or none), and one grouped LoRA op applies each row's adapter in the same step (the idea of
 * Punica's SGMV / S-LoRA), so requests for different adapters are batched together.
 *
 * Prefix cache: the KV cache of a registered prompt prefix (the template's lead-in and instruction
 * every request starts with) is computed once per adapter and copied into a slot instead of being
 * prefilled again; it agrees with a whole prefill to float rounding (see an_engine_add_prefix).
 *
 * Determinism: a request's tokens are exactly those an_generate gives its prompt alone, with the same
 * model, adapter, sampling options and seed (request sample s draws from an_generate's stream for
 * sequence s), whatever else runs in the batch and whenever it arrives: bit for bit, the logits too
 * (tests/test_engine.c checks it), given the same OpenMP thread count in the stepping thread as in the
 * reference run (a prompt over 16 tokens is prefilled by OpenBLAS's GEMM, whose rounding changes with
 * the thread count; a new pthread starts with OpenMP's default count, not the main thread's
 * omp_set_num_threads: see config.threads). With the prefix cache see an_engine_add_prefix.
 *
 * Threads: an_engine_submit, an_engine_cancel, the adapter calls and an_engine_stats may be called
 * from any thread; an_engine_step from one thread at a time (the engine thread). The callbacks run on
 * the stepping thread; they must not call back into the engine except an_engine_cancel. */
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "infer/generate.h"
#include "infer/sampler.h"
#include "model/model.h"

struct an_lora;
typedef struct an_engine an_engine;

/* Rows of one decode forward: a step with more running requests runs several forwards of at most
 * this many. The CPU linear op computes up to 16 rows with its matrix-vector kernel, whose rows do not
 * depend on each other (and equal a single sequence's decode bit for bit); above that it takes GEMM,
 * whose rounding differs, and a request's tokens would then depend on what else runs. */
#define AN_ENGINE_DECODE_ROWS 16

typedef struct an_engine_config {
    int slots;          /* requests decoded at once (the batch), >= 1 */
    int context;        /* positions per sequence; 0 = the model's max_seq */
    int prefill_tokens; /* prompt tokens one step may prefill: a step admits queued requests (in order)
                         * while their prompts fit (at least one), so a burst of arrivals delays the
                         * running requests' next token by a bounded amount; 0 = slots * context (no
                         * bound). Each prompt is prefilled in a forward of its own, as an_generate
                         * prefills each prompt. */
    int max_queue;      /* requests waiting for a slot before submit refuses with AN_ENGINE_BUSY */
    int max_adapters;   /* adapters registered at once */
    int max_rank;       /* the largest adapter rank the engine's scratch holds (default 256: context * 256
                         * floats, 2 MiB at 2048 positions) */
    int prefix_cache;   /* 1: reuse the KV of registered prefixes (an_engine_add_prefix) */
    int host_sampling;  /* 1: the host's sampler even where the backend samples on the device (tests
                         * compare the two); requests that ask for log-probabilities always take it */
    int threads;        /* > 0: an_engine_step sets the stepping thread's OpenMP thread count to this
                         * (omp_set_num_threads is per thread: a server's engine thread does not
                         * inherit main's); 0: leave it */
} an_engine_config;

an_engine_config an_engine_config_default(void);

/* m stays the caller's and must outlive the engine. */
an_engine *an_engine_create(const an_model *m, const an_engine_config *c, an_error *err);
/* Finishes every request still queued or running with AN_STOP_CANCELLED (callbacks fire), frees all. */
void an_engine_free(an_engine *e);

/* ---- adapters ----
 * add: the engine takes lora (an_lora_open'd for the same model); the name is unique, 1..63 bytes.
 * remove: new requests can no longer name it; requests already queued or running with it finish
 * with it, then it is freed (with its prefix KV). -1 with a clear error for an unknown or duplicate
 * name, an adapter of another base or of a rank above max_rank, or when max_adapters are loaded; on
 * -1 from add the caller still owns lora. */
int an_engine_add_adapter(an_engine *e, const char *name, struct an_lora *lora, an_error *err);
int an_engine_remove_adapter(an_engine *e, const char *name, an_error *err);
/* Names of the registered adapters (not removed), written to names[0 .. cap-1]; returns the count.
 * The strings are copies the caller frees. */
int an_engine_adapters(an_engine *e, char **names, int cap);

/* Registers a token prefix many prompts start with (e.g. the template rendered up to the user's text).
 * Prompts that begin with it (and are longer) reuse its KV cache: the longest registered prefix that
 * matches; the rest of the prompt runs in one forward that attends over the cache (an_infer_extend).
 * That forward agrees with a whole-prompt prefill to float rounding, not bit for bit (other kernels),
 * so with the prefix cache a request's tokens equal an_generate's only as long as no rounding flips
 * a choice; they never depend on what else runs, or on whether the prefix was already cached. */
int an_engine_add_prefix(an_engine *e, const int32_t *ids, int n, an_error *err);

/* ---- requests ---- */
typedef enum an_engine_status {
    AN_ENGINE_OK = 0,
    AN_ENGINE_BUSY = 1,   /* the queue is full: try again later (HTTP 429/503) */
    AN_ENGINE_INVALID = 2 /* the request itself is wrong (HTTP 400): see err */
} an_engine_status;

/* (the request's timings are measured with CLOCK_MONOTONIC; first_token_s is total_s when no token
 * came; logprob is log-softmax of the model's logits, before any sampling option) */
typedef struct an_request_result {
    an_stop_reason stop;
    int prompt_tokens;    /* prompt tokens fed */
    int cached_tokens;    /* of them, taken from the prefix cache */
    int n_tokens;         /* tokens generated (the stop id not counted) */
    double queue_s;       /* submit -> first step that ran it */
    double first_token_s; /* submit -> first token */
    double total_s;       /* submit -> done */
    const char *message;  /* AN_STOP_ERROR: what failed; valid during the callback only */
} an_request_result;

/* The most likely tokens a request may ask for beside the chosen one (OpenAI's top_logprobs: 20). */
#define AN_TOP_LOGPROBS_MAX 20

/* One generated token as on_token sees it (pointers valid during the callback only). */
typedef struct an_token {
    int32_t id;
    float logprob;              /* log-softmax of the model's logits at id (0 without want_logprobs) */
    int n_top;                  /* the request's top_logprobs */
    const int32_t *top_ids;     /* [n_top] the most likely tokens, most likely first (ties: lower id) */
    const float *top_logprobs;  /* [n_top] their log-probabilities */
} an_token;

typedef struct an_request {
    const int32_t *ids;   /* the prompt (copied at submit); at least 1 token */
    int n_ids;
    an_sampler_params sampling;
    uint64_t seed;
    int sample;           /* which of an_generate's sequences this is (OpenAI's n: samples 0 .. n-1) */
    int max_tokens;       /* >= 1; limited by the context left after the prompt (then stop CONTEXT) */
    int min_tokens;
    const int32_t *stop_ids; /* copied at submit */
    int n_stop_ids;
    const char *adapter;  /* a registered name, or NULL / "" for the base */
    int want_logprobs;    /* 1: on_token gets the chosen token's log-probability (else 0) */
    int top_logprobs;     /* 0 .. AN_TOP_LOGPROBS_MAX: and the log-probabilities of that many most likely
                           * tokens (needs want_logprobs) */
    /* Every generated token, in order; non-zero ends the request (the token stays; stop CALLER):
     * how a caller ends a request on a stop string it detects in the detokenized text. */
    int (*on_token)(void *ctx, const an_token *t);
    /* Called exactly once, last, when the request ends for any reason. */
    void (*on_done)(void *ctx, const an_request_result *r);
    void *ctx;
} an_request;

/* Queues a request; *id_out gets its id (> 0). AN_ENGINE_INVALID with err for a bad request (empty
 * prompt, prompt leaving no room in the context, unknown adapter, sampling out of range). */
an_engine_status an_engine_submit(an_engine *e, const an_request *r, int64_t *id_out, an_error *err);
/* Ends a queued or running request at the next step (on_done with AN_STOP_CANCELLED); its slot is free
 * for the next request. Unknown or finished ids are ignored. */
void an_engine_cancel(an_engine *e, int64_t id);

/* One step: admits queued requests into free slots (prefilled together), then one decode step for
 * every running request. Returns the number of requests still queued or running (0: idle), -1 when the
 * model failed (every running request then ends with AN_STOP_ERROR; the engine stays usable). */
int an_engine_step(an_engine *e, an_error *err);
/* Blocks until a request is queued or running, or timeout_ms passes (or an_engine_wake); returns 1
 * when there is work. */
int an_engine_wait(an_engine *e, int timeout_ms);
void an_engine_wake(an_engine *e);

typedef struct an_engine_stats {
    int queued, running, slots;
    uint64_t requests_done, tokens_in, tokens_out, cached_tokens, steps;
} an_engine_stats;
void an_engine_stats_get(an_engine *e, an_engine_stats *out);

#endif
