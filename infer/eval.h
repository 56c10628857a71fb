#ifndef AN_EVAL_H
#define AN_EVAL_H
/* Scoring generated negative prompts against reference ones, by tags: both are reduced to their
 * normalised tags (data/prompts/prompt_syntax.h an_prompt_tags, A1111 syntax: weights, brackets and case
 * removed, duplicates dropped), then
 *   precision = |pred ∩ ref| / |pred|,  recall = |pred ∩ ref| / |ref|,  F1 = 2PR / (P + R)
 * (0 where the denominator is 0; two empty tag sets score 1). And the retrieval baseline: the
 * negative of the training prompt most similar by tf-idf over prompt tags (cosine similarity). */
#include <stddef.h>

#include "core/error.h"

/* The general-purpose negative prompt used as the simplest baseline. */
extern const char an_eval_general_negative[];

typedef struct an_tag_score {
    double precision, recall, f1;
    size_t n_pred, n_ref, n_common;
} an_tag_score;

int an_eval_score(const char *pred, const char *ref, an_tag_score *out, an_error *err);

/* Minimum Bayes risk choice among n candidate negatives (samples from the model for one prompt):
 * the candidate whose summed tag F1 against the other candidates is highest (lowest index on a tie),
 * i.e. the one expected to score best when the candidates stand for the model's distribution.
 * n >= 1; *best gets its index. */
int an_eval_mbr_pick(const char *const *cands, int n, int *best, an_error *err);

/* tf-idf over tag sets, as scikit-learn's TfidfVectorizer with its defaults on binary tag counts:
 * idf(t) = ln((1 + N) / (1 + df(t))) + 1, vectors L2-normalised, cosine similarity. */
typedef struct an_tfidf an_tfidf;

/* Indexes the tags of n texts (the training prompts). */
an_tfidf *an_tfidf_build(const char *const *texts, size_t n, an_error *err);
void an_tfidf_free(an_tfidf *ix);
/* The most similar indexed text (lowest index on a tie) and its cosine in *score; -1 when the query
 * shares no tag with any of them. */
long an_tfidf_nearest(const an_tfidf *ix, const char *query, double *score, an_error *err);

#endif
