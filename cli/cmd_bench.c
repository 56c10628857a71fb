/* autoneg bench train: the speed of a training step on a randomly initialised preset, with the
 * fraction of this machine's measured sgemm rate it reaches and the memory it needs.
 *
 *   autoneg bench train --preset NAME|config.json [--batch B] [--seq T] [--steps N] [--method full|lora|qlora]
 *                       [--rank R] [--dropout P] [--threads K] [--seed S] [--json] [--device cpu|cuda|cuda-bf16]
 *
 * --method lora: a LoRA adapter on every linear layer but the head (PEFT's "all-linear"), rank R
 * (default 16), alpha 16, dropout 0.1 (XTuner's QLoRA recipe values but its r 64); the base is frozen.
 * --method qlora: the same on a base whose linear weights are NF4 with double quantization.
 *
 * Presets are Hugging Face config.json files in configs/models/. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli/cli.h"
#include "cli/help.h"
#include "core/file.h"
#include "core/rng.h"
#include "kernels/machine.h"
#include "model/lora.h"
#include "model/model.h"
#include "train/lora_step.h"
#include "train/step.h"

typedef struct bench_train_args {
    const char *preset;
    int batch, seq, steps, threads, json, rank;
    float dropout; /* LoRA dropout (XTuner: 0.1) */
    const char *method, *device;
    unsigned long long seed;
} bench_train_args;

static int parse_int(const char *flag, const char *s, int lo, int hi, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end || v < lo || v > hi) return cli_fail("%s: expected an integer in [%d, %d], got '%s'", flag, lo, hi, s);
    *out = (int)v;
    return 0;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* Forward FLOPs of one token at context position t (0-based) of a causal sequence, counting each
 * multiply-add as 2: the linear layers, the LM head, and attention over t + 1 keys. */
static double forward_flops_per_token(const an_model_config *c, double ctx) {
    double C = c->dim, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads, F = c->ffn_dim, V = c->vocab_size;
    double attn_proj = C * nh * hd + 2 * C * nkv * hd + nh * hd * C;
    double mlp = (c->arch == AN_ARCH_GPT2 ? 2 : 3) * C * F;
    double attn_scores = 2 * nh * hd * ctx; /* q.k and p.v */
    return 2 * (c->n_layers * (attn_proj + mlp + attn_scores) + C * V);
}

/* FLOPs of one LoRA training token at context position ctx: the frozen linears and head run forward
 * and give input gradients only (1x forward each, never weight gradients); attention's backward is 2x
 * its forward; each adapter costs 2 (in + out) r forward and twice that backward (dB, du, dA, dx). */
static double lora_flops_per_token(const an_model *m, double ctx) {
    const an_model_config *c = &m->cfg;
    double attn_scores = 2 * 2 * c->n_heads * c->head_dim * ctx * c->n_layers;
    double all = forward_flops_per_token(c, ctx), linears = all - attn_scores;
    double adapters = 0;
    for (int i = 0; i < m->lora->n_mods; i++)
        adapters += 2.0 * (m->lora->mods[i].in + m->lora->mods[i].out) * m->lora->cfg.r;
    return 2 * linears + 3 * attn_scores + 3 * adapters;
}

static int bench_train(const bench_train_args *a) {
    int qlora = strcmp(a->method, "qlora") == 0, lora = qlora || strcmp(a->method, "lora") == 0;
    if (strcmp(a->method, "full") != 0 && !lora)
        return cli_fail("bench train: --method %s is not available (full, lora, qlora)", a->method);
    char path[4096];
    if (an_file_exists(a->preset))
        snprintf(path, sizeof path, "%s", a->preset);
    else
        snprintf(path, sizeof path, "configs/models/%s.json", a->preset);
    an_error err;
    an_model_config cfg;
    if (an_config_load(&cfg, path, &err)) return cli_error(&err);
    if (a->seq > cfg.max_seq) return cli_fail("bench train: --seq %d exceeds the preset's %d positions", a->seq, cfg.max_seq);

    /* the sgemm probe's matrices exist before the model, so measuring between steps allocates nothing */
    an_sgemm_probe probe;
    if (an_sgemm_probe_init(&probe, 1024)) return cli_fail("bench train: out of memory for the sgemm probe");
    /* the linear layers' products timed, for every method: NF4 weights run through the wrapped table,
     * which supports what the device does */
    const an_ops *device = cli_backend(a->device);
    if (!device) {
        an_sgemm_probe_free(&probe);
        return 1;
    }
    const an_ops *ops = cli_timed_matmul_ops(device);
    an_model *m = an_model_init_random(&cfg, ops, a->seed, &err);
    if (!m) {
        an_sgemm_probe_free(&probe);
        return cli_error(&err);
    }
    an_full_trainer tr;
    an_lora_trainer ltr;
    memset(&tr, 0, sizeof tr);
    memset(&ltr, 0, sizeof ltr);
    int init_rc;
    if (lora) {
        an_lora_config lc = an_lora_config_default();
        lc.r = a->rank;
        lc.alpha = 16;
        lc.dropout = a->dropout;
        lc.seed = a->seed;
        init_rc = (qlora && an_model_quantize_nf4(m, 64, 1, &err)) ||
                  an_lora_config_add_target(&lc, "all-linear", &err) || an_lora_attach(m, &lc, &err) ||
                  an_model_plan(m, a->batch, a->seq, &err) || an_lora_trainer_init(&ltr, m, &err);
    } else {
        an_model_set_all_trainable(m, 1);
        init_rc = an_full_trainer_init(&tr, m, &err) || an_model_plan(m, a->batch, a->seq, &err);
    }
    if (init_rc) {
        an_lora_trainer_free(&ltr);
        an_full_trainer_free(&tr);
        an_model_free(m);
        an_sgemm_probe_free(&probe);
        return cli_error(&err);
    }

    /* Random tokens; each predicts the next, the last of a row predicts nothing. */
    int n = a->batch * a->seq;
    int32_t *ids = malloc(sizeof *ids * n), *targets = malloc(sizeof *targets * n);
    an_rng rng;
    an_rng_seed(&rng, a->seed + 1);
    for (int i = 0; i < n; i++) ids[i] = (int32_t)an_rng_below(&rng, (uint64_t)cfg.vocab_size);
    for (int i = 0; i < n; i++) targets[i] = (i % a->seq == a->seq - 1) ? AN_IGNORE_INDEX : ids[i + 1];
    an_batch b = {.ids = ids, .targets = targets, .B = a->batch, .T = a->seq};
    an_adamw_config opt = {.lr = 1e-4f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.0f, .max_grad_norm = 1.0f};

    double *step_s = calloc((size_t)a->steps, sizeof *step_s);
    double fwd = 0, bwd = 0, optim = 0, peak = 0, fma_peak = 0, matmul = 0;
    int rc = 0;
    for (int s = 0; s <= a->steps && rc == 0; s++) { /* step 0 warms caches and page tables */
        an_step_stats st;
        double matmul_before = cli_matmul_seconds();
        if (lora ? an_lora_train_step(&ltr, &b, &opt, &st, &err) : an_train_step(&tr, &b, &opt, &st, &err)) {
            rc = cli_error(&err);
            break;
        }
        /* The sgemm peak is the best rate seen next to every step, untimed: on a shared machine one
         * measurement at the end can fall in a slow minute and read lower than the steps ran. */
        double g = an_sgemm_probe_run(&probe, 3), f = an_fma_peak_gflops(3);
        if (g > peak) peak = g;
        if (f > fma_peak) fma_peak = f;
        if (!a->json) fprintf(stderr, "step %d: loss %.4f, %.0f ms\n", s, st.loss, 1e3 * (st.t_forward + st.t_backward + st.t_optimizer));
        if (s == 0) continue;
        step_s[s - 1] = st.t_forward + st.t_backward + st.t_optimizer;
        matmul += cli_matmul_seconds() - matmul_before;
        fwd += st.t_forward;
        bwd += st.t_backward;
        optim += st.t_optimizer;
    }
    if (rc == 0) {
        /* median and spread of the step times */
        qsort(step_s, (size_t)a->steps, sizeof *step_s, cmp_double);
        double *sorted = step_s;
        double med = sorted[a->steps / 2], lo = sorted[0], hi = sorted[a->steps - 1];
        double flops = 0;
        for (int t = 0; t < a->seq; t++) flops += lora ? lora_flops_per_token(m, t + 1) : 3.0 * forward_flops_per_token(&cfg, t + 1);
        flops *= a->batch; /* full: backward of a fully trained network costs twice its forward */
        double gflops = flops / med / 1e9;
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        double peak_mib = ru.ru_maxrss / 1024.0;
        double adapter_mib = lora ? 2.0 * an_lora_bytes_params(m->lora) / 1048576.0 : 0; /* adapters + grads */
        double optim_mib = (lora ? an_lora_trainer_bytes(&ltr) : an_full_trainer_bytes(&tr)) / 1048576.0;
        double planned_mib = (an_model_bytes_params(m) + an_model_bytes_grads(m) + an_model_bytes_activations(m)) /
                                 1048576.0 + adapter_mib + optim_mib;
        size_t trained = lora ? an_lora_param_count(m->lora) : an_model_param_count(m, 1);
        double tps = n / med;
        double step_total = fwd + bwd + optim, matmul_share = step_total > 0 ? matmul / step_total : 0;
        if (a->json) {
            printf("{\"peer\": \"autoneg\", \"preset\": \"%s\", \"method\": \"%s\", \"batch\": %d, \"seq\": %d, "
                   "\"threads\": %d, \"params\": %zu, \"tokens_per_s\": %.2f, \"step_ms_median\": %.1f, "
                   "\"step_ms_min\": %.1f, \"step_ms_max\": %.1f, \"forward_ms\": %.1f, \"backward_ms\": %.1f, "
                   "\"optimizer_ms\": %.1f, \"gflops\": %.2f, \"sgemm_peak_gflops\": %.2f, "
                   "\"fraction_of_sgemm_peak\": %.4f, \"peak_mib\": %.1f, \"planned_mib\": %.1f, "
                   "\"trained_params\": %zu, \"lora_rank\": %d, \"fma_peak_gflops\": %.2f, \"fraction_of_fma_peak\": %.4f",
                   a->preset, a->method, a->batch, a->seq, omp_get_max_threads(), an_model_param_count(m, 0), tps,
                   med * 1e3, lo * 1e3, hi * 1e3, fwd / a->steps * 1e3, bwd / a->steps * 1e3, optim / a->steps * 1e3,
                   gflops, peak, gflops / peak, peak_mib, planned_mib, trained, lora ? a->rank : 0, fma_peak,
                   fma_peak > 0 ? gflops / fma_peak : 0.0);
            printf(", \"matmul_ms\": %.1f, \"matmul_share\": %.4f", matmul / a->steps * 1e3, matmul_share);
            printf("}\n");
        } else {
            printf("preset %s (%zu parameters, %zu trained), %s fine-tuning, batch %d x %d tokens, %d threads\n",
                   a->preset, an_model_param_count(m, 0), trained, a->method, a->batch, a->seq, omp_get_max_threads());
            printf("  %.1f tokens/s; step %.1f ms median (min %.1f, max %.1f, %d steps)\n", tps, med * 1e3, lo * 1e3,
                   hi * 1e3, a->steps);
            printf("  forward %.1f ms, backward %.1f ms, optimizer %.1f ms (means)\n", fwd / a->steps * 1e3,
                   bwd / a->steps * 1e3, optim / a->steps * 1e3);
            printf("  %.1f GFLOP/s = %.0f%% of this machine's sgemm peak (%.1f GFLOP/s), %.0f%% of its multiply-add "
                   "peak (%.1f GFLOP/s)\n", gflops, 100 * gflops / peak, peak, fma_peak > 0 ? 100 * gflops / fma_peak : 0.0,
                   fma_peak);
            printf("  matmuls of the linear layers and the head %.1f ms a step (%.0f%%), the rest %.1f ms (means)\n",
                       matmul / a->steps * 1e3, 100 * matmul_share, (step_total - matmul) / a->steps * 1e3);
            printf("  peak memory %.0f MiB (planned: params %.0f, grads %.0f, adapters+grads %.1f, optimizer %.1f, "
                   "activations %.0f MiB)\n",
                   peak_mib, an_model_bytes_params(m) / 1048576.0, an_model_bytes_grads(m) / 1048576.0, adapter_mib,
                   optim_mib, an_model_bytes_activations(m) / 1048576.0);
        }
    }
    free(step_s);
    free(ids);
    free(targets);
    an_full_trainer_free(&tr);
    an_lora_trainer_free(&ltr);
    an_model_free(m);
    an_sgemm_probe_free(&probe);
    return rc;
}

static const cli_opt train_opts[] = {
    {"--preset", "NAME|config.json", "model shape: configs/models/NAME.json or a config.json (required)"},
    {"--batch", "B", "sequences per step (default: 4)"},
    {"--seq", "T", "tokens per sequence (default: 64)"},
    {"--steps", "N", "timed steps after one warm-up step (default: 5)"},
    {"--method", "full|lora|qlora", "what is trained (default: full)"},
    {"--rank", "R", "LoRA rank (default: 16)"},
    {"--dropout", "P", "LoRA dropout in [0, 1) (default: 0.1)"},
    {"--threads", "K", "OpenMP threads (default: OpenMP's)"},
    {"--seed", "S", "seed of the random weights and tokens (default: 1234)"},
    {"--json", NULL, "one JSON line instead of the text report"},
    {"--device", "cpu|cuda|cuda-bf16", "backend to compute on (default: cpu)"},
    {NULL, NULL, NULL},
};

const cli_help cli_help_bench_train = {
    "bench train --preset NAME|config.json [--batch B] [--seq T] [--steps N] [--method full|lora|qlora] [options]",
    "Times training steps on a randomly initialised preset: tokens/s, the share of this machine's sgemm\n"
    "rate, and peak against planned memory. The report goes to stdout, each step's loss to stderr.",
    train_opts, NULL, NULL,
    "bench train --preset llama-60m --batch 4 --seq 256 --method lora",
};

const cli_help cli_help_bench = {
    "bench train --preset NAME [options]\nbench generate --preset NAME [options]\n"
    "bench memory --preset NAME [options]\nbench nf4 --preset NAME [options]\nbench engine --preset NAME [options]",
    "Benchmarks on randomly initialised presets (configs/models/). 'autoneg bench COMMAND --help' gives\n"
    "each command's options. Results go to stdout, progress to stderr.\n\ncommands:\n"
    "  train      speed and memory of a training step\n"
    "  generate   decoding speed with the KV cache\n"
    "  memory     the memory plan of a training step, optionally measured\n"
    "  nf4        NF4 against float32 matrix-vector products of every linear layer\n"
    "  engine     the request engine: requests over several adapters against one adapter",
    NULL, NULL, NULL,
    "bench train --preset llama-60m",
};

int an_cmd_bench(int argc, char **argv) {
    if (argc < 2) return cli_help_fail(&cli_help_bench, "bench: which benchmark?");
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) return cli_help_print(&cli_help_bench);
    if (strcmp(argv[1], "memory") == 0) return an_bench_memory(argc, argv);
    if (strcmp(argv[1], "nf4") == 0) return an_bench_nf4(argc, argv);
    if (strcmp(argv[1], "generate") == 0) return an_bench_generate(argc, argv);
    if (strcmp(argv[1], "engine") == 0) return an_bench_engine(argc, argv);
    if (strcmp(argv[1], "train") != 0) return cli_help_fail(&cli_help_bench, "bench: unknown benchmark '%s'", argv[1]);
    int hrc;
    if (cli_help_check(&cli_help_bench_train, argc, argv, 2, &hrc)) return hrc;
    bench_train_args a = {.batch = 4, .seq = 64, .steps = 5, .method = "full", .seed = 1234, .rank = 16, .dropout = 0.1f};
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--json")) {
            a.json = 1;
            continue;
        }
        if (i + 1 >= argc) return cli_help_fail(&cli_help_bench_train, "bench train: %s needs a value", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--preset")) a.preset = v;
        else if (!strcmp(f, "--method")) a.method = v;
        else if (!strcmp(f, "--device")) a.device = v;
        else if (!strcmp(f, "--batch")) { if (parse_int(f, v, 1, 4096, &a.batch)) return 1; }
        else if (!strcmp(f, "--seq")) { if (parse_int(f, v, 2, 1 << 20, &a.seq)) return 1; }
        else if (!strcmp(f, "--steps")) { if (parse_int(f, v, 1, 100000, &a.steps)) return 1; }
        else if (!strcmp(f, "--rank")) { if (parse_int(f, v, 1, 65536, &a.rank)) return 1; }
        else if (!strcmp(f, "--dropout")) {
            char *end;
            a.dropout = strtof(v, &end);
            if (*v == 0 || *end || !(a.dropout >= 0 && a.dropout < 1)) return cli_fail("bench train: --dropout %s: must be in [0, 1)", v);
        }
        else if (!strcmp(f, "--threads")) { if (parse_int(f, v, 1, 1024, &a.threads)) return 1; }
        else if (!strcmp(f, "--seed")) a.seed = strtoull(v, NULL, 10);
        else return cli_help_fail(&cli_help_bench_train, "bench train: unknown option %s", f);
    }
    if (!a.preset) return cli_fail("bench train: --preset is required (e.g. gpt2-124m, llama-60m)");
    if (a.threads) omp_set_num_threads(a.threads);
    return bench_train(&a);
}
