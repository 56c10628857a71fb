#ifndef AN_RETRIEVAL_IMPL_H
#define AN_RETRIEVAL_IMPL_H
/* The tf-idf index's fields, shared by retrieval.c (build, queries) and retrieval_io.c (save, load).
 * Not for other modules: they use infer/retrieval.h. */
#include <stddef.h>

#include "data/pairs/stats_strmap.h"
#include "infer/retrieval.h"

struct an_tfidf {
    an_strmap vocab;     /* tag -> id + 1 */
    an_strmap srcmap;    /* source -> id + 1 */
    size_t n_docs, n_terms, n_sources;
    const char **terms;   /* [n_terms] the tags in id order (strings owned by vocab) */
    const char **sources; /* [n_sources] (strings owned by srcmap) */
    size_t *doc_src;      /* [n_docs] 0: none, else source id + 1 */
    double *idf;          /* [n_terms] */
    double *norm;         /* [n_docs] L2 norm of each document's vector */
    size_t *post_off;     /* [n_terms + 1] into post */
    size_t *post;         /* documents containing each term, ascending */
};

/* With vocab, srcmap, the counts, doc_src, post_off and post filled: computes idf, norm, terms and
 * sources (the same sums in the same order at build and load). -1 when out of memory. */
int an_tfidf_finish(an_tfidf *ix);

#endif
