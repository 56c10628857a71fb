/* The trainer's data: pairs, split, tokenizer, template, samples, batchers (see train/data_pipeline.h). */
#include "train/data_pipeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/rng.h"
#include "data/batching/batch.h"
#include "data/pairs/pairs.h"
#include "data/batching/sample.h"
#include "data/pairs/split.h"
#include "data/prompts/subjects.h"
#include "data/prompts/template.h"
#include "data/batching/token_cache.h"
#include "data/tokenizers/tokenizer.h"
#include "infer/retrieval_pairs.h"

struct an_train_data {
    an_tokenizer *tok;
    an_template tmpl;
    int have_tmpl;
    an_samples train, val;
    an_batcher bt, val_bt;
    int have_bt, have_val_bt;
    an_token_batch batch;      /* training batch buffers */
    an_token_batch val_batch;  /* validation batch buffers */
    an_retrieval *retr;        /* data.retrieve > 0: the training pairs' index, else NULL */
    size_t val_max, val_done;
    int val_finished;
};

static an_pairs_format pairs_format(an_recipe_data_format f) {
    switch (f) {
    case AN_DATA_JSONL: return AN_FORMAT_JSONL;
    case AN_DATA_JSON: return AN_FORMAT_JSON;
    case AN_DATA_CSV: return AN_FORMAT_CSV;
    default: return AN_FORMAT_AUTO;
    }
}

static an_split_by split_by(an_recipe_group_by g) {
    switch (g) {
    case AN_GROUP_NEGATIVE: return AN_SPLIT_BY_NEGATIVE;
    case AN_GROUP_PROMPT: return AN_SPLIT_BY_PROMPT;
    case AN_GROUP_PAIR: return AN_SPLIT_BY_PAIR;
    default: return AN_SPLIT_BY_SOURCE;
    }
}

static int read_files(const an_recipe *r, const char *const *files, int n, an_pairs *out, an_data_report *rep,
                      an_error *err) {
    an_read_opts opts = {0};
    opts.format = pairs_format(r->data.format);
    for (int i = 0; i < n; i++) {
        an_read_report rr;
        memset(&rr, 0, sizeof rr);
        if (an_pairs_read(out, files[i], &opts, &rr, err)) return -1;
        if (rep) {
            rep->skipped += rr.skipped;
            if (!rep->first_skip[0] && rr.n_reasons > 0) snprintf(rep->first_skip, sizeof rep->first_skip, "%s", rr.reasons[0]);
        }
    }
    if (!r->data.subjects[0]) return 0;
    /* Style templates: fill the placeholder with subjects before the split (copies share the source). */
    an_subjects subjects;
    if (an_subjects_read(&subjects, r->data.subjects, err)) return -1;
    int rc = an_pairs_fill_subjects(out, &subjects, r->data.subjects_per_pair, (uint64_t)r->data.shuffle_seed, err);
    an_subjects_free(&subjects);
    return rc;
}

/* Drops pairs whose negative is empty or blank: they would teach the model to write nothing (style
 * collections hold many: AI-Horde styles without a fixed negative part). */
static size_t drop_empty_negatives(an_pairs *p) {
    size_t k = 0, dropped = 0;
    for (size_t i = 0; i < p->n; i++) {
        const char *s = p->v[i].negative;
        while (s && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == ',')) s++;
        if (s && *s) {
            p->v[k++] = p->v[i];
            continue;
        }
        free(p->v[i].prompt);
        free(p->v[i].negative);
        free(p->v[i].source);
        dropped++;
    }
    p->n = k;
    return dropped;
}

/* Training and validation pairs: data.val when given, else the split of data.train by group. */
static int read_pairs(const an_recipe *r, an_pairs *train, an_pairs *val, an_data_report *rep, an_error *err) {
    an_pairs all = {0};
    memset(train, 0, sizeof *train);
    memset(val, 0, sizeof *val);
    if (r->data.train.n == 0) return an_fail(err, "recipe: data.train names no file");
    if (read_files(r, (const char *const *)r->data.train.v, r->data.train.n, &all, rep, err)) goto fail;
    size_t empty = drop_empty_negatives(&all);
    if (rep) rep->empty_negatives = empty;
    if (all.n == 0) {
        an_fail(err, "%s: no usable pair: every negative prompt is empty", r->data.train.v[0]);
        goto fail;
    }
    if (r->data.val[0]) {
        const char *v = r->data.val;
        *train = all;
        memset(&all, 0, sizeof all);
        if (read_files(r, &v, 1, val, rep, err)) goto fail;
        empty = drop_empty_negatives(val);
        if (rep) rep->empty_negatives += empty;
    } else if (r->data.val_fraction > 0) {
        if (an_pairs_split(&all, r->data.val_fraction, split_by(r->data.group_by), (uint64_t)r->data.shuffle_seed, train,
                           val, err))
            goto fail;
        an_pairs_free(&all);
        if (train->n == 0) {
            an_fail(err, "%s: the validation split (data.val_fraction %g) took every pair; no training data is left",
                    r->data.train.v[0], r->data.val_fraction);
            goto fail;
        }
    } else {
        *train = all;
    }
    return 0;
fail:
    an_pairs_free(&all);
    an_pairs_free(train);
    an_pairs_free(val);
    return -1;
}

int an_train_texts_load(const an_recipe *r, an_train_texts *out, an_error *err) {
    memset(out, 0, sizeof *out);
    an_pairs *train = calloc(1, sizeof *train), val = {0};
    if (!train) return an_fail(err, "trainer: out of memory");
    if (read_pairs(r, train, &val, NULL, err)) {
        free(train);
        return -1;
    }
    an_pairs_free(&val);
    out->pairs = train;
    out->text = malloc(2 * train->n * sizeof *out->text + 1);
    out->len = malloc(2 * train->n * sizeof *out->len + 1);
    if (!out->text || !out->len) {
        an_train_texts_free(out);
        return an_fail(err, "trainer: out of memory");
    }
    for (size_t i = 0; i < train->n; i++) {
        char *s[2] = {train->v[i].prompt, train->v[i].negative};
        for (int k = 0; k < 2; k++) {
            if (!s[k] || !s[k][0]) continue;
            out->text[out->n] = s[k];
            out->len[out->n++] = strlen(s[k]);
        }
    }
    return 0;
}

void an_train_texts_free(an_train_texts *t) {
    if (t->pairs) {
        an_pairs_free(t->pairs);
        free(t->pairs);
    }
    free(t->text);
    free(t->len);
    memset(t, 0, sizeof *t);
}

/* Whether training pair i goes without neighbours (data.retrieve_dropout): the counter-based uniform of
 * (seed, i) (core/rng.h) against the share, so the choice is the same in every run of the recipe. */
static int without_neighbours(size_t i, int seed, double share) {
    return share > 0 && an_hash_uniform((uint64_t)(unsigned)seed, (uint64_t)i) < share;
}

/* The pairs with each prompt replaced by the retrieval-augmented input (infer/retrieval_pairs.h): the
 * negatives of the k most similar training prompts from other sources than the pair's own, as at test
 * time, where the held-out sources are unseen (a training pair is never its own neighbour). A sample
 * longer than max_len with them loses neighbours, the least similar first, until it fits (data.max_length
 * cuts from the right, so otherwise the neighbours would push the target out). out's prompts are its
 * own; negatives and sources point into pairs. */
static int augment_pairs(const an_retrieval *retr, const an_pairs *pairs, int is_train, int k, double dropout,
                         int seed, const an_template *tmpl, const an_encoder *enc, const char *system, size_t max_len,
                         an_pairs *out, size_t *fewer, an_error *err) {
    memset(out, 0, sizeof *out);
    out->v = calloc(pairs->n ? pairs->n : 1, sizeof *out->v);
    if (!out->v) return an_fail(err, "trainer: out of memory");
    long idx[AN_RETRIEVAL_MAX_K];
    an_ids ids = {0}, labels = {0};
    int rc = 0;
    for (size_t i = 0; i < pairs->n && !rc; i++) {
        const an_pair *p = &pairs->v[i];
        /* the training pairs are the index's documents, in the same order */
        int none = is_train && without_neighbours(i, seed, dropout);
        long m = none ? 0 : an_retrieval_neighbours(retr, p->prompt, p->source, is_train ? (long)i : -1, k, idx, NULL, err);
        char *in = NULL;
        long found = m;
        for (rc = m < 0 ? -1 : 0; !rc; m--) {
            if (!(in = an_retrieval_input(retr, p->prompt, idx, m, err))) {
                rc = -1;
                break;
            }
            if (m == 0 || !max_len) break;
            if (an_template_encode_sample(tmpl, enc, in, p->negative, system, 0, &ids, &labels, err)) rc = -1;
            else if (ids.n <= max_len) break;
            free(in);
            in = NULL;
        }
        if (rc) break;
        if (m < found) ++*fewer;
        out->v[i] = (an_pair){in, p->negative, p->source};
        out->n = i + 1;
    }
    an_ids_free(&ids);
    an_ids_free(&labels);
    if (rc) {
        for (size_t j = 0; j < out->n; j++) free(out->v[j].prompt);
        free(out->v);
        memset(out, 0, sizeof *out);
        return -1;
    }
    out->cap = out->n;
    return 0;
}

/* Samples of one side through the token cache. The cache key covers the data files, template,
 * tokenizer, max_length and system text; the split parameters and the side are mixed in here, since
 * the pairs encoded depend on them too. */
static int load_samples(const an_recipe *r, const char *side, const char *const *files, size_t n_files,
                        const an_template *tmpl, const char *tokenizer_path, const an_encoder *enc,
                        const an_pairs *pairs, const an_retrieval *retr, const char *cache_dir, an_samples *out,
                        int *hit, size_t *dropped, size_t *fewer, an_error *err) {
    memset(out, 0, sizeof *out);
    *hit = 0;
    *dropped = 0;
    an_cache_inputs in = {files, n_files, tmpl, tokenizer_path, (size_t)r->data.max_length, r->data.system};
    char path[2048];
    uint64_t key = 0;
    if (cache_dir) {
        char name[64];
        snprintf(name, sizeof name, "tokens-%s.bin", side);
        if (an_path_join(path, sizeof path, cache_dir, name)) return an_fail(err, "%s: path too long", cache_dir);
        if (an_token_cache_key(&in, &key, err)) return -1;
        an_hasher h;
        an_hasher_init(&h);
        an_hasher_u64(&h, key);
        an_hasher_str(&h, side);
        an_hasher_str(&h, r->data.val);
        double vf = r->data.val_fraction;
        uint64_t bits;
        memcpy(&bits, &vf, sizeof bits);
        an_hasher_u64(&h, bits);
        an_hasher_u64(&h, (uint64_t)r->data.group_by);
        an_hasher_u64(&h, (uint64_t)r->data.shuffle_seed);
        an_hasher_u64(&h, (uint64_t)r->data.subjects_per_pair);
        if (r->data.subjects[0] && an_hasher_file(&h, r->data.subjects, err)) return -1;
        if (retr) { /* mixed in only when on, so the keys of runs without retrieval stay as they were */
            an_hasher_str(&h, "retrieve");
            an_hasher_u64(&h, (uint64_t)r->data.retrieve);
            an_hasher_u64(&h, (uint64_t)r->data.retrieve_max_tags);
            if (r->data.retrieve_dropout > 0) { /* likewise: keys without it stay as they were */
                double rd = r->data.retrieve_dropout;
                memcpy(&bits, &rd, sizeof bits);
                /* the name changed with the hash that picks the rows (its own splitmix64 before
                 * an_hash_uniform): a cache of the old picks must not be taken for the new */
                an_hasher_str(&h, "retrieve_dropout/an_hash_uniform");
                an_hasher_u64(&h, bits);
            }
        }
        key = an_hasher_final(&h);
        int rc = an_token_cache_load(path, key, out, err);
        if (rc < 0) return -1;
        if (rc == 1) {
            *hit = 1;
            return 0;
        }
    }
    an_pairs aug = {0};
    if (retr && augment_pairs(retr, pairs, !strcmp(side, "train"), r->data.retrieve, r->data.retrieve_dropout,
                              r->data.shuffle_seed, tmpl, enc, r->data.system, (size_t)r->data.max_length, &aug, fewer,
                              err))
        return -1;
    int rc = an_samples_from_pairs(tmpl, enc, retr ? &aug : pairs, r->data.system, (size_t)r->data.max_length, out,
                                   dropped, err);
    for (size_t i = 0; i < aug.n; i++) free(aug.v[i].prompt);
    free(aug.v);
    if (rc) {
        an_samples_free(out);
        return -1;
    }
    if (cache_dir && an_token_cache_save(path, key, out, err)) {
        an_samples_free(out);
        return -1;
    }
    return 0;
}

static an_batch_mode batch_mode(an_pack_mode p) {
    switch (p) {
    case AN_PACK_PAD: return AN_BATCH_PAD;
    case AN_PACK_XTUNER: return AN_BATCH_PACK_XTUNER;
    default: return AN_BATCH_PACK;
    }
}

static an_batch_opts batch_opts(const an_recipe *r, int32_t pad_id, int shuffle) {
    an_batch_opts o;
    memset(&o, 0, sizeof o);
    o.mode = batch_mode(r->data.pack);
    o.rows = r->train.batch_size;
    o.seq_len = r->train.seq_len;
    o.pad_id = pad_id;
    o.seed = (uint64_t)r->data.shuffle_seed;
    o.shuffle = shuffle;
    return o;
}

/* Rows of one epoch: the batches the batcher makes of epoch 0, times the batch size. */
static long count_rows(const an_samples *s, const an_batch_opts *o, an_error *err) {
    an_batcher bt;
    an_token_batch b;
    if (an_batch_alloc(&b, o, err)) return -1;
    if (an_batcher_init(&bt, s, o, err)) {
        an_batch_free(&b);
        return -1;
    }
    long batches = 0;
    int rc = 0;
    do {
        rc = an_batcher_next(&bt, &b, err);
        batches++;
    } while (rc == 0 && !b.epoch_end);
    an_batcher_free(&bt);
    an_batch_free(&b);
    return rc ? -1 : batches * o->rows;
}

an_train_data *an_train_data_load(const an_recipe *r, const char *tokenizer_path, const char *cache_dir,
                                  an_data_report *rep_out, an_error *err) {
    an_data_report rep;
    memset(&rep, 0, sizeof rep);
    an_train_data *d = calloc(1, sizeof *d);
    if (!d) {
        an_fail(err, "trainer: out of memory");
        return NULL;
    }
    an_pairs train = {0}, val = {0};
    if (read_pairs(r, &train, &val, &rep, err)) goto fail;
    rep.train_pairs = train.n;
    rep.val_pairs = val.n;
    d->tok = an_tokenizer_load(tokenizer_path, err);
    if (!d->tok) goto fail;
    if (an_template_builtin(r->data.template_name, &d->tmpl, err)) goto fail;
    d->have_tmpl = 1;
    an_encoder enc = an_encoder_of(d->tok);
    if (r->data.retrieve > 0) {
        const char **cols = malloc(3 * (train.n ? train.n : 1) * sizeof *cols);
        if (!cols) {
            an_fail(err, "trainer: out of memory");
            goto fail;
        }
        for (size_t i = 0; i < train.n; i++)
            cols[i] = train.v[i].prompt, cols[train.n + i] = train.v[i].negative, cols[2 * train.n + i] = train.v[i].source;
        d->retr = an_retrieval_build(cols, cols + train.n, cols + 2 * train.n, train.n, r->data.retrieve,
                                     r->data.retrieve_max_tags, err);
        free(cols);
        if (!d->retr) goto fail;
    }
    int hit = 0;
    size_t dropped = 0;
    if (load_samples(r, "train", (const char *const *)r->data.train.v, (size_t)r->data.train.n, &d->tmpl, tokenizer_path,
                     &enc, &train, d->retr, cache_dir, &d->train, &hit, &dropped, &rep.retrieval_fewer, err))
        goto fail;
    rep.cache_hit = hit;
    rep.dropped = dropped;
    if (d->train.n == 0) {
        an_fail(err, "%s: no usable training sample: all %zu pairs lost their negative prompt (empty, or cut off by "
                     "data.max_length %d)",
                r->data.train.v[0], train.n, r->data.max_length);
        goto fail;
    }
    if (val.n) {
        const char *const *vf = r->data.val[0] ? (const char *const[]){r->data.val} : (const char *const *)r->data.train.v;
        size_t nvf = r->data.val[0] ? 1 : (size_t)r->data.train.n;
        size_t val_fewer = 0;
        if (load_samples(r, "val", vf, nvf, &d->tmpl, tokenizer_path, &enc, &val, d->retr, cache_dir, &d->val, &hit,
                         &dropped, &val_fewer, err))
            goto fail;
        rep.dropped += dropped;
    }
    rep.train_samples = d->train.n;
    rep.val_samples = d->val.n;
    rep.train_tokens = (long long)d->train.n_tokens;

    int32_t pad = an_tokenizer_eos(d->tok);
    if (pad < 0) pad = 0;
    an_batch_opts o = batch_opts(r, pad, 1);
    if (an_batch_alloc(&d->batch, &o, err) || an_batcher_init(&d->bt, &d->train, &o, err)) goto fail;
    d->have_bt = 1;
    rep.rows_per_epoch = count_rows(&d->train, &o, err);
    if (rep.rows_per_epoch < 0) goto fail;
    if (d->val.n) {
        an_batch_opts vo = batch_opts(r, pad, 0);
        if (an_batch_alloc(&d->val_batch, &vo, err) || an_batcher_init(&d->val_bt, &d->val, &vo, err)) goto fail;
        d->have_val_bt = 1;
    }
    an_pairs_free(&train);
    an_pairs_free(&val);
    if (rep_out) *rep_out = rep;
    return d;
fail:
    an_pairs_free(&train);
    an_pairs_free(&val);
    an_train_data_free(d);
    return NULL;
}

void an_train_data_free(an_train_data *d) {
    if (!d) return;
    if (d->tok) an_tokenizer_free(d->tok);
    if (d->have_tmpl) an_template_free(&d->tmpl);
    if (d->have_bt) an_batcher_free(&d->bt);
    if (d->have_val_bt) an_batcher_free(&d->val_bt);
    an_batch_free(&d->batch);
    an_batch_free(&d->val_batch);
    an_samples_free(&d->train);
    an_samples_free(&d->val);
    an_retrieval_free(d->retr);
    free(d);
}

const an_tokenizer *an_train_data_tokenizer(const an_train_data *d) { return d->tok; }
const an_template *an_train_data_template(const an_train_data *d) { return &d->tmpl; }
const an_retrieval *an_train_data_retrieval(const an_train_data *d) { return d->retr; }
size_t an_train_data_val_samples(const an_train_data *d) { return d->val.n; }

static void rows_of(const an_token_batch *b, an_token_rows *out) {
    out->ids = b->ids;
    out->targets = b->targets;
    out->pos = b->positions;
    out->seg_start = b->seg_start;
    out->B = b->B;
    out->T = b->T;
    out->n_targets = (long)b->n_targets;
    out->n_samples = b->n_samples;
    out->epoch_end = b->epoch_end;
}

int an_train_data_next(an_train_data *d, an_token_rows *out, an_error *err) {
    if (an_batcher_next(&d->bt, &d->batch, err)) return -1;
    rows_of(&d->batch, out);
    return 0;
}

an_data_cursor an_train_data_cursor(const an_train_data *d) {
    an_batch_cursor c = an_batcher_cursor(&d->bt);
    return (an_data_cursor){c.epoch, c.next, c.offset};
}

int an_train_data_seek(an_train_data *d, an_data_cursor c, an_error *err) {
    return an_batcher_seek(&d->bt, (an_batch_cursor){c.epoch, c.next, c.offset}, err);
}

void an_train_data_val_begin(an_train_data *d, size_t max_samples) {
    d->val_max = max_samples;
    d->val_done = 0;
    d->val_finished = d->val.n == 0;
    if (d->have_val_bt) an_batcher_seek(&d->val_bt, (an_batch_cursor){0, 0, 0}, NULL);
}

int an_train_data_val_next(an_train_data *d, an_token_rows *out, an_error *err) {
    if (d->val_finished || !d->have_val_bt) return 0;
    if (d->val_max && d->val_done >= d->val_max) return 0;
    if (an_batcher_next(&d->val_bt, &d->val_batch, err)) return -1;
    d->val_done += d->val_batch.n_samples;
    if (d->val_batch.epoch_end) d->val_finished = 1;
    rows_of(&d->val_batch, out);
    return 1;
}
