#ifndef AN_TEMPLATE_H
#define AN_TEMPLATE_H
/* Prompt templates in XTuner's shape (xtuner/utils/templates.py): SYSTEM, INSTRUCTION, SUFFIX,
 * SUFFIX_AS_EOS, SEP, STOP_WORDS, and the encoding rules of XTuner's encode_fn:
 *
 *   [BOS]  SYSTEM(system) + INSTRUCTION(prompt)  negative + SUFFIX  [EOS unless SUFFIX_AS_EOS]  SEP
 *   -100   -100 (one tokenizer call)              trained (another call)  trained             -100
 *
 * The input part and the output part are tokenised by separate calls, as XTuner does, so the ids at
 * the boundary are XTuner's. docs/templates.md lists the built-in templates and the JSON form. */
#include <stddef.h>
#include <stdint.h>
#include "core/error.h"
#include "data/tokenizers/ids.h"

struct cJSON;
struct an_tokenizer;

#define AN_IGNORE_INDEX (-100)

typedef struct an_template {
    char *name;
    char *system;      /* "...{system}..." or "" (used only when a system text is given) */
    char *instruction; /* "...{input}..." ({round} is 1) */
    char *suffix;      /* appended to the output and trained, or "" */
    int suffix_as_eos; /* the suffix ends the answer: no EOS appended */
    char *sep;         /* appended after the answer, not trained, or "" */
    char **stop_words;
    size_t n_stop_words;
} an_template;

/* Text to ids, as a tokenizer does it without BOS/EOS. Templates take this rather than an_tokenizer
 * so that tests (and other tokenizers) can plug in; an_encoder_of() wraps an an_tokenizer. */
typedef struct an_encoder {
    int (*encode)(const void *ctx, const char *text, size_t len, an_ids *out, an_error *err);
    int32_t (*token_id)(const void *ctx, const char *piece); /* -1 when absent */
    const void *ctx;
    int32_t bos, eos; /* -1 when none */
} an_encoder;

an_encoder an_encoder_of(const struct an_tokenizer *t);

/* Built-ins: "infotext" (autoneg's default for base models: "{prompt}\nNegative prompt: " then the
 * negative and EOS), XTuner's "default", "internlm2_chat", "internlm_chat", "llama2_chat",
 * "llama3_chat", and "chatml" (SmolLM2, Qwen2: the strings of internlm2_chat). */
int an_template_builtin(const char *name, an_template *out, an_error *err);
/* The built-in for a Hugging Face / GGUF chat template (Jinja source, tokenizer.chat_template),
 * recognised by its markers: ChatML, Llama 2 ([INST]), Llama 3 (<|start_header_id|>), InternLM2
 * (ChatML after bos_token), InternLM v1 (<eoh>). Anything else is an error that names the recipe key
 * overriding it (data.template). */
int an_template_from_chat_template(const char *jinja, an_template *out, an_error *err);
/* A JSON object with XTuner's field names (upper or lower case) and optionally "name" and "base" (a
 * built-in to start from). where names the object in errors ("recipe.json: template"). */
int an_template_from_json(const struct cJSON *obj, const char *where, an_template *out, an_error *err);
int an_template_copy(const an_template *src, an_template *dst, an_error *err);
void an_template_free(an_template *t);

/* The input text: SYSTEM (when system is non-empty) + INSTRUCTION, both with their placeholders filled. */
char *an_template_render_input(const an_template *t, const char *prompt, const char *system, an_error *err);
/* The output text: negative + SUFFIX. */
char *an_template_render_output(const an_template *t, const char *negative, an_error *err);

/* Generation: the ids to feed the model for a prompt (BOS + input, exactly as in training). */
int an_template_encode_input(const an_template *t, const an_encoder *enc, const char *prompt, const char *system,
                             an_ids *out, an_error *err);
/* Ids that end generation: EOS and each stop word that is a single token. Multi-token stop words are
 * left to the caller's text match (an_template's stop_words). */
int an_template_stop_ids(const an_template *t, const an_encoder *enc, an_ids *out, an_error *err);

/* One training sample (ids and labels of the same length, labels -100 where not trained), truncated to
 * max_len tokens (0: no limit). out_ids and out_labels are cleared first. */
int an_template_encode_sample(const an_template *t, const an_encoder *enc, const char *prompt, const char *negative,
                              const char *system, size_t max_len, an_ids *out_ids, an_ids *out_labels,
                              an_error *err);

/* 64-bit hash of every field, for the token cache key. */
uint64_t an_template_hash(const an_template *t);

#endif
