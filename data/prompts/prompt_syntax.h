#ifndef AN_PROMPT_SYNTAX_H
#define AN_PROMPT_SYNTAX_H
/* The attention syntax people write in Stable Diffusion prompts.
 *
 * Two layers:
 *   an_prompt_attention()  the chunks A1111's parse_prompt_attention returns: (text, weight) runs with
 *                          equal weights merged, BREAK as ("BREAK", -1 times any enclosing brackets).
 *   an_prompt_parse()      tags: the text split on commas and BREAK, trimmed, whitespace collapsed, each
 *                          with its weight and kind (tag, embedding, extra network, BREAK).
 * and the way back: an_prompt_write() in A1111 form ((tag:1.2)) or NovelAI form ({tag}, [tag]),
 * and an_prompt_tags() for metrics (lowercase, no weights, deduplicated).
 * docs/prompt-syntax.md describes the rules and the few places this differs from A1111. */
#include <stddef.h>
#include "core/error.h"

typedef enum an_prompt_mode {
    AN_PROMPT_A1111 = 0, /* (x) = 1.1, [x] = 1/1.1, (x:w) */
    AN_PROMPT_NOVELAI = 1, /* {x} = 1.05, [x] = 1/1.05; round brackets are plain text */
} an_prompt_mode;

typedef struct an_attn_chunk {
    char *text;
    double weight;
} an_attn_chunk;

typedef struct an_attn_chunks {
    an_attn_chunk *v;
    size_t n, cap;
} an_attn_chunks;

/* A1111's parse_prompt_attention: out gets at least one chunk ("" with weight 1 for empty text).
 * Returns -1 only when out of memory. */
int an_prompt_attention(const char *text, an_prompt_mode mode, an_attn_chunks *out, an_error *err);
void an_attn_chunks_free(an_attn_chunks *c);

typedef enum an_prompt_kind {
    AN_ITEM_TAG = 0,
    AN_ITEM_EMBEDDING = 1, /* a textual-inversion name: known negative embedding or embedding:name */
    AN_ITEM_NETWORK = 2,   /* <lora:name:w>, <lyco:...>, <hypernet:...>: never weighted by brackets */
    AN_ITEM_BREAK = 3,
} an_prompt_kind;

/* How an item attaches to the one before it: a new comma-separated tag, or a piece of the same tag
 * whose weight differs ("a (b) c" gives a, b, c joined by spaces). */
typedef enum an_prompt_join {
    AN_JOIN_NEW = 0,
    AN_JOIN_TIGHT = 1, /* no whitespace between: "a(b)" */
    AN_JOIN_SPACE = 2,
} an_prompt_join;

typedef struct an_prompt_item {
    char *text;     /* tag text (literal brackets unescaped), embedding name, or network name */
    double weight;  /* attention weight; for a network its multiplier (1 when not given) */
    an_prompt_kind kind;
    an_prompt_join join;
    char *net_type; /* NETWORK: "lora", "lyco", "hypernet", ...; else NULL */
    char *net_args; /* NETWORK: everything after "type:" as written, for an exact write-back */
} an_prompt_item;

typedef struct an_prompt {
    an_prompt_item *v;
    size_t n, cap;
} an_prompt;

/* extra_embeddings: optional NULL-terminated list of more embedding names (matched case-insensitively,
 * like the built-in list). Returns -1 only when out of memory. */
int an_prompt_parse(const char *text, an_prompt_mode mode, const char *const *extra_embeddings, an_prompt *out,
                    an_error *err);
void an_prompt_free(an_prompt *p);

/* Whether name is one of the well-known negative embeddings (EasyNegative, badhandv4, ...). */
int an_prompt_is_known_embedding(const char *name);

/* Writes the items back as text (malloc'd). A1111: (tag:w) for weights != 1, w as A1111's attention
 * editor prints it (12 significant digits, ".0" after integers), literal brackets escaped.
 * NovelAI: {tag} / [tag] repeated round(log(w)/log(1.05)) times (at most 30). */
char *an_prompt_write(const an_prompt *p, an_prompt_mode mode, an_error *err);

/* JavaScript's shortest number text without an exponent (1e-7 -> "0.0000001"). buf: 400 bytes
 * hold any double. */
void an_prompt_plain_number(double v, char *buf, size_t bufsz);

/* A1111's number text for a weight: "1.1", "0.909090909091", "2.0". buf needs 32 bytes. */
void an_prompt_format_weight(double w, char *buf, size_t bufsz);

typedef struct an_tag_opts {
    int underscores_to_spaces; /* "long_hair" -> "long hair" */
    int keep_networks;         /* include "<lora:name>" items as "lora:name" */
} an_tag_opts;

typedef struct an_tags {
    char **v;
    size_t n, cap;
} an_tags;

/* Normalised tags for metrics and cleaning: lowercase (ASCII), weights and brackets gone, whitespace
 * collapsed, embeddings by name, BREAK and empty tags dropped, duplicates dropped (first kept). */
int an_prompt_tags(const char *text, an_prompt_mode mode, const an_tag_opts *opts, an_tags *out, an_error *err);
void an_tags_free(an_tags *t);

#endif
