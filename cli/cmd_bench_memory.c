/* autoneg bench memory: the memory plan of a training step, computed from a config without
 * allocating the model (model/qlora_plan.h), and optionally the measured peak of a real step.
 *
 *   autoneg bench memory --preset NAME|config.json [--method qlora|lora|full] [--batch B] [--seq T]
 *                        [--r R] [--recompute] [--frozen-dtype bf16|f32] [--dtype f32|bf16] [--lora-head]
 *                        [--dropout] [--threads K] [--measure [--layers L]] [--device cpu|cuda|cuda-bf16]
 *
 * --frozen-dtype bf16 stores the frozen embedding and head in bf16 (an_model_store_frozen_bf16), as
 * autoneg does when asked; --dtype bf16 is a what-if for every non-quantized parameter (norms too),
 * which autoneg does not implement.
 *
 * --measure builds the preset (with only L layers when given) from random weights, quantizes it,
 * attaches the adapter, plans (with per-layer recomputation under --recompute) and runs one
 * training step, and prints the step's peak resident set (VmHWM, reset just before the step) next
 * to the plan of the same configuration.
 *
 * --device cuda plans the device's memory (its workspace sizes; NF4 weights as their device copies)
 * and --measure then reads the backend's own count of its allocations (an_ops.memory_counts): what
 * the model and trainer hold, the peak of the step, and how many allocations the step made (none: the
 * plan holds everything). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/help.h"
#include "core/file.h"
#include "model/lora.h"
#include "model/nf4_weights.h"
#include "model/qlora_plan.h"
#include "train/lora_step.h"
#include "train/step.h"

static const cli_opt memory_opts[] = {
    {"--preset", "NAME|config.json", "model shape: configs/models/NAME.json or a config.json (required)"},
    {"--method", "qlora|lora|full", "what is trained (default: qlora)"},
    {"--batch", "B", "sequences per step (default: 1)"},
    {"--seq", "T", "tokens per sequence (default: 2048)"},
    {"--r", "R", "LoRA rank (default: 64)"},
    {"--recompute", NULL, "recompute each layer's activations in the backward pass"},
    {"--frozen-dtype", "bf16|f32", "dtype of the frozen embedding and head (default: f32)"},
    {"--dtype", "f32|bf16", "what-if: every non-quantized parameter in this dtype (default: f32)"},
    {"--lora-head", NULL, "an adapter on the LM head too"},
    {"--dropout", NULL, "count LoRA dropout's masks"},
    {"--threads", "K", "OpenMP threads the workspace is sized for (default: OpenMP's)"},
    {"--measure", NULL, "also run one real step and print its peak resident set beside the plan"},
    {"--layers", "L", "with --measure: build only L layers (default: all)"},
    {"--device", "cpu|cuda|cuda-bf16", "backend whose memory is planned and measured (default: cpu)"},
    {NULL, NULL, NULL},
};

const cli_help cli_help_bench_memory = {
    "bench memory --preset NAME|config.json [--method qlora|lora|full] [--batch B] [--seq T] [--r R]\n"
    "bench memory --preset NAME [--recompute] [--frozen-dtype bf16|f32] [--dtype f32|bf16] [--lora-head]\n"
    "bench memory --preset NAME [--dropout] [--threads K] [--measure [--layers L]] [--device cpu|cuda|cuda-bf16]",
    "Prints the memory plan of one training step, computed from the config without building the model,\n"
    "on stdout; with --measure, also the measured peak of a real step.",
    memory_opts, NULL, NULL,
    "bench memory --preset internlm2-7b --method qlora --seq 2048",
};

static double gib(size_t b) { return (double)b / (1024.0 * 1024.0 * 1024.0); }

/* a field of /proc/self/status in bytes (kB there), or 0 */
static size_t proc_status(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0, n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':') kb = strtoull(line + n + 1, NULL, 10);
    fclose(f);
    return kb * 1024;
}

static void reset_peak(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w"); /* "5" resets VmHWM to the current RSS (Linux 4.0+) */
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

static void print_plan(const an_model_config *cfg, const an_memory_opts *o, const an_memory_plan *p, int recompute) {
    const char *method = o->method == AN_METHOD_QLORA ? "qlora" : o->method == AN_METHOD_LORA ? "lora" : "full";
    const char *other = o->other_bytes == 4 ? "float32" : "bf16";
    printf("%s, %d layers, hidden %d, ffn %d, vocab %d: %s, batch %d x %d tokens", cfg->architecture, cfg->n_layers,
           cfg->dim, cfg->ffn_dim, cfg->vocab_size, method, o->B, o->T);
    if (o->method != AN_METHOD_FULL) printf(", LoRA r %d on every linear%s", o->r, o->lora_head ? " and the head" : " but the head");
    printf("\n");
    if (o->method == AN_METHOD_QLORA)
        printf("  base linear weights  %14zu params  NF4 (blocks of %d%s) %.4f bytes/param  %8.3f GiB\n", p->n_linear,
               o->blocksize, o->double_quant ? ", double quant" : "", p->linear_bytes_per_param, gib(p->base_linear));
    else
        printf("  base linear weights  %14zu params  %s                                %8.3f GiB\n", p->n_linear, other,
               gib(p->base_linear));
    if (o->frozen_bf16)
        printf("  embeddings/head/norms %13zu params  embedding/head bf16 (%zu), rest %-7s  %8.3f GiB\n", p->n_other,
               p->n_frozen_bf16, other, gib(p->base_other));
    else
        printf("  embeddings/head/norms %13zu params  %-7s                               %8.3f GiB\n", p->n_other, other,
               gib(p->base_other));
    if (o->method != AN_METHOD_FULL)
        printf("  adapters             %14zu params  float32                               %8.3f GiB\n", p->n_adapter,
               gib(p->adapters));
    printf("  gradients            %52s %8.3f GiB\n", o->method == AN_METHOD_FULL ? "(every parameter, float32)" : "(adapters only)", gib(p->grads));
    printf("  AdamW moments        %52s %8.3f GiB\n", "(two per trained parameter)", gib(p->optimizer));
    printf("  ops' workspace       %52s %8.3f GiB\n", "", gib(p->workspace));
    printf("  activations          %52s %8.3f GiB\n", "(no recomputation)", gib(p->activations));
    printf("  activations          %52s %8.3f GiB\n", "(per-layer recomputation)", gib(p->activations_recompute));
    printf("  total                %52s %8.3f GiB (%.2f GB)\n", "(no recomputation)", gib(p->total), p->total / 1e9);
    printf("  total                %52s %8.3f GiB (%.2f GB)%s\n", "(with per-layer recomputation)", gib(p->total_recompute),
           p->total_recompute / 1e9, recompute ? "   <- --recompute" : "");
}

static int measure(an_model_config cfg, const an_memory_opts *o, int recompute, unsigned long long seed) {
    an_error err;
    size_t rss0 = proc_status("VmRSS");
    const an_ops *ops = o->ops ? o->ops : an_ops_cpu();
    an_model *m = an_model_init_random(&cfg, ops, seed, &err);
    if (!m) return cli_error(&err);
    int rc = 1;
    an_lora_trainer tr;
    memset(&tr, 0, sizeof tr);
    an_full_trainer ft;
    memset(&ft, 0, sizeof ft);
    int32_t *ids = malloc((size_t)o->B * o->T * sizeof(int32_t)), *tg = malloc((size_t)o->B * o->T * sizeof(int32_t));
    if (!ids || !tg) {
        cli_fail("bench memory: out of memory");
        goto done;
    }
    if (o->method == AN_METHOD_QLORA && an_model_quantize_nf4(m, o->blocksize, o->double_quant, &err)) goto fail;
    if (o->method != AN_METHOD_FULL) {
        an_lora_config c = an_lora_config_default();
        c.r = o->r;
        c.alpha = 16;
        c.dropout = o->dropout ? 0.1f : 0.0f;
        if (an_lora_config_add_target(&c, "all-linear", &err)) goto fail;
        if (o->lora_head && an_lora_config_add_target(&c, cfg.arch == AN_ARCH_INTERNLM2 ? "output" : "lm_head", &err))
            goto fail;
        if (an_lora_attach(m, &c, &err)) goto fail;
    }
    if (o->frozen_bf16 && an_model_store_frozen_bf16(m, &err)) goto fail;
    an_model_set_recompute(m, recompute);
    if (an_model_plan(m, o->B, o->T, &err)) goto fail;
    if (o->method != AN_METHOD_FULL ? an_lora_trainer_init(&tr, m, &err) : an_full_trainer_init(&ft, m, &err)) goto fail;
    for (int i = 0; i < o->B * o->T; i++) {
        ids[i] = (int32_t)((i * 7919u + 13u) % (unsigned)cfg.vocab_size);
        tg[i] = (int32_t)(((i + 1) * 7919u + 13u) % (unsigned)cfg.vocab_size);
    }
    an_batch b = {ids, NULL, NULL, tg, o->B, o->T};
    an_adamw_config opt = {2e-4f, 0.9f, 0.999f, 1e-8f, 0.0f, 1.0f};
    an_step_stats st;
    size_t before = proc_status("VmRSS"), held = 0, dev_peak = 0, dev_allocs = 0;
    reset_peak();
    if (ops->memory_counts) ops->memory_counts(ops, 1, &held, NULL, NULL);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (o->method != AN_METHOD_FULL ? an_lora_train_step(&tr, &b, &opt, &st, &err) : an_train_step(&ft, &b, &opt, &st, &err))
        goto fail;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    size_t peak = proc_status("VmHWM");
    if (ops->memory_counts) ops->memory_counts(ops, 0, NULL, &dev_peak, &dev_allocs);
    an_memory_plan p;
    if (an_memory_plan_compute(&cfg, o, &p, &err)) goto fail;
    size_t planned = recompute ? p.total_recompute : p.total;
    if (ops->memory_counts) {
        printf("measured on %s (%d layers, random weights, one step %.1f s, loss %.3f; the backend's count of its "
               "allocations):\n", ops->name, cfg.n_layers,
               (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec), st.loss);
        printf("  held before the step      %8.3f GiB (model, adapter, trainer, plan)\n", gib(held));
        printf("  peak during the step      %8.3f GiB, %zu allocations during the step\n", gib(dev_peak), dev_allocs);
        printf("  plan of this configuration %7.3f GiB (%s, what ran); measured - plan %+.2f MiB\n", gib(planned),
               recompute ? "with recomputation" : "no recomputation", ((double)dev_peak - (double)planned) / 1048576.0);
        rc = 0;
        goto done;
    }
    printf("measured (%d layers, random weights, one step %.1f s, loss %.3f, %d threads):\n", cfg.n_layers,
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec), st.loss, omp_get_max_threads());
    printf("  resident before the model %8.3f GiB (program, libraries)\n", gib(rss0));
    printf("  resident before the step  %8.3f GiB\n", gib(before));
    printf("  peak during the step      %8.3f GiB  -> %.3f GiB above the program's own\n", gib(peak), gib(peak - rss0));
    printf("  plan of this configuration %7.3f GiB (%s, what ran); measured - plan %+.3f GiB\n", gib(planned),
           recompute ? "with recomputation" : "no recomputation", (double)(peak - rss0) / 1073741824.0 - gib(planned));
    rc = 0;
    goto done;
fail:
    cli_error(&err);
done:
    free(ids);
    free(tg);
    an_lora_trainer_free(&tr);
    an_full_trainer_free(&ft);
    an_model_free(m);
    return rc;
}

int an_bench_memory(int argc, char **argv) {
    int hrc;
    if (cli_help_check(&cli_help_bench_memory, argc, argv, 2, &hrc)) return hrc;
    const char *preset = NULL, *device = "cpu";
    an_memory_opts o = an_memory_opts_default();
    int recompute = 0, do_measure = 0, layers = 0, threads = 0;
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--recompute")) recompute = 1;
        else if (!strcmp(f, "--lora-head")) o.lora_head = 1;
        else if (!strcmp(f, "--dropout")) o.dropout = 1;
        else if (!strcmp(f, "--measure")) do_measure = 1;
        else if (!v) return cli_help_fail(&cli_help_bench_memory, "bench memory: %s needs a value", f);
        else if (!strcmp(f, "--preset")) preset = argv[++i];
        else if (!strcmp(f, "--batch")) o.B = atoi(argv[++i]);
        else if (!strcmp(f, "--seq")) o.T = atoi(argv[++i]);
        else if (!strcmp(f, "--r")) o.r = atoi(argv[++i]);
        else if (!strcmp(f, "--threads")) threads = atoi(argv[++i]);
        else if (!strcmp(f, "--layers")) layers = atoi(argv[++i]);
        else if (!strcmp(f, "--device")) device = argv[++i];
        else if (!strcmp(f, "--frozen-dtype")) {
            v = argv[++i];
            if (!strcmp(v, "f32")) o.frozen_bf16 = 0;
            else if (!strcmp(v, "bf16")) o.frozen_bf16 = 1;
            else return cli_fail("bench memory: --frozen-dtype must be bf16 or f32, not '%s'", v);
        } else if (!strcmp(f, "--dtype")) {
            v = argv[++i];
            if (!strcmp(v, "f32")) o.other_bytes = 4;
            else if (!strcmp(v, "bf16")) o.other_bytes = 2;
            else return cli_fail("bench memory: --dtype must be f32 or bf16, not '%s'", v);
        } else if (!strcmp(f, "--method")) {
            v = argv[++i];
            if (!strcmp(v, "qlora")) o.method = AN_METHOD_QLORA;
            else if (!strcmp(v, "lora")) o.method = AN_METHOD_LORA;
            else if (!strcmp(v, "full")) o.method = AN_METHOD_FULL;
            else return cli_fail("bench memory: --method must be qlora, lora or full, not '%s'", v);
        } else return cli_help_fail(&cli_help_bench_memory, "bench memory: unknown argument '%s'", f);
    }
    if (!preset) return cli_help_fail(&cli_help_bench_memory, "bench memory: --preset is required");
    char path[4096];
    if (an_file_exists(preset)) snprintf(path, sizeof path, "%s", preset);
    else snprintf(path, sizeof path, "configs/models/%s.json", preset);
    an_model_config cfg;
    an_error err;
    if (an_config_load(&cfg, path, &err)) return cli_error(&err);
    if (threads > 0) omp_set_num_threads(threads); /* the workspace is sized for the threads of now */
    if (strcmp(device, "cpu") != 0 && !(o.ops = cli_backend(device))) return 1;
    an_memory_plan p;
    if (an_memory_plan_compute(&cfg, &o, &p, &err)) return cli_error(&err);
    print_plan(&cfg, &o, &p, recompute);
    if (o.other_bytes == 2)
        printf("  (--dtype bf16 is a what-if: autoneg holds norms, adapters and activations in float32, and the\n"
               "   embedding/head in bf16 only with --frozen-dtype bf16)\n");
    else
        printf("  (adapters, norms and activations in float32; embedding/head in %s)\n", o.frozen_bf16 ? "bf16" : "float32");
    if (o.ops)
        printf("  (%s memory: the NF4 weights as their device copies; their host copies, the program and its\n"
               "   libraries' own workspaces are not in it)\n", o.ops->name);
    if (!do_measure) return 0;
    if (o.other_bytes != 4)
        return cli_fail("bench memory: --measure runs what autoneg holds: drop --dtype bf16 (--frozen-dtype bf16 is real)");
    if (layers > 0) {
        if (layers > cfg.n_layers) return cli_fail("bench memory: --layers %d exceeds the preset's %d", layers, cfg.n_layers);
        cfg.n_layers = layers;
    }
    return measure(cfg, &o, recompute, 1);
}
