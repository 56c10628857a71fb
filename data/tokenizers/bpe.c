/* The BPE core shared by every tokenizer kind: vocabulary index, merge table, merge loop. */
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "data/tokenizers/tokenizer_impl.h"

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

int an_vocab_add(an_vocab *v, const char *s, size_t len, float score, int type) {
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 1024;
        uint32_t *off = realloc(v->off, cap * sizeof *off);
        if (off) v->off = off;
        uint32_t *ln = realloc(v->len, cap * sizeof *ln);
        if (ln) v->len = ln;
        float *sc = realloc(v->score, cap * sizeof *sc);
        if (sc) v->score = sc;
        uint8_t *ty = realloc(v->type, cap * sizeof *ty);
        if (ty) v->type = ty;
        if (!off || !ln || !sc || !ty) return -1;
        v->cap = cap;
    }
    if (v->arena_len + len + 1 > v->arena_cap || v->arena_len + len + 1 > UINT32_MAX) {
        size_t cap = v->arena_cap ? v->arena_cap : 65536;
        while (cap < v->arena_len + len + 1) cap *= 2;
        if (cap > UINT32_MAX) return -1;
        char *a = realloc(v->arena, cap);
        if (!a) return -1;
        v->arena = a;
        v->arena_cap = cap;
    }
    memcpy(v->arena + v->arena_len, s, len);
    v->arena[v->arena_len + len] = 0;
    int id = v->n++;
    v->off[id] = (uint32_t)v->arena_len;
    v->len[id] = (uint32_t)len;
    v->score[id] = score;
    v->type[id] = (uint8_t)type;
    v->arena_len += len + 1;
    if (v->slots) { /* keep an existing index current */
        if ((size_t)v->n * 2 > v->mask + 1) {
            if (an_vocab_index(v)) return -1;
        } else {
            size_t i = hash_bytes(s, len) & v->mask;
            for (; v->slots[i] >= 0; i = (i + 1) & v->mask) {
                int32_t o = v->slots[i];
                if (v->len[o] == len && memcmp(v->arena + v->off[o], v->arena + v->off[id], len) == 0) return id;
            }
            v->slots[i] = id;
        }
    }
    return id;
}

int an_vocab_set_text(an_vocab *v, int32_t id, const char *s, size_t len) {
    int n = v->n;
    float sc = v->score[id];
    int ty = v->type[id];
    /* append a scratch entry to reuse the growth logic, then move its text to id */
    int tmp = an_vocab_add(v, s, len, sc, ty);
    if (tmp < 0) return -1;
    v->off[id] = v->off[tmp];
    v->len[id] = v->len[tmp];
    v->n = n;
    return v->slots ? an_vocab_index(v) : 0;
}

int an_vocab_index(an_vocab *v) {
    size_t cap = 16;
    while (cap < (size_t)v->n * 2) cap *= 2;
    int32_t *slots = malloc(cap * sizeof *slots);
    if (!slots) return -1;
    memset(slots, 0xff, cap * sizeof *slots);
    for (int id = 0; id < v->n; id++) {
        const char *s = v->arena + v->off[id];
        size_t len = v->len[id], i = hash_bytes(s, len) & (cap - 1);
        int dup = 0;
        for (; slots[i] >= 0; i = (i + 1) & (cap - 1)) {
            int32_t o = slots[i];
            if (v->len[o] == len && memcmp(v->arena + v->off[o], s, len) == 0) {
                dup = 1;
                break;
            }
        }
        if (!dup) slots[i] = id;
    }
    free(v->slots);
    v->slots = slots;
    v->mask = cap - 1;
    return 0;
}

int32_t an_vocab_find(const an_vocab *v, const char *s, size_t len) {
    if (!v->slots) return -1;
    for (size_t i = hash_bytes(s, len) & v->mask; v->slots[i] >= 0; i = (i + 1) & v->mask) {
        int32_t o = v->slots[i];
        if (v->len[o] == len && memcmp(v->arena + v->off[o], s, len) == 0) return o;
    }
    return -1;
}

void an_vocab_free(an_vocab *v) {
    free(v->arena);
    free(v->off);
    free(v->len);
    free(v->score);
    free(v->type);
    free(v->slots);
    memset(v, 0, sizeof *v);
}

static inline uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }
static inline size_t pair_hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (size_t)k;
}

static int pairmap_grow(an_pairmap *m) {
    size_t cap = m->keys ? (m->mask + 1) * 2 : 1024;
    uint64_t *keys = malloc(cap * sizeof *keys);
    int32_t *merged = malloc(cap * sizeof *merged);
    float *prio = malloc(cap * sizeof *prio);
    if (!keys || !merged || !prio) {
        free(keys);
        free(merged);
        free(prio);
        return -1;
    }
    memset(keys, 0xff, cap * sizeof *keys);
    if (m->keys) {
        for (size_t i = 0; i <= m->mask; i++) {
            if (m->keys[i] == UINT64_MAX) continue;
            size_t j = pair_hash(m->keys[i]) & (cap - 1);
            while (keys[j] != UINT64_MAX) j = (j + 1) & (cap - 1);
            keys[j] = m->keys[i];
            merged[j] = m->merged[i];
            prio[j] = m->prio[i];
        }
    }
    free(m->keys);
    free(m->merged);
    free(m->prio);
    m->keys = keys;
    m->merged = merged;
    m->prio = prio;
    m->mask = cap - 1;
    return 0;
}

int an_pairmap_put(an_pairmap *m, int32_t a, int32_t b, int32_t merged, float prio) {
    if (!m->keys || (m->n + 1) * 2 > m->mask + 1)
        if (pairmap_grow(m)) return -1;
    uint64_t k = pair_key(a, b);
    size_t i = pair_hash(k) & m->mask;
    while (m->keys[i] != UINT64_MAX && m->keys[i] != k) i = (i + 1) & m->mask;
    if (m->keys[i] == UINT64_MAX) m->n++;
    m->keys[i] = k;
    m->merged[i] = merged;
    m->prio[i] = prio;
    return 0;
}

int an_pairmap_get(const an_pairmap *m, int32_t a, int32_t b, int32_t *merged, float *prio) {
    if (!m->keys) return 0;
    uint64_t k = pair_key(a, b);
    for (size_t i = pair_hash(k) & m->mask; m->keys[i] != UINT64_MAX; i = (i + 1) & m->mask) {
        if (m->keys[i] == k) {
            *merged = m->merged[i];
            *prio = m->prio[i];
            return 1;
        }
    }
    return 0;
}

void an_pairmap_free(an_pairmap *m) {
    free(m->keys);
    free(m->merged);
    free(m->prio);
    memset(m, 0, sizeof *m);
}

void an_bpe_scratch_free(an_bpe_scratch *s) {
    free(s->buf);
    s->buf = NULL;
    s->cap = 0;
}

static void *scratch(an_bpe_scratch *s, size_t need) {
    if (need > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < need) cap *= 2;
        void *b = realloc(s->buf, cap);
        if (!b) return NULL;
        s->buf = b;
        s->cap = cap;
    }
    return s->buf;
}

/* Short words (the usual case after pre-tokenization): rescan for the best pair each round.
 * prio[i] belongs to the pair (ids[i], ids[i+1]); -FLT_MAX marks no merge. */
static int merge_short(const an_pairmap *m, int32_t *ids, int n, an_bpe_scratch *s) {
    float *prio = scratch(s, (size_t)n * (sizeof(float) + sizeof(int32_t)));
    if (!prio) return -1;
    int32_t *to = (int32_t *)(prio + n);
    for (int i = 0; i + 1 < n; i++)
        if (!an_pairmap_get(m, ids[i], ids[i + 1], &to[i], &prio[i])) prio[i] = -FLT_MAX;
    while (n > 1) {
        int best = -1;
        float bp = -FLT_MAX;
        for (int i = 0; i + 1 < n; i++)
            if (prio[i] > bp) bp = prio[i], best = i;
        if (best < 0) break;
        ids[best] = to[best];
        memmove(ids + best + 1, ids + best + 2, (size_t)(n - best - 2) * sizeof *ids);
        memmove(prio + best + 1, prio + best + 2, (size_t)(n - best - 2) * sizeof *prio);
        memmove(to + best + 1, to + best + 2, (size_t)(n - best - 2) * sizeof *to);
        n--;
        if (best > 0 && !an_pairmap_get(m, ids[best - 1], ids[best], &to[best - 1], &prio[best - 1]))
            prio[best - 1] = -FLT_MAX;
        if (best + 1 < n) {
            if (!an_pairmap_get(m, ids[best], ids[best + 1], &to[best], &prio[best])) prio[best] = -FLT_MAX;
        }
    }
    return n;
}

/* Long sequences (a whole text when there is no pre-tokenizer): a doubly linked list of symbols
 * and a binary max-heap of candidate pairs; stale entries are skipped when popped. */
typedef struct cand {
    float prio;
    int32_t pos, left, right;
} cand;

static int cand_better(const cand *a, const cand *b) {
    return a->prio > b->prio || (a->prio == b->prio && a->pos < b->pos);
}

static void heap_push(cand *h, int *nh, cand c) {
    int i = (*nh)++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!cand_better(&c, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static cand heap_pop(cand *h, int *nh) {
    cand top = h[0], last = h[--*nh];
    int i = 0, n = *nh;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, b = i;
        const cand *bc = &last;
        if (l < n && cand_better(&h[l], bc)) b = l, bc = &h[l];
        if (r < n && cand_better(&h[r], bc)) b = r;
        if (b == i) break;
        h[i] = h[b];
        i = b;
    }
    if (n > 0) h[i] = last;
    return top;
}

static int merge_long(const an_pairmap *m, int32_t *ids, int n, an_bpe_scratch *s) {
    /* every merge adds at most two candidates, so the heap never exceeds 3n */
    size_t need = (size_t)n * 2 * sizeof(int32_t) + (size_t)n * 3 * sizeof(cand);
    char *buf = scratch(s, need);
    if (!buf) return -1;
    cand *heap = (cand *)buf;
    int32_t *prev = (int32_t *)(heap + 3 * (size_t)n), *next = prev + n;
    int nh = 0;
    for (int i = 0; i < n; i++) {
        prev[i] = i - 1;
        next[i] = i + 1 < n ? i + 1 : -1;
    }
    for (int i = 0; i + 1 < n; i++) {
        cand c = {0, i, ids[i], ids[i + 1]};
        int32_t to;
        if (an_pairmap_get(m, ids[i], ids[i + 1], &to, &c.prio)) heap_push(heap, &nh, c);
    }
    while (nh > 0) {
        cand c = heap_pop(heap, &nh);
        int i = c.pos, j = next[i];
        if (ids[i] != c.left || j < 0 || ids[j] != c.right) continue; /* stale */
        int32_t to = -1;
        float pr;
        if (!an_pairmap_get(m, c.left, c.right, &to, &pr)) continue;
        ids[i] = to;
        ids[j] = -1; /* dead */
        next[i] = next[j];
        if (next[j] >= 0) prev[next[j]] = i;
        if (prev[i] >= 0) {
            cand d = {0, prev[i], ids[prev[i]], to};
            int32_t t2;
            if (an_pairmap_get(m, d.left, d.right, &t2, &d.prio)) heap_push(heap, &nh, d);
        }
        if (next[i] >= 0) {
            cand d = {0, i, to, ids[next[i]]};
            int32_t t2;
            if (an_pairmap_get(m, d.left, d.right, &t2, &d.prio)) heap_push(heap, &nh, d);
        }
    }
    int k = 0;
    for (int i = 0; i >= 0; i = next[i]) ids[k++] = ids[i];
    return k;
}

int an_bpe_merge(const an_pairmap *m, int32_t *ids, int n, an_bpe_scratch *s) {
    if (n < 2) return n;
    return n <= 48 ? merge_short(m, ids, n, s) : merge_long(m, ids, n, s);
}

void an_bytelevel_table(uint32_t byte_to_cp[256]) {
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        byte_to_cp[b] = printable ? (uint32_t)b : (uint32_t)(256 + extra++);
    }
}

int an_parse_byte_piece(const char *s, size_t len) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}
