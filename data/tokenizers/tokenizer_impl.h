#ifndef AN_TOKENIZER_IMPL_H
#define AN_TOKENIZER_IMPL_H
/* Private to data/tokenizer*.c, bpe*.c, sentencepiece*.c: the tokenizer's parts and the loaders. */
#include <stddef.h>
#include <stdint.h>
#include "core/error.h"
#include "data/tokenizers/ids.h"
#include "data/tokenizers/tokenizer.h"

/* Piece types: SentencePiece's ModelProto.SentencePiece.Type values, plus AN_PIECE_ADDED for
 * special/added tokens taken from tokenizer.json or tokenizer_config.json. */
enum {
    AN_PIECE_NORMAL = 1,
    AN_PIECE_UNKNOWN = 2,
    AN_PIECE_CONTROL = 3,
    AN_PIECE_USER_DEFINED = 4,
    AN_PIECE_UNUSED = 5,
    AN_PIECE_BYTE = 6,
    AN_PIECE_ADDED = 7,
};

/* The vocabulary: piece text by id (in the file's own form: "Ġthe", "▁the"), score, type, and a
 * hash index text -> id (the lowest id wins when a text repeats). */
typedef struct an_vocab {
    int n, cap;
    char *arena;
    size_t arena_len, arena_cap;
    uint32_t *off, *len;
    float *score;
    uint8_t *type;
    int32_t *slots;
    size_t mask;
} an_vocab;

int an_vocab_add(an_vocab *v, const char *s, size_t len, float score, int type); /* id, -1: OOM */
int an_vocab_set_text(an_vocab *v, int32_t id, const char *s, size_t len);      /* rename */
int an_vocab_index(an_vocab *v);                                                /* (re)build */
int32_t an_vocab_find(const an_vocab *v, const char *s, size_t len);
static inline const char *an_vocab_text(const an_vocab *v, int32_t id) { return v->arena + v->off[id]; }
void an_vocab_free(an_vocab *v);

/* Merge table: (left id, right id) -> merged id and priority (higher merges first). */
typedef struct an_pairmap {
    uint64_t *keys; /* UINT64_MAX: empty */
    int32_t *merged;
    float *prio;
    size_t mask, n;
} an_pairmap;

int an_pairmap_put(an_pairmap *m, int32_t a, int32_t b, int32_t merged, float prio); /* overwrites */
int an_pairmap_get(const an_pairmap *m, int32_t a, int32_t b, int32_t *merged, float *prio);
void an_pairmap_free(an_pairmap *m);

/* Scratch memory for an_bpe_merge, reused across words within one encode call. */
typedef struct an_bpe_scratch {
    void *buf;
    size_t cap;
} an_bpe_scratch;

/* Applies merges to ids[0..n) until none applies: always the pair of highest priority, the leftmost
 * among equals (as GPT-2, HF tokenizers and SentencePiece do). Returns the new length, -1 on OOM. */
int an_bpe_merge(const an_pairmap *m, int32_t *ids, int n, an_bpe_scratch *s);
void an_bpe_scratch_free(an_bpe_scratch *s);

/* GPT-2 pre-tokenization: the end of the piece that starts at s[i] (i < n), exactly as the regex
 * 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ splits. */
size_t an_gpt2_piece_end(const unsigned char *s, size_t n, size_t i);

/* The regex classes the pre-tokenizers split on: the character at s[i] (its UTF-8 length in *len) is
 * \p{L}, \p{N}, \s or anything else (a malformed byte is one "other" character). */
enum { AN_PRETOK_SPACE, AN_PRETOK_LETTER, AN_PRETOK_NUMBER, AN_PRETOK_OTHER };
int an_pretok_class(const unsigned char *s, size_t n, size_t i, int *len);

/* Llama 3 (max_digits 3) and Qwen2 (max_digits 1) pre-tokenization: the end of the piece that starts
 * at s[i] (i < n), exactly as the regex (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|
 * \p{N}{1,max_digits}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ splits. */
size_t an_llama3_piece_end(const unsigned char *s, size_t n, size_t i, int max_digits);

/* The byte of a "<0xXX>" piece, or -1. */
int an_parse_byte_piece(const char *s, size_t len);

/* GPT-2's reversible byte <-> printable code point mapping. */
void an_bytelevel_table(uint32_t byte_to_cp[256]);

enum { AN_TOK_BYTELEVEL = 1, AN_TOK_SPM = 2 };
/* How the "▁" dummy prefix is added to text segments between special tokens: never, to the segment
 * at the start of the text, to the first segment of each unit (HF Prepend normalizer: units end at
 * non-normalized tokens), to every segment (HF Metaspace prepend_scheme "always"). */
enum { AN_PREFIX_NONE = 0, AN_PREFIX_TEXT_START = 1, AN_PREFIX_PER_UNIT = 2, AN_PREFIX_PER_SEGMENT = 3 };

enum { AN_MAX_GLUE = 32 };

typedef struct an_special {
    char *text;
    size_t len;
    int32_t id;
    int normalized; /* HF "normalized": matched after normalization, no unit boundary */
    /* HF normalizes the content of normalized tokens too: with the Prepend("▁") normalizer the token
     * only matches after a space (which it takes) or at the start of a unit */
    int lead_space;
    int always;
} an_special;

struct an_tokenizer {
    char path[1024];
    int kind;
    an_vocab vocab;
    an_pairmap merges;
    int32_t byte_id[256]; /* byte-level: token of each byte; SPM: its <0xXX> byte-fallback piece */
    int32_t bos, eos, unk;
    int add_bos;
    int no_template_bos; /* a GGUF that says tokenizer.ggml.add_bos_token false: templates add no BOS either */
    /* byte-level */
    int add_prefix_space;
    int split_digits; /* every \p{N} character is a piece of its own before GPT-2 splitting (SmolLM) */
    int llama3_digits; /* > 0: Llama 3 / Qwen2 pre-tokenization with numbers in runs of at most this many */
    /* SPM family */
    const char *space_text; /* "▁" (SentencePiece, tokenizer.json) or " " (llama2.c tokenizer.bin) */
    int prefix_mode;
    int prefix_unless_space; /* HF Metaspace: no "▁" in front of a segment that starts with a space */
    int split_every_space;   /* HF Metaspace split: every "▁" starts a new word */
    int metaspace;
    int byte_fallback;
    /* A merge can cross the start of a "▁word" only if some piece holds the character before it
     * followed by "▁": those "glue" characters are listed, and BPE runs word by word between the
     * other boundaries (the same result as one run over the text, and much faster). */
    int split_at_space;
    int n_glue;
    char glue[AN_MAX_GLUE][4];
    uint8_t glue_len[AN_MAX_GLUE];
    int fuse_unk; /* consecutive unknown characters give one unk (HF BPE fuse_unk) */
    int remove_extra_ws;
    int strip_leading_space; /* decoding drops the dummy-prefix space of the first text */
    /* special and added tokens, matched before BPE, longest first */
    an_special *special;
    int n_special;
    uint8_t special_first[256];
    /* decoded bytes of each id */
    char *dec_arena;
    uint32_t *dec_off, *dec_len;
};

/* always: a SentencePiece user-defined piece, matched even when special tokens are off */
int an_tokenizer_add_special(an_tokenizer *t, const char *text, size_t len, int32_t id, int normalized, int always);
/* Sorts specials longest first and fills special_first; computes decoded bytes; call once at end. */
int an_tokenizer_finish(an_tokenizer *t, an_error *err);

/* Loaders fill a zeroed tokenizer (bos/eos/unk preset to -1). */
int an_load_sentencepiece(an_tokenizer *t, const char *path, an_error *err);
int an_load_llama2c(an_tokenizer *t, const char *path, an_error *err);
int an_load_tokenizer_json(an_tokenizer *t, const char *path, an_error *err);
/* A GGUF file's tokenizer.ggml.* vocabulary (model gpt2 or llama). */
int an_load_gguf(an_tokenizer *t, const char *path, an_error *err);
int an_load_vocab_merges(an_tokenizer *t, const char *vocab_path, const char *merges_path, an_error *err);
/* tokenizer_config.json / special_tokens_map.json beside the model files (optional). */
int an_load_tokenizer_config(an_tokenizer *t, const char *path, an_error *err);
int an_load_special_tokens_map(an_tokenizer *t, const char *path, an_error *err);

/* Adds merge number rank (a, b) -> a+b to the merge table; fails naming a token not in the vocabulary. */
int an_add_ranked_merge(an_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen, int rank,
                           const char *file, an_error *err);
/* Score-merge table (SentencePiece without a merges list): every split of a mergeable piece into two
 * mergeable pieces, the piece's score as priority. an_spm_mergeable: normal pieces only. */
int an_build_score_merges(an_tokenizer *t, int (*mergeable)(int type), const char *path, an_error *err);
int an_spm_mergeable(int type);
/* Fills byte_id for a byte-level vocabulary; fails naming the first byte without a token. */
int an_bytelevel_bytes(an_tokenizer *t, const char *file, an_error *err);

/* Encoders of one text segment (no specials inside). */
int an_encode_bytelevel(const an_tokenizer *t, const char *s, size_t n, an_ids *out, an_bpe_scratch *sc);
int an_encode_spm(const an_tokenizer *t, const char *s, size_t n, int prefix, an_ids *out, an_bpe_scratch *sc);

#endif
