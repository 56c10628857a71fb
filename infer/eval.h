#ifndef AN_EVAL_H
#define AN_EVAL_H
/* Scoring generated negative prompts against reference ones, by tags: both are reduced to their
 * normalised tags (data/prompts/prompt_syntax.h an_prompt_tags, A1111 syntax: weights, brackets and case
 * removed, duplicates dropped), then
 *   precision = |pred ∩ ref| / |pred|,  recall = |pred ∩ ref| / |ref|,  F1 = 2PR / (P + R)
 * (0 where the denominator is 0; two empty tag sets score 1). The retrieval baselines' index is in
 * infer/retrieval.h. */
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

/* The consensus of retrieved neighbours: given the negatives of the n nearest training prompts and
 * their similarities to the query, the neighbour j whose negative agrees most with the others',
 *   agreement(j) = sum over i != j of sim[i] * F1(neg[j], neg[i])   (tag F1, an_eval_score),
 * so a neighbour close to the query counts more as a witness. Lowest index on a tie (neighbours come
 * best first, so a tie, and n == 1, keeps the nearest). A similarity that is not a finite number
 * >= 0 counts as 0. n >= 1; *best gets the index, agree (may be NULL) its agreement. */
int an_eval_consensus_pick(const char *const *negs, const double *sims, int n, int *best, double *agree,
                           an_error *err);

/* The tag vote of retrieved neighbours: a negative built tag by tag from the n nearest training
 * prompts' negatives (normalised tags, as an_eval_score sees them). Neighbour i weighs w_i = sim[i]^2
 * (a similarity that is not a finite number >= 0 weighs 0; when all weigh 0, each weighs 1). A tag's
 * vote p is the summed weight of the neighbours whose negative holds it over the total, and E, the
 * weighted mean of the neighbours' tag counts, stands for the reference's. The tags in order of vote
 * (equal votes: the order they first appear, nearest neighbour first), the first k for the k that
 * maximises 2 (p_1 + ... + p_k) / (k + E): the expected F1 were each tag in the reference with
 * probability p, independently (the smallest such k). The square, and 20 neighbours for eval's row,
 * were chosen on the civitai dev half (docs/generation.md). n >= 1; *out: the tags joined by ", "
 * (malloc'd; "" when the neighbours have no tag). */
int an_eval_tag_vote(const char *const *negs, const double *sims, int n, char **out, an_error *err);

#endif
