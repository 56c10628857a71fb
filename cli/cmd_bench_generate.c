/* autoneg bench generate: decoding speed with the KV cache on a randomly initialised preset.
 *
 *   autoneg bench generate --preset NAME|config.json [--batch B] [--tokens N] [--prompt P]
 *                          [--threads K] [--seed S] [--json]
 *
 * Without --batch it measures one prompt and 16 prompts at once. Each run prefills P random tokens
 * per sequence, then times N greedy decode steps. For a single sequence it also reports the fraction
 * of this machine's memory bandwidth reached: the bytes of weights one step reads (every linear
 * layer and the LM head once; of the embedding table only one row) times steps per second, over
 * an_measure_bandwidth_gbs(). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "core/file.h"
#include "core/rng.h"
#include "infer/infer.h"
#include "kernels/machine.h"
#include "model/model.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* Bytes of weights one decode step streams: all parameters but the token embedding (one row is
 * read), unless the head is tied to it. */
static double weight_bytes_per_step(const an_model *m) {
    double floats = (double)m->n_param_floats;
    if (m->lm_head) floats -= (double)m->tok_emb->numel;
    if (m->pos_emb) floats -= (double)m->pos_emb->numel;
    return floats * sizeof(float);
}

typedef struct result {
    double tps, decode_s, prefill_s;
} result;

static int run_batch(an_model *m, int B, int P, int N, uint64_t seed, result *r) {
    an_error err;
    int V = m->cfg.vocab_size;
    an_infer *s = an_infer_create(m, B, P + N, 0, &err);
    if (!s) return cli_error(&err);
    int32_t *prompt = malloc(sizeof(int32_t) * (size_t)B * P), *slots = malloc(sizeof(int32_t) * B);
    int32_t *ids = malloc(sizeof(int32_t) * B);
    const int32_t **rows = malloc(sizeof *rows * B);
    int *lens = malloc(sizeof(int) * B);
    float *logits = malloc(sizeof(float) * (size_t)B * V);
    an_rng rng;
    an_rng_seed(&rng, seed);
    for (int i = 0; i < B * P; i++) prompt[i] = (int32_t)an_rng_below(&rng, (uint64_t)V);
    for (int b = 0; b < B; b++) {
        slots[b] = b;
        rows[b] = prompt + (size_t)b * P;
        lens[b] = P;
    }
    int rc = 0;
    double t0 = now_s();
    if (an_infer_prefill(s, slots, rows, lens, B, logits, &err)) rc = cli_error(&err);
    double t1 = now_s();
    for (int step = 0; step < N && rc == 0; step++) {
        for (int b = 0; b < B; b++) ids[b] = argmax(logits + (size_t)b * V, V);
        if (an_infer_decode(s, slots, ids, B, logits, &err)) rc = cli_error(&err);
    }
    double t2 = now_s();
    r->prefill_s = t1 - t0;
    r->decode_s = t2 - t1;
    r->tps = (double)B * N / (t2 - t1);
    free(prompt), free(slots), free(ids), free(rows), free(lens), free(logits);
    an_infer_free(s);
    return rc;
}

int an_bench_generate(int argc, char **argv) {
    const char *preset = NULL;
    int batch = 0, tokens = 128, P = 16, threads = 0, json = 0;
    unsigned long long seed = 1234;
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--json")) {
            json = 1;
            continue;
        }
        if (i + 1 >= argc) return cli_fail("bench generate: %s needs a value", f);
        const char *v = argv[++i];
        char *end;
        long x = strtol(v, &end, 10);
        int bad = !*v || *end;
        if (!strcmp(f, "--preset")) preset = v;
        else if (!strcmp(f, "--batch")) { if (bad || x < 1 || x > 4096) return cli_fail("--batch: expected 1..4096, got '%s'", v); batch = (int)x; }
        else if (!strcmp(f, "--tokens")) { if (bad || x < 1 || x > 1 << 20) return cli_fail("--tokens: expected >= 1, got '%s'", v); tokens = (int)x; }
        else if (!strcmp(f, "--prompt")) { if (bad || x < 1 || x > 1 << 20) return cli_fail("--prompt: expected >= 1, got '%s'", v); P = (int)x; }
        else if (!strcmp(f, "--threads")) { if (bad || x < 1 || x > 1024) return cli_fail("--threads: expected 1..1024, got '%s'", v); threads = (int)x; }
        else if (!strcmp(f, "--seed")) seed = strtoull(v, NULL, 10);
        else return cli_fail("bench generate: unknown option %s", f);
    }
    if (!preset) return cli_fail("bench generate: --preset is required (e.g. llama-60m)");
    if (threads) omp_set_num_threads(threads);
    char path[4096];
    if (an_file_exists(preset)) snprintf(path, sizeof path, "%s", preset);
    else snprintf(path, sizeof path, "configs/models/%s.json", preset);
    an_error err;
    an_model_config cfg;
    if (an_config_load(&cfg, path, &err)) return cli_error(&err);
    if (P + tokens > cfg.max_seq) return cli_fail("bench generate: --prompt + --tokens exceed the preset's %d positions", cfg.max_seq);
    an_model *m = an_model_init_random(&cfg, an_ops_cpu(), seed, &err);
    if (!m) return cli_error(&err);
    int batches[2] = {batch ? batch : 1, 16}, nb = batch ? 1 : 2;
    double bw = an_measure_bandwidth_gbs((size_t)256 << 20, 3);
    double wbytes = weight_bytes_per_step(m);
    int rc = 0;
    for (int k = 0; k < nb && rc == 0; k++) {
        int B = batches[k];
        result r;
        rc = run_batch(m, B, P, 4, seed + 1, &r); /* warm-up: page in the weights, wake the threads */
        if (rc == 0) rc = run_batch(m, B, P, tokens, seed + 1, &r);
        if (rc) break;
        double gbs = wbytes * (r.tps / B) * 1e-9; /* weights stream once per step, whatever B */
        if (json)
            printf("{\"peer\": \"autoneg\", \"preset\": \"%s\", \"batch\": %d, \"prompt\": %d, \"tokens\": %d, "
                   "\"threads\": %d, \"params\": %zu, \"tokens_per_s\": %.2f, \"prefill_ms\": %.1f, "
                   "\"weight_mb_per_step\": %.1f, \"weight_gbs\": %.2f, \"bandwidth_gbs\": %.2f, "
                   "\"fraction_of_bandwidth\": %.4f}\n",
                   preset, B, P, tokens, omp_get_max_threads(), an_model_param_count(m, 0), r.tps, r.prefill_s * 1e3,
                   wbytes / 1e6, gbs, bw, bw > 0 ? gbs / bw : 0);
        else
            printf("preset %s, %d prompt%s of %d tokens, %d decode steps, %d threads: %.1f tokens/s "
                   "(prefill %.1f ms); weights %.1f MB per step = %.2f GB/s, %.0f%% of the measured %.2f GB/s\n",
                   preset, B, B > 1 ? "s" : "", P, tokens, omp_get_max_threads(), r.tps, r.prefill_s * 1e3,
                   wbytes / 1e6, gbs, bw > 0 ? 100 * gbs / bw : 0, bw);
    }
    an_model_free(m);
    return rc;
}
