/* autoneg bench engine: the request engine's throughput with requests spread over several adapters
 * against the same requests on one adapter (infer/engine.h; issue 15's target: at least 90 %).
 *
 *   autoneg bench engine --preset NAME|config.json [--requests R] [--slots S] [--prompt P] [--tokens N]
 *                        [--adapters K] [--rank r] [--repeat X] [--threads T] [--seed S] [--json]
 *
 * One engine on a random preset with K random adapters (rank r on every linear layer but the head)
 * runs R requests of P random prompt tokens and N greedy tokens each (no stop id, so every run does
 * the same work), either all on the first adapter or request i on adapter i mod K. The two kinds of
 * run alternate X times each (which goes first alternates too), so load from other jobs falls on both
 * alike; it prints the median, fastest and slowest generated tokens/s of each and the ratio of the
 * medians, and the same per CPU second of the process (steadier on a shared machine, with one
 * thread). A run is timed from the first submit until the engine is idle: prefill and decode. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/help.h"
#include "core/file.h"
#include "core/rng.h"
#include "infer/engine.h"
#include "model/lora.h"
#include "model/model.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_s(void) { /* CPU time of the whole process: steadier than wall time on a shared machine */
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

typedef struct tally {
    long tokens;
} tally;

static int count_token(void *ctx, const an_token *t) {
    (void)t;
    ((tally *)ctx)->tokens++;
    return 0;
}

/* One run: R requests (spread: over K adapters, else all on a0) until idle; tokens/s (and per CPU
 * second in *cpu_tps), or -1. */
static double run(an_engine *e, const int32_t *prompts, int R, int P, int N, int K, int spread, double *cpu_tps,
                  an_error *err) {
    tally t = {0};
    char name[16];
    double t0 = now_s(), c0 = cpu_s();
    for (int i = 0; i < R; i++) {
        an_request q;
        memset(&q, 0, sizeof q);
        q.ids = prompts + (size_t)i * P;
        q.n_ids = P;
        q.sampling = an_sampler_defaults();
        q.sampling.temperature = 0;
        q.max_tokens = N;
        snprintf(name, sizeof name, "a%d", spread ? i % K : 0);
        q.adapter = name;
        q.on_token = count_token;
        q.ctx = &t;
        int64_t id;
        if (an_engine_submit(e, &q, &id, err) != AN_ENGINE_OK) return -1;
    }
    int left;
    while ((left = an_engine_step(e, err)) > 0) {}
    if (left < 0) return -1;
    double dt = now_s() - t0;
    if (cpu_tps) *cpu_tps = (double)t.tokens / (cpu_s() - c0);
    if (t.tokens != (long)R * N) {
        an_fail(err, "bench engine: %ld tokens generated, %ld expected", t.tokens, (long)R * N);
        return -1;
    }
    return (double)t.tokens / dt;
}

static const cli_opt engine_opts[] = {
    {"--preset", "NAME|config.json", "model shape: configs/models/NAME.json or a config.json (required)"},
    {"--requests", "R", "requests per run (default: 32)"},
    {"--slots", "S", "requests decoded at once (default: 16)"},
    {"--prompt", "P", "random prompt tokens per request (default: 32)"},
    {"--tokens", "N", "greedy tokens generated per request (default: 32)"},
    {"--adapters", "K", "adapters the spread runs use (default: 4)"},
    {"--rank", "r", "LoRA rank of every adapter (default: 16)"},
    {"--repeat", "X", "runs of each kind, alternating (default: 5)"},
    {"--threads", "T", "OpenMP threads (default: OpenMP's)"},
    {"--seed", "S", "seed of the random weights, adapters and prompts (default: 1234)"},
    {"--json", NULL, "one JSON line instead of the text report"},
    {NULL, NULL, NULL},
};

const cli_help cli_help_bench_engine = {
    "bench engine --preset NAME|config.json [--requests R] [--slots S] [--adapters K] [--rank r] [options]",
    "Times the request engine (continuous batching, many adapters over one base) on a randomly\n"
    "initialised preset: R requests spread over K adapters against the same requests on one adapter,\n"
    "alternating runs; generated tokens/s, median and range, and the ratio. Results go to stdout.",
    engine_opts, NULL, NULL,
    "bench engine --preset llama-60m --requests 32 --slots 16 --adapters 4",
};

static int parse_int(const char *flag, const char *v, long lo, long hi, int *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) return cli_fail("%s: expected %ld..%ld, got '%s'", flag, lo, hi, v);
    *out = (int)x;
    return 0;
}

int an_bench_engine(int argc, char **argv) {
    int hrc;
    if (cli_help_check(&cli_help_bench_engine, argc, argv, 2, &hrc)) return hrc;
    const char *preset = NULL;
    int R = 32, S = 16, P = 32, N = 32, K = 4, rank = 16, repeat = 5, threads = 0, json = 0;
    unsigned long long seed = 1234;
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--json")) {
            json = 1;
            continue;
        }
        if (i + 1 >= argc) return cli_help_fail(&cli_help_bench_engine, "bench engine: %s needs a value", f);
        const char *v = argv[++i];
        int rc = 0;
        if (!strcmp(f, "--preset")) preset = v;
        else if (!strcmp(f, "--requests")) rc = parse_int(f, v, 1, 1 << 20, &R);
        else if (!strcmp(f, "--slots")) rc = parse_int(f, v, 1, 4096, &S);
        else if (!strcmp(f, "--prompt")) rc = parse_int(f, v, 1, 1 << 20, &P);
        else if (!strcmp(f, "--tokens")) rc = parse_int(f, v, 1, 1 << 20, &N);
        else if (!strcmp(f, "--adapters")) rc = parse_int(f, v, 1, 64, &K);
        else if (!strcmp(f, "--rank")) rc = parse_int(f, v, 1, 1024, &rank);
        else if (!strcmp(f, "--repeat")) rc = parse_int(f, v, 1, 1000, &repeat);
        else if (!strcmp(f, "--threads")) rc = parse_int(f, v, 1, 1024, &threads);
        else if (!strcmp(f, "--seed")) seed = strtoull(v, NULL, 10);
        else return cli_help_fail(&cli_help_bench_engine, "bench engine: unknown option %s", f);
        if (rc) return rc;
    }
    if (!preset) return cli_fail("bench engine: --preset is required (e.g. llama-60m)");
    if (threads) omp_set_num_threads(threads);
    char path[4096];
    if (an_file_exists(preset)) snprintf(path, sizeof path, "%s", preset);
    else snprintf(path, sizeof path, "configs/models/%s.json", preset);
    an_error err;
    an_model_config cfg;
    if (an_config_load(&cfg, path, &err)) return cli_error(&err);
    if (P + N > cfg.max_seq)
        return cli_fail("bench engine: --prompt + --tokens exceed the preset's %d positions", cfg.max_seq);
    an_model *m = an_model_init_random(&cfg, an_ops_cpu(), seed, &err);
    if (!m) return cli_error(&err);
    an_engine_config ec = an_engine_config_default();
    ec.slots = S;
    ec.context = P + N;
    ec.max_queue = R;
    ec.max_adapters = K;
    ec.max_rank = rank;
    ec.prefix_cache = 0;
    an_engine *e = an_engine_create(m, &ec, &err);
    int rc = e ? 0 : cli_error(&err);
    an_rng g;
    an_rng_seed(&g, seed + 1);
    for (int k = 0; k < K && rc == 0; k++) {
        an_lora_config lc = an_lora_config_default();
        lc.r = rank;
        lc.alpha = (float)rank;
        lc.seed = seed + 10 + (uint64_t)k;
        an_lora *l = NULL;
        if (an_lora_config_add_target(&lc, "all-linear", &err) || !(l = an_lora_create(m, &lc, &err))) {
            rc = cli_error(&err);
            break;
        }
        for (int i = 0; i < l->n_mods; i++) { /* B random: a fresh adapter's zero B costs the same, but be real */
            an_param *bt = &l->mods[i].bt;
            for (size_t j = 0; j < bt->numel; j++) bt->data[j] = 0.02f * (2.0f * an_rng_uniform(&g) - 1.0f);
        }
        char name[16];
        snprintf(name, sizeof name, "a%d", k);
        if (an_engine_add_adapter(e, name, l, &err)) {
            an_lora_free(l);
            rc = cli_error(&err);
        }
    }
    int32_t *prompts = malloc(sizeof(int32_t) * (size_t)R * P);
    double *tps[2] = {malloc(sizeof(double) * (size_t)repeat), malloc(sizeof(double) * (size_t)repeat)};
    double *ctps[2] = {malloc(sizeof(double) * (size_t)repeat), malloc(sizeof(double) * (size_t)repeat)};
    if (!prompts || !tps[0] || !tps[1] || !ctps[0] || !ctps[1]) rc = rc ? rc : cli_fail("bench engine: out of memory");
    for (size_t i = 0; rc == 0 && i < (size_t)R * P; i++)
        prompts[i] = (int32_t)an_rng_below(&g, (uint64_t)cfg.vocab_size);
    /* warm-up: page in the weights and adapters, wake the threads */
    for (int k = 0; k < 2 && rc == 0; k++)
        if (run(e, prompts, R < S ? R : S, P, N < 4 ? N : 4, K, k, NULL, &err) < 0) rc = cli_error(&err);
    for (int i = 0; i < repeat && rc == 0; i++)
        for (int k = 0; k < 2 && rc == 0; k++) {
            int spread = i % 2 ? 1 - k : k; /* alternate which kind goes first */
            double r = run(e, prompts, R, P, N, K, spread, &ctps[spread][i], &err);
            if (r < 0) rc = cli_error(&err);
            else tps[spread][i] = r;
        }
    if (rc == 0) {
        double med[2], cmed[2];
        for (int k = 0; k < 2; k++) {
            qsort(tps[k], (size_t)repeat, sizeof(double), cmp_double);
            qsort(ctps[k], (size_t)repeat, sizeof(double), cmp_double);
            med[k] = repeat % 2 ? tps[k][repeat / 2] : 0.5 * (tps[k][repeat / 2 - 1] + tps[k][repeat / 2]);
            cmed[k] = repeat % 2 ? ctps[k][repeat / 2] : 0.5 * (ctps[k][repeat / 2 - 1] + ctps[k][repeat / 2]);
        }
        if (json)
            printf("{\"peer\": \"autoneg\", \"preset\": \"%s\", \"requests\": %d, \"slots\": %d, \"prompt\": %d, "
                   "\"tokens\": %d, \"adapters\": %d, \"rank\": %d, \"threads\": %d, \"runs\": %d, "
                   "\"one_adapter_tokens_per_s_median\": %.2f, \"one_adapter_min\": %.2f, \"one_adapter_max\": %.2f, "
                   "\"spread_tokens_per_s_median\": %.2f, \"spread_min\": %.2f, \"spread_max\": %.2f, "
                   "\"spread_over_one\": %.4f, \"one_adapter_tokens_per_cpu_s_median\": %.2f, "
                   "\"spread_tokens_per_cpu_s_median\": %.2f, \"spread_over_one_cpu_time\": %.4f}\n",
                   preset, R, S, P, N, K, rank, omp_get_max_threads(), repeat, med[0], tps[0][0], tps[0][repeat - 1],
                   med[1], tps[1][0], tps[1][repeat - 1], med[1] / med[0], cmed[0], cmed[1], cmed[1] / cmed[0]);
        else
            printf("preset %s, %d requests of %d prompt + %d generated tokens, %d slots, rank %d, %d threads, %d runs "
                   "each (alternating)\n"
                   "  1 adapter:  median %8.1f tokens/s (runs %.1f .. %.1f), %.1f per CPU second\n"
                   "  %d adapters: median %8.1f tokens/s (runs %.1f .. %.1f), %.1f per CPU second\n"
                   "  %d adapters / 1 adapter: %.3f (medians; slowest spread / fastest single %.3f; by CPU time "
                   "%.3f)\n",
                   preset, R, P, N, S, rank, omp_get_max_threads(), repeat, med[0], tps[0][0], tps[0][repeat - 1],
                   cmed[0], K, med[1], tps[1][0], tps[1][repeat - 1], cmed[1], K, med[1] / med[0],
                   tps[1][0] / tps[0][repeat - 1], cmed[1] / cmed[0]);
    }
    free(prompts);
    free(tps[0]);
    free(tps[1]);
    free(ctps[0]);
    free(ctps[1]);
    an_engine_free(e);
    an_model_free(m);
    return rc;
}
