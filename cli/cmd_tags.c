/* autoneg tags step RATIO [--each] [--out FILE] [TAGS...]   (step.js of nai-anime-pure-negative-prompt)
 * autoneg tags aspect W H [--snap N]                       (aspect512.js)
 * autoneg tags norm [--novelai] [--underscores] [TEXT...]  (normalised tags, one line per prompt) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/help.h"
#include "core/file.h"
#include "data/prompts/prompt_syntax.h"
#include "data/prompts/tags.h"

static const cli_opt step_opts[] = {
    {"--each", NULL, "weight each tag on its own (default: the whole list as one unit)"},
    {"--out", "FILE", "also write the text to FILE (step.js's step.txt)"},
    {NULL, NULL, NULL},
};

const cli_help cli_help_tags_step = {
    "tags step RATIO [--each] [--out FILE] [TAGS...]",
    "Weights a tag list as step.js does: the tags (arguments, else stdin lines, split on commas) are\n"
    "deduplicated, sorted and joined, then written as (T:RATIO), inside RATIO braces for an integer\n"
    "RATIO > 1, or inside |RATIO| square brackets for a negative RATIO. The text goes to stdout. After\n"
    "\"--\" every argument is a tag.",
    step_opts, NULL, NULL,
    "tags step 1.2 \"lowres, bad anatomy\" \"blurry\"",
};

static const cli_opt aspect_opts[] = {
    {"--snap", "N", "floor both sides to multiples of N, e.g. 64 (default: no snapping)"},
    {NULL, NULL, NULL},
};

const cli_help cli_help_tags_aspect = {
    "tags aspect W H [--snap 64]",
    "Prints the width and height with the aspect ratio W:H and an area of 512 x 512 (aspect512.js).",
    aspect_opts, NULL, NULL,
    "tags aspect 16 9 --snap 64",
};

static const cli_opt norm_opts[] = {
    {"--novelai", NULL, "read NovelAI syntax ({} and [] weights) instead of A1111's ((), [] and (T:w))"},
    {"--underscores", NULL, "write underscores in tags as spaces"},
    {"--networks", NULL, "keep <lora:...> and other network tags (default: dropped)"},
    {NULL, NULL, NULL},
};

const cli_help cli_help_tags_norm = {
    "tags norm [--novelai] [--underscores] [--networks] [TEXT...]",
    "Prints the normalised tags of each prompt (arguments, else stdin lines) on one line each: weights\n"
    "and brackets removed, lower case, duplicates dropped.",
    norm_opts, NULL, NULL,
    "tags norm \"((masterpiece)), best_quality, (blurry:1.3)\" --underscores",
};

const cli_help cli_help_tags = {
    "tags step RATIO [--each] [--out FILE] [TAGS...]\ntags aspect W H [--snap 64]\ntags norm [--novelai] [--underscores] [TEXT...]",
    "Prompt-tag tools. 'autoneg tags COMMAND --help' gives each command's options.\n\ncommands:\n"
    "  step     weight a tag list (step.js of nai-anime-pure-negative-prompt)\n"
    "  aspect   width and height of 512 x 512 pixels at an aspect ratio (aspect512.js)\n"
    "  norm     normalised tags of prompts, one line each",
    NULL, NULL, NULL,
    "tags norm \"((masterpiece)), best_quality\"",
};

/* Reads standard input into lines (without their \r\n), skipping empty ones. */
static char **read_stdin_lines(size_t *n_out) {
    size_t cap = 16, n = 0;
    char **v = malloc(cap * sizeof *v);
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while (v && (len = getline(&line, &lcap, stdin)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (len == 0) continue;
        if (n == cap) {
            char **nv = realloc(v, 2 * cap * sizeof *v);
            if (!nv) break;
            v = nv;
            cap *= 2;
        }
        if (!(v[n] = strdup(line))) break;
        n++;
    }
    free(line);
    *n_out = n;
    return v;
}

static void free_lines(char **v, size_t n) {
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

static int cmd_step(int argc, char **argv) {
    const char *ratio = NULL, *out = NULL;
    const char **tags = calloc((size_t)argc + 1, sizeof *tags);
    size_t n_tags = 0;
    int each = 0, have_ratio = 0, rest = 0;
    if (!tags) return cli_fail("out of memory");
    for (int i = 1; i < argc; i++) {
        if (!rest && !strcmp(argv[i], "--each")) each = 1;
        else if (!rest && !strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!rest && !strcmp(argv[i], "--")) rest = 1;
        else if (!rest && !strncmp(argv[i], "--", 2)) {
            free(tags);
            return cli_fail("tags step: unknown option %s", argv[i]);
        } else if (!have_ratio) ratio = argv[i], have_ratio = 1;
        else tags[n_tags++] = argv[i];
    }
    char **lines = NULL;
    size_t n_lines = 0;
    if (n_tags == 0) {
        lines = read_stdin_lines(&n_lines);
        const char **all = realloc(tags, (n_lines + 1) * sizeof *tags);
        if (!lines || !all) {
            free(all ? all : tags);
            free_lines(lines, n_lines);
            return cli_fail("out of memory");
        }
        tags = all;
        for (size_t i = 0; i < n_lines; i++) tags[i] = lines[i];
        n_tags = n_lines;
    }
    an_error err;
    size_t count = 0;
    char *s = an_tags_step(tags, n_tags, ratio, each, &count, &err);
    free(tags);
    free_lines(lines, n_lines);
    if (!s) return cli_error(&err);
    int rc = 0;
    if (out && an_write_file_atomic(out, s, strlen(s), &err)) rc = cli_error(&err);
    if (!rc) printf("%s\n", s);
    free(s);
    return rc;
}

static int cmd_aspect(int argc, char **argv) {
    const char *pos[2] = {NULL, NULL};
    int npos = 0, snap = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--snap") && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v <= 0 || v > 1 << 20) return cli_fail("tags aspect: --snap wants a positive integer");
            snap = (int)v;
        } else if (npos < 2) {
            pos[npos++] = argv[i];
        } else {
            return cli_fail("tags aspect: too many arguments (W H [--snap N])");
        }
    }
    long w, h;
    an_error err;
    if (an_tags_aspect(pos[0], pos[1], snap, &w, &h, &err)) return cli_error(&err);
    printf("%ld %ld\n", w, h);
    return 0;
}

static int print_norm(const char *text, an_prompt_mode mode, const an_tag_opts *o) {
    an_tags t;
    an_error err;
    if (an_prompt_tags(text, mode, o, &t, &err)) return cli_error(&err);
    for (size_t i = 0; i < t.n; i++) printf("%s%s", i ? ", " : "", t.v[i]);
    printf("\n");
    an_tags_free(&t);
    return 0;
}

static int cmd_norm(int argc, char **argv) {
    an_prompt_mode mode = AN_PROMPT_A1111;
    an_tag_opts o = {0};
    int n_text = 0, rc = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--novelai")) mode = AN_PROMPT_NOVELAI;
        else if (!strcmp(argv[i], "--underscores")) o.underscores_to_spaces = 1;
        else if (!strcmp(argv[i], "--networks")) o.keep_networks = 1;
        else n_text++;
    }
    for (int i = 1; i < argc && !rc; i++)
        if (strncmp(argv[i], "--", 2)) rc = print_norm(argv[i], mode, &o);
    if (n_text == 0) {
        size_t n;
        char **lines = read_stdin_lines(&n);
        for (size_t i = 0; i < n && !rc; i++) rc = print_norm(lines[i], mode, &o);
        free_lines(lines, n);
    }
    return rc;
}

int an_cmd_tags(int argc, char **argv) {
    if (argc < 2) return cli_help_fail(&cli_help_tags, "tags: which command?");
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) return cli_help_print(&cli_help_tags);
    int hrc;
    if (!strcmp(argv[1], "step")) return cli_help_check(&cli_help_tags_step, argc, argv, 2, &hrc) ? hrc : cmd_step(argc - 1, argv + 1);
    if (!strcmp(argv[1], "aspect")) return cli_help_check(&cli_help_tags_aspect, argc, argv, 2, &hrc) ? hrc : cmd_aspect(argc - 1, argv + 1);
    if (!strcmp(argv[1], "norm")) return cli_help_check(&cli_help_tags_norm, argc, argv, 2, &hrc) ? hrc : cmd_norm(argc - 1, argv + 1);
    return cli_help_fail(&cli_help_tags, "tags: unknown subcommand '%s' (step, aspect, norm)", argv[1]);
}
