/* autoneg data stats|clean|split: look at, clean and split prompt-pair datasets. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "cli/help.h"
#include "core/file.h"
#include "data/pairs/clean.h"
#include "data/pairs/pairs.h"
#include "data/pairs/split.h"
#include "data/pairs/stats.h"
#include "data/prompts/subjects.h"
#include "data/tokenizers/tokenizer.h"

/* The reading options all three subcommands take (parse_args reads them). */
static const cli_opt read_opts[] = {
    {"--format", "jsonl|json|csv", "input format (default: from the file name)"},
    {"--prompt-field", "F", "field of the positive prompt (default: found among the usual names)"},
    {"--negative-field", "F", "field of the negative prompt (default: found among the usual names)"},
    {"--source-field", "F", "field that names a row's source (default: none)"},
    {"--strict", NULL, "a malformed record is an error (default: skipped and counted)"},
    {"--utf8", "reject|replace", "invalid UTF-8: skip the record, or replace the bytes with U+FFFD (default: reject)"},
    {"--subject", "TEXT", "fill the {prompt} placeholder of style templates with TEXT (docs/data.md)"},
    {"--subjects", "FILE", "fill the placeholder from a list of subjects, one per line"},
    {"--subjects-per-pair", "N", "with --subjects: pairs written per template pair (default: 1)"},
    {"--subject-seed", "S", "with --subjects: seed of the choice (default: 0)"},
    {NULL, NULL, NULL},
};

static const cli_opt stats_opts[] = {
    {"--tokenizer", "T", "also count tokens with this tokenizer (default: words and characters only)"},
    {"--top", "N", "list the N most frequent negative tags (default: 20)"},
    {NULL, NULL, NULL},
};

static const cli_opt clean_opts[] = {
    {"--out", "OUT.jsonl", "where the cleaned pairs go (required)"},
    {"--min-words", "N", "drop pairs with a prompt or negative of fewer words (default: 0 = no limit)"},
    {"--max-words", "N", "drop pairs with a prompt or negative of more words (default: 0 = no limit)"},
    {"--max-chars", "N", "drop pairs with a prompt or negative longer than N characters (default: 0 = no limit)"},
    {"--drop-words", "FILE", "drop pairs that contain a word of FILE, one per line (default: none)"},
    {NULL, NULL, NULL},
};

static const cli_opt split_opts[] = {
    {"--out-dir", "DIR", "writes DIR/train.jsonl and DIR/val.jsonl (required)"},
    {"--val", "FRACTION", "share of the groups that go to validation, in [0, 1] (default: 0.1)"},
    {"--by", "source|negative|prompt|pair", "what a group is: pairs of a group never straddle the split (default: source)"},
    {"--seed", "S", "seed of the split (default: 0)"},
    {NULL, NULL, NULL},
};

static const char read_title[] = "reading options (stats, clean and split)";

const cli_help cli_help_data_stats = {
    "data stats IN... [--tokenizer T] [--top N] [reading options]",
    "Prints counts, length percentiles and the most frequent negative tags of prompt-pair files on\n"
    "stdout; what was read and skipped goes to stderr. IN is .jsonl/.ndjson/.json/.csv, optionally .gz,\n"
    "or a .zip of such files (docs/data.md).",
    stats_opts, read_title, read_opts,
    "data stats pairs.jsonl --top 10",
};

const cli_help cli_help_data_clean = {
    "data clean IN... --out OUT.jsonl [--min-words N] [--max-words N] [--max-chars N] [--drop-words FILE] [reading options]",
    "Cuts infotext tails, normalises commas and spaces, drops empty, out-of-range and duplicate pairs, and\n"
    "writes the rest as JSONL; the report goes to stdout.",
    clean_opts, read_title, read_opts,
    "data clean raw.csv --out clean.jsonl --min-words 3 --max-chars 2000",
};

const cli_help cli_help_data_split = {
    "data split IN... --out-dir DIR [--val 0.1] [--by source|negative|prompt|pair] [--seed S] [reading options]",
    "Splits pairs into train and validation by group, so that no group is in both; the counts go to stdout.",
    split_opts, read_title, read_opts,
    "data split clean.jsonl --out-dir splits --val 0.1 --by negative",
};

const cli_help cli_help_data = {
    "data stats IN... [options]\ndata clean IN... --out OUT.jsonl [options]\ndata split IN... --out-dir DIR [options]",
    "Look at, clean and split prompt-pair datasets. 'autoneg data COMMAND --help' gives each command's\n"
    "options.\n\ncommands:\n"
    "  stats   counts, lengths and frequent negative tags\n"
    "  clean   normalise and filter pairs into one JSONL file\n"
    "  split   train / validation files with no group in both",
    NULL, NULL, NULL,
    "data stats pairs.jsonl",
};

static const cli_help *sub_help(const char *sub) {
    return !strcmp(sub, "stats") ? &cli_help_data_stats : !strcmp(sub, "clean") ? &cli_help_data_clean : &cli_help_data_split;
}

typedef struct data_args {
    const char **inputs;
    int n_inputs;
    an_read_opts read;
    const char *out, *out_dir, *tokenizer, *drop_words, *by, *subjects;
    size_t min_words, max_words, max_chars, top, subjects_per_pair;
    double val;
    uint64_t seed, subject_seed;
} data_args;

static int parse_size(const char *flag, const char *s, size_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-') return cli_fail("data: %s needs a whole number, got '%s'", flag, s);
    *out = (size_t)v;
    return 0;
}

static int parse_args(int argc, char **argv, data_args *a) {
    const cli_help *h = sub_help(argv[1]);
    memset(a, 0, sizeof *a);
    a->val = 0.1;
    a->by = "source";
    a->subjects_per_pair = 1;
    a->inputs = calloc((size_t)argc, sizeof *a->inputs);
    if (!a->inputs) return cli_fail("data: out of memory");
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i];
        if (f[0] != '-' || !f[1]) {
            a->inputs[a->n_inputs++] = f;
            continue;
        }
        if (!strcmp(f, "--strict")) {
            a->read.strict = 1;
            continue;
        }
        if (i + 1 >= argc) return cli_help_fail(h, "data %s: %s needs a value", argv[1], f);
        const char *v = argv[++i];
        if (!strcmp(f, "--format")) {
            if (!strcmp(v, "jsonl")) a->read.format = AN_FORMAT_JSONL;
            else if (!strcmp(v, "json")) a->read.format = AN_FORMAT_JSON;
            else if (!strcmp(v, "csv")) a->read.format = AN_FORMAT_CSV;
            else return cli_fail("data: --format is jsonl, json or csv, not '%s'", v);
        } else if (!strcmp(f, "--prompt-field")) a->read.prompt_field = v;
        else if (!strcmp(f, "--negative-field")) a->read.negative_field = v;
        else if (!strcmp(f, "--source-field")) a->read.source_field = v;
        else if (!strcmp(f, "--subject")) a->read.subject = v;
        else if (!strcmp(f, "--subjects")) a->subjects = v;
        else if (!strcmp(f, "--subjects-per-pair")) {
            if (parse_size(f, v, &a->subjects_per_pair)) return 1;
            if (a->subjects_per_pair < 1 || a->subjects_per_pair > 1000)
                return cli_fail("data: --subjects-per-pair must be in [1, 1000], got %s", v);
        } else if (!strcmp(f, "--subject-seed")) {
            size_t s = 0;
            if (parse_size(f, v, &s)) return 1;
            a->subject_seed = s;
        }
        else if (!strcmp(f, "--utf8")) {
            if (strcmp(v, "reject") && strcmp(v, "replace")) return cli_fail("data: --utf8 is reject or replace");
            a->read.utf8_replace = !strcmp(v, "replace");
        } else if (!strcmp(f, "--out")) a->out = v;
        else if (!strcmp(f, "--out-dir")) a->out_dir = v;
        else if (!strcmp(f, "--tokenizer")) a->tokenizer = v;
        else if (!strcmp(f, "--drop-words")) a->drop_words = v;
        else if (!strcmp(f, "--by")) a->by = v;
        else if (!strcmp(f, "--min-words")) { if (parse_size(f, v, &a->min_words)) return 1; }
        else if (!strcmp(f, "--max-words")) { if (parse_size(f, v, &a->max_words)) return 1; }
        else if (!strcmp(f, "--max-chars")) { if (parse_size(f, v, &a->max_chars)) return 1; }
        else if (!strcmp(f, "--top")) { if (parse_size(f, v, &a->top)) return 1; }
        else if (!strcmp(f, "--seed")) {
            size_t s;
            if (parse_size(f, v, &s)) return 1;
            a->seed = s;
        } else if (!strcmp(f, "--val")) {
            char *end;
            a->val = strtod(v, &end);
            if (end == v || *end || !(a->val >= 0 && a->val <= 1)) return cli_fail("data: --val is a fraction in [0, 1]");
        } else {
            return cli_help_fail(h, "data %s: unknown option %s", argv[1], f);
        }
    }
    if (!a->n_inputs) return cli_help_fail(h, "data %s: no input files", argv[1]);
    if (a->subjects && a->read.subject) return cli_fail("data: --subject and --subjects both fill the placeholder; give one");
    return 0;
}

/* Reads every input, reporting per file on stderr. */
static int read_all(const data_args *a, an_pairs *p) {
    for (int i = 0; i < a->n_inputs; i++) {
        an_read_report rep;
        an_error err;
        if (an_pairs_read(p, a->inputs[i], &a->read, &rep, &err)) return cli_error(&err);
        fprintf(stderr, "read %s: %zu pairs from %zu records, %zu skipped", a->inputs[i], rep.pairs, rep.records,
                rep.skipped);
        if (rep.utf8_replaced) fprintf(stderr, ", invalid UTF-8 replaced in %zu", rep.utf8_replaced);
        fputc('\n', stderr);
        for (int k = 0; k < rep.n_reasons; k++) fprintf(stderr, "  skipped: %s\n", rep.reasons[k]);
        if (rep.skipped > (size_t)rep.n_reasons) fprintf(stderr, "  ... and %zu more\n", rep.skipped - (size_t)rep.n_reasons);
    }
    if (!a->subjects) return 0;
    an_subjects subjects;
    an_error err;
    if (an_subjects_read(&subjects, a->subjects, &err)) return cli_error(&err);
    size_t before = p->n;
    int rc = an_pairs_fill_subjects(p, &subjects, (int)a->subjects_per_pair, a->subject_seed, &err);
    an_subjects_free(&subjects);
    if (rc) return cli_error(&err);
    fprintf(stderr, "subjects from %s: %zu pairs -> %zu\n", a->subjects, before, p->n);
    return 0;
}

typedef struct token_ctx {
    an_tokenizer *tok;
    an_ids ids;
} token_ctx;

static int count_tokens(void *ctx, const char *text, size_t len, size_t *out, an_error *err) {
    token_ctx *t = ctx;
    t->ids.n = 0;
    if (an_tokenizer_encode(t->tok, text, len, &t->ids, err)) return -1;
    *out = t->ids.n;
    return 0;
}

static void print_row(const char *name, an_len_summary s) {
    printf("  %-16s %8zu %8zu %8zu %8zu\n", name, s.p50, s.p90, s.p99, s.max);
}

static int cmd_stats(const data_args *a, an_pairs *p) {
    token_ctx tc = {0};
    an_stats_opts so = {0};
    an_error err;
    so.top_k = a->top;
    if (a->tokenizer) {
        if (!(tc.tok = an_tokenizer_load(a->tokenizer, &err))) return cli_error(&err);
        so.tokens = count_tokens;
        so.tokens_ctx = &tc;
    }
    an_stats st;
    int rc = an_pairs_stats(p, &so, &st, &err);
    if (tc.tok) an_tokenizer_free(tc.tok);
    an_ids_free(&tc.ids);
    if (rc) return cli_error(&err);
    printf("pairs               %zu\n", st.pairs);
    printf("distinct prompts    %zu\n", st.distinct_prompts);
    printf("distinct negatives  %zu\n", st.distinct_negatives);
    printf("distinct neg. tags  %zu\n", st.distinct_tags);
    printf("distinct sources    %zu (%zu rows without one)\n", st.distinct_sources, st.without_source);
    printf("lengths (nearest-rank percentiles)\n  %-16s %8s %8s %8s %8s\n", "", "p50", "p90", "p99", "max");
    if (st.has_tokens) {
        print_row("prompt tokens", st.prompt_tokens);
        print_row("negative tokens", st.negative_tokens);
    }
    print_row("prompt words", st.prompt_words);
    print_row("negative words", st.negative_words);
    print_row("prompt chars", st.prompt_chars);
    print_row("negative chars", st.negative_chars);
    printf("top %zu negative tags (negatives that contain them)\n", st.n_top);
    for (size_t i = 0; i < st.n_top; i++)
        printf("  %8zu  %5.1f%%  %s\n", st.top[i].rows, 100.0 * (double)st.top[i].rows / (double)st.pairs, st.top[i].tag);
    an_stats_free(&st);
    return 0;
}

static int cmd_clean(const data_args *a, an_pairs *p) {
    if (!a->out) return cli_fail("data clean: --out OUT.jsonl is required");
    an_clean_opts co = {a->min_words, a->max_words, a->max_chars, NULL, 0};
    char **words = NULL;
    size_t n_words = 0;
    an_error err;
    if (a->drop_words) {
        if (an_word_list_read(a->drop_words, &words, &n_words, &err)) return cli_error(&err);
        co.drop_words = (const char *const *)words;
        co.n_drop_words = n_words;
    }
    an_pairs out = {0};
    an_clean_report r;
    int rc = an_pairs_clean(p, &out, &co, &r, &err);
    if (!rc) rc = an_pairs_write_jsonl(&out, a->out, &err);
    an_word_list_free(words, n_words);
    an_pairs_free(&out);
    if (rc) return cli_error(&err);
    printf("rows in                   %zu\n", r.in);
    printf("infotext tail cut         %zu\n", r.infotext);
    printf("commas/spaces normalised  %zu\n", r.normalised);
    printf("dropped: empty            %zu\n", r.empty);
    printf("dropped: < min words      %zu\n", r.too_few_words);
    printf("dropped: > max words      %zu\n", r.too_many_words);
    printf("dropped: > max chars      %zu\n", r.too_many_chars);
    printf("dropped: word list        %zu\n", r.word_list);
    printf("dropped: exact duplicate  %zu\n", r.exact_dup);
    printf("dropped: normalised dup.  %zu\n", r.normalised_dup);
    printf("rows out                  %zu -> %s\n", r.out, a->out);
    return 0;
}

static int cmd_split(const data_args *a, an_pairs *p) {
    if (!a->out_dir) return cli_fail("data split: --out-dir DIR is required");
    an_split_by by;
    if (!strcmp(a->by, "source")) by = AN_SPLIT_BY_SOURCE;
    else if (!strcmp(a->by, "negative")) by = AN_SPLIT_BY_NEGATIVE;
    else if (!strcmp(a->by, "prompt")) by = AN_SPLIT_BY_PROMPT;
    else if (!strcmp(a->by, "pair")) by = AN_SPLIT_BY_PAIR;
    else return cli_fail("data split: --by is source, negative, prompt or pair, not '%s'", a->by);
    if (mkdir(a->out_dir, 0777) != 0 && errno != EEXIST)
        return cli_fail("%s: cannot create folder: %s", a->out_dir, strerror(errno));
    an_pairs train = {0}, val = {0};
    an_error err;
    char tp[4096], vp[4096];
    int rc = an_pairs_split(p, a->val, by, a->seed, &train, &val, &err);
    if (!rc && (an_path_join(tp, sizeof tp, a->out_dir, "train.jsonl") || an_path_join(vp, sizeof vp, a->out_dir, "val.jsonl")))
        rc = an_fail(&err, "%s: path too long", a->out_dir);
    if (!rc) rc = an_pairs_write_jsonl(&train, tp, &err);
    if (!rc) rc = an_pairs_write_jsonl(&val, vp, &err);
    if (!rc) {
        printf("train %zu -> %s\n", train.n, tp);
        printf("val   %zu -> %s\n", val.n, vp);
    }
    an_pairs_free(&train);
    an_pairs_free(&val);
    return rc ? cli_error(&err) : 0;
}

int an_cmd_data(int argc, char **argv) {
    if (argc < 2) {
        cli_help_usage(&cli_help_data, stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) return cli_help_print(&cli_help_data);
    const char *sub = argv[1];
    if (strcmp(sub, "stats") && strcmp(sub, "clean") && strcmp(sub, "split"))
        return cli_help_fail(&cli_help_data, "data: unknown subcommand '%s'", sub);
    int hrc;
    if (cli_help_check(sub_help(sub), argc, argv, 2, &hrc)) return hrc;
    data_args a;
    an_pairs p = {0};
    int rc = parse_args(argc, argv, &a);
    if (!rc) rc = read_all(&a, &p);
    if (!rc) {
        if (!strcmp(sub, "stats")) rc = cmd_stats(&a, &p);
        else if (!strcmp(sub, "clean")) rc = cmd_clean(&a, &p);
        else rc = cmd_split(&a, &p);
    }
    an_pairs_free(&p);
    free(a.inputs);
    return rc;
}
