/* Byte-level BPE training. Words (GPT-2 pre-tokenization) are counted once; pair counts are kept
 * up to date incrementally: a merge only revisits the words that contain its pair (each pair keeps
 * the list of words it occurs in), and a max-heap with lazy deletion picks the next pair. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "data/tokenizers/tokenizer.h"
#include "data/tokenizers/tokenizer_impl.h"
#include "data/tokenizers/unicode.h"

typedef struct word {
    int32_t *sym;
    int n;
    int64_t count;
    int last_merge; /* the merge that last rewrote this word, to visit it once per merge */
} word;

typedef struct pairinfo {
    int32_t a, b;
    int64_t count;
    int32_t *occ; /* words that contained the pair when it was counted (may go stale) */
    int n_occ, cap_occ;
} pairinfo;

typedef struct heap_item {
    int64_t count;
    int32_t a, b, pair;
} heap_item;

/* An open-addressing index from hashed 64-bit keys to entry numbers (linear probing, a power-of-two
 * size kept at most half full). */
typedef struct id_table {
    uint64_t *keys;
    int32_t *slot; /* -1: empty */
    size_t mask;
} id_table;

typedef struct trainer {
    word *words;
    int n_words, cap_words;
    id_table wtab; /* word text -> index while counting */
    char **wtext;
    size_t *wlen;
    pairinfo *pairs;
    int n_pairs, cap_pairs;
    id_table ptab; /* pair (a, b) -> index into pairs */
    heap_item *heap;
    int n_heap, cap_heap;
} trainer;

static uint64_t hash_str(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 31);
}

static uint64_t mix(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return k;
}

static int grow(void **p, int *cap, int need, size_t elem) {
    if (need <= *cap) return 0;
    int c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

/* Makes room for one more entry than the n there are, rebuilding at twice the size (entries
 * re-inserted under key_of) when the table would pass half full. */
static int id_table_reserve(id_table *t, int n, uint64_t (*key_of)(const trainer *, int), const trainer *tr) {
    if (t->keys && (size_t)(n + 1) * 2 <= t->mask + 1) return 0;
    size_t cap = t->keys ? (t->mask + 1) * 2 : 1 << 16;
    uint64_t *keys = malloc(cap * sizeof *keys);
    int32_t *slot = malloc(cap * sizeof *slot);
    if (!keys || !slot) {
        free(keys);
        free(slot);
        return -1;
    }
    memset(slot, 0xff, cap * sizeof *slot);
    for (int e = 0; e < n; e++) {
        uint64_t k = key_of(tr, e);
        size_t i = k & (cap - 1);
        while (slot[i] >= 0) i = (i + 1) & (cap - 1);
        keys[i] = k;
        slot[i] = e;
    }
    free(t->keys);
    free(t->slot);
    t->keys = keys;
    t->slot = slot;
    t->mask = cap - 1;
    return 0;
}

static void id_table_free(id_table *t) {
    free(t->keys);
    free(t->slot);
}

static uint64_t word_key(const trainer *tr, int w) { return hash_str(tr->wtext[w], tr->wlen[w]); }

/* mix is a bijection, so equal keys mean an equal pair */
static uint64_t pair_key_of(int32_t a, int32_t b) { return mix(((uint64_t)(uint32_t)a << 32) | (uint32_t)b); }
static uint64_t pair_key(const trainer *tr, int p) { return pair_key_of(tr->pairs[p].a, tr->pairs[p].b); }

static int count_word(trainer *tr, const char *s, size_t n) {
    if (id_table_reserve(&tr->wtab, tr->n_words, word_key, tr)) return -1;
    uint64_t h = hash_str(s, n);
    size_t i = h & tr->wtab.mask;
    for (; tr->wtab.slot[i] >= 0; i = (i + 1) & tr->wtab.mask) {
        int w = tr->wtab.slot[i];
        if (tr->wtab.keys[i] == h && tr->wlen[w] == n && memcmp(tr->wtext[w], s, n) == 0) {
            tr->words[w].count++;
            return 0;
        }
    }
    int cw = tr->cap_words;
    if (grow((void **)&tr->words, &cw, tr->n_words + 1, sizeof *tr->words)) return -1;
    int c2 = tr->cap_words;
    if (grow((void **)&tr->wtext, &c2, tr->n_words + 1, sizeof *tr->wtext)) return -1;
    int c3 = tr->cap_words;
    if (grow((void **)&tr->wlen, &c3, tr->n_words + 1, sizeof *tr->wlen)) return -1;
    tr->cap_words = cw;
    char *copy = malloc(n);
    int32_t *sym = malloc(n * sizeof *sym);
    if (!copy || !sym) {
        free(copy);
        free(sym);
        return -1;
    }
    memcpy(copy, s, n);
    for (size_t k = 0; k < n; k++) sym[k] = (unsigned char)s[k];
    int w = tr->n_words++;
    tr->words[w] = (word){sym, (int)n, 1, -1};
    tr->wtext[w] = copy;
    tr->wlen[w] = n;
    tr->wtab.keys[i] = h;
    tr->wtab.slot[i] = w;
    return 0;
}

/* The index of pair (a, b), created with count 0 when new; -1 on OOM. */
static int pair_index(trainer *tr, int32_t a, int32_t b) {
    if (id_table_reserve(&tr->ptab, tr->n_pairs, pair_key, tr)) return -1;
    uint64_t k = pair_key_of(a, b);
    size_t i = k & tr->ptab.mask;
    for (; tr->ptab.slot[i] >= 0; i = (i + 1) & tr->ptab.mask)
        if (tr->ptab.keys[i] == k) return tr->ptab.slot[i];
    if (grow((void **)&tr->pairs, &tr->cap_pairs, tr->n_pairs + 1, sizeof *tr->pairs)) return -1;
    int p = tr->n_pairs++;
    tr->pairs[p] = (pairinfo){a, b, 0, NULL, 0, 0};
    tr->ptab.keys[i] = k;
    tr->ptab.slot[i] = p;
    return p;
}

static int heap_better(const heap_item *x, const heap_item *y) {
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

static int heap_push(trainer *tr, int p) {
    if (grow((void **)&tr->heap, &tr->cap_heap, tr->n_heap + 1, sizeof *tr->heap)) return -1;
    heap_item it = {tr->pairs[p].count, tr->pairs[p].a, tr->pairs[p].b, p};
    int i = tr->n_heap++;
    while (i > 0 && heap_better(&it, &tr->heap[(i - 1) / 2])) {
        tr->heap[i] = tr->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    tr->heap[i] = it;
    return 0;
}

static heap_item heap_pop(trainer *tr) {
    heap_item top = tr->heap[0], last = tr->heap[--tr->n_heap];
    int i = 0, n = tr->n_heap;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, b = -1;
        const heap_item *best = &last;
        if (l < n && heap_better(&tr->heap[l], best)) b = l, best = &tr->heap[l];
        if (r < n && heap_better(&tr->heap[r], best)) b = r;
        if (b < 0) break;
        tr->heap[i] = tr->heap[b];
        i = b;
    }
    if (n > 0) tr->heap[i] = last;
    return top;
}

/* Adds delta occurrences of each adjacent pair of word w; records w in the lists of pairs that
 * contain token only_with (or of all pairs when only_with < 0). */
static int add_pairs(trainer *tr, int w, int64_t delta, int32_t only_with) {
    const word *wd = &tr->words[w];
    for (int i = 0; i + 1 < wd->n; i++) {
        int p = pair_index(tr, wd->sym[i], wd->sym[i + 1]);
        if (p < 0) return -1;
        pairinfo *pi = &tr->pairs[p];
        pi->count += delta;
        if (delta > 0 && (only_with < 0 || wd->sym[i] == only_with || wd->sym[i + 1] == only_with)) {
            if (pi->n_occ == 0 || pi->occ[pi->n_occ - 1] != w) {
                if (grow((void **)&pi->occ, &pi->cap_occ, pi->n_occ + 1, sizeof *pi->occ)) return -1;
                pi->occ[pi->n_occ++] = w;
            }
        }
    }
    return 0;
}

static void trainer_free(trainer *tr) {
    for (int w = 0; w < tr->n_words; w++) {
        free(tr->words[w].sym);
        free(tr->wtext[w]);
    }
    for (int p = 0; p < tr->n_pairs; p++) free(tr->pairs[p].occ);
    free(tr->words);
    free(tr->wtext);
    free(tr->wlen);
    id_table_free(&tr->wtab);
    free(tr->pairs);
    id_table_free(&tr->ptab);
    free(tr->heap);
}

/* Token strings in the byte-level alphabet, by id. */
typedef struct strtab {
    char **s;
    int n, cap;
} strtab;

static int strtab_add(strtab *t, const char *a, const char *b) {
    if (grow((void **)&t->s, &t->cap, t->n + 1, sizeof *t->s)) return -1;
    size_t la = strlen(a), lb = b ? strlen(b) : 0;
    char *s = malloc(la + lb + 1);
    if (!s) return -1;
    memcpy(s, a, la);
    if (b) memcpy(s + la, b, lb);
    s[la + lb] = 0;
    t->s[t->n++] = s;
    return 0;
}

static int write_outputs(const strtab *tok, const int32_t *ma, const int32_t *mb, int n_merges, int prefix_space,
                         const char *out_dir,
                         an_error *err) {
    int eot = tok->n;
    cJSON *root = cJSON_CreateObject(), *model, *vocab, *merges, *added, *tokobj;
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    added = cJSON_AddArrayToObject(root, "added_tokens");
    tokobj = cJSON_CreateObject();
    cJSON_AddNumberToObject(tokobj, "id", eot);
    cJSON_AddStringToObject(tokobj, "content", "<|endoftext|>");
    cJSON_AddFalseToObject(tokobj, "single_word");
    cJSON_AddFalseToObject(tokobj, "lstrip");
    cJSON_AddFalseToObject(tokobj, "rstrip");
    cJSON_AddFalseToObject(tokobj, "normalized");
    cJSON_AddTrueToObject(tokobj, "special");
    cJSON_AddItemToArray(added, tokobj);
    cJSON_AddNullToObject(root, "normalizer");
    const char *parts[] = {"pre_tokenizer", "post_processor", "decoder"};
    for (int k = 0; k < 3; k++) {
        cJSON *bl = cJSON_AddObjectToObject(root, parts[k]);
        cJSON_AddStringToObject(bl, "type", "ByteLevel");
        cJSON_AddBoolToObject(bl, "add_prefix_space", k == 2 || (k == 0 && prefix_space));
        cJSON_AddBoolToObject(bl, "trim_offsets", k != 1);
        cJSON_AddTrueToObject(bl, "use_regex");
    }
    model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddFalseToObject(model, "fuse_unk");
    cJSON_AddFalseToObject(model, "byte_fallback");
    cJSON_AddFalseToObject(model, "ignore_merges");
    vocab = cJSON_AddObjectToObject(model, "vocab");
    for (int id = 0; id < tok->n; id++) cJSON_AddNumberToObject(vocab, tok->s[id], id);
    cJSON_AddNumberToObject(vocab, "<|endoftext|>", eot);
    merges = cJSON_AddArrayToObject(model, "merges");
    for (int m = 0; m < n_merges; m++) {
        char *line = malloc(strlen(tok->s[ma[m]]) + strlen(tok->s[mb[m]]) + 2);
        if (!line) break;
        sprintf(line, "%s %s", tok->s[ma[m]], tok->s[mb[m]]);
        cJSON_AddItemToArray(merges, cJSON_CreateString(line));
        free(line);
    }
    char *json = cJSON_Print(root);
    cJSON_Delete(root);
    char path[4096];
    int rc = -1;
    if (!json) {
        an_fail(err, "%s: out of memory writing tokenizer.json", out_dir);
    } else if (an_path_join(path, sizeof path, out_dir, "tokenizer.json")) {
        an_fail(err, "%s: path too long", out_dir);
    } else if (an_write_file_atomic(path, json, strlen(json), err) == 0) {
        const char *cfg = "{\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\",\n"
                          "  \"bos_token\": \"<|endoftext|>\",\n  \"eos_token\": \"<|endoftext|>\",\n"
                          "  \"add_bos_token\": false,\n  \"add_eos_token\": false,\n"
                          "  \"clean_up_tokenization_spaces\": false\n}\n";
        if (an_path_join(path, sizeof path, out_dir, "tokenizer_config.json") == 0 &&
            an_write_file_atomic(path, cfg, strlen(cfg), err) == 0)
            rc = 0;
    }
    free(json);
    return rc;
}

int an_tokenizer_train_bytelevel(const char *const *texts, const size_t *lens, size_t n, int vocab_size,
                                 const char *out_dir, an_error *err) {
    return an_tokenizer_train_bytelevel_ex(texts, lens, n, vocab_size, 0, out_dir, err);
}

int an_tokenizer_train_bytelevel_ex(const char *const *texts, const size_t *lens, size_t n, int vocab_size,
                                    int add_prefix_space, const char *out_dir, an_error *err) {
    if (vocab_size < 257 || vocab_size > (1 << 24))
        return an_fail(err, "%s: vocabulary size %d must be in 257..%d (256 bytes and <|endoftext|> at least)",
                       out_dir, vocab_size, 1 << 24);
    trainer tr = {0};
    strtab tok = {0};
    int32_t *ma = NULL, *mb = NULL;
    int n_merges = 0, rc = -1;
    char *spaced = NULL; /* the text with the space the encoder will put before it */
    size_t spaced_cap = 0;
    for (size_t t = 0; t < n; t++) {
        const char *text = texts[t];
        size_t len = lens[t];
        if (add_prefix_space && len > 0 && text[0] != ' ') {
            if (len + 1 > spaced_cap) {
                char *b = realloc(spaced, len + 1);
                if (!b) goto oom;
                spaced = b;
                spaced_cap = len + 1;
            }
            spaced[0] = ' ';
            memcpy(spaced + 1, text, len);
            text = spaced;
            len++;
        }
        const unsigned char *s = (const unsigned char *)text;
        for (size_t i = 0; i < len;) {
            size_t j = an_gpt2_piece_end(s, len, i);
            if (count_word(&tr, text + i, j - i)) goto oom;
            i = j;
        }
    }
    free(spaced);
    spaced = NULL;
    for (int w = 0; w < tr.n_words; w++)
        if (add_pairs(&tr, w, tr.words[w].count, -1)) goto oom;
    for (int p = 0; p < tr.n_pairs; p++)
        if (tr.pairs[p].count > 0 && heap_push(&tr, p)) goto oom;
    uint32_t b2c[256];
    an_bytelevel_table(b2c);
    for (int b = 0; b < 256; b++) {
        char u[5] = {0};
        an_utf8_encode(b2c[b], u);
        if (strtab_add(&tok, u, NULL)) goto oom;
    }
    int max_merges = vocab_size - 257;
    ma = malloc((size_t)(max_merges + 1) * sizeof *ma);
    mb = malloc((size_t)(max_merges + 1) * sizeof *mb);
    if (!ma || !mb) goto oom;
    an_vocab index = {0}; /* token string -> id, to reuse an id when two merges make the same string */
    for (int id = 0; id < tok.n; id++)
        if (an_vocab_add(&index, tok.s[id], strlen(tok.s[id]), 0, AN_PIECE_NORMAL) < 0) goto oom_index;
    if (an_vocab_index(&index)) goto oom_index;
    while (tok.n < vocab_size - 1 && tr.n_heap > 0) {
        heap_item top = heap_pop(&tr);
        pairinfo *pi = &tr.pairs[top.pair];
        if (pi->count != top.count) { /* stale: counts only fall, so requeue at the current count */
            if (pi->count > 0 && heap_push(&tr, top.pair)) goto oom_index;
            continue;
        }
        if (pi->count <= 0) break;
        int32_t a = pi->a, b = pi->b;
        char *joined = malloc(strlen(tok.s[a]) + strlen(tok.s[b]) + 1);
        if (!joined) goto oom_index;
        strcpy(joined, tok.s[a]);
        strcat(joined, tok.s[b]);
        int32_t z = an_vocab_find(&index, joined, strlen(joined));
        if (z < 0) {
            z = tok.n;
            if (strtab_add(&tok, joined, NULL) || an_vocab_add(&index, joined, strlen(joined), 0, AN_PIECE_NORMAL) < 0) {
                free(joined);
                goto oom_index;
            }
        }
        free(joined);
        ma[n_merges] = a;
        mb[n_merges] = b;
        /* rewrite every word that may hold (a, b); the occurrence list is copied since add_pairs
         * may grow it */
        int n_occ = pi->n_occ;
        int32_t *occ = malloc((size_t)n_occ * sizeof *occ);
        if (!occ) goto oom_index;
        memcpy(occ, pi->occ, (size_t)n_occ * sizeof *occ);
        int32_t *touched = malloc((size_t)(n_occ + 1) * sizeof *touched);
        int n_touched = 0;
        if (!touched) {
            free(occ);
            goto oom_index;
        }
        for (int k = 0; k < n_occ; k++) {
            int w = occ[k];
            word *wd = &tr.words[w];
            if (wd->last_merge == n_merges) continue;
            int has = 0;
            for (int i = 0; i + 1 < wd->n && !has; i++) has = wd->sym[i] == a && wd->sym[i + 1] == b;
            if (!has) continue;
            wd->last_merge = n_merges;
            if (add_pairs(&tr, w, -wd->count, z)) goto oom_occ;
            int m = 0;
            for (int i = 0; i < wd->n; i++) {
                if (i + 1 < wd->n && wd->sym[i] == a && wd->sym[i + 1] == b) {
                    wd->sym[m++] = z;
                    i++;
                } else {
                    wd->sym[m++] = wd->sym[i];
                }
            }
            wd->n = m;
            if (add_pairs(&tr, w, wd->count, z)) goto oom_occ;
            touched[n_touched++] = w;
        }
        /* queue the pairs that contain the new token at their final counts */
        for (int k = 0; k < n_touched; k++) {
            word *wd = &tr.words[touched[k]];
            for (int i = 0; i + 1 < wd->n; i++) {
                if (wd->sym[i] != z && wd->sym[i + 1] != z) continue;
                int p = pair_index(&tr, wd->sym[i], wd->sym[i + 1]);
                if (p < 0 || heap_push(&tr, p)) goto oom_occ;
            }
        }
        free(occ);
        free(touched);
        n_merges++;
        continue;
    oom_occ:
        free(occ);
        free(touched);
        goto oom_index;
    }
    an_vocab_free(&index);
    rc = write_outputs(&tok, ma, mb, n_merges, add_prefix_space, out_dir, err);
    if (rc == 0) rc = tok.n + 1;
    goto done;
oom_index:
    an_vocab_free(&index);
oom:
    free(spaced);
    rc = an_fail(err, "%s: out of memory while training the tokenizer", out_dir);
done:
    for (int i = 0; i < tok.n; i++) free(tok.s[i]);
    free(tok.s);
    free(ma);
    free(mb);
    trainer_free(&tr);
    return rc;
}
