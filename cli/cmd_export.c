/* autoneg export --model M [--adapter A] --out F.gguf [--type f32|f16|q8_0|q4_0] [--name NAME]
 * autoneg export --adapter A --base M --out A.gguf [--type f32|f16]
 *
 * Writes a llama-family model as a GGUF file for llama.cpp (model/io/gguf_write.h), with a PEFT adapter
 * merged in first when --adapter is given; or, with --base instead of --model, the adapter alone in
 * llama.cpp's LoRA adapter format (llama-cli --lora A.gguf), unmerged. A model read from a GGUF file keeps that file's tokenizer and
 * chat template; a Hugging Face folder is written without tokenizer keys for now (a note on stderr says
 * so: writing its tokenizer as tokenizer.ggml.* is later work). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/help.h"
#include "core/file.h"
#include "model/io/gguf_write.h"
#include "model/lora.h"
#include "model/model.h"

static const cli_opt export_opts[] = {
    {"--model", "M", "the model to write: a Hugging Face folder, a GGUF or a llama2.c file (required)"},
    {"--adapter", "A", "a PEFT LoRA adapter folder: merged into --model first, or written alone with --base"},
    {"--base", "M", "the adapter's base model: write the adapter alone as a llama.cpp LoRA GGUF"},
    {"--out", "F.gguf", "the GGUF file to write (required)"},
    {"--type", "f32|f16|q8_0|q4_0", "the type of the weight matrices (default: f16; an adapter: f32 or f16, default f32); "
                                    "norms stay f32"},
    {"--name", "NAME", "general.name (default: the model path's last part)"},
    {NULL, NULL, NULL},
};

const cli_help cli_help_export = {
    "export --model M [--adapter A] --out F.gguf [--type f32|f16|q8_0|q4_0] [--name NAME]\n"
    "export --adapter A --base M --out A.gguf [--type f32|f16]",
    "Writes a llama-family model (Llama, Mistral, SmolLM2) as a GGUF file in llama.cpp's layout, with\n"
    "the adapter merged first; q8_0 and q4_0 quantize as llama.cpp's converter does. A GGUF source keeps\n"
    "its tokenizer and chat template; a Hugging Face folder is written without tokenizer keys for now.\n"
    "With --base instead of --model, the adapter is written alone in llama.cpp's LoRA adapter format\n"
    "(llama-cli -m M.gguf --lora A.gguf), so llama.cpp serves it over the base without merging.",
    export_opts, NULL, NULL,
    "export --model base/ --adapter runs/lora/final --out negprompt.q8_0.gguf --type q8_0",
};

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* The last part of a path without a trailing slash or a .gguf extension, for general.name. */
static void base_name(const char *path, char *out, size_t n) {
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/') len--;
    size_t start = len;
    while (start > 0 && path[start - 1] != '/') start--;
    size_t k = len - start;
    if (k > 5 && strncmp(path + len - 5, ".gguf", 5) == 0) k -= 5;
    snprintf(out, n, "%.*s", (int)k, path + start);
}

/* export --adapter A --base M: the adapter alone, unmerged, in llama.cpp's LoRA format. */
static int export_adapter(const char *adapter, const char *base, const char *out, const char *type, const char *name) {
    if (!adapter || !out)
        return cli_help_fail(&cli_help_export, "export: --base writes an adapter alone: --adapter and --out are required");
    int t = an_gguf_write_type(type);
    if (t != AN_GGML_F32 && t != AN_GGML_F16)
        return cli_fail("export: --type %s: an adapter is written as f32 or f16", type);
    an_error err;
    an_model *m = an_model_load(base, an_ops_cpu(), &err);
    if (!m) return cli_error(&err);
    int rc = 0;
    an_lora *l = an_lora_open(m, adapter, &err);
    char nm[256];
    base_name(adapter, nm, sizeof nm);
    an_gguf_write_opts o = {(uint32_t)t, name ? name : nm, NULL};
    if (!l || an_gguf_write_lora(m, l, out, &o, &err)) rc = cli_error(&err);
    else printf("%s: %s as a llama.cpp LoRA adapter for %s, %s, rank %d\n", out, adapter, base, type, l->cfg.r);
    an_lora_free(l);
    an_model_free(m);
    return rc;
}

int an_cmd_export(int argc, char **argv) {
    int hrc;
    if (cli_help_check(&cli_help_export, argc, argv, 1, &hrc)) return hrc;
    const char *model = NULL, *adapter = NULL, *base = NULL, *out = NULL, *type = NULL, *name = NULL;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) return cli_help_fail(&cli_help_export, "export: unexpected argument '%s'", argv[i]);
        if (!strcmp(argv[i], "--model")) model = argv[++i];
        else if (!strcmp(argv[i], "--adapter")) adapter = argv[++i];
        else if (!strcmp(argv[i], "--base")) base = argv[++i];
        else if (!strcmp(argv[i], "--out")) out = argv[++i];
        else if (!strcmp(argv[i], "--type")) type = argv[++i];
        else if (!strcmp(argv[i], "--name")) name = argv[++i];
        else return cli_help_fail(&cli_help_export, "export: unknown option %s", argv[i]);
    }
    if (base) return export_adapter(adapter, base, out, type ? type : "f32", name);
    if (!model || !out) return cli_help_fail(&cli_help_export, "export: --model and --out are required (--adapter, --base and --out for an adapter alone)");
    if (!type) type = "f16";
    int t = an_gguf_write_type(type);
    if (t < 0) return cli_fail("export: --type %s is not supported (f32, f16, q8_0 or q4_0)", type);
    an_error err;
    an_model *m = an_model_load(model, an_ops_cpu(), &err);
    if (!m) return cli_error(&err);
    int rc = 0;
    if (adapter && (an_lora_load(m, adapter, &err) || an_lora_merge(m, &err))) rc = cli_error(&err);
    int from_gguf = !an_is_dir(model) && ends_with(model, ".gguf");
    char nm[256];
    base_name(model, nm, sizeof nm);
    an_gguf_write_opts o = {(uint32_t)t, name ? name : nm, from_gguf ? model : NULL};
    if (!rc && an_gguf_write_model(m, out, &o, &err)) rc = cli_error(&err);
    if (!rc) {
        if (!from_gguf)
            fprintf(stderr, "autoneg: note: %s has no GGUF tokenizer: %s is written without tokenizer.ggml.* keys "
                            "(llama.cpp needs them to run it; writing them from a Hugging Face tokenizer is later work)\n",
                    model, out);
        printf("%s: %s%s%s as GGUF, weight matrices %s\n", out, model, adapter ? " + " : "", adapter ? adapter : "", type);
    }
    an_model_free(m);
    return rc;
}
