#ifndef AN_RETRIEVAL_PAIRS_H
#define AN_RETRIEVAL_PAIRS_H
/* Retrieval-augmented negatives: the tf-idf index of the training prompts (infer/retrieval.h) with
 * each training pair's negative, and the text the prompt template's {input} gets when the negatives
 * of the K most similar training prompts are put in front of the model:
 *
 *   Negative prompts of similar prompts:
 *   - <negative of neighbour 1>
 *   ...
 *   - <negative of neighbour K>
 *   Prompt: <prompt>
 *
 * The whole of it is the template's input, so training masks the loss on it (data/prompts/template.h:
 * only the target negative is trained). Each neighbour's negative is shown cut to its first max_tags
 * comma-separated tags (commas inside brackets do not count), newlines made spaces, trimmed. With no
 * neighbour (K = 0, or no training prompt shares a tag with the prompt) the input is the prompt
 * alone, exactly as without retrieval.
 *
 * A run folder stores it as two files (AN_RETRIEVAL_INDEX, AN_RETRIEVAL_NEGATIVES):
 *   retrieval.tfidf  the index (an_tfidf_save)
 *   retrieval.negs   "ANRNEGS\0" u32 version u32 k u32 max_tags u32 0 u64 n_docs u64 n_unique
 *                    u64 payload_bytes u64 packed_bytes u64 checksum (FNV-1a 64 of the packed bytes)
 *                    | the payload zlib-deflated, every integer an unsigned LEB128 varint:
 *                    n_unique x (len, bytes): the distinct negatives; n_docs x id: each pair's.
 * The civitai training split (50,159 pairs) makes about 1.9 MB + 1 MB. */
#include <stddef.h>

#include "core/error.h"
#include "infer/retrieval.h"

#define AN_RETRIEVAL_INDEX "retrieval.tfidf"
#define AN_RETRIEVAL_NEGATIVES "retrieval.negs"
#define AN_RETRIEVAL_NEGS_VERSION 1u
#define AN_RETRIEVAL_MAX_K 64

typedef struct an_retrieval {
    an_tfidf *ix;
    size_t n;        /* training pairs (= the index's documents) */
    char **neg;      /* [n] each pair's negative (pointers into uniq) */
    size_t *neg_id;  /* [n] its index in uniq */
    char **uniq;     /* the distinct negatives, owned */
    size_t n_uniq;
    int k;           /* neighbours the model was trained with */
    int max_tags;    /* tags shown of each neighbour's negative */
} an_retrieval;

/* Indexes n training pairs (sources may be NULL, or hold NULLs). k in [1, AN_RETRIEVAL_MAX_K],
 * max_tags >= 1. */
an_retrieval *an_retrieval_build(const char *const *prompts, const char *const *negatives, const char *const *sources,
                                 size_t n, int k, int max_tags, an_error *err);
void an_retrieval_free(an_retrieval *r);

/* Writes dir/retrieval.tfidf and dir/retrieval.negs (atomically, each). */
int an_retrieval_save(const an_retrieval *r, const char *dir, an_error *err);
/* 1 when dir is a folder holding retrieval.tfidf, else 0. */
int an_retrieval_in_dir(const char *dir);
/* Reads both files of dir; errors name the file. */
an_retrieval *an_retrieval_load(const char *dir, an_error *err);

/* The k most similar training pairs to prompt, best first (ties: lower index first), leaving out
 * those of exclude_source (NULL: none) and the pair self (-1: none; a training row is not its own
 * neighbour even when it has no source). idx and score (may be NULL) hold k entries. Returns how many
 * were found, or -1 on error. */
long an_retrieval_neighbours(const an_retrieval *r, const char *prompt, const char *exclude_source, long self, int k,
                             long *idx, double *score, an_error *err);

/* A neighbour's negative as the template shows it (see above); malloc'd, NULL when out of memory. */
char *an_retrieval_shown(const char *negative, int max_tags);

/* The template's input for prompt with the neighbours idx[0..m) (m = 0: a copy of prompt). */
char *an_retrieval_input(const an_retrieval *r, const char *prompt, const long *idx, long m, an_error *err);

#endif
