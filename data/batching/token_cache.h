#ifndef AN_TOKEN_CACHE_H
#define AN_TOKEN_CACHE_H
/* A binary cache of tokenised samples, so a second run with the same data, template and tokenizer
 * skips tokenisation. The file holds a 64-bit key (a hash of the data files' contents, the template,
 * the tokenizer files, max_len and the system text) and a checksum of its payload:
 *   - a missing file, or one whose key differs (the inputs changed): a miss; the caller rebuilds and
 *     an_token_cache_save overwrites it;
 *   - a file that is not a cache, of another version, of the wrong size, or whose checksum or offsets
 *     are wrong: an error naming the file and the problem (it was written atomically, so this means
 *     damage; delete the file to rebuild).
 * Layout (little-endian): "ANTOKCCH" u32 version u32 0x01020304 u64 key u64 n_samples u64 n_tokens
 * u64 checksum | u64 off[n_samples+1] | i32 ids[n_tokens] | i32 labels[n_tokens]. */
#include <stddef.h>
#include <stdint.h>
#include "core/error.h"
#include "data/batching/sample.h"

#define AN_TOKEN_CACHE_VERSION 1u

/* A 64-bit streaming hash (multiply-xorshift over 8-byte words, splitmix64 finish). Not
 * cryptographic: it detects changed inputs, not tampering. */
typedef struct an_hasher {
    uint64_t h, len;
    unsigned char tail[8];
    size_t n_tail;
} an_hasher;

void an_hasher_init(an_hasher *h);
void an_hasher_bytes(an_hasher *h, const void *data, size_t n);
void an_hasher_u64(an_hasher *h, uint64_t v);
void an_hasher_str(an_hasher *h, const char *s); /* length-prefixed, so ("ab","c") != ("a","bc") */
uint64_t an_hasher_final(const an_hasher *h);
/* Size and contents of a file. */
int an_hasher_file(an_hasher *h, const char *path, an_error *err);
/* A tokenizer file, or the tokenizer files of a folder (tokenizer*, *.model, special_tokens_map.json,
 * added_tokens.json, vocab.json, merges.txt, encoder.json, vocab.bpe), in name order. */
int an_hasher_tokenizer(an_hasher *h, const char *path, an_error *err);

typedef struct an_cache_inputs {
    const char *const *data_files;
    size_t n_data_files;
    const an_template *tmpl;
    const char *tokenizer_path; /* NULL: not part of the key */
    size_t max_len;
    const char *system;
} an_cache_inputs;

int an_token_cache_key(const an_cache_inputs *in, uint64_t *key, an_error *err);

/* 1: loaded (a hit), 0: a miss (no file, or another key), -1: an error (see above). */
int an_token_cache_load(const char *path, uint64_t key, an_samples *out, an_error *err);
int an_token_cache_save(const char *path, uint64_t key, const an_samples *s, an_error *err);

/* The samples for these inputs: loaded from cache_path when it holds them (*hit = 1), else encoded
 * from pairs with in->tmpl, in->max_len and in->system and saved there (*hit = 0). A damaged cache is
 * an error, as for an_token_cache_load. cache_path NULL: always encode, save nothing. */
int an_samples_load_or_build(const char *cache_path, const an_cache_inputs *in, const an_encoder *enc,
                             const an_pairs *pairs, an_samples *out, int *hit, size_t *n_dropped, an_error *err);

#endif
