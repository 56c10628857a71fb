/* Sampling where the logits are (infer.h: an_infer_enable_sampling, an_infer_sample): the backend's
 * sample_tokens on the logits a forward left in s->logits, so a decoding step on a GPU copies a token
 * id per sequence to the host instead of a row of V logits. Its buffers are one backend allocation,
 * made once, apart from the cache's: generation and the server's engine ask for them; scoring does not. */
#include "core/carver.h"
#include "infer/infer.h"

static void layout(an_infer *s, an_carver *c, int max_ids) {
    s->d_sample_rows = an_carve(c, (size_t)s->slots, sizeof(an_sample_row));
    s->d_sample_ids = an_carve(c, max_ids > 0 ? (size_t)max_ids : 1, sizeof(int32_t));
    s->d_picked = an_carve(c, 2 * (size_t)s->slots, sizeof(int32_t));
    s->sample_work = an_carve(c, s->sample_work_bytes, 1);
}

int an_infer_enable_sampling(an_infer *s, int max_ids, an_error *err) {
    const an_ops *o = s->m->ops;
    if (s->sample_block) return 1;
    if (!o->supports(o, AN_OP_sample_tokens, AN_F32)) return 0;
    if (max_ids < 0) return an_fail(err, "inference: %d ids for the sampler", max_ids);
    s->sample_work_bytes = o->sample_work_bytes(o, s->slots, s->m->cfg.vocab_size);
    an_carver c = {NULL, 0};
    layout(s, &c, max_ids);
    s->sample_block = o->alloc(o, c.off);
    if (!s->sample_block)
        return an_fail(err, "inference: cannot allocate %.1f MiB for sampling on %s", (double)c.off / 1048576, o->name);
    c = (an_carver){s->sample_block, 0};
    layout(s, &c, max_ids);
    s->sample_max_ids = max_ids;
    return 1;
}

int an_infer_sample(an_infer *s, int n, const an_sample_row *rows, const int32_t *ids, int n_ids, int32_t *out,
                    an_error *err) {
    const an_ops *o = s->m->ops;
    if (!s->sample_block) return an_fail(err, "inference: sampling on %s was not enabled", o->name);
    if (n <= 0 || n > s->slots) return an_fail(err, "inference sample: %d rows for %d slots", n, s->slots);
    if (n_ids < 0 || n_ids > s->sample_max_ids)
        return an_fail(err, "inference sample: %d ids, room for %d", n_ids, s->sample_max_ids);
    for (int i = 0; i < n; i++)
        if (rows[i].ids_at < 0 || rows[i].n_penalised < 0 || rows[i].n_masked < 0 ||
            (long long)rows[i].ids_at + rows[i].n_penalised + rows[i].n_masked > n_ids)
            return an_fail(err, "inference sample: row %d names ids outside the %d given", i, n_ids);
    /* what every row needs: greedy decoding (eval's) takes the argmax alone, top-k of at most
     * AN_SAMPLE_TOP_MAX a selection of those; only a row with a wider order sorts the vocabulary */
    int V = s->m->cfg.vocab_size, promise = AN_SAMPLE_GREEDY;
    for (int i = 0; i < n; i++) {
        if (rows[i].temperature != 0.0f && promise == AN_SAMPLE_GREEDY) promise = AN_SAMPLE_TOP;
        if (AN_SAMPLE_ORDERED(&rows[i], V) > AN_SAMPLE_TOP_MAX) promise = AN_SAMPLE_ANY;
    }
    o->upload(o, s->d_sample_rows, rows, (size_t)n * sizeof *rows);
    if (n_ids) o->upload(o, s->d_sample_ids, ids, (size_t)n_ids * sizeof *ids);
    o->sample_tokens(o, s->d_picked, s->logits, n, V, s->d_sample_rows, s->d_sample_ids, promise, s->sample_work,
                     s->sample_work_bytes);
    o->download(o, out, s->d_picked, 2 * (size_t)n * sizeof *out);
    return 0;
}
