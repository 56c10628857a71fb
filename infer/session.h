#ifndef AN_SESSION_H
#define AN_SESSION_H
/* What generate, eval and perplexity load: the model, its tokenizer, and the prompt template.
 *
 *   model     a Hugging Face style folder (config.json + safetensors), an autoneg output folder, or a
 *             llama2.c .bin (which needs a tokenizer path), or a .gguf file
 *   tokenizer the model folder's tokenizer files (or the .gguf file itself) unless a path is given
 *   template  the name given; else the model folder's autoneg.json "template" (a built-in name or a
 *             template object, as in a recipe); else "infotext"
 *   retrieval the training pairs' index a run with data.retrieve stored beside the weights
 *             (retrieval.tfidf + retrieval.negs in the adapter folder, else the model folder), or none */
#include <stdint.h>

#include "core/error.h"
#include "data/tokenizers/ids.h"
#include "data/prompts/template.h"
#include "data/tokenizers/tokenizer.h"
#include "infer/generate.h"
#include "infer/retrieval_pairs.h"
#include "model/model.h"

typedef struct an_session {
    an_model *model;
    an_tokenizer *tok;
    an_template tpl;
    int has_tpl;
    an_encoder enc;
    an_ids stop_ids;     /* EOS and the template's single-token stop words */
    an_retrieval *retr;  /* NULL when the model (or adapter) folder has no retrieval index */
} an_session;

/* ops: the backend to load the model onto (kernels/backend.h); the caller keeps it open until
 * an_session_close. template_name NULL: see above. adapter: a PEFT adapter folder, or NULL. */
int an_session_open(an_session *s, const an_ops *ops, const char *model, const char *tokenizer, const char *adapter,
                    const char *template_name, an_error *err);
void an_session_close(an_session *s);

/* The ids to feed for one input: with the template (BOS + rendered instruction, as in training), or
 * raw (the text as given, after BOS when the tokenizer adds one; an empty text is BOS alone). */
int an_session_encode(const an_session *s, const char *text, int raw, an_ids *out, an_error *err);

/* One generated text. */
typedef struct an_text_result {
    char *text;          /* malloc'd UTF-8; without the template, trimmed of surrounding whitespace */
    int n_tokens;        /* generated tokens */
    int prompt_tokens;   /* tokens of the prompt used */
    int truncated;       /* prompt tokens dropped from the left to fit the context */
    an_stop_reason stop;
} an_text_result;

/* Generates o->n_samples texts for each of n inputs (out: n * n_samples, input-major). Tokens are
 * detokenised as they come (an_detok); a multi-token stop word of the template ends a sequence when it
 * appears in the text and is cut from it. o->stop_ids/on_token are set here (the session's stop ids). */
int an_session_generate(an_session *s, const char *const *texts, int n, int raw, const an_gen_opts *o,
                        an_text_result *out, an_error *err);
void an_text_results_free(an_text_result *r, int n);

#endif
