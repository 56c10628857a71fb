/* autoneg eval --model M [--adapter A] --data F.jsonl [--train T.jsonl] [--out PRED.jsonl] [generate options]
 * autoneg eval --baselines-only --data F.jsonl [--train T.jsonl] [--consensus-k K] [--vote-k K] [--out PRED.jsonl]
 *
 * Writes a negative prompt for every row of F and scores it against the row's negative_prompt by
 * normalised tags (precision, recall, F1 per row, averaged), beside the baselines on the same rows:
 * the general negative prompt, and (with --train) the negative of the most similar training prompt by
 * tf-idf over prompt tags (infer/retrieval.h), the consensus of the K most similar ones
 * (an_eval_consensus_pick) and the tag vote of the K' most similar (an_eval_tag_vote). Neighbours from
 * the row's own source are left out. Decoding is greedy unless sampling options are given;
 * --baselines-only skips the model. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cmd_generate.h"
#include "core/file.h"
#include "data/pairs/pairs.h"
#include "infer/eval.h"
#include "infer/retrieval.h"

typedef struct mean3 {
    double p, r, f;
    size_t n;
} mean3;

static void add(mean3 *m, const an_tag_score *s) {
    m->p += s->precision;
    m->r += s->recall;
    m->f += s->f1;
    m->n++;
}

static void row(const char *name, const mean3 *m) {
    double n = m->n ? (double)m->n : 1.0;
    printf("%-22s %9.4f %9.4f %9.4f %6zu\n", name, m->p / n, m->r / n, m->f / n, m->n);
}

static void put_str(cJSON *o, const char *k, const char *v) { cJSON_AddStringToObject(o, k, v ? v : ""); }

static const cli_opt eval_opts[] = {
    {"--data", "F.jsonl", "rows to score: prompt and reference negative_prompt (required)"},
    {"--train", "T.jsonl", "training pairs: adds the nearest-training-prompt baseline (default: none)"},
    {"--out", "PRED.jsonl", "one row per line: prompt, reference_negative, predicted_negative, precision, recall, f1"},
    {"--consensus-k", "K", "neighbours the consensus baseline chooses among (1..64, default 5; needs --train)"},
    {"--vote-k", "K", "neighbours whose negatives the tag-vote baseline votes with (1..64, default 20; needs --train)"},
    {"--baselines-only", NULL, "score only the baselines: no model is loaded, --model is not needed"},
    {"--ceiling", NULL, "also print the best of the K neighbours' negatives by the reference: what a perfect pick scores"},
    {"--mbr", "N", "draw N samples per row (2..256, needs --temperature > 0) and keep the one that agrees most"},
    {NULL, NULL, NULL},
};

const cli_help cli_help_eval = {
    "eval --model M [--adapter A] --data F.jsonl [--train T.jsonl] [--out PRED.jsonl] [options]",
    "Writes a negative prompt for every row of F and scores it against the row's reference by normalised\n"
    "tags (precision, recall, F1), beside the general negative prompt and, with --train, the nearest\n"
    "training prompt's negative. The table goes to stdout, progress to stderr. Decoding is greedy\n"
    "(--temperature 0) unless --temperature is given; --raw, --jsonl and --n do not apply. With\n"
    "--train, the consensus baseline is the negative, among the K nearest training prompts', that agrees\n"
    "most (tag F1 weighted by similarity) with the others, and the tag vote builds a negative from the\n"
    "tags most of the K' nearest negatives share (weighted by similarity squared), as many as maximise\n"
    "the expected F1 (K' = --vote-k). Neighbours from a row's own source are left out. --baselines-only\n"
    "scores the baselines alone, without a model. A model trained with retrieval gets the negatives of\n"
    "each row's K most similar training prompts (from other sources) in front (--retrieve K; 0 = off).",
    eval_opts, "model and sampling options (shared with generate)", cli_gen_opts,
    "eval --model out/run1/final --data val.jsonl --train train.jsonl --out pred.jsonl",
};

/* flag's value v: an integer in [lo, hi] (what it counts: `what`) into *out; 1 with a message if not */
static int count_flag(const char *flag, const char *v, long lo, long hi, const char *what, long *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || end == v || x < lo || x > hi) return cli_fail("eval: %s %s: %s must be in [%ld, %ld]", flag, v, what, lo, hi);
    *out = x;
    return 0;
}

/* The model's negative for every row into res (with --mbr, the sample of each row that agrees most
 * with its other samples); 0, or the command's exit status. */
static int generate_all(cli_gen_args *a, an_session *s, const an_pairs *rows, int mbr, an_text_result *res) {
    an_error err;
    int n = (int)rows->n, rc = 0;
    const char **texts = malloc((size_t)n * sizeof *texts), **src = malloc((size_t)n * sizeof *src);
    if (!texts || !src) {
        free(texts);
        free(src);
        return cli_fail("eval: out of memory");
    }
    for (int i = 0; i < n; i++) texts[i] = rows->v[i].prompt, src[i] = rows->v[i].source;
    /* with retrieval, each row's neighbours come from other sources than its own, as in training */
    cli_gen_inputs in;
    rc = cli_gen_make_inputs(a, s, texts, src, n, &in);
    free(src);
    if (rc) {
        free(texts);
        return rc;
    }
    for (int i = 0; i < n; i++) texts[i] = in.text[i];
    if (in.k > 0) fprintf(stderr, "eval: each prompt gets the negatives of its %d most similar training prompts\n", in.k);
    int per = mbr ? mbr : 1;
    an_text_result *all = per > 1 ? calloc((size_t)n * (size_t)per, sizeof *all) : res;
    if (!all) {
        free(texts);
        cli_gen_inputs_free(&in);
        return cli_fail("eval: out of memory");
    }
    fprintf(stderr, "eval: generating %d negative prompts%s ...\n", n * per, per > 1 ? " (minimum Bayes risk over the samples of each row)" : "");
    if (an_session_generate(s, texts, n, 0, &a->opts, all, &err)) rc = cli_error(&err);
    free(texts);
    cli_gen_inputs_free(&in);
    /* --mbr: each row keeps the sample with the highest summed tag F1 against its other samples */
    for (int i = 0; per > 1 && rc == 0 && i < n; i++) {
        const char *c[256];
        int best = 0;
        for (int j = 0; j < per; j++) c[j] = all[(size_t)i * per + j].text ? all[(size_t)i * per + j].text : "";
        if (an_eval_mbr_pick(c, per, &best, &err)) { rc = cli_error(&err); break; }
        res[i] = all[(size_t)i * per + best];
        memset(&all[(size_t)i * per + best], 0, sizeof *all);
    }
    if (per > 1) {
        an_text_results_free(all, n * per);
        free(all);
    }
    return rc;
}

int an_cmd_eval(int argc, char **argv) {
    int hrc;
    if (cli_help_check(&cli_help_eval, argc, argv, 1, &hrc)) return hrc;
    cli_gen_args a;
    cli_gen_defaults(&a);
    a.opts.sampling.temperature = 0; /* greedy: an evaluation should not depend on luck */
    const char *data = NULL, *train = NULL, *outp = NULL;
    long mbr = 0, ck = 5, vk = 20;
    int base_only = 0, model_k = 0, ceiling = 0;
    for (int i = 1; i < argc; i++) {
        long *count = NULL, lo = 1, hi = 64;
        const char *what = "the number of neighbours";
        if (!strcmp(argv[i], "--mbr")) count = &mbr, lo = 2, hi = 256, what = "the number of samples";
        else if (!strcmp(argv[i], "--consensus-k")) count = &ck;
        else if (!strcmp(argv[i], "--vote-k")) count = &vk;
        if (count && i + 1 < argc) {
            if (count_flag(argv[i], argv[i + 1], lo, hi, what, count)) return 1;
            i++;
            continue;
        }
        if (!strcmp(argv[i], "--baselines-only")) { base_only = 1; continue; }
        if (!strcmp(argv[i], "--ceiling")) { ceiling = 1; continue; }
        if (!strcmp(argv[i], "--data") && i + 1 < argc) { data = argv[++i]; continue; }
        if (!strcmp(argv[i], "--train") && i + 1 < argc) { train = argv[++i]; continue; }
        if (!strcmp(argv[i], "--out") && i + 1 < argc) { outp = argv[++i]; continue; }
        int r = cli_gen_flag(&a, argc, argv, &i);
        if (r < 0) return 1;
        if (r == 0 || a.raw || a.jsonl || a.opts.n_samples != 1)
            return cli_help_fail(&cli_help_eval, "eval: unknown or unsupported option '%s'", argv[i]);
    }
    if (!data || (!a.model && !base_only))
        return cli_help_fail(&cli_help_eval, "eval: --data and --model (or --baselines-only) are required");
    if (base_only && mbr) return cli_fail("eval: --mbr draws samples from a model: it does not go with --baselines-only");
    if (ceiling && !train) return cli_fail("eval: --ceiling picks among the neighbours in --train: give --train");
    if (mbr) {
        if (a.opts.sampling.temperature == 0)
            return cli_fail("eval: --mbr draws samples: give --temperature > 0 (and the other sampling flags as wanted)");
        a.opts.n_samples = (int)mbr;
    }
    an_error err;
    /* before the data is read: a bad length option is the first thing to hear about */
    if (an_gen_check(&a.opts, &err)) return cli_error(&err);
    an_pairs rows = {0}, tr = {0};
    an_tfidf *ix = NULL;
    an_text_result *res = NULL;
    an_session s;
    int opened = 0, rc = 0;
    if (an_pairs_read(&rows, data, NULL, NULL, &err)) { rc = cli_error(&err); goto done; }
    if (train) {
        if (an_pairs_read(&tr, train, NULL, NULL, &err)) { rc = cli_error(&err); goto done; }
        const char **tp = malloc(2 * tr.n * sizeof *tp);
        if (!tp) { rc = cli_fail("eval: out of memory"); goto done; }
        for (size_t i = 0; i < tr.n; i++) tp[i] = tr.v[i].prompt, tp[tr.n + i] = tr.v[i].source;
        ix = an_tfidf_build_src(tp, tp + tr.n, tr.n, &err);
        free(tp);
        if (!ix) { rc = cli_error(&err); goto done; }
    }
    int n = (int)rows.n;
    res = calloc((size_t)n, sizeof *res);
    if (!res) { rc = cli_fail("eval: out of memory"); goto done; }
    if (!base_only) {
        if ((rc = cli_gen_open(&a, &s)) != 0) goto done;
        opened = 1;
        model_k = cli_gen_retrieve_k(&a, &s);
        if ((rc = generate_all(&a, &s, &rows, (int)mbr, res)) != 0) goto done;
    }

    mean3 model = {0}, general = {0}, nearest = {0}, consensus = {0}, best_of_k = {0}, vote = {0};
    long kq = ck > vk ? ck : vk; /* one query serves every baseline: each takes the first K it needs */
    long nb_idx[64];
    double nb_sim[64];
    const char *nb_neg[64];
    cJSON *lines = cJSON_CreateArray();
    for (int i = 0; i < n && rc == 0; i++) {
        const an_pair *pr = &rows.v[i];
        an_tag_score sm = {0}, sg, sn, sc, sb = {0}, sv = {0};
        if ((!base_only && an_eval_score(res[i].text, pr->negative, &sm, &err)) ||
            an_eval_score(an_eval_general_negative, pr->negative, &sg, &err)) { rc = cli_error(&err); break; }
        if (!base_only) add(&model, &sm);
        add(&general, &sg);
        const char *near_neg = NULL, *cons_neg = NULL;
        char *vote_neg = NULL;
        if (ix) {
            /* best first, ties by index: the first K of the kq nearest are the K nearest */
            long mq = an_tfidf_topk(ix, pr->prompt, pr->source, (size_t)kq, nb_idx, nb_sim, &err);
            if (mq < 0) { rc = cli_error(&err); break; }
            long m = mq < ck ? mq : ck, mv = mq < vk ? mq : vk;
            /* no shared tag with any training prompt: fall back to the general negative */
            near_neg = cons_neg = m > 0 ? tr.v[nb_idx[0]].negative : an_eval_general_negative;
            if (m > 1) {
                int best;
                for (long j = 0; j < m; j++) nb_neg[j] = tr.v[nb_idx[j]].negative;
                if (an_eval_consensus_pick(nb_neg, nb_sim, (int)m, &best, NULL, &err)) { rc = cli_error(&err); break; }
                cons_neg = nb_neg[best];
            }
            if (an_eval_score(near_neg, pr->negative, &sn, &err) || an_eval_score(cons_neg, pr->negative, &sc, &err)) {
                rc = cli_error(&err);
                break;
            }
            add(&nearest, &sn);
            add(&consensus, &sc);
            /* the ceiling of any pick among the neighbours: the one the reference likes best (the
             * first on a tie); no neighbour: the general negative, as above */
            sb = sn;
            for (long j = 1; ceiling && j < m; j++) {
                an_tag_score sj;
                if (an_eval_score(tr.v[nb_idx[j]].negative, pr->negative, &sj, &err)) { rc = cli_error(&err); break; }
                if (sj.f1 > sb.f1) sb = sj;
            }
            if (rc) break;
            add(&best_of_k, &sb);
            if (mv > 0) {
                for (long j = 0; j < mv; j++) nb_neg[j] = tr.v[nb_idx[j]].negative;
                if (an_eval_tag_vote(nb_neg, nb_sim, (int)mv, &vote_neg, &err)) { rc = cli_error(&err); break; }
            }
            /* no neighbour: the general negative, as above */
            if (an_eval_score(vote_neg ? vote_neg : an_eval_general_negative, pr->negative, &sv, &err)) {
                free(vote_neg);
                rc = cli_error(&err);
                break;
            }
            add(&vote, &sv);
        }
        if (outp && lines) {
            cJSON *o = cJSON_CreateObject();
            put_str(o, "prompt", pr->prompt);
            /* names that cannot be mistaken: a reader once took negative_prompt, the reference, for the output */
            put_str(o, "reference_negative", pr->negative);
            if (!base_only) {
                put_str(o, "predicted_negative", res[i].text);
                cJSON_AddNumberToObject(o, "precision", sm.precision);
                cJSON_AddNumberToObject(o, "recall", sm.recall);
                cJSON_AddNumberToObject(o, "f1", sm.f1);
            }
            if (near_neg) {
                put_str(o, "nearest_train_negative", near_neg);
                cJSON_AddNumberToObject(o, "nearest_f1", sn.f1);
                put_str(o, "consensus_train_negative", cons_neg);
                cJSON_AddNumberToObject(o, "consensus_f1", sc.f1);
                if (ceiling) cJSON_AddNumberToObject(o, "best_of_k_f1", sb.f1);
                put_str(o, "vote_negative", vote_neg ? vote_neg : an_eval_general_negative);
                cJSON_AddNumberToObject(o, "vote_f1", sv.f1);
            }
            cJSON_AddItemToArray(lines, o);
        }
        free(vote_neg);
    }
    if (rc == 0 && outp) {
        /* one JSON object per line, written atomically */
        size_t cap = 1 << 16, len = 0;
        char *buf = malloc(cap);
        for (cJSON *o = lines ? lines->child : NULL; o && buf; o = o->next) {
            char *t = cJSON_PrintUnformatted(o);
            size_t tl = t ? strlen(t) : 0;
            while (buf && len + tl + 2 > cap) {
                char *nb = realloc(buf, cap *= 2);
                if (!nb) free(buf);
                buf = nb;
            }
            if (buf && t) {
                memcpy(buf + len, t, tl);
                len += tl;
                buf[len++] = '\n';
            }
            free(t);
        }
        if (!buf) rc = cli_fail("eval: out of memory");
        else if (an_write_file_atomic(outp, buf, len, &err)) rc = cli_error(&err);
        free(buf);
    }
    cJSON_Delete(lines);
    if (rc == 0) {
        printf("%-22s %9s %9s %9s %6s\n", "negatives from", "precision", "recall", "f1", "rows");
        char mname[40];
        if (model_k) snprintf(mname, sizeof mname, "model, retrieve K=%d", model_k);
        else snprintf(mname, sizeof mname, "model");
        if (!base_only) row(mname, &model);
        row("general negative", &general);
        if (ix) {
            char name[32];
            row("nearest train prompt", &nearest);
            snprintf(name, sizeof name, "consensus of K=%ld", ck);
            row(name, &consensus);
            snprintf(name, sizeof name, "tag vote of K=%ld", vk);
            row(name, &vote);
            if (ceiling) {
                snprintf(name, sizeof name, "best of K=%ld (ceiling)", ck);
                row(name, &best_of_k);
            }
        }
    }
done:
    if (res) an_text_results_free(res, (int)rows.n);
    free(res);
    if (opened) an_session_close(&s);
    an_tfidf_free(ix);
    an_pairs_free(&rows);
    an_pairs_free(&tr);
    return rc;
}
