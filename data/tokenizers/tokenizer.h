#ifndef AN_TOKENIZER_H
#define AN_TOKENIZER_H
/* Tokenizers: byte-level BPE (GPT-2), SentencePiece BPE (Llama 2, InternLM2), tokenizer.json, and
 * llama2.c tokenizer.bin, behind one interface. Encoding never adds BOS/EOS: callers decide. */
#include <stddef.h>
#include <stdint.h>
#include "core/error.h"
#include "data/tokenizers/ids.h"

typedef struct an_tokenizer an_tokenizer;

/* path: a folder (tokenizer.json, tokenizer.model, vocab.json + merges.txt, encoder.json + vocab.bpe,
 * with tokenizer_config.json / special_tokens_map.json beside them when present) or one file
 * (tokenizer.json, *.model, llama2.c tokenizer.bin). */
an_tokenizer *an_tokenizer_load(const char *path, an_error *err);
void an_tokenizer_free(an_tokenizer *t);

/* Appends the ids of text[0..len) to out. Special and added tokens are matched before BPE. */
int an_tokenizer_encode(const an_tokenizer *t, const char *text, size_t len, an_ids *out, an_error *err);
/* The same with special and added token texts treated as plain text (HF split_special_tokens), for
 * user text placed inside a template: a prompt that contains "<|im_end|>" cannot end the turn.
 * SentencePiece user-defined pieces are still matched, as sentencepiece always does. Encoding is
 * thread-safe: the tokenizer is only read. */
int an_tokenizer_encode_plain(const an_tokenizer *t, const char *text, size_t len, an_ids *out, an_error *err);

int an_tokenizer_vocab_size(const an_tokenizer *t);
int32_t an_tokenizer_bos(const an_tokenizer *t); /* -1 when the tokenizer has none */
int32_t an_tokenizer_eos(const an_tokenizer *t);
/* Whether the tokenizer's own configuration asks for BOS at the start of a text (as HF does). */
int an_tokenizer_adds_bos(const an_tokenizer *t);
/* The BOS a prompt template puts first (data/prompts/template.h): the tokenizer's BOS, as XTuner adds it
 * whatever add_bos_token says -- except for a GGUF file that says tokenizer.ggml.add_bos_token false,
 * whose chat template and llama.cpp put none (SmolLM2's ChatML): -1 there. */
int32_t an_tokenizer_template_bos(const an_tokenizer *t);
/* Id of a token by its exact text (special tokens included), -1 when absent. */
int32_t an_tokenizer_token_id(const an_tokenizer *t, const char *piece);
/* The text of token id as the tokenizer file spells it ("Ġthe", "▁the", "<0x0A>"), NULL when out of
 * range. For decoded text use an_tokenizer_decode. */
const char *an_tokenizer_piece(const an_tokenizer *t, int32_t id);
/* Whether id is a control or special/added token (<s>, </s>, <|endoftext|>, <|im_end|>, ...): what
 * HF's skip_special_tokens leaves out. Decoding writes added tokens as their text and SentencePiece
 * control pieces as nothing; callers that want neither skip these ids. */
int an_tokenizer_is_special(const an_tokenizer *t, int32_t id);

/* Streaming decoder: feed ids one at a time, get back only complete UTF-8, with byte fallback and
 * the leading-space rules undone. */
typedef struct an_detok {
    const an_tokenizer *tok;
    unsigned char pending[8];
    int n_pending;
    int n_fed;
    int started; /* some text was decoded already (the leading-space rule applies before that) */
} an_detok;

void an_detok_init(an_detok *d, const an_tokenizer *t);
/* Writes the text that id completes into out (NUL-terminated); returns its length, or -1 if outsz is
 * too small. */
int an_detok_feed(an_detok *d, int32_t id, char *out, size_t outsz);
/* Flushes what is pending (an incomplete UTF-8 sequence is written as U+FFFD). */
int an_detok_flush(an_detok *d, char *out, size_t outsz);
/* Whole-sequence decode into a malloc'd string. */
char *an_tokenizer_decode(const an_tokenizer *t, const int32_t *ids, size_t n, an_error *err);
/* The same, with the length in *len (the text may contain NUL bytes). */
char *an_tokenizer_decode_len(const an_tokenizer *t, const int32_t *ids, size_t n, size_t *len, an_error *err);

/* Trains a byte-level BPE (GPT-2 pre-tokenization, 256 byte tokens, then merges, then an
 * <|endoftext|> special used as BOS and EOS) on texts until the vocabulary has vocab_size tokens or
 * no pair is left, and writes out_dir/tokenizer.json (loadable by Hugging Face tokenizers) and
 * out_dir/tokenizer_config.json. out_dir must exist. Deterministic: ties go to the smaller pair of ids.
 * Returns the vocabulary size written (smaller than asked when the corpus runs out of pairs), or -1. */
int an_tokenizer_train_bytelevel(const char *const *texts, const size_t *lens, size_t n, int vocab_size,
                                 const char *out_dir, an_error *err);
/* The same, and with add_prefix_space the tokenizer puts a space before every text it encodes that
 * does not start with one (Hugging Face ByteLevel add_prefix_space, as GPT-2's RoBERTa variants do),
 * and the merges are learnt on texts spaced that way. Then the first word of a text is the same token
 * as that word anywhere else: a negative prompt encoded on its own starts with "Ġworst", not with
 * the rare pieces "wor" "st". */
int an_tokenizer_train_bytelevel_ex(const char *const *texts, const size_t *lens, size_t n, int vocab_size,
                                    int add_prefix_space, const char *out_dir, an_error *err);

#endif
