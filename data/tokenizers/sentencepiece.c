/* SentencePiece tokenizer.model (a protobuf ModelProto, read with a minimal wire-format walker)
 * and llama2.c tokenizer.bin. Both merge by piece score: the pair whose concatenation is the
 * highest-scoring piece merges first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "data/tokenizers/tokenizer_impl.h"
#include "data/tokenizers/unicode.h"

typedef struct pb {
    const unsigned char *p, *end, *base;
} pb;

static int pb_varint(pb *r, uint64_t *v) {
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) return -1;
        unsigned char b = *r->p++;
        x |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* One field: its number, wire type, and either a scalar (varint, fixed32, fixed64) or a byte
 * range (length-delimited). Returns 0, 1 at the end of the message, -1 when malformed. */
typedef struct pb_field {
    uint32_t num;
    int wire;
    uint64_t v;
    const unsigned char *data;
    size_t len;
} pb_field;

static int pb_next(pb *r, pb_field *f) {
    if (r->p >= r->end) return 1;
    uint64_t key;
    if (pb_varint(r, &key)) return -1;
    f->num = (uint32_t)(key >> 3);
    f->wire = (int)(key & 7);
    switch (f->wire) {
    case 0:
        return pb_varint(r, &f->v);
    case 1:
        if (r->end - r->p < 8) return -1;
        memcpy(&f->v, r->p, 8);
        r->p += 8;
        return 0;
    case 5: {
        if (r->end - r->p < 4) return -1;
        uint32_t x;
        memcpy(&x, r->p, 4);
        f->v = x;
        r->p += 4;
        return 0;
    }
    case 2:
        if (pb_varint(r, &f->v) || f->v > (uint64_t)(r->end - r->p)) return -1;
        f->data = r->p;
        f->len = (size_t)f->v;
        r->p += f->len;
        return 0;
    default:
        return -1; /* groups (3, 4) are not used by ModelProto */
    }
}

static float f32_of(uint64_t v) {
    uint32_t u = (uint32_t)v;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

typedef struct spm_spec {
    int model_type, byte_fallback, unk_id, bos_id, eos_id;
    int add_dummy_prefix, remove_extra_ws, escape_ws;
    size_t charsmap_len;
    char name[64];
} spm_spec;


static int parse_piece(an_tokenizer *t, const unsigned char *d, size_t n, const char *path, an_error *err) {
    pb r = {d, d + n, d};
    pb_field f;
    const unsigned char *piece = NULL;
    size_t plen = 0;
    float score = 0;
    int type = AN_PIECE_NORMAL, rc;
    while ((rc = pb_next(&r, &f)) == 0) {
        if (f.num == 1 && f.wire == 2) piece = f.data, plen = f.len;
        else if (f.num == 2 && f.wire == 5) score = f32_of(f.v);
        else if (f.num == 3 && f.wire == 0) type = (int)f.v;
    }
    if (rc < 0) return an_fail(err, "%s: piece %d is malformed (truncated protobuf)", path, t->vocab.n);
    if (!piece) return an_fail(err, "%s: piece %d has no text", path, t->vocab.n);
    if (type < AN_PIECE_NORMAL || type > AN_PIECE_BYTE)
        return an_fail(err, "%s: piece %d (%s) has unknown type %d", path, t->vocab.n, AN_QUOTE_N((const char *)piece, plen), type);
    /* SentencePiece itself treats a "\0" piece as unused when byte fallback is on (InternLM2 has one) */
    if (plen == 1 && piece[0] == 0 && type == AN_PIECE_NORMAL) type = AN_PIECE_UNUSED;
    if (an_vocab_add(&t->vocab, (const char *)piece, plen, score, type) < 0) return an_fail(err, "%s: out of memory", path);
    return 0;
}

static int parse_spec(const unsigned char *d, size_t n, int which, spm_spec *s) {
    pb r = {d, d + n, d};
    pb_field f;
    int rc;
    while ((rc = pb_next(&r, &f)) == 0) {
        if (which == 2 && f.wire == 0) {
            int v = (int)(int32_t)f.v;
            if (f.num == 3) s->model_type = v;
            else if (f.num == 35) s->byte_fallback = v;
            else if (f.num == 40) s->unk_id = v;
            else if (f.num == 41) s->bos_id = v;
            else if (f.num == 42) s->eos_id = v;
        } else if (which == 3) {
            if (f.num == 1 && f.wire == 2) snprintf(s->name, sizeof s->name, "%.*s", (int)f.len, f.data);
            else if (f.num == 2 && f.wire == 2) s->charsmap_len = f.len;
            else if (f.num == 3 && f.wire == 0) s->add_dummy_prefix = f.v != 0;
            else if (f.num == 4 && f.wire == 0) s->remove_extra_ws = f.v != 0;
            else if (f.num == 5 && f.wire == 0) s->escape_ws = f.v != 0;
        }
    }
    return rc < 0 ? -1 : 0;
}

/* Score-merge table: every split of a mergeable piece into two mergeable pieces. */
int an_build_score_merges(an_tokenizer *t, int (*mergeable)(int type), const char *path, an_error *err) {
    const an_vocab *v = &t->vocab;
    for (int id = 0; id < v->n; id++) {
        if (!mergeable(v->type[id])) continue;
        const char *s = an_vocab_text(v, id);
        size_t len = v->len[id];
        for (size_t k = 0; k < len;) {
            uint32_t cp;
            k += (size_t)an_utf8_decode((const unsigned char *)s + k, len - k, &cp);
            if (k >= len) break;
            int32_t a = an_vocab_find(v, s, k), b = an_vocab_find(v, s + k, len - k);
            if (a < 0 || b < 0 || !mergeable(v->type[a]) || !mergeable(v->type[b])) continue;
            int32_t old;
            float oldp;
            /* a pair makes exactly one string; if two ids share it the lower id is the piece */
            if (an_pairmap_get(&t->merges, a, b, &old, &oldp) && old <= id) continue;
            if (an_pairmap_put(&t->merges, a, b, id, v->score[id])) return an_fail(err, "%s: out of memory", path);
        }
    }
    return 0;
}

int an_spm_mergeable(int type) { return type == AN_PIECE_NORMAL; }

int an_load_sentencepiece(an_tokenizer *t, const char *path, an_error *err) {
    an_mapped_file m;
    if (an_map_file(&m, path, err)) return -1;
    spm_spec s = {1, 0, 0, 1, 2, 1, 1, 1, 0, ""};
    int seen_trainer = 0, rc = -1, r2;
    pb r = {m.data, m.data + m.size, m.data};
    pb_field f;
    while ((r2 = pb_next(&r, &f)) == 0) {
        if (f.wire != 2) continue;
        if (f.num == 1) {
            if (parse_piece(t, f.data, f.len, path, err)) goto done;
        } else if (f.num == 2 || f.num == 3) {
            seen_trainer |= f.num == 2;
            if (parse_spec(f.data, f.len, (int)f.num, &s)) {
                an_fail(err, "%s: %s is malformed (truncated protobuf)", path, f.num == 2 ? "trainer_spec" : "normalizer_spec");
                goto done;
            }
        }
    }
    if (r2 < 0) {
        an_fail(err, "%s: truncated or malformed protobuf at byte %ld of %zu (after %d pieces)", path,
                (long)(r.p - r.base), m.size, t->vocab.n);
        goto done;
    }
    if (t->vocab.n == 0) {
        an_fail(err, "%s: no pieces (not a SentencePiece model?)", path);
        goto done;
    }
    if (!seen_trainer || s.model_type != 2) {
        an_fail(err, "%s: SentencePiece model type %d is not supported (BPE, type 2, only)", path, s.model_type);
        goto done;
    }
    if (s.charsmap_len && strcmp(s.name, "identity")) {
        an_fail(err, "%s: normalizer %s (precompiled charsmap) is not supported (identity only)", path, AN_QUOTE(s.name));
        goto done;
    }
    if (an_vocab_index(&t->vocab)) {
        an_fail(err, "%s: out of memory", path);
        goto done;
    }
    t->kind = AN_TOK_SPM;
    t->space_text = s.escape_ws ? "\xe2\x96\x81" : " ";
    t->prefix_mode = s.add_dummy_prefix ? AN_PREFIX_TEXT_START : AN_PREFIX_NONE;
    t->strip_leading_space = s.add_dummy_prefix;
    t->remove_extra_ws = s.remove_extra_ws;
    t->byte_fallback = s.byte_fallback;
    int n = t->vocab.n;
    t->unk = s.unk_id >= 0 && s.unk_id < n ? s.unk_id : -1;
    t->bos = s.bos_id >= 0 && s.bos_id < n ? s.bos_id : -1;
    t->eos = s.eos_id >= 0 && s.eos_id < n ? s.eos_id : -1;
    t->add_bos = 1; /* what HF's LlamaTokenizer (and InternLM2's) do by default */
    for (int id = 0; id < n; id++) {
        int ty = t->vocab.type[id];
        if (ty == AN_PIECE_BYTE) {
            int b = an_parse_byte_piece(an_vocab_text(&t->vocab, id), t->vocab.len[id]);
            if (b < 0) {
                an_fail(err, "%s: byte piece %d is %s, not <0xXX>", path, id,
                        AN_QUOTE_N(an_vocab_text(&t->vocab, id), t->vocab.len[id]));
                goto done;
            }
            t->byte_id[b] = id;
        } else if (ty == AN_PIECE_USER_DEFINED) {
            /* user-defined pieces are never split or merged: match them like special tokens */
            if (an_tokenizer_add_special(t, an_vocab_text(&t->vocab, id), t->vocab.len[id], id, 1, 1)) {
                an_fail(err, "%s: out of memory", path);
                goto done;
            }
        }
    }
    if (an_build_score_merges(t, an_spm_mergeable, path, err)) goto done;
    rc = 0;
done:
    an_unmap_file(&m);
    return rc;
}

/* llama2.c merges any two pieces whose concatenation is a piece, whatever its kind */
static int llama2c_mergeable(int type) { return type > 0; }

int an_load_llama2c(an_tokenizer *t, const char *path, an_error *err) {
    an_mapped_file m;
    if (an_map_file(&m, path, err)) return -1;
    int rc = -1;
    const unsigned char *p = m.data, *end = m.data + m.size;
    int32_t max_len;
    if (m.size < 4) {
        an_fail(err, "%s: %zu bytes, too short for a llama2.c tokenizer (int32 max_token_length first)", path, m.size);
        goto done;
    }
    memcpy(&max_len, p, 4);
    p += 4;
    if (max_len <= 0 || max_len > 4096) {
        an_fail(err, "%s: max_token_length %d is not plausible; not a llama2.c tokenizer.bin?", path, max_len);
        goto done;
    }
    while (p < end) {
        float score;
        int32_t len;
        if (end - p < 8) {
            an_fail(err, "%s: truncated: token %d needs a score and a length at byte %ld, the file ends at %zu", path,
                    t->vocab.n, (long)(p - m.data), m.size);
            goto done;
        }
        memcpy(&score, p, 4);
        memcpy(&len, p + 4, 4);
        p += 8;
        if (len < 0 || len > max_len) {
            an_fail(err, "%s: token %d has length %d, outside 0..max_token_length %d", path, t->vocab.n, len, max_len);
            goto done;
        }
        if (end - p < len) {
            an_fail(err, "%s: truncated: token %d needs %d bytes at byte %ld, the file ends at %zu", path, t->vocab.n, len,
                    (long)(p - m.data), m.size);
            goto done;
        }
        int b = an_parse_byte_piece((const char *)p, (size_t)len);
        int type = b >= 0 ? AN_PIECE_BYTE : t->vocab.n == 0 ? AN_PIECE_UNKNOWN : t->vocab.n <= 2 ? AN_PIECE_CONTROL : AN_PIECE_NORMAL;
        int id = an_vocab_add(&t->vocab, (const char *)p, (size_t)len, score, type);
        if (id < 0) {
            an_fail(err, "%s: out of memory", path);
            goto done;
        }
        if (b >= 0 && t->byte_id[b] < 0) t->byte_id[b] = id;
        p += len;
    }
    if (t->vocab.n < 3) {
        an_fail(err, "%s: only %d tokens; a llama2.c tokenizer has <unk>, <s>, </s> first", path, t->vocab.n);
        goto done;
    }
    if (an_vocab_index(&t->vocab)) {
        an_fail(err, "%s: out of memory", path);
        goto done;
    }
    t->kind = AN_TOK_SPM;
    t->space_text = " "; /* the export replaced "▁" with a space */
    t->prefix_mode = AN_PREFIX_TEXT_START;
    t->strip_leading_space = 1;
    t->byte_fallback = 1;
    t->unk = 0, t->bos = 1, t->eos = 2, t->add_bos = 1;
    if (an_build_score_merges(t, llama2c_mergeable, path, err)) goto done;
    rc = 0;
done:
    an_unmap_file(&m);
    return rc;
}
