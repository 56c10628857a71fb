/* autoneg gguf info F.gguf [--full]: what a GGUF file holds, for users and for checking by eye: the
 * header, every metadata key with its type and value (long strings and arrays shortened unless
 * --full), and the tensor table in file order (ggml's dimension order, ne[0] first). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/help.h"
#include "model/io/gguf.h"

static const cli_opt gguf_info_opts[] = {
    {"--full", NULL, "print every array element and whole strings (default: shortened)"},
    {NULL, NULL, NULL},
};

const cli_help cli_help_gguf_info = {
    "gguf info F.gguf [--full]",
    "Prints what a GGUF file holds: the header, every metadata key with its type and value, and the\n"
    "tensor table in file order (ggml's dimension order, ne[0] first), on stdout.",
    gguf_info_opts, NULL, NULL,
    "gguf info ~/.cache/autoneg/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
};

/* Control characters and quotes are escaped so that every value stays on its line; UTF-8 passes. */
static void print_string(const char *s, uint64_t len, int full) {
    uint64_t shown = !full && len > 72 ? 64 : len;
    putchar('"');
    for (uint64_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c < 32 || c == 127) printf("\\x%02x", c);
        else putchar(c);
    }
    putchar('"');
    if (shown < len) printf("... (%" PRIu64 " bytes)", len);
}

/* The shortest decimal that reads back as the same float32 / float64 (0.1, not 0.100000001). */
static void print_float(double x, int is_f32) {
    char buf[40];
    for (int prec = is_f32 ? 6 : 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, x);
        double back = strtod(buf, NULL);
        if (is_f32 ? (float)back == (float)x : back == x) break;
    }
    fputs(buf, stdout);
}

static void print_value(const an_gguf_value *v, int full, int depth) {
    switch (v->type) {
    case AN_GGUF_U8: case AN_GGUF_U16: case AN_GGUF_U32: case AN_GGUF_U64: printf("%" PRIu64, v->v.u); break;
    case AN_GGUF_I8: case AN_GGUF_I16: case AN_GGUF_I32: case AN_GGUF_I64: printf("%" PRId64, v->v.i); break;
    case AN_GGUF_F32: print_float(v->v.f, 1); break;
    case AN_GGUF_F64: print_float(v->v.f, 0); break;
    case AN_GGUF_BOOL: fputs(v->v.u ? "true" : "false", stdout); break;
    case AN_GGUF_STRING: print_string(v->v.str.ptr, v->v.str.len, full); break;
    case AN_GGUF_ARRAY: {
        uint64_t n = v->v.arr.n, shown = !full && n > 8 ? 6 : n;
        if (!full && depth > 2) shown = 0;
        putchar('[');
        for (uint64_t i = 0; i < shown; i++) {
            an_gguf_value e;
            if (an_gguf_array_get(v, i, &e) != 0) break;
            if (i) fputs(", ", stdout);
            print_value(&e, full, depth + 1);
        }
        if (shown < n) printf("%s... %" PRIu64 " in all", shown ? ", " : "", n);
        putchar(']');
        break;
    }
    default: fputs("?", stdout);
    }
}

static void type_label(const an_gguf_value *v, char *buf, size_t n) {
    if (v->type != AN_GGUF_ARRAY) {
        snprintf(buf, n, "%s", an_gguf_type_name(v->type));
        return;
    }
    snprintf(buf, n, "%s[%" PRIu64 "]", an_gguf_type_name(v->v.arr.elem), v->v.arr.n);
}

static int info(const char *path, int full) {
    an_gguf g;
    an_error err;
    if (an_gguf_open(&g, path, &err) != 0) return cli_error(&err);
    printf("%s: GGUF version %u, %" PRId64 " metadata keys, %" PRId64 " tensors, alignment %u, data at byte %" PRIu64
           "\n\nmetadata:\n",
           path, g.version, g.n_kv, g.n_tensors, g.alignment, g.data_offset);
    for (int64_t i = 0; i < g.n_kv; i++) {
        char t[64];
        type_label(&g.kvs[i].value, t, sizeof t);
        printf("  %-40s %-14s ", g.kvs[i].key, t);
        print_value(&g.kvs[i].value, full, 0);
        putchar('\n');
    }
    printf("\ntensors (ne[0] is the contiguous dimension; offsets from the data section):\n");
    printf("  %-32s %-7s %-24s %12s %12s\n", "name", "type", "ne", "offset", "bytes");
    int64_t numel = 0;
    uint64_t bytes = 0;
    int64_t per_type[64] = {0};
    for (int64_t i = 0; i < g.n_tensors; i++) {
        const an_gguf_tensor *t = &g.tensors[i];
        char ne[96];
        size_t at = (size_t)snprintf(ne, sizeof ne, "[");
        for (int d = 0; d < t->n_dims && at < sizeof ne; d++)
            at += (size_t)snprintf(ne + at, sizeof ne - at, d ? ", %" PRId64 : "%" PRId64, t->ne[d]);
        if (at < sizeof ne) snprintf(ne + at, sizeof ne - at, "]");
        printf("  %-32s %-7s %-24s %12" PRIu64 " %12zu\n", t->name, an_ggml_type_get(t->type)->name, ne, t->offset,
               t->nbytes);
        numel += t->numel;
        bytes += t->nbytes;
        if (t->type < 64) per_type[t->type]++;
    }
    printf("\n%" PRId64 " tensors, %" PRId64 " elements, %" PRIu64 " bytes of data:", g.n_tensors, numel, bytes);
    for (uint32_t ty = 0; ty < 64; ty++)
        if (per_type[ty]) printf(" %" PRId64 " %s", per_type[ty], an_ggml_type_get(ty)->name);
    putchar('\n');
    an_gguf_close(&g);
    if (fflush(stdout)) return cli_fail("gguf: cannot write output");
    return 0;
}

int an_cmd_gguf(int argc, char **argv) {
    const cli_help *h = &cli_help_gguf_info;
    if (argc < 2 || strcmp(argv[1], "info") != 0) {
        if (cli_help_asked(argc, argv, 1)) return cli_help_print(h);
        return cli_help_fail(h, "gguf: expected the subcommand info");
    }
    int rc;
    if (cli_help_check(h, argc, argv, 2, &rc)) return rc;
    const char *path = NULL;
    int full = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--full")) full = 1;
        else if (argv[i][0] == '-' || path) return cli_help_fail(h, "gguf info: unexpected argument '%s'", argv[i]);
        else path = argv[i];
    }
    if (!path) return cli_help_fail(h, "gguf info: which file? (F.gguf)");
    return info(path, full);
}
