/* The tokenizer inside a GGUF file (llama.cpp's tokenizer.ggml.* keys), built into the same
 * structures tokenizer_json.c builds, so that it encodes as Hugging Face transformers does when it
 * loads the same file (AutoTokenizer.from_pretrained(dir, gguf_file=...)):
 *   gpt2:  byte-level BPE from tokens + merges, GPT-2, Llama 3 or Qwen2 pre-tokenization
 *          (tokenizer.ggml.pre picks it), CONTROL tokens as specials and USER_DEFINED ones as added tokens;
 *   llama: SentencePiece BPE (HF LlamaTokenizer: Metaspace "first", byte fallback, fused unk), merges
 *          from the file or else from the scores. */
#include <stdlib.h>
#include <string.h>

#include "data/tokenizers/tokenizer_impl.h"
#include "data/tokenizers/unicode.h"
#include "model/io/gguf.h"

/* Pre-tokenizers whose split is the GPT-2 regex (what HF gives every name it has no regex for,
 * "default" included) and those that split every number character first. llama.cpp's smollm,
 * starcoder, refact, ... group splits \p{N} alone before the GPT-2 regex, as SmolLM2's own
 * tokenizer.json (Digits individual_digits) does. transformers loading a GGUF skips that step (it
 * has no split for "smollm"), which differs where spaces run into a number (",  1": "ĠĠ" "1" here,
 * "Ġ" "Ġ" "1" there) and around "½", "²": we follow the model's own tokenizer, not that loader. */
static const char *const gpt2_pres[] = {"gpt2", "default", "gpt-2", NULL};
static const char *const digit_pres[] = {"smollm", "starcoder", "refact", "codeshell", "command-r", "exaone", "minerva", NULL};
/* Llama 3's split (numbers in runs of up to three) and Qwen2's (one number character a piece): the
 * names llama.cpp gives them (data/tokenizers/bpe_pretok_llama3.c) */
static const char *const llama3_pres[] = {"llama3", "llama-v3", "llama-bpe", "falcon3", NULL};
static const char *const qwen2_pres[] = {"qwen2", "deepseek-r1-qwen", NULL};

static int in_list(const char *const *list, const char *s, size_t len) {
    for (; *list; list++)
        if (strlen(*list) == len && memcmp(*list, s, len) == 0) return 1;
    return 0;
}

/* A string element of an array key, or a failure naming the key and index. */
static int arr_str(const an_gguf_value *arr, uint64_t i, const char *key, const char *path, const char **s, size_t *len,
                   an_error *err) {
    an_gguf_value v;
    if (an_gguf_array_get(arr, i, &v) || v.type != AN_GGUF_STRING)
        return an_fail(err, "%s: %s[%llu] is not a string", path, key, (unsigned long long)i);
    *s = v.v.str.ptr;
    *len = (size_t)v.v.str.len;
    return 0;
}

/* An optional token id key: absent or out of range leaves *dst alone. */
static void opt_id(const an_gguf *g, const char *key, int32_t *dst, int n) {
    const an_gguf_kv *kv = an_gguf_find_key(g, key);
    int64_t v;
    if (kv && an_gguf_get_int(g, key, &v, NULL) == 0 && v >= 0 && v < n) *dst = (int32_t)v;
}

/* HF re-spells a byte-level token with a character outside GPT-2's byte alphabet (a raw space, say)
 * as the bytes of its UTF-8; tokens already in the alphabet stay as they are. */
static int add_bytelevel_token(an_tokenizer *t, const char *s, size_t len, int type, const uint8_t *in_alphabet,
                               const uint32_t *b2c) {
    int ok = 1;
    for (size_t i = 0; i < len && ok;) {
        uint32_t cp;
        int l = an_utf8_decode((const unsigned char *)s + i, len - i, &cp);
        ok = cp < 512 && in_alphabet[cp];
        i += (size_t)l;
    }
    if (ok) return an_vocab_add(&t->vocab, s, len, 0, type);
    char *o = malloc(len * 2 + 1), *p = o;
    if (!o) return -1;
    for (size_t i = 0; i < len; i++) p += an_utf8_encode(b2c[(unsigned char)s[i]], p);
    int id = an_vocab_add(&t->vocab, o, (size_t)(p - o), 0, type);
    free(o);
    return id;
}

static int is_bytelevel_spelled(const char *s, size_t len, const uint8_t *in_alphabet) {
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        i += (size_t)an_utf8_decode((const unsigned char *)s + i, len - i, &cp);
        if (cp >= 512 || !in_alphabet[cp]) return 0;
    }
    return 1;
}

static int load(an_tokenizer *t, const an_gguf *g, const char *path, an_error *err) {
    const char *model, *pre = "default";
    uint64_t model_len, pre_len = 7;
    if (an_gguf_get_str(g, "tokenizer.ggml.model", &model, &model_len, err)) return -1;
    int bytelevel = model_len == 4 && memcmp(model, "gpt2", 4) == 0;
    int spm = model_len == 5 && memcmp(model, "llama", 5) == 0;
    if (!bytelevel && !spm)
        return an_fail(err, "%s: tokenizer.ggml.model %s is not supported (gpt2 or llama)", path, AN_QUOTE_N(model, model_len));
    if (an_gguf_find_key(g, "tokenizer.ggml.pre") && an_gguf_get_str(g, "tokenizer.ggml.pre", &pre, &pre_len, err))
        return -1;
    if (bytelevel) {
        if (in_list(digit_pres, pre, pre_len)) t->split_digits = 1;
        else if (in_list(llama3_pres, pre, pre_len)) t->llama3_digits = 3;
        else if (in_list(qwen2_pres, pre, pre_len)) t->llama3_digits = 1;
        else if (!in_list(gpt2_pres, pre, pre_len))
            return an_fail(err, "%s: tokenizer.ggml.pre %s is not supported (gpt2, default, smollm, starcoder, refact, "
                                "codeshell, command-r, exaone, minerva: the GPT-2 split; llama3, llama-v3, llama-bpe, "
                                "falcon3: Llama 3's; qwen2, deepseek-r1-qwen: Qwen2's)",
                           path, AN_QUOTE_N(pre, pre_len));
    }

    const an_gguf_value *tokens, *types = NULL, *scores = NULL, *merges = NULL;
    if (an_gguf_get_array(g, "tokenizer.ggml.tokens", AN_GGUF_STRING, &tokens, err)) return -1;
    uint64_t n = tokens->v.arr.n;
    if (n == 0 || n > 100000000) return an_fail(err, "%s: tokenizer.ggml.tokens has %llu tokens", path, (unsigned long long)n);
    if (an_gguf_find_key(g, "tokenizer.ggml.token_type")) {
        if (an_gguf_get_array(g, "tokenizer.ggml.token_type", -1, &types, err)) return -1;
        if (types->v.arr.n != n)
            return an_fail(err, "%s: tokenizer.ggml.token_type has %llu entries for %llu tokens", path,
                           (unsigned long long)types->v.arr.n, (unsigned long long)n);
    }
    if (an_gguf_find_key(g, "tokenizer.ggml.scores")) {
        if (an_gguf_get_array(g, "tokenizer.ggml.scores", AN_GGUF_F32, &scores, err)) return -1;
        if (scores->v.arr.n != n)
            return an_fail(err, "%s: tokenizer.ggml.scores has %llu entries for %llu tokens", path,
                           (unsigned long long)scores->v.arr.n, (unsigned long long)n);
    }
    if (an_gguf_find_key(g, "tokenizer.ggml.merges") &&
        an_gguf_get_array(g, "tokenizer.ggml.merges", AN_GGUF_STRING, &merges, err))
        return -1;
    if (bytelevel && !merges) return an_fail(err, "%s: tokenizer.ggml.merges is missing (byte-level BPE needs it)", path);

    uint32_t b2c[256];
    uint8_t in_alphabet[512] = {0};
    an_bytelevel_table(b2c);
    for (int b = 0; b < 256; b++) in_alphabet[b2c[b]] = 1;
    for (uint64_t i = 0; i < n; i++) {
        const char *s = NULL;
        size_t len = 0;
        if (arr_str(tokens, i, "tokenizer.ggml.tokens", path, &s, &len, err)) return -1;
        int type = AN_PIECE_NORMAL;
        if (types) {
            an_gguf_value v;
            an_gguf_array_get(types, i, &v);
            int64_t ty = v.type == AN_GGUF_I32 || v.type == AN_GGUF_I64 || v.type == AN_GGUF_I8 || v.type == AN_GGUF_I16
                             ? v.v.i
                             : (int64_t)v.v.u;
            if (v.type == AN_GGUF_F32 || v.type == AN_GGUF_F64 || v.type == AN_GGUF_STRING || v.type == AN_GGUF_ARRAY ||
                ty < 1 || ty > 6)
                return an_fail(err, "%s: tokenizer.ggml.token_type[%llu] is not a token type 1..6", path,
                               (unsigned long long)i);
            type = (int)ty;
        }
        float score = 0;
        if (scores) {
            an_gguf_value v;
            an_gguf_array_get(scores, i, &v);
            score = (float)v.v.f;
            if (score != score) return an_fail(err, "%s: tokenizer.ggml.scores[%llu] is NaN", path, (unsigned long long)i);
        }
        int id = bytelevel ? add_bytelevel_token(t, s, len, type, in_alphabet, b2c) : an_vocab_add(&t->vocab, s, len, score, type);
        if (id < 0) return an_fail(err, "%s: out of memory", path);
    }
    if (an_vocab_index(&t->vocab)) return an_fail(err, "%s: out of memory", path);

    if (merges) {
        for (uint64_t i = 0; i < merges->v.arr.n; i++) {
            const char *s = NULL;
            size_t len = 0;
            if (arr_str(merges, i, "tokenizer.ggml.merges", path, &s, &len, err)) return -1;
            const char *sp = memchr(s, ' ', len);
            if (!sp || sp == s || sp + 1 == s + len)
                return an_fail(err, "%s: tokenizer.ggml.merges[%llu] %s is not two tokens separated by a space", path,
                               (unsigned long long)i, AN_QUOTE_N(s, len));
            if (an_add_ranked_merge(t, s, (size_t)(sp - s), sp + 1, (size_t)(s + len - sp - 1), (int)i, path, err))
                return -1;
        }
    }

    int nv = t->vocab.n;
    if (bytelevel) {
        t->kind = AN_TOK_BYTELEVEL;
        /* unlike tokenizer.json files, a GGUF may lack byte tokens (SmolLM2 has none for 0x04 and
         * a few others): those bytes are dropped when encoding, as HF does */
        for (int b = 0; b < 256; b++) {
            char u[4];
            t->byte_id[b] = an_vocab_find(&t->vocab, u, (size_t)an_utf8_encode(b2c[b], u));
        }
    } else {
        /* HF LlamaTokenizer: Metaspace("▁", prepend_scheme "first", split false), no normalizer */
        t->kind = AN_TOK_SPM;
        t->space_text = "\xe2\x96\x81";
        t->prefix_mode = AN_PREFIX_TEXT_START;
        t->metaspace = 1;
        t->prefix_unless_space = 1;
        t->strip_leading_space = 1;
        t->byte_fallback = 1;
        t->fuse_unk = 1;
        for (int id = 0; id < nv; id++) {
            int b = an_parse_byte_piece(an_vocab_text(&t->vocab, id), t->vocab.len[id]);
            if (b >= 0 && t->byte_id[b] < 0) {
                t->byte_id[b] = id;
                t->vocab.type[id] = AN_PIECE_BYTE;
            }
        }
        if (!merges && an_build_score_merges(t, an_spm_mergeable, path, err)) return -1;
    }

    opt_id(g, "tokenizer.ggml.bos_token_id", &t->bos, nv);
    opt_id(g, "tokenizer.ggml.eos_token_id", &t->eos, nv);
    opt_id(g, "tokenizer.ggml.unknown_token_id", &t->unk, nv);
    /* HF: a sentencepiece file that does not say adds BOS (as llama.cpp does); a byte-level one does not */
    t->add_bos = spm;
    if (an_gguf_find_key(g, "tokenizer.ggml.add_bos_token")) {
        if (an_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos, err)) return -1;
        /* the file's own word on BOS, which its chat template and llama.cpp follow (SmolLM2: ChatML, no BOS) */
        t->no_template_bos = !t->add_bos;
    }

    /* CONTROL tokens split the text as special tokens (HF skips, in a byte-level vocabulary, one
     * spelled outside the byte alphabet: a llama.cpp mislabel); USER_DEFINED ones are added tokens,
     * matched even in plain text as HF matches non-special added tokens. */
    for (int id = 0; id < nv; id++) {
        int ty = t->vocab.type[id];
        const char *s = an_vocab_text(&t->vocab, id);
        size_t len = t->vocab.len[id];
        if (ty == AN_PIECE_CONTROL && (!bytelevel || is_bytelevel_spelled(s, len, in_alphabet))) {
            if (an_tokenizer_add_special(t, s, len, id, 0, 0)) return an_fail(err, "%s: out of memory", path);
        } else if (ty == AN_PIECE_USER_DEFINED) {
            if (an_tokenizer_add_special(t, s, len, id, 0, 1)) return an_fail(err, "%s: out of memory", path);
        }
    }
    return 0;
}

int an_load_gguf(an_tokenizer *t, const char *path, an_error *err) {
    an_gguf g;
    if (an_gguf_open(&g, path, err)) return -1;
    int rc = load(t, &g, path, err);
    an_gguf_close(&g);
    return rc;
}
