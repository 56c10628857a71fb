/* autoneg bench nf4: single-token decode through every linear layer of a preset, float32 against
 * NF4, measured in the same run (docs/qlora.md).
 *
 *   autoneg bench nf4 --preset NAME|config.json [--tokens N] [--threads K] [--seed S]
 *
 * One "token" is one row through the q, k, v, o, gate, up, down projections of every layer (the
 * matrix-vector products that dominate decoding a short context) and then the head. The NF4 model
 * runs the typed linear op (linear_forward: an_nf4_matvec, AVX2 when built for it); float32 runs
 * cblas_sgemv on the same weights before quantization, and the linear op's own float32 path (the
 * CPU's matrix-vector kernel for one row) for reference. The head stays float32
 * in both models here and runs cblas_sgemv in both (QLoRA as users run it holds the head in 16 bits:
 * `bench generate --dtype nf4` measures whole decode steps with a bf16 head). Runs alternate between
 * the models so that load from other jobs falls on both alike; best and median times per token are
 * reported. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef AN_BLAS
#include <cblas.h>
#endif

#include "cli/cli.h"
#include "cli/help.h"
#include "core/file.h"
#include "model/lora.h"
#include "model/nf4_weights.h"

static const cli_opt nf4_opts[] = {
    {"--preset", "NAME|config.json", "model shape: configs/models/NAME.json or a config.json (required)"},
    {"--tokens", "N", "rows timed per run (default: 50)"},
    {"--threads", "K", "OpenMP threads (default: 1)"},
    {"--seed", "S", "seed of the random weights (default: 1)"},
    {NULL, NULL, NULL},
};

const cli_help cli_help_bench_nf4 = {
    "bench nf4 --preset NAME|config.json [--tokens N] [--threads K] [--seed S]",
    "Times one row through every linear layer of a preset, float32 against NF4, in alternating runs;\n"
    "best and median times per token go to stdout.",
    nf4_opts, NULL, NULL,
    "bench nf4 --preset llama-60m --tokens 50",
};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

enum { F32_GEMV, F32_LINEAR, NF4_LINEAR, N_KINDS };

/* One token through every linear layer (with_head: and the head); seconds. work: the linear op's
 * workspace, work_bytes of it. */
static double token(an_model *m, const an_linear_ref *refs, int n, int with_head, int kind, float *x, float *y,
                    void *work, size_t work_bytes) {
    double t0 = now();
    for (int i = 0; i < n; i++) {
        if (refs[i].is_head && !with_head) continue;
        const an_param *w = refs[i].w;
#ifdef AN_BLAS
        if (kind != F32_LINEAR && !an_param_nf4(w)) { /* the float32 head of the NF4 model too */
            int in = (int)w->shape[1], out = (int)w->shape[0];
            cblas_sgemv(CblasRowMajor, CblasNoTrans, out, in, 1.0f, w->data, in, x, 1, 0.0f, y, 1);
            continue;
        }
#else
        (void)kind; /* without BLAS every float32 row goes through the linear op */
#endif
        an_weight wt = an_param_weight(w);
        m->ops->linear_forward(m->ops, y, x, &wt, refs[i].b ? refs[i].b->data : NULL, 1, work, work_bytes, AN_LINEAR_INFER);
    }
    return now() - t0;
}

int an_bench_nf4(int argc, char **argv) {
    int hrc;
    if (cli_help_check(&cli_help_bench_nf4, argc, argv, 2, &hrc)) return hrc;
    const char *preset = NULL;
    int tokens = 50, threads = 1;
    unsigned long long seed = 1;
    for (int i = 2; i < argc; i++) {
        if (i + 1 >= argc) return cli_help_fail(&cli_help_bench_nf4, "bench nf4: %s needs a value", argv[i]);
        if (!strcmp(argv[i], "--preset")) preset = argv[++i];
        else if (!strcmp(argv[i], "--tokens")) tokens = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seed")) seed = strtoull(argv[++i], NULL, 10);
        else return cli_help_fail(&cli_help_bench_nf4, "bench nf4: unknown argument '%s'", argv[i]);
    }
    if (!preset || tokens < 1 || threads < 1) return cli_help_fail(&cli_help_bench_nf4, "bench nf4: --preset is required; --tokens and --threads are >= 1");
    omp_set_num_threads(threads);
    char path[4096];
    if (an_file_exists(preset)) snprintf(path, sizeof path, "%s", preset);
    else snprintf(path, sizeof path, "configs/models/%s.json", preset);
    an_model_config cfg;
    an_error err;
    if (an_config_load(&cfg, path, &err)) return cli_error(&err);
    an_model *f = an_model_init_random(&cfg, an_ops_cpu(), seed, &err);
    an_model *q = f ? an_model_init_random(&cfg, an_ops_cpu(), seed, &err) : NULL;
    if (!f || !q || an_model_quantize_nf4(q, 64, 1, &err)) {
        an_model_free(f);
        an_model_free(q);
        return cli_error(&err);
    }
    int cap = cfg.n_layers * 8 + 1;
    an_linear_ref *rf = calloc((size_t)cap, sizeof *rf), *rq = calloc((size_t)cap, sizeof *rq);
    int n = an_model_linears(f, rf, cap);
    an_model_linears(q, rq, cap);
    size_t maxd = (size_t)(cfg.vocab_size > cfg.ffn_dim ? cfg.vocab_size : cfg.ffn_dim);
    float *x = malloc(maxd * sizeof(float)), *y = malloc(maxd * sizeof(float));
    double *t[2][N_KINDS];
    for (int h = 0; h < 2; h++)
        for (int k = 0; k < N_KINDS; k++) t[h][k] = malloc((size_t)tokens * sizeof(double));
    for (size_t i = 0; i < maxd; i++) x[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    size_t wf = an_model_linear_work_bytes(f, NULL, 1), wq = an_model_linear_work_bytes(q, NULL, 1);
    size_t wb = wf > wq ? wf : wq;
    void *work = an_ops_cpu()->alloc(an_ops_cpu(), wb ? wb : 1);
    size_t lin = 0;
    for (int i = 0; i < n; i++)
        if (!rf[i].is_head) lin += rf[i].w->numel;
    for (int k = 0; k < N_KINDS; k++) token(k == NF4_LINEAR ? q : f, k == NF4_LINEAR ? rq : rf, n, 1, k, x, y, work, wb); /* warm */
    for (int s = 0; s < tokens; s++)
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < N_KINDS; k++)
                t[h][k][s] = token(k == NF4_LINEAR ? q : f, k == NF4_LINEAR ? rq : rf, n, h, k, x, y, work, wb);
    const char *names[N_KINDS] = {"float32 cblas_sgemv", "float32 linear_forward (matvec)", "NF4 linear_forward"};
    printf("%s: %d layers, %zu linear weights (+ %zu in the float32 head), %d tokens, %d thread%s, %s NF4 kernel\n", preset,
           cfg.n_layers, lin, (size_t)cfg.vocab_size * cfg.dim, tokens, threads, threads > 1 ? "s" : "",
           an_nf4_matvec_is_simd() ? "AVX2" : "plain-C");
    double best[2][N_KINDS], med[2][N_KINDS];
    for (int h = 0; h < 2; h++) {
        printf("  %s:\n", h ? "whole stack with the head" : "linear layers without the head");
        for (int k = 0; k < N_KINDS; k++) {
            qsort(t[h][k], (size_t)tokens, sizeof(double), cmp_double);
            best[h][k] = t[h][k][0];
            med[h][k] = t[h][k][tokens / 2];
            printf("    %-36s best %8.3f ms  median %8.3f ms per token\n", names[k], 1e3 * best[h][k], 1e3 * med[h][k]);
        }
        printf("    NF4 speed-up over sgemv: best %.2fx, median %.2fx\n", best[h][F32_GEMV] / best[h][NF4_LINEAR],
               med[h][F32_GEMV] / med[h][NF4_LINEAR]);
    }
    for (int h = 0; h < 2; h++)
        for (int k = 0; k < N_KINDS; k++) free(t[h][k]);
    an_ops_cpu()->free(an_ops_cpu(), work);
    free(x);
    free(y);
    free(rf);
    free(rq);
    an_model_free(f);
    an_model_free(q);
    return 0;
}
