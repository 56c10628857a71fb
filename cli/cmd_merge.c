/* autoneg merge --model M --adapter A --out DIR [--device cpu|cuda|cuda-bf16]
 *
 * Folds a PEFT LoRA adapter into its base (W += scaling * B A for every adapted layer) and writes a
 * Hugging Face folder: config.json + model.safetensors (float32), plus the tokenizer and generation
 * files of M (and a remote-code model's *.py) copied as they are. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "cli/help.h"
#include "core/file.h"
#include "model/lora.h"
#include "model/model.h"

static const char *const copied[] = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
    "merges.txt", "added_tokens.json", "generation_config.json", "chat_template.jinja", "tokenizer.bin",
};

static int copy_file(const char *src_dir, const char *dst_dir, const char *name) {
    char src[4096], dst[4096];
    if (an_path_join(src, sizeof src, src_dir, name) || an_path_join(dst, sizeof dst, dst_dir, name))
        return cli_fail("merge: path too long for %s", name);
    if (!an_file_exists(src)) return 0;
    an_error err;
    size_t n = 0;
    char *data = an_read_file(src, &n, &err);
    if (!data) return cli_error(&err);
    int rc = an_write_file_atomic(dst, data, n, &err) ? cli_error(&err) : 0;
    free(data);
    return rc;
}

static int copy_side_files(const char *model_dir, const char *out) {
    for (size_t i = 0; i < sizeof copied / sizeof copied[0]; i++)
        if (copy_file(model_dir, out, copied[i])) return 1;
    DIR *d = opendir(model_dir);
    if (!d) return 0;
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n > 3 && strcmp(e->d_name + n - 3, ".py") == 0) rc = copy_file(model_dir, out, e->d_name);
    }
    closedir(d);
    return rc;
}

static const cli_opt merge_opts[] = {
    {"--model", "M", "the base model the adapter was trained on (required)"},
    {"--adapter", "A", "PEFT LoRA adapter folder (required)"},
    {"--out", "DIR", "the merged Hugging Face folder to write (required)"},
    {"--device", "cpu|cuda|cuda-bf16", "backend to compute on (default: cpu)"},
    {NULL, NULL, NULL},
};

const cli_help cli_help_merge = {
    "merge --model M --adapter A --out DIR [--device cpu|cuda|cuda-bf16]",
    "Folds a LoRA adapter into its base (W += scaling * B A) and writes config.json, model.safetensors\n"
    "(float32) and the base's tokenizer files; prints what it wrote on stdout.",
    merge_opts, NULL, NULL,
    "merge --model base/ --adapter runs/lora/final --out merged/",
};

int an_cmd_merge(int argc, char **argv) {
    int hrc;
    if (cli_help_check(&cli_help_merge, argc, argv, 1, &hrc)) return hrc;
    const char *model = NULL, *adapter = NULL, *out = NULL, *device = NULL;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) return cli_help_fail(&cli_help_merge, "merge: unexpected argument '%s'", argv[i]);
        if (!strcmp(argv[i], "--model")) model = argv[++i];
        else if (!strcmp(argv[i], "--adapter")) adapter = argv[++i];
        else if (!strcmp(argv[i], "--out")) out = argv[++i];
        else if (!strcmp(argv[i], "--device")) device = argv[++i];
        else return cli_help_fail(&cli_help_merge, "merge: unknown option %s", argv[i]);
    }
    if (!model || !adapter || !out) return cli_help_fail(&cli_help_merge, "merge: --model, --adapter and --out are required");
    const an_ops *ops = cli_backend(device);
    if (!ops) return 1;
    an_error err;
    /* merging adds to float32 weights: a GGUF base is dequantized (its blocks are not kept) */
    size_t ml = strlen(model);
    an_model *m = ml > 5 && !strcmp(model + ml - 5, ".gguf") && !an_is_dir(model)
                      ? an_model_load_gguf(model, ops, AN_GGUF_DEQUANTIZE, &err)
                      : an_model_load(model, ops, &err);
    if (!m) return cli_error(&err);
    int rc = 0;
    if (an_lora_load(m, adapter, &err) || an_lora_merge(m, &err) || an_model_save(m, out, &err)) rc = cli_error(&err);
    if (!rc && an_is_dir(model)) rc = copy_side_files(model, out);
    if (!rc) printf("merged %s into %s: %s\n", adapter, model, out); /* the result: what was written */
    an_model_free(m);
    return rc;
}
