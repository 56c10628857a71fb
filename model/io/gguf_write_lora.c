/* A PEFT LoRA adapter written as llama.cpp's LoRA adapter GGUF (see gguf_write.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/io/gguf_write.h"
#include "model/io/gguf_writer.h"
#include "model/lora.h"

/* The llama.cpp name of the base weight w (without ".weight"), and whether its rows are permuted for
 * ggml's rope; NULL for a weight that has no name in a llama GGUF (the tied head). */
static const char *gguf_base_name(const an_model *m, const an_param *w, char *buf, size_t n, int *rope) {
    *rope = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const an_layer *L = &m->layers[l];
        const struct { const an_param *p; const char *name; int rope; } map[] = {
            {L->wq, "attn_q", 1},       {L->wk, "attn_k", 1},    {L->wv, "attn_v", 0},      {L->wo, "attn_output", 0},
            {L->w_gate, "ffn_gate", 0}, {L->w_up, "ffn_up", 0}, {L->w_down, "ffn_down", 0},
        };
        for (size_t k = 0; k < sizeof map / sizeof map[0]; k++)
            if (map[k].p == w) {
                snprintf(buf, n, "blk.%d.%s", l, map[k].name);
                *rope = map[k].rope;
                return buf;
            }
    }
    if (m->lm_head && w == m->lm_head && !m->cfg.tie_embeddings) {
        snprintf(buf, n, "output");
        return buf;
    }
    return NULL;
}

int an_gguf_write_lora(const an_model *m, const an_lora *l, const char *path, const an_gguf_write_opts *o,
                       an_error *err) {
    const an_model_config *c = &m->cfg;
    if (an_gguf_check_llama_family(m, path, err)) return -1;
    if (o->type != AN_GGML_F32 && o->type != AN_GGML_F16)
        return an_fail(err, "%s: an adapter is written as f32 or f16 (llama.cpp's converter's choices)", path);
    if (l->n_mods <= 0) return an_fail(err, "%s: the adapter has no modules", path);
    int n = 2 * l->n_mods, r = l->cfg.r;
    an_gguf_wtensor *ts = calloc((size_t)n, sizeof *ts);
    int *rope = calloc((size_t)l->n_mods, sizeof *rope);
    size_t maxn = 1;
    if (!ts || !rope) {
        free(ts);
        free(rope);
        return an_fail(err, "%s: out of memory", path);
    }
    const an_ggml_type_info *ti = an_ggml_type_get(o->type);
    for (int i = 0; i < l->n_mods; i++) {
        const an_lora_module *md = &l->mods[i];
        char base[80];
        if (!gguf_base_name(m, md->base, base, sizeof base, &rope[i])) {
            free(ts);
            free(rope);
            return an_fail(err, "%s: the adapter's module %s has no tensor of its own in a llama GGUF (a head tied to "
                                "the embeddings); llama.cpp cannot apply it: train without that target or merge "
                                "instead (export --model M --adapter A)",
                           path, md->name);
        }
        /* llama.cpp checks a->ne[0] == the base's ne[0] (in), b->ne[1] == its ne[1] (out) and
         * a->ne[1] == b->ne[0] (the rank): PEFT's lora_A [r, in] and lora_B [out, r] as they are */
        an_gguf_wtensor *a = &ts[2 * i], *b = &ts[2 * i + 1];
        snprintf(a->name, sizeof a->name, "%s.weight.lora_a", base);
        snprintf(b->name, sizeof b->name, "%s.weight.lora_b", base);
        a->n_dims = b->n_dims = 2;
        a->ne[0] = md->in, a->ne[1] = r;
        b->ne[0] = r, b->ne[1] = md->out;
        a->type = b->type = o->type;
        a->nbytes = (size_t)(md->in * r) * ti->block_bytes;
        b->nbytes = (size_t)(md->out * r) * ti->block_bytes;
        if ((size_t)md->in * r > maxn) maxn = (size_t)md->in * r;
        if ((size_t)md->out * r > maxn) maxn = (size_t)md->out * r;
    }
    an_gguf_layout(ts, n);
    float *host = malloc(maxn * sizeof(float)), *tmp = malloc(maxn * sizeof(float));
    void *bytes = malloc(maxn * sizeof(float));
    an_gguf_out w;
    int rc = -1, opened = 0;
    if (!host || !tmp || !bytes) {
        an_fail(err, "%s: out of memory", path);
        goto done;
    }
    if (an_gguf_out_open(&w, path, err)) goto done;
    opened = 1;
    an_gguf_put_header(&w, (uint64_t)n, 6);
    an_gguf_kv_str(&w, "general.architecture", "llama");
    an_gguf_kv_str(&w, "general.type", "adapter");
    an_gguf_kv_str(&w, "general.name", o->name ? o->name : "autoneg adapter");
    an_gguf_kv_u32(&w, "general.alignment", AN_GGUF_ALIGN);
    an_gguf_kv_str(&w, "adapter.type", "lora");
    /* llama.cpp scales by alpha / r (r from the tensors' shape); rsLoRA's alpha / sqrt(r) is the same
     * scale written as alpha * sqrt(r) */
    an_gguf_kv_f32(&w, "adapter.lora.alpha", l->cfg.use_rslora ? l->cfg.alpha * sqrtf((float)r) : l->cfg.alpha);
    an_gguf_put_tensor_infos(&w, ts, n);
    for (int i = 0; i < l->n_mods && !w.failed; i++) {
        const an_lora_module *md = &l->mods[i];
        /* A [r, in] as held; B from its transposed copy bt [r, out] to [out, r], rows permuted as the
         * base's rows are for rope */
        m->ops->download(m->ops, host, md->a.data, (size_t)r * md->in * sizeof(float));
        if (an_ggml_quantize(o->type, host, bytes, (int64_t)r * md->in, err)) goto done;
        an_gguf_put_tensor_data(&w, bytes, ts[2 * i].nbytes);
        m->ops->download(m->ops, tmp, md->bt.data, (size_t)r * md->out * sizeof(float));
        for (int row = 0; row < md->out; row++)
            for (int k = 0; k < r; k++) host[(size_t)row * r + k] = tmp[(size_t)k * md->out + row];
        float *vals = host;
        if (rope[i]) {
            an_gguf_permute_rope_rows(tmp, host, md->out / c->head_dim, c->head_dim, r);
            vals = tmp;
        }
        if (an_ggml_quantize(o->type, vals, bytes, (int64_t)r * md->out, err)) goto done;
        an_gguf_put_tensor_data(&w, bytes, ts[2 * i + 1].nbytes);
    }
    opened = 0;
    if (an_gguf_out_finish(&w, err)) goto done;
    rc = 0;
done:
    if (opened) an_gguf_out_abort(&w);
    free(host);
    free(tmp);
    free(bytes);
    free(ts);
    free(rope);
    return rc;
}
