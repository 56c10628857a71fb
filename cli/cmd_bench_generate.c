/* autoneg bench generate: decoding speed with the KV cache on a randomly initialised preset.
 *
 *   autoneg bench generate --preset NAME|config.json [--batch B] [--tokens N] [--prompt P]
 *                          [--threads K] [--seed S] [--json]
 *   autoneg bench generate --preset NAME --dtype nf4 [--head bf16|f32] [--repeat R] [--tokens N] ...
 *
 * With --dtype nf4 it compares single-token decoding of two copies of the same random model: one all
 * float32, one with every linear layer but the head in NF4 (blocksize 64, double quantization, as
 * QLoRA) and the embedding and head in bf16 (--head bf16, the default: QLoRA loads the model in a
 * 16-bit dtype and keeps the head there) or float32 (--head f32). The runs alternate, R times each,
 * so load from other jobs falls on both alike; it prints median, fastest and slowest tokens/s of
 * each, the ratio of the medians, and each model's bytes of weights per step over the bandwidth.
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
#include "cli/help.h"
#include "core/file.h"
#include "core/rng.h"
#include "infer/infer.h"
#include "kernels/machine.h"
#include "model/model.h"
#include "model/nf4_weights.h"

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

/* Bytes a parameter takes as stored: float32, bf16, or NF4 codes and scales. */
static double param_bytes(const an_param *p) {
    if (an_param_nf4(p)) return (double)an_nf4_tensor_bytes(an_param_nf4(p));
    if (an_param_bf16(p)) return 2.0 * (double)p->numel;
    return 4.0 * (double)p->numel;
}

/* Bytes of weights one decode step streams: all parameters but the token embedding (one row is
 * read), unless the head is tied to it. */
static double weight_bytes_per_step(const an_model *m) {
    double bytes = 0;
    for (int i = 0; i < m->n_params; i++) {
        const an_param *p = &m->params[i];
        if ((p == m->tok_emb && m->lm_head) || p == m->pos_emb) continue;
        bytes += param_bytes(p);
    }
    return bytes;
}

static double cpu_s(void) { /* CPU time of the whole process: all threads, spinning included */
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct result {
    double tps, decode_s, prefill_s;
    double cpu_tps; /* tokens per CPU second of the decode: steadier than wall time on a shared machine */
} result;

static int run_batch(an_model *m, int B, int P, int N, uint64_t seed, result *r) {
    an_error err;
    int V = m->cfg.vocab_size;
    an_infer *s = an_infer_create(m, m->lora, B, P + N, 0, &err);
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
    double t1 = now_s(), c1 = cpu_s();
    for (int step = 0; step < N && rc == 0; step++) {
        for (int b = 0; b < B; b++) ids[b] = argmax(logits + (size_t)b * V, V);
        if (an_infer_decode(s, slots, ids, B, logits, &err)) rc = cli_error(&err);
    }
    double t2 = now_s(), c2 = cpu_s();
    r->cpu_tps = (double)B * N / (c2 - c1);
    r->prefill_s = t1 - t0;
    r->decode_s = t2 - t1;
    r->tps = (double)B * N / (t2 - t1);
    free(prompt), free(slots), free(ids), free(rows), free(lens), free(logits);
    an_infer_free(s);
    return rc;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* --dtype nf4: the float32 model against its NF4 copy, single sequence, runs interleaved. */
static int compare_nf4(const char *preset, const an_model_config *cfg, int head_bf16, int P, int tokens, int repeat,
                       uint64_t seed, int json) {
    an_error err;
    an_model *f = an_model_init_random(cfg, an_ops_cpu(), seed, &err);
    an_model *q = f ? an_model_init_random(cfg, an_ops_cpu(), seed, &err) : NULL;
    int rc = !f || !q || an_model_quantize_nf4(q, 64, 1, &err);
    if (!rc && head_bf16) {
        an_model_set_all_trainable(q, 0);
        rc = an_model_store_frozen_bf16(q, &err);
    }
    if (rc) {
        an_model_free(f);
        an_model_free(q);
        return cli_error(&err);
    }
    an_model *ms[2] = {f, q};
    double *tps[2] = {malloc(sizeof(double) * (size_t)repeat), malloc(sizeof(double) * (size_t)repeat)};
    double *ctps[2] = {malloc(sizeof(double) * (size_t)repeat), malloc(sizeof(double) * (size_t)repeat)};
    double bw = an_measure_bandwidth_gbs((size_t)256 << 20, 3);
    rc = 0;
    for (int k = 0; k < 2 && rc == 0; k++) { /* warm-up: page in the weights, wake the threads */
        result r = {0};
        rc = run_batch(ms[k], 1, P, 4, seed + 1, &r);
    }
    for (int i = 0; i < repeat && rc == 0; i++)
        for (int k = 0; k < 2 && rc == 0; k++) {
            int kk = i % 2 ? 1 - k : k; /* alternate which model goes first */
            result r = {0};
            rc = run_batch(ms[kk], 1, P, tokens, seed + 1, &r);
            tps[kk][i] = r.tps;
            ctps[kk][i] = r.cpu_tps;
        }
    if (rc == 0) {
        const char *names[2] = {"float32 (all weights float32)", NULL};
        char qname[160];
        snprintf(qname, sizeof qname, "NF4 (linears NF4 + double quant, embedding/head %s, norms float32)",
                 head_bf16 ? "bf16" : "float32");
        names[1] = qname;
        double med[2], cmed[2];
        if (!json)
            printf("preset %s, 1 prompt of %d tokens, %d decode steps, %d threads, %d runs each (interleaved); "
                   "measured bandwidth %.2f GB/s\n",
                   preset, P, tokens, omp_get_max_threads(), repeat, bw);
        for (int k = 0; k < 2; k++) {
            qsort(tps[k], (size_t)repeat, sizeof(double), cmp_double);
            qsort(ctps[k], (size_t)repeat, sizeof(double), cmp_double);
            med[k] = repeat % 2 ? tps[k][repeat / 2] : 0.5 * (tps[k][repeat / 2 - 1] + tps[k][repeat / 2]);
            cmed[k] = repeat % 2 ? ctps[k][repeat / 2] : 0.5 * (ctps[k][repeat / 2 - 1] + ctps[k][repeat / 2]);
            double wb = weight_bytes_per_step(ms[k]), gbs = wb * med[k] * 1e-9;
            if (json)
                printf("{\"peer\": \"autoneg\", \"preset\": \"%s\", \"dtype\": \"%s\", \"head\": \"%s\", "
                       "\"batch\": 1, \"prompt\": %d, \"tokens\": %d, \"threads\": %d, \"runs\": %d, "
                       "\"tokens_per_s_median\": %.2f, \"tokens_per_s_min\": %.2f, \"tokens_per_s_max\": %.2f, "
                       "\"tokens_per_cpu_s_median\": %.2f, \"weight_mb_per_step\": %.2f, \"weight_gbs\": %.2f, \"bandwidth_gbs\": %.2f, "
                       "\"fraction_of_bandwidth\": %.4f}\n",
                       preset, k ? "nf4" : "f32", k && head_bf16 ? "bf16" : "f32", P, tokens, omp_get_max_threads(),
                       repeat, med[k], tps[k][0], tps[k][repeat - 1], cmed[k], wb / 1e6, gbs, bw, bw > 0 ? gbs / bw : 0);
            else
                printf("  %s\n    median %7.1f tokens/s (runs %.1f .. %.1f), %.1f per CPU second; weights %.1f MB per "
                       "step = %.2f GB/s, %.0f%% of bandwidth\n",
                       names[k], med[k], tps[k][0], tps[k][repeat - 1], cmed[k], wb / 1e6, gbs, bw > 0 ? 100 * gbs / bw : 0);
        }
        if (json)
            printf("{\"peer\": \"autoneg\", \"preset\": \"%s\", \"nf4_over_f32_median\": %.3f, "
                   "\"nf4_over_f32_worst\": %.3f, \"nf4_over_f32_best\": %.3f, \"nf4_over_f32_cpu_time\": %.3f}\n",
                   preset, med[1] / med[0], tps[1][0] / tps[0][repeat - 1], tps[1][repeat - 1] / tps[0][0], cmed[1] / cmed[0]);
        else
            printf("  NF4 / float32 single-token decode: %.2fx (medians; slowest NF4 / fastest float32 %.2fx, "
                   "fastest NF4 / slowest float32 %.2fx; by CPU time %.2fx)\n",
                   med[1] / med[0], tps[1][0] / tps[0][repeat - 1], tps[1][repeat - 1] / tps[0][0], cmed[1] / cmed[0]);
    }
    for (int k = 0; k < 2; k++) free(tps[k]), free(ctps[k]);
    an_model_free(f);
    an_model_free(q);
    return rc;
}

static const cli_opt gen_opts[] = {
    {"--preset", "NAME|config.json", "model shape: configs/models/NAME.json or a config.json (required)"},
    {"--batch", "B", "sequences decoded at once (default: 1 and 16, both reported)"},
    {"--tokens", "N", "timed decode steps (default: 128)"},
    {"--prompt", "P", "random prompt tokens prefilled per sequence (default: 16)"},
    {"--threads", "K", "OpenMP threads (default: OpenMP's)"},
    {"--seed", "S", "seed of the random weights and prompts (default: 1234)"},
    {"--dtype", "f32|nf4", "nf4: float32 against NF4 linear layers, alternating runs (default: f32)"},
    {"--head", "bf16|f32", "with --dtype nf4: the embedding and head dtype of the NF4 model (default: bf16)"},
    {"--repeat", "R", "with --dtype nf4: runs of each model (default: 5)"},
    {"--json", NULL, "one JSON line per measurement instead of the text report"},
    {NULL, NULL, NULL},
};

const cli_help cli_help_bench_generate = {
    "bench generate --preset NAME|config.json [--batch B] [--tokens N] [--prompt P] [--threads K] [--seed S] [--json]\n"
    "bench generate --preset NAME --dtype nf4 [--head bf16|f32] [--repeat R] [--tokens N]",
    "Times greedy decoding with the KV cache on a randomly initialised preset: tokens/s, and for one\n"
    "sequence the share of this machine's memory bandwidth. Results go to stdout.",
    gen_opts, NULL, NULL,
    "bench generate --preset llama-60m --batch 1 --tokens 64",
};

int an_bench_generate(int argc, char **argv) {
    int hrc;
    if (cli_help_check(&cli_help_bench_generate, argc, argv, 2, &hrc)) return hrc;
    const char *preset = NULL, *dtype = "f32", *head = "bf16";
    int batch = 0, tokens = 128, P = 16, threads = 0, json = 0, repeat = 5;
    unsigned long long seed = 1234;
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--json")) {
            json = 1;
            continue;
        }
        if (i + 1 >= argc) return cli_help_fail(&cli_help_bench_generate, "bench generate: %s needs a value", f);
        const char *v = argv[++i];
        char *end;
        long x = strtol(v, &end, 10);
        int bad = !*v || *end;
        if (!strcmp(f, "--preset")) preset = v;
        else if (!strcmp(f, "--batch")) { if (bad || x < 1 || x > 4096) return cli_fail("--batch: expected 1..4096, got '%s'", v); batch = (int)x; }
        else if (!strcmp(f, "--tokens")) { if (bad || x < 1 || x > 1 << 20) return cli_fail("--tokens: expected >= 1, got '%s'", v); tokens = (int)x; }
        else if (!strcmp(f, "--prompt")) { if (bad || x < 1 || x > 1 << 20) return cli_fail("--prompt: expected >= 1, got '%s'", v); P = (int)x; }
        else if (!strcmp(f, "--threads")) { if (bad || x < 1 || x > 1024) return cli_fail("--threads: expected 1..1024, got '%s'", v); threads = (int)x; }
        else if (!strcmp(f, "--repeat")) { if (bad || x < 1 || x > 1000) return cli_fail("--repeat: expected 1..1000, got '%s'", v); repeat = (int)x; }
        else if (!strcmp(f, "--dtype")) { if (strcmp(v, "f32") && strcmp(v, "nf4")) return cli_fail("--dtype: expected f32 or nf4, got '%s'", v); dtype = v; }
        else if (!strcmp(f, "--head")) { if (strcmp(v, "f32") && strcmp(v, "bf16")) return cli_fail("--head: expected bf16 or f32, got '%s'", v); head = v; }
        else if (!strcmp(f, "--seed")) seed = strtoull(v, NULL, 10);
        else return cli_help_fail(&cli_help_bench_generate, "bench generate: unknown option %s", f);
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
    if (!strcmp(dtype, "nf4")) {
        if (batch > 1) return cli_fail("bench generate: --dtype nf4 measures single-token decoding (--batch 1)");
        return compare_nf4(preset, &cfg, !strcmp(head, "bf16"), P, tokens, repeat, seed, json);
    }
    an_model *m = an_model_init_random(&cfg, an_ops_cpu(), seed, &err);
    if (!m) return cli_error(&err);
    int batches[2] = {batch ? batch : 1, 16}, nb = batch ? 1 : 2;
    double bw = an_measure_bandwidth_gbs((size_t)256 << 20, 3);
    double wbytes = weight_bytes_per_step(m);
    int rc = 0;
    for (int k = 0; k < nb && rc == 0; k++) {
        int B = batches[k];
        result r = {0};
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
