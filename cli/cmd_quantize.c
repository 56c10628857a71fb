/* autoneg quantize --model M --type nf4 --out DIR [--blocksize 64] [--no-double-quant]
 *
 * Writes a Hugging Face folder whose linear weights (all but the head) are NF4 in bitsandbytes'
 * serialization, with transformers' quantization_config in config.json; autoneg loads it again
 * without re-quantizing (docs/qlora.md). Tokenizer and generation files are copied along. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/help.h"
#include "core/file.h"
#include "model/nf4_weights.h"

static const cli_opt quantize_opts[] = {
    {"--model", "M", "the model to quantize (required)"},
    {"--type", "nf4", "the quantization; only nf4 (required)"},
    {"--out", "DIR", "the Hugging Face folder to write (required)"},
    {"--blocksize", "N", "weights per absmax scale (default: 64)"},
    {"--no-double-quant", NULL, "keep the scales in float32 (default: quantize them too, as QLoRA)"},
    {NULL, NULL, NULL},
};

const cli_help cli_help_quantize = {
    "quantize --model M --type nf4 --out DIR [--blocksize 64] [--no-double-quant]",
    "Writes the model with its linear weights (all but the head) in NF4, bitsandbytes' serialization,\n"
    "which autoneg and transformers load again; the summary goes to stdout.",
    quantize_opts, NULL, NULL,
    "quantize --model ../shared/models/TinyStories-656K --type nf4 --out tiny-nf4",
};

static const char *const side_files[] = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "generation_config.json", "autoneg.json", "vocab.json", "merges.txt",
};

static int copy_side_files(const char *src_dir, const char *dst_dir, an_error *err) {
    if (!an_is_dir(src_dir)) return 0; /* a llama2.c .bin has no side files */
    for (size_t i = 0; i < sizeof side_files / sizeof side_files[0]; i++) {
        char src[4096], dst[4096];
        if (an_path_join(src, sizeof src, src_dir, side_files[i]) || an_path_join(dst, sizeof dst, dst_dir, side_files[i]))
            return an_fail(err, "%s: path too long", dst_dir);
        if (!an_file_exists(src)) continue;
        size_t n = 0;
        char *data = an_read_file(src, &n, err);
        if (!data) return -1;
        int rc = an_write_file_atomic(dst, data, n, err);
        free(data);
        if (rc) return -1;
    }
    return 0;
}

int an_cmd_quantize(int argc, char **argv) {
    int hrc;
    if (cli_help_check(&cli_help_quantize, argc, argv, 1, &hrc)) return hrc;
    const char *model = NULL, *type = NULL, *out = NULL;
    int blocksize = 64, dq = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--type") && i + 1 < argc) type = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--blocksize") && i + 1 < argc) blocksize = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-double-quant")) dq = 0;
        else return cli_help_fail(&cli_help_quantize, "quantize: unknown or incomplete argument '%s'", argv[i]);
    }
    if (!model || !type || !out) return cli_help_fail(&cli_help_quantize, "quantize: --model, --type and --out are required");
    if (strcmp(type, "nf4") != 0) return cli_fail("quantize: --type %s is not supported (only nf4)", type);
    an_error err;
    an_model *m = an_model_load_nf4(model, an_ops_cpu(), blocksize, dq, &err);
    if (!m) return cli_error(&err);
    int rc = an_model_save(m, out, &err) || copy_side_files(model, out, &err);
    if (!rc) {
        size_t n = an_model_nf4_param_count(m), bytes = an_model_nf4_bytes(m);
        size_t rest = an_model_param_count(m, 0) - n;
        printf("%s: %d linear weights in NF4 (blocksize %d%s): %zu parameters, %.2f MiB, %.4f bytes/parameter; "
               "%zu parameters stay float32 (embeddings, norms, head)\n",
               out, m->nf4 ? m->nf4->n : 0, m->nf4 ? m->nf4->blocksize : blocksize, (m->nf4 ? m->nf4->double_quant : dq) ? ", double quantization" : "", n, (double)bytes / 1048576,
               n ? (double)bytes / (double)n : 0.0, rest);
    }
    an_model_free(m);
    return rc ? cli_error(&err) : 0;
}
