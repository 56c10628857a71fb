#ifndef AN_RETRIEVAL_H
#define AN_RETRIEVAL_H
/* Retrieval of similar training prompts: a tf-idf index over prompt tags (data/prompts/prompt_syntax.h
 * an_prompt_tags, A1111 syntax: weights, brackets and case removed, duplicates dropped), as
 * scikit-learn's TfidfVectorizer with its defaults on binary tag counts:
 *   idf(t) = ln((1 + N) / (1 + df(t))) + 1, vectors L2-normalised, cosine similarity.
 * tf-idf rather than BM25: tags occur once per prompt (binary counts), so BM25's term-frequency
 * saturation does nothing, and cosine already normalises prompt length; it is also the index the
 * nearest-prompt baseline in docs/generation.md was measured with, so the numbers stay comparable.
 *
 * Each indexed prompt may carry a source (civitai model page, author, style file): a query can leave
 * out the neighbours of one source, as when a training row looks for neighbours other than its own
 * page's.
 *
 * File format (an_tfidf_save / an_tfidf_load), little-endian:
 *   "ANTFIDF\0" u32 version u32 0 u64 n_docs u64 n_terms u64 n_sources u64 payload_bytes
 *   u64 packed_bytes u64 checksum (FNV-1a 64 of the packed bytes) | the payload, zlib-deflated
 * payload, every integer an unsigned LEB128 varint:
 *   n_terms x (len, bytes): the tags in id order; n_sources x (len, bytes): the sources;
 *   n_docs x source (0: none, else 1 + source id);
 *   n_terms x (df, df doc ids as gaps: the first id, then the differences, ascending).
 * idf and norms are recomputed on load by the same code as at build time, so a loaded index answers
 * bit for bit as the built one. The civitai training split (50,159 prompts, 89,842 tags, 9,966
 * sources) makes a file of about 1.9 MB. */
#include <stddef.h>

#include "core/error.h"

#define AN_TFIDF_VERSION 1u

typedef struct an_tfidf an_tfidf;

/* Indexes the tags of n texts (the training prompts). sources may be NULL (no sources), and any
 * sources[i] may be NULL (that prompt has none: never excluded). */
an_tfidf *an_tfidf_build(const char *const *texts, size_t n, an_error *err);
an_tfidf *an_tfidf_build_src(const char *const *texts, const char *const *sources, size_t n, an_error *err);
void an_tfidf_free(an_tfidf *ix);
size_t an_tfidf_n_docs(const an_tfidf *ix);
size_t an_tfidf_n_terms(const an_tfidf *ix);

/* The most similar indexed text (lowest index on a tie) and its cosine in *score; -1 when the query
 * shares no tag with any of them; -2 on error. */
long an_tfidf_nearest(const an_tfidf *ix, const char *query, double *score, an_error *err);

/* The k most similar indexed texts, best first (equal scores: lower index first), into idx[0..k) and
 * their cosines into score[0..k) (score may be NULL). Texts sharing no tag with the query (cosine 0)
 * are never returned, nor, when exclude_source is not NULL, texts whose source equals it. Returns
 * how many were found (0..k), or -1 on error. */
long an_tfidf_topk(const an_tfidf *ix, const char *query, const char *exclude_source, size_t k, long *idx,
                   double *score, an_error *err);

/* Writes the index to path (atomically) / reads one; errors name the file. */
int an_tfidf_save(const an_tfidf *ix, const char *path, an_error *err);
an_tfidf *an_tfidf_load(const char *path, an_error *err);

#endif
