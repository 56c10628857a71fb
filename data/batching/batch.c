#include "data/batching/batch.h"

#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "data/prompts/template.h"

int an_batch_alloc(an_token_batch *b, const an_batch_opts *o, an_error *err) {
    memset(b, 0, sizeof *b);
    if (o->rows <= 0 || o->seq_len <= 0) return an_fail(err, "batch: rows %d and seq_len %d must be positive", o->rows, o->seq_len);
    size_t n = (size_t)o->rows * (size_t)o->seq_len;
    b->ids = malloc(n * sizeof *b->ids);
    b->targets = malloc(n * sizeof *b->targets);
    b->positions = malloc(n * sizeof *b->positions);
    b->seg_start = malloc(n * sizeof *b->seg_start);
    if (!b->ids || !b->targets || !b->positions || !b->seg_start) {
        an_batch_free(b);
        return an_fail(err, "batch: out of memory for %d x %d tokens", o->rows, o->seq_len);
    }
    return 0;
}

void an_batch_free(an_token_batch *b) {
    free(b->ids);
    free(b->targets);
    free(b->positions);
    free(b->seg_start);
    memset(b, 0, sizeof *b);
}

/* ---------- order ---------- */

typedef struct len_idx {
    size_t len, pos, idx;
} len_idx;

static int by_len_desc(const void *a, const void *b) {
    const len_idx *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos; /* stable: qsort is not */
}

int an_epoch_order(const an_samples *s, const an_batch_opts *o, uint64_t epoch, size_t *order, an_error *err) {
    size_t n = s->n;
    for (size_t i = 0; i < n; i++) order[i] = i;
    if (o->shuffle) {
        an_rng r;
        /* one stream per (seed, epoch), independent of how many epochs came before */
        an_rng_seed(&r, o->seed ^ (0xD1B54A32D192ED03ull * (epoch + 1)));
        for (size_t i = n; i > 1; i--) {
            size_t j = (size_t)an_rng_below(&r, i);
            size_t t = order[i - 1];
            order[i - 1] = order[j];
            order[j] = t;
        }
    }
    if (o->group_by_length) {
        size_t mb = o->mega_batch > 0 ? (size_t)o->mega_batch : 64;
        len_idx *tmp = malloc(mb * sizeof *tmp);
        if (!tmp) return an_fail(err, "batch: out of memory");
        for (size_t start = 0; start < n; start += mb) {
            size_t m = n - start < mb ? n - start : mb;
            for (size_t k = 0; k < m; k++) tmp[k] = (len_idx){an_sample_len(s, order[start + k]), k, order[start + k]};
            qsort(tmp, m, sizeof *tmp, by_len_desc);
            for (size_t k = 0; k < m; k++) order[start + k] = tmp[k].idx;
        }
        free(tmp);
    }
    return 0;
}

/* ---------- batcher ---------- */

int an_batcher_init(an_batcher *bt, const an_samples *s, const an_batch_opts *o, an_error *err) {
    memset(bt, 0, sizeof *bt);
    if (!s || s->n == 0) return an_fail(err, "batch: no samples");
    if (o->rows <= 0 || o->seq_len <= 0) return an_fail(err, "batch: rows %d and seq_len %d must be positive", o->rows, o->seq_len);
    if (o->mode != AN_BATCH_PACK && o->mode != AN_BATCH_PAD && o->mode != AN_BATCH_PACK_XTUNER)
        return an_fail(err, "batch: unknown mode %d", (int)o->mode);
    bt->s = s;
    bt->o = *o;
    bt->order = malloc(s->n * sizeof *bt->order);
    if (!bt->order) return an_fail(err, "batch: out of memory");
    return 0;
}

void an_batcher_free(an_batcher *bt) {
    free(bt->order);
    memset(bt, 0, sizeof *bt);
}

an_batch_cursor an_batcher_cursor(const an_batcher *bt) { return bt->cur; }

static int ensure_order(an_batcher *bt, an_error *err) {
    if (bt->have_order && bt->order_epoch == bt->cur.epoch) return 0;
    if (an_epoch_order(bt->s, &bt->o, bt->cur.epoch, bt->order, err)) return -1;
    bt->order_epoch = bt->cur.epoch;
    bt->have_order = 1;
    return 0;
}

int an_batcher_seek(an_batcher *bt, an_batch_cursor c, an_error *err) {
    int bad = c.next > bt->s->n || (c.offset && (bt->o.mode != AN_BATCH_PACK_XTUNER || c.next == bt->s->n));
    if (!bad) {
        bt->cur = c;
        if (c.offset) {
            if (ensure_order(bt, err)) return -1;
            bad = c.offset >= an_sample_len(bt->s, bt->order[c.next]);
        }
    }
    if (bad) {
        bt->cur = (an_batch_cursor){0, 0, 0};
        return an_fail(err, "batch: cursor (epoch %llu, sample %llu, offset %llu) does not fit these %zu samples",
                       (unsigned long long)c.epoch, (unsigned long long)c.next, (unsigned long long)c.offset,
                       bt->s->n);
    }
    return 0;
}

/* Padding from t0 to the end of the row: its own segment, no targets. */
static void pad_row(an_token_batch *b, int row, int t0, int32_t pad, int positions_continue) {
    for (int t = t0; t < b->T; t++) {
        size_t k = (size_t)row * b->T + t;
        b->ids[k] = pad;
        b->targets[k] = AN_IGNORE_INDEX;
        b->positions[k] = positions_continue ? t : t - t0;
        b->seg_start[k] = positions_continue ? 0 : t0;
    }
}

/* Places len tokens of sample idx (from token `from`) at row/t0 as one segment. */
static void place(an_token_batch *b, const an_samples *s, size_t idx, size_t from, int row, int t0, int len, int seg0,
                  int pos_from_row) {
    const int32_t *ids = s->ids + s->off[idx] + from, *labels = s->labels + s->off[idx] + from;
    b->n_tokens += (size_t)len;
    for (int j = 0; j < len; j++) {
        size_t k = (size_t)row * b->T + t0 + j;
        b->ids[k] = ids[j];
        b->targets[k] = j + 1 < len ? labels[j + 1] : AN_IGNORE_INDEX;
        b->positions[k] = pos_from_row ? t0 + j : j;
        b->seg_start[k] = seg0;
    }
}

static void count_targets(an_token_batch *b) {
    size_t n = 0, total = (size_t)b->B * b->T;
    for (size_t i = 0; i < total; i++) n += b->targets[i] != AN_IGNORE_INDEX;
    b->n_targets = n;
}

static void next_pack(an_batcher *bt, an_token_batch *b) {
    const an_samples *s = bt->s;
    int T = bt->o.seq_len;
    b->T = T;
    for (int row = 0; row < b->B; row++) {
        int used = 0;
        while (bt->cur.next < s->n) {
            size_t idx = bt->order[bt->cur.next];
            size_t len = an_sample_len(s, idx);
            if (len > (size_t)T) len = (size_t)T; /* longer than a row: cut, as max_len would */
            if (used + (int)len > T) break;
            place(b, s, idx, 0, row, used, (int)len, used, 0);
            used += (int)len;
            b->n_samples++;
            bt->cur.next++;
        }
        pad_row(b, row, used, bt->o.pad_id, 0);
    }
}

static void next_pad(an_batcher *bt, an_token_batch *b) {
    const an_samples *s = bt->s;
    size_t longest = 1;
    for (int row = 0; row < b->B && bt->cur.next + row < s->n; row++) {
        size_t len = an_sample_len(s, bt->order[bt->cur.next + row]);
        if (len > longest) longest = len;
    }
    if (longest > (size_t)bt->o.seq_len) longest = (size_t)bt->o.seq_len;
    b->T = (int)longest;
    for (int row = 0; row < b->B; row++) {
        int len = 0;
        if (bt->cur.next < s->n) {
            size_t idx = bt->order[bt->cur.next++];
            size_t l = an_sample_len(s, idx);
            len = (int)(l < longest ? l : longest);
            place(b, s, idx, 0, row, 0, len, 0, 1);
            b->n_samples++;
        }
        pad_row(b, row, len, bt->o.pad_id, 1);
    }
}

/* XTuner: the row is a window on the stream of all samples; the shift to targets happens within the
 * row, as HF does for each packed chunk, so a row's last token has no target. */
static void next_xtuner(an_batcher *bt, an_token_batch *b) {
    const an_samples *s = bt->s;
    int T = bt->o.seq_len;
    b->T = T;
    for (int row = 0; row < b->B; row++) {
        int used = 0;
        while (used < T && bt->cur.next < s->n) {
            size_t idx = bt->order[bt->cur.next];
            size_t len = an_sample_len(s, idx), left = len - bt->cur.offset;
            size_t take = left < (size_t)(T - used) ? left : (size_t)(T - used);
            const int32_t *ids = s->ids + s->off[idx] + bt->cur.offset;
            const int32_t *labels = s->labels + s->off[idx] + bt->cur.offset;
            for (size_t j = 0; j < take; j++) {
                size_t k = (size_t)row * T + used + j;
                b->ids[k] = ids[j];
                b->targets[k] = labels[j]; /* unshifted for now */
                b->positions[k] = used + (int)j;
                b->seg_start[k] = 0;
            }
            if (bt->cur.offset == 0) b->n_samples++;
            b->n_tokens += take;
            used += (int)take;
            bt->cur.offset += take;
            if (bt->cur.offset == len) {
                bt->cur.next++;
                bt->cur.offset = 0;
            }
        }
        size_t base = (size_t)row * T;
        for (int t = 0; t + 1 < used; t++) b->targets[base + t] = b->targets[base + t + 1];
        if (used > 0) b->targets[base + used - 1] = AN_IGNORE_INDEX;
        pad_row(b, row, used, bt->o.pad_id, 1);
    }
}

int an_batcher_next(an_batcher *bt, an_token_batch *b, an_error *err) {
    if (ensure_order(bt, err)) return -1;
    b->B = bt->o.rows;
    b->n_samples = 0;
    b->n_tokens = 0;
    b->epoch = bt->cur.epoch;
    if (bt->o.mode == AN_BATCH_PAD) next_pad(bt, b);
    else if (bt->o.mode == AN_BATCH_PACK_XTUNER) next_xtuner(bt, b);
    else next_pack(bt, b);
    count_targets(b);
    b->epoch_end = bt->cur.next >= bt->s->n;
    if (b->epoch_end) {
        bt->cur.epoch++;
        bt->cur.next = 0;
        bt->cur.offset = 0;
    }
    return 0;
}
