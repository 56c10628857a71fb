/* autoneg tokenizer train --data F... --vocab N --out DIR: a byte-level BPE from text lines
 * (or .jsonl records, whose "prompt" and "negative_prompt" fields are the texts). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/help.h"
#include "core/file.h"
#include "data/tokenizers/tokenizer.h"

typedef struct corpus {
    char **text;
    size_t *len;
    size_t n, cap, bytes;
} corpus;

static int corpus_add(corpus *c, const char *s, size_t n) {
    if (n == 0) return 0;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 4096;
        char **t = realloc(c->text, cap * sizeof *t);
        if (t) c->text = t;
        size_t *l = realloc(c->len, cap * sizeof *l);
        if (l) c->len = l;
        if (!t || !l) return -1;
        c->cap = cap;
    }
    char *d = malloc(n + 1);
    if (!d) return -1;
    memcpy(d, s, n);
    d[n] = 0;
    c->text[c->n] = d;
    c->len[c->n++] = n;
    c->bytes += n;
    return 0;
}

static int read_corpus(corpus *c, const char *path) {
    an_error err;
    size_t n;
    char *s = an_read_file(path, &n, &err);
    if (!s) return cli_error(&err);
    size_t plen = strlen(path);
    int jsonl = plen > 6 && !strcmp(path + plen - 6, ".jsonl");
    int line = 0, rc = 0;
    for (size_t i = 0; i < n && rc == 0;) {
        size_t e = i;
        while (e < n && s[e] != '\n') e++;
        size_t le = e > i && s[e - 1] == '\r' ? e - 1 : e;
        line++;
        if (jsonl && le > i) {
            cJSON *j = cJSON_ParseWithLength(s + i, le - i);
            if (!cJSON_IsObject(j)) rc = cli_fail("%s:%d: not a JSON object", path, line);
            const char *fields[] = {"prompt", "negative_prompt"};
            for (int k = 0; k < 2 && rc == 0; k++) {
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, fields[k]);
                if (cJSON_IsString(v) && corpus_add(c, v->valuestring, strlen(v->valuestring)))
                    rc = cli_fail("out of memory");
            }
            cJSON_Delete(j);
        } else if (!jsonl && corpus_add(c, s + i, le - i)) {
            rc = cli_fail("out of memory");
        }
        i = e + 1;
    }
    free(s);
    return rc;
}

static const cli_opt tok_train_opts[] = {
    {"--data", "F...", "text files (one text a line) or .jsonl (prompt and negative_prompt fields) (required)"},
    {"--vocab", "N", "vocabulary size, the 256 bytes included (required)"},
    {"--out", "DIR", "writes DIR/tokenizer.json (required)"},
    {NULL, NULL, NULL},
};

const cli_help cli_help_tokenizer_train = {
    "tokenizer train --data F... --vocab N --out DIR",
    "Trains a byte-level BPE tokenizer on the texts and writes it as tokenizer.json; prints what it\n"
    "wrote on stdout.",
    tok_train_opts, NULL, NULL,
    "tokenizer train --data pairs.jsonl --vocab 4096 --out tok/",
};

const cli_help cli_help_tokenizer = {
    "tokenizer train --data F... --vocab N --out DIR",
    "Tokenizer tools. 'autoneg tokenizer train --help' gives the options.\n\ncommands:\n"
    "  train   a byte-level BPE from text lines or JSONL prompt pairs",
    NULL, NULL, NULL,
    "tokenizer train --data pairs.jsonl --vocab 4096 --out tok/",
};

int an_cmd_tokenizer(int argc, char **argv) {
    int hrc;
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) return cli_help_print(&cli_help_tokenizer);
    if (argc < 2) return cli_help_fail(&cli_help_tokenizer, "tokenizer: which command?");
    if (strcmp(argv[1], "train")) return cli_help_fail(&cli_help_tokenizer, "tokenizer: unknown command '%s'", argv[1]);
    if (cli_help_check(&cli_help_tokenizer_train, argc, argv, 2, &hrc)) return hrc;
    corpus c = {0};
    const char *out = NULL;
    long vocab = 0;
    int rc = 0, n_data = 0;
    for (int i = 2; i < argc && rc == 0; i++) {
        if (!strcmp(argv[i], "--data") && i + 1 < argc) {
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0 && rc == 0) rc = read_corpus(&c, argv[++i]), n_data++;
        } else if (!strcmp(argv[i], "--vocab") && i + 1 < argc) {
            char *end;
            vocab = strtol(argv[++i], &end, 10);
            if (*end) rc = cli_fail("tokenizer train: --vocab '%s' is not a number", argv[i]);
        } else if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out = argv[++i];
        } else {
            rc = cli_help_fail(&cli_help_tokenizer_train, "tokenizer train: unknown or incomplete argument '%s'", argv[i]);
        }
    }
    if (rc == 0 && (!n_data || !vocab || !out)) rc = cli_help_fail(&cli_help_tokenizer_train, "tokenizer train: --data, --vocab and --out are required");
    if (rc == 0 && mkdir(out, 0755) && errno != EEXIST) rc = cli_fail("%s: cannot create folder: %s", out, strerror(errno));
    if (rc == 0) {
        an_error err;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int got = an_tokenizer_train_bytelevel((const char *const *)c.text, c.len, c.n, (int)vocab, out, &err);
        if (got < 0) {
            rc = cli_error(&err);
        } else {
            if (got < vocab) fprintf(stderr, "autoneg: the corpus ran out of pairs at %d tokens\n", got);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            /* the result, on stdout with the other commands' results */
            printf("trained a %d-token byte-level BPE on %zu texts (%.1f MB) in %.2f s: %s/tokenizer.json\n",
                   got, c.n, c.bytes / 1e6, (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9, out);
        }
    }
    for (size_t i = 0; i < c.n; i++) free(c.text[i]);
    free(c.text);
    free(c.len);
    return rc;
}
