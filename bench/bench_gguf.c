/* Prompt processing and decoding on a GGUF file, as llama-bench (and llama-batched-bench) measure them:
 *   bench_gguf F.gguf keep|dequantize PP TG [B]
 * pp: one prefill of PP tokens into an empty cache; tg: TG decode steps of one token for each of B
 * sequences (default 1) at once, from an empty cache (tg_tps counts all B sequences' tokens). Threads: OMP_NUM_THREADS. Prints one JSON line: tokens/s of each (after a warm-up), the
 * bytes of weights one decode step reads (every matrix once: the layers and the head; the embedding
 * lookup reads one row) and, with AN_BENCH_BW=1, their rate as a fraction of the machine's measured
 * read bandwidth (kernels/machine.h). bench/gguf_llamacpp.sh runs it against llama-bench. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "infer/infer.h"
#include "kernels/backend.h"
#include "kernels/machine.h"
#include "model/model.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: bench_gguf F.gguf keep|dequantize PP TG [B]\n");
        return 2;
    }
    int keep = strcmp(argv[2], "keep") == 0, pp = atoi(argv[3]), tg = atoi(argv[4]);
    int B = argc == 6 ? atoi(argv[5]) : 1;
    if (B < 1 || B > 64) {
        fprintf(stderr, "bench_gguf: B must be 1..64\n");
        return 2;
    }
    an_error e;
    an_model *m = an_model_load_gguf(argv[1], an_ops_cpu(), keep ? AN_GGUF_KEEP : AN_GGUF_DEQUANTIZE, &e);
    if (!m) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    int V = m->cfg.vocab_size, T = pp > tg ? pp : tg;
    an_infer *s = an_infer_create(m, NULL, B, T + 8, T + 8, &e);
    if (!s) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)T);
    float *logits = malloc(sizeof(float) * (size_t)V * (size_t)B);
    int32_t slots[64], step_ids[64];
    for (int b = 0; b < B; b++) slots[b] = b;
    for (int i = 0; i < T; i++) ids[i] = (int32_t)((i * 7919u + 13u) % (unsigned)V);
    int32_t slot = 0;
    /* warm-up: a short prefill and a few steps */
    int wl = 16;
    const int32_t *p = ids;
    if (an_infer_prefill(s, &slot, &p, &wl, 1, logits, &e)) goto fail;
    for (int i = 0; i < 4; i++)
        if (an_infer_decode(s, &slot, &ids[i], 1, logits, &e)) goto fail;
    an_infer_reset_slot(s, 0);
    double t0 = now();
    if (pp > 0 && an_infer_prefill(s, &slot, &p, &pp, 1, logits, &e)) goto fail;
    double t_pp = now() - t0;
    an_infer_reset_slot(s, 0);
    t0 = now();
    for (int i = 0; i < tg; i++) {
        for (int b = 0; b < B; b++) step_ids[b] = ids[(i + 31 * b) % T];
        if (an_infer_decode(s, slots, step_ids, B, logits, &e)) goto fail;
    }
    double t_tg = now() - t0;
    /* bytes one decode step reads: every 2-D weight but the embedding (unless it is the tied head) */
    double bytes = 0;
    for (int i = 0; i < m->n_params; i++) {
        const an_param *q = &m->params[i];
        if (q->ndim != 2 || (q == m->tok_emb && m->lm_head)) continue;
        bytes += an_param_ggml(q) ? (double)(q->numel / (size_t)an_dtype_block(q->dtype)) * an_dtype_block_bytes(q->dtype)
                                  : 4.0 * (double)q->numel;
    }
    double bw = getenv("AN_BENCH_BW") && atoi(getenv("AN_BENCH_BW")) ? an_measure_bandwidth_gbs((size_t)256 << 20, 3) : 0;
    double tgs = (double)tg * B / t_tg;
    printf("{\"tool\": \"autoneg\", \"weights\": \"%s\", \"pp\": %d, \"pp_tps\": %.2f, \"tg\": %d, \"batch\": %d, \"tg_tps\": %.2f, "
           "\"weight_mb_per_step\": %.2f, \"bandwidth_gbs\": %.2f, \"fraction_of_bandwidth\": %.4f}\n",
           argv[2], pp, pp > 0 ? pp / t_pp : 0.0, tg, B, tgs, bytes / 1e6, bw, bw > 0 ? tgs * bytes / 1e9 / bw : 0.0);
    an_infer_free(s);
    an_model_free(m);
    free(ids);
    free(logits);
    return 0;
fail:
    fprintf(stderr, "%s\n", e.msg);
    return 1;
}
