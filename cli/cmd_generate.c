/* autoneg generate: negative prompts for positive ones (or raw continuations), with a KV cache.
 *
 *   autoneg generate --model M [--adapter A] (--prompt TEXT... | --file F) [--raw] [--tokenizer T]
 *                    [--template NAME] [--temperature X] [--top-k K] [--top-p P] [--min-p P]
 *                    [--repeat-penalty R] [--seed S] [--max-tokens N] [--min-tokens N] [--n N]
 *                    [--batch B] [--ctx N] [--strict] [--jsonl] [--head-dtype f32|bf16] [--device cpu|cuda|cuda-bf16]
 *                    [--retrieve K] [--explain]
 *
 * --retrieve K: the negatives of the K most similar training prompts go in front of the prompt, from
 * the index a run with data.retrieve stored beside the model or adapter (infer/retrieval_pairs.h);
 * the default is the K it was trained with, 0 = off (today's input, token for token). --explain shows
 * those neighbours: on stderr, or with --jsonl as a "neighbours" field.
 *
 * --head-dtype bf16 stores the embedding table and the LM head in bf16 once loaded, as QLoRA runs a
 * model (its base is loaded in a 16-bit dtype): half the bytes per decode step for the head
 * (docs/qlora.md).
 * --file: one positive prompt per line, or JSONL objects with a "prompt" field. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cmd_generate.h"
#include "core/file.h"
#include "infer/session.h"
#include "model/model.h"

static int parse_num(const char *flag, const char *s, double lo, double hi, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (*s == 0 || *end || !(v >= lo && v <= hi)) return cli_fail("%s: expected a number in [%g, %g], got '%s'", flag, lo, hi, s);
    *out = v;
    return 0;
}

static int parse_int(const char *flag, const char *s, long lo, long hi, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end || v < lo || v > hi) return cli_fail("%s: expected an integer in [%ld, %ld], got '%s'", flag, lo, hi, s);
    *out = (int)v;
    return 0;
}

/* cli_gen_flag reads these; the defaults are cli_gen_defaults'. */
const cli_opt cli_gen_opts[] = {
    {"--model", "M", "model: a Hugging Face style folder, a GGUF file or a llama2.c .bin (required)"},
    {"--adapter", "A", "PEFT LoRA adapter folder to apply (default: none)"},
    {"--tokenizer", "T", "tokenizer file or folder (default: the model's own; needed for a llama2.c .bin)"},
    {"--template", "NAME", "prompt template (default: the model folder's autoneg.json template, else infotext)"},
    {"--device", "cpu|cuda|cuda-bf16", "backend to compute on (default: cpu)"},
    {"--temperature", "X", "sampling temperature, 0 = greedy (default: 0.8)"},
    {"--top-k", "K", "keep the K likeliest tokens, 0 = off (default: 40)"},
    {"--top-p", "P", "keep the smallest set with probability >= P, 1 = off (default: 0.95)"},
    {"--min-p", "P", "drop tokens below P times the likeliest, 0 = off (default: 0.05)"},
    {"--repeat-penalty", "R", "divide the logits of tokens already written by R (default: 1.0 = off)"},
    {"--seed", "S", "random seed: the same seed gives the same text (default: 1234)"},
    {"--max-tokens", "N", "most tokens written per output (default: 128)"},
    {"--min-tokens", "N", "no end of text before N tokens (default: 0)"},
    {"--batch", "B", "sequences decoded at once (default: 16)"},
    {"--ctx", "N", "positions per sequence (default: the model's maximum)"},
    {"--strict", NULL, "refuse a prompt that does not fit the context instead of cutting it from the left"},
    {"--head-dtype", "f32|bf16", "store the embedding and LM head in bf16, as QLoRA runs a model (default: f32)"},
    {"--retrieve", "K", "put the negatives of the K most similar training prompts in front, 0 = off (default: the K the run was trained with, else 0)"},
    {NULL, NULL, NULL},
};

static const cli_opt gen_own_opts[] = {
    {"--prompt", "TEXT...", "positive prompts, one argument each, up to the next option"},
    {"--file", "F", "positive prompts, one per line, or JSONL objects with a \"prompt\" field"},
    {"--raw", NULL, "continue the text as given, without the prompt template"},
    {"--n", "N", "outputs per prompt (default: 1)"},
    {"--jsonl", NULL, "one JSON object per output: prompt, negative_prompt (text with --raw), sample, tokens, stop"},
    {"--explain", NULL, "show the neighbours given to the model: on stderr, or with --jsonl a \"neighbours\" field"},
    {NULL, NULL, NULL},
};

const cli_help cli_help_generate = {
    "generate --model M [--adapter A] (--prompt TEXT... | --file F) [options]",
    "Writes a negative prompt for each positive prompt (with --raw: continues the text), one per line on\n"
    "stdout; warnings go to stderr.",
    gen_own_opts, "model and sampling options (shared with eval)", cli_gen_opts,
    "generate --model ../shared/models/TinyStories-656K --prompt \"a cat, sunlight\" --max-tokens 32",
};

void cli_gen_defaults(cli_gen_args *a) {
    memset(a, 0, sizeof *a);
    a->opts = an_gen_defaults();
    /* llama.cpp's defaults; a fixed seed, so the same command prints the same text */
    a->opts.sampling = (an_sampler_params){0.8f, 40, 0.95f, 0.05f, 1.0f};
    a->opts.seed = 1234;
    a->opts.max_tokens = 128;
    a->retrieve = -1;
}

int cli_gen_flag(cli_gen_args *a, int argc, char **argv, int *i) {
    const char *f = argv[*i];
    if (!strcmp(f, "--raw")) return a->raw = 1;
    if (!strcmp(f, "--strict")) return a->opts.strict = 1;
    if (!strcmp(f, "--jsonl")) return a->jsonl = 1;
    static const char *const with_value[] = {"--model", "--adapter", "--tokenizer", "--template", "--temperature",
                                             "--top-k", "--top-p", "--min-p", "--repeat-penalty", "--seed",
                                             "--max-tokens", "--min-tokens", "--n", "--batch", "--ctx", "--head-dtype",
                                             "--device", "--retrieve"};
    int known = 0;
    for (size_t k = 0; k < sizeof with_value / sizeof *with_value; k++) known |= !strcmp(f, with_value[k]);
    if (!known) return 0;
    if (*i + 1 >= argc) return cli_fail("%s needs a value", f), -1;
    const char *v = argv[++*i];
    double d = 0;
    an_sampler_params *sp = &a->opts.sampling;
    if (!strcmp(f, "--model")) a->model = v;
    else if (!strcmp(f, "--adapter")) a->adapter = v;
    else if (!strcmp(f, "--tokenizer")) a->tokenizer = v;
    else if (!strcmp(f, "--template")) a->template_name = v;
    else if (!strcmp(f, "--device")) a->device = v;
    /* ranges of the sampling values are checked by an_sampler_check, with the reason */
    else if (!strcmp(f, "--temperature")) { if (parse_num(f, v, -INFINITY, INFINITY, &d)) return -1; sp->temperature = (float)d; }
    else if (!strcmp(f, "--top-p")) { if (parse_num(f, v, -INFINITY, INFINITY, &d)) return -1; sp->top_p = (float)d; }
    else if (!strcmp(f, "--min-p")) { if (parse_num(f, v, -INFINITY, INFINITY, &d)) return -1; sp->min_p = (float)d; }
    else if (!strcmp(f, "--repeat-penalty")) { if (parse_num(f, v, -INFINITY, INFINITY, &d)) return -1; sp->repeat_penalty = (float)d; }
    else if (!strcmp(f, "--top-k")) { if (parse_int(f, v, -1000000000L, 1000000000L, &sp->top_k)) return -1; }
    else if (!strcmp(f, "--seed")) {
        char *end;
        a->opts.seed = strtoull(v, &end, 10);
        if (!*v || *end) return cli_fail("--seed: expected an unsigned integer, got '%s'", v), -1;
    }
    else if (!strcmp(f, "--max-tokens")) { if (parse_int(f, v, 0, 1 << 24, &a->opts.max_tokens)) return -1; }
    /* any integer, so a negative one gets an_gen_check's reason rather than a bare range */
    else if (!strcmp(f, "--min-tokens")) { if (parse_int(f, v, -1000000000L, 1 << 24, &a->opts.min_tokens)) return -1; }
    else if (!strcmp(f, "--n")) { if (parse_int(f, v, 1, 1000000, &a->opts.n_samples)) return -1; }
    else if (!strcmp(f, "--batch")) { if (parse_int(f, v, 1, 4096, &a->opts.batch)) return -1; }
    else if (!strcmp(f, "--ctx")) { if (parse_int(f, v, 1, 1 << 24, &a->opts.context)) return -1; }
    else if (!strcmp(f, "--retrieve")) { if (parse_int(f, v, 0, AN_RETRIEVAL_MAX_K, &a->retrieve)) return -1; }
    else if (!strcmp(f, "--head-dtype")) {
        if (strcmp(v, "f32") && strcmp(v, "bf16")) return cli_fail("--head-dtype: expected f32 or bf16, got '%s'", v), -1;
        a->head_bf16 = !strcmp(v, "bf16");
    }
    return 1;
}

int cli_gen_open(const cli_gen_args *a, an_session *s) {
    an_error err;
    if (!a->model) return cli_fail("--model is required");
    if (an_sampler_check(&a->opts.sampling, &err) || an_gen_check(&a->opts, &err)) return cli_error(&err);
    const an_ops *ops = cli_backend(a->device);
    if (!ops) return 1;
    if (a->retrieve > 0 && a->raw) return cli_fail("--retrieve %d: --raw continues text without the template, so there is no place for neighbours", a->retrieve);
    if (an_session_open(s, ops, a->model, a->tokenizer, a->adapter, a->template_name, &err)) return cli_error(&err);
    if (a->retrieve > 0 && !s->retr) {
        an_session_close(s);
        return cli_fail("--retrieve %d: %s has no retrieval index (%s): train it with data.retrieve in the recipe", a->retrieve,
                        a->adapter ? a->adapter : a->model, AN_RETRIEVAL_INDEX);
    }
    if (a->head_bf16) { /* inference only: nothing is trained, so everything can be frozen */
        an_model_set_all_trainable(s->model, 0);
        if (an_model_store_frozen_bf16(s->model, &err)) {
            an_session_close(s);
            return cli_error(&err);
        }
    }
    return 0;
}

int cli_gen_retrieve_k(const cli_gen_args *a, const an_session *s) {
    if (a->raw) return 0;
    if (a->retrieve >= 0) return s->retr ? a->retrieve : 0;
    return s->retr ? s->retr->k : 0;
}

void cli_gen_inputs_free(cli_gen_inputs *in) {
    for (int i = 0; in->text && i < in->n; i++) free(in->text[i]);
    free(in->text);
    free(in->nb);
    free(in->n_nb);
    free(in->nb_score);
    memset(in, 0, sizeof *in);
}

int cli_gen_make_inputs(const cli_gen_args *a, const an_session *s, const char *const *prompts,
                        const char *const *sources, int n, cli_gen_inputs *out) {
    memset(out, 0, sizeof *out);
    out->k = cli_gen_retrieve_k(a, s);
    size_t kk = out->k > 0 ? (size_t)out->k : 1;
    out->text = calloc((size_t)n, sizeof *out->text);
    out->nb = calloc((size_t)n * kk, sizeof *out->nb);
    out->nb_score = calloc((size_t)n * kk, sizeof *out->nb_score);
    out->n_nb = calloc((size_t)n, sizeof *out->n_nb);
    if (!out->text || !out->nb || !out->nb_score || !out->n_nb) {
        cli_gen_inputs_free(out);
        return cli_fail("generate: out of memory");
    }
    out->n = n;
    an_error err;
    for (int i = 0; i < n; i++) {
        if (out->k == 0) {
            if (!(out->text[i] = strdup(prompts[i]))) break;
            continue;
        }
        long *nb = out->nb + (size_t)i * kk;
        long m = an_retrieval_neighbours(s->retr, prompts[i], sources ? sources[i] : NULL, -1, out->k, nb,
                                         out->nb_score + (size_t)i * kk, &err);
        if (m < 0 || !(out->text[i] = an_retrieval_input(s->retr, prompts[i], nb, m, &err))) {
            cli_gen_inputs_free(out);
            return cli_error(&err);
        }
        out->n_nb[i] = m;
    }
    for (int i = 0; i < n; i++)
        if (!out->text[i]) {
            cli_gen_inputs_free(out);
            return cli_fail("generate: out of memory");
        }
    return 0;
}

/* An output on one line, as the contract says (one per prompt, in order): a line break inside it
 * (an instruct model's prose, a --raw continuation) is written as a space; --jsonl keeps the text
 * exactly. */
static void print_one_line(const char *text) {
    for (const char *c = text; *c; c++) putchar(*c == '\n' || *c == '\r' ? ' ' : *c);
    putchar('\n');
}

/* The prompts of --file: one per line, or JSONL with a "prompt" field. Blank lines are skipped. */
static int read_prompts(const char *path, char ***out, int *n_out) {
    an_error err;
    size_t n = 0;
    char *s = an_read_file(path, &n, &err);
    if (!s) return cli_error(&err);
    char **v = NULL;
    int count = 0, cap = 0, rc = 0, line = 0;
    for (size_t i = 0; i < n && rc == 0;) {
        size_t e = i;
        while (e < n && s[e] != '\n') e++;
        line++;
        size_t le = e > i && s[e - 1] == '\r' ? e - 1 : e;
        s[le] = 0;
        const char *text = s + i;
        while (*text == ' ' || *text == '\t') text++;
        char *item = NULL;
        if (*text == '{') {
            cJSON *o = cJSON_Parse(text);
            const cJSON *p = o ? cJSON_GetObjectItemCaseSensitive(o, "prompt") : NULL;
            if (!o) rc = cli_fail("%s: line %d: not valid JSON", path, line);
            else if (!cJSON_IsString(p)) rc = cli_fail("%s: line %d: no \"prompt\" string field", path, line);
            else item = strdup(p->valuestring);
            cJSON_Delete(o);
        } else if (*text) {
            item = strdup(s + i);
        }
        if (item) {
            if (count == cap) {
                cap = cap ? cap * 2 : 64;
                char **nv = realloc(v, (size_t)cap * sizeof *v);
                if (!nv) rc = cli_fail("%s: out of memory", path);
                else v = nv;
            }
            if (rc == 0) v[count++] = item;
            else free(item);
        }
        i = e + 1;
    }
    free(s);
    if (rc == 0 && count == 0) rc = cli_fail("%s: no prompts in the file (it is empty or has only blank lines)", path);
    if (rc) {
        for (int k = 0; k < count; k++) free(v[k]);
        free(v);
        return rc;
    }
    *out = v;
    *n_out = count;
    return 0;
}

static void json_str(FILE *f, const char *s) {
    cJSON *j = cJSON_CreateString(s ? s : "");
    char *t = j ? cJSON_PrintUnformatted(j) : NULL;
    fputs(t ? t : "\"\"", f);
    free(t);
    cJSON_Delete(j);
}

static const char *stop_name(an_stop_reason r) {
    switch (r) {
    case AN_STOP_EOS: return "eos";
    case AN_STOP_MAX_TOKENS: return "max_tokens";
    case AN_STOP_CONTEXT: return "context";
    case AN_STOP_CALLER: return "stop_word";
    default: return "none";
    }
}

int an_cmd_generate(int argc, char **argv) {
    cli_gen_args a;
    cli_gen_defaults(&a);
    const char **prompts = calloc((size_t)argc + 1, sizeof *prompts);
    int n_prompts = 0, explain = 0;
    const char *file = NULL;
    if (!prompts) return cli_fail("generate: out of memory");
    int hrc;
    if (cli_help_check(&cli_help_generate, argc, argv, 1, &hrc)) {
        free(prompts);
        return hrc;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--prompt")) {
            if (i + 1 >= argc) {
                free(prompts);
                return cli_fail("--prompt needs a value");
            }
            /* --prompt A B C: every argument up to the next option */
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) prompts[n_prompts++] = argv[++i];
            continue;
        }
        if (!strcmp(argv[i], "--file") && i + 1 < argc) {
            file = argv[++i];
            continue;
        }
        if (!strcmp(argv[i], "--explain")) {
            explain = 1;
            continue;
        }
        int r = cli_gen_flag(&a, argc, argv, &i);
        if (r < 0) {
            free(prompts);
            return 1;
        }
        if (r == 0) {
            free(prompts);
            return cli_help_fail(&cli_help_generate, "generate: unknown option '%s'", argv[i]);
        }
    }
    char **from_file = NULL;
    int n_file = 0;
    if (!n_prompts && !file) {
        free(prompts);
        return cli_fail("generate: give --prompt TEXT... or --file F");
    }
    if (n_prompts && file) {
        free(prompts);
        return cli_fail("generate: give either --prompt or --file, not both");
    }
    if (file && read_prompts(file, &from_file, &n_file)) {
        free(prompts);
        return 1;
    }
    const char *const *texts = file ? (const char *const *)from_file : prompts;
    int n = file ? n_file : n_prompts;
    an_session s;
    int rc = cli_gen_open(&a, &s), opened = rc == 0;
    an_text_result *res = rc ? NULL : calloc((size_t)n * a.opts.n_samples, sizeof *res);
    if (rc == 0 && !res) rc = cli_fail("generate: out of memory");
    an_error err;
    cli_gen_inputs in = {0};
    if (rc == 0 && explain && a.raw) rc = cli_fail("generate: --explain shows the neighbours of --retrieve, which --raw does not use");
    if (rc == 0) rc = cli_gen_make_inputs(&a, &s, texts, NULL, n, &in);
    if (rc == 0 && an_session_generate(&s, (const char *const *)in.text, n, a.raw, &a.opts, res, &err)) rc = cli_error(&err);
    size_t kk = in.k > 0 ? (size_t)in.k : 1;
    /* --explain without --jsonl: the neighbours on stderr, so stdout keeps one negative per line */
    for (int i = 0; rc == 0 && explain && !a.jsonl && i < n; i++) {
        fprintf(stderr, "prompt %d: %s\n", i + 1, texts[i]);
        if (in.k == 0) fprintf(stderr, "  no neighbours: retrieval is off (--retrieve 0, or the model has no index)\n");
        else if (in.n_nb[i] == 0) fprintf(stderr, "  no neighbours: no training prompt shares a tag with it\n");
        for (long j = 0; j < in.n_nb[i]; j++) {
            char *shown = an_retrieval_shown(s.retr->neg[in.nb[(size_t)i * kk + j]], s.retr->max_tags);
            fprintf(stderr, "  neighbour %ld (similarity %.4f): %s\n", j + 1, in.nb_score[(size_t)i * kk + j],
                    shown ? shown : "");
            free(shown);
        }
    }
    for (int i = 0; rc == 0 && i < n; i++)
        for (int k = 0; k < a.opts.n_samples; k++) {
            const an_text_result *r = &res[(size_t)i * a.opts.n_samples + k];
            if (r->truncated && k == 0)
                fprintf(stderr, "autoneg: warning: prompt %d: %d tokens cut from the left to fit the context (--strict refuses)\n",
                        i + 1, r->truncated);
            if (a.jsonl) {
                fputs("{\"prompt\": ", stdout);
                json_str(stdout, texts[i]);
                fputs(a.raw ? ", \"text\": " : ", \"negative_prompt\": ", stdout);
                json_str(stdout, r->text);
                printf(", \"sample\": %d, \"tokens\": %d, \"stop\": \"%s\"", k, r->n_tokens, stop_name(r->stop));
                if (explain) {
                    /* each neighbour's negative as the model was shown it, and its similarity */
                    fputs(", \"neighbours\": [", stdout);
                    for (long j = 0; j < in.n_nb[i]; j++) {
                        char *shown = an_retrieval_shown(s.retr->neg[in.nb[(size_t)i * kk + j]], s.retr->max_tags);
                        printf("%s{\"similarity\": %.6f, \"negative\": ", j ? ", " : "", in.nb_score[(size_t)i * kk + j]);
                        json_str(stdout, shown);
                        fputc('}', stdout);
                        free(shown);
                    }
                    fputc(']', stdout);
                }
                fputs("}\n", stdout);
            } else {
                print_one_line(r->text);
            }
        }
    if (res) an_text_results_free(res, n * a.opts.n_samples);
    free(res);
    cli_gen_inputs_free(&in);
    if (opened) an_session_close(&s);
    for (int k = 0; k < n_file; k++) free(from_file[k]);
    free(from_file);
    free(prompts);
    if (fflush(stdout) && rc == 0) rc = cli_fail("generate: cannot write output");
    return rc;
}
