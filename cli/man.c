/* autoneg help man: the manual page autoneg(1) in roff, made from the option tables that give each
 * command's --help, screen its argv and make the bash completion (cli/help.h), so the page lists
 * exactly the options the parsers take. `make install` writes it to PREFIX/share/man/man1/autoneg.1. */
#include <string.h>

#include "cli/help.h"

/* Text for roff: a backslash becomes \e, a hyphen \- (so options copy as ASCII), and a line that would
 * start with a control character (. or ') gets \& in front. */
static void esc(FILE *f, const char *s, size_t n) {
    int at_start = 1;
    for (size_t i = 0; i < n && s[i]; i++) {
        char c = s[i];
        if (at_start && (c == '.' || c == '\'')) fputs("\\&", f);
        if (c == '\\') fputs("\\e", f);
        else if (c == '-') fputs("\\-", f);
        else fputc(c, f);
        at_start = c == '\n';
    }
}

static void esc_s(FILE *f, const char *s) { esc(f, s, strlen(s)); }

static void opts(FILE *f, const cli_opt *o) {
    for (; o && o->name; o++) {
        fputs(".TP\n\\fB", f);
        esc_s(f, o->name);
        fputs("\\fR", f);
        if (o->arg) {
            fputs(" \\fI", f);
            esc_s(f, o->arg);
            fputs("\\fR", f);
        }
        fputc('\n', f);
        esc_s(f, o->help);
        fputc('\n', f);
    }
}

static void command(FILE *f, const cli_entry *e) {
    const cli_help *h = e->h;
    fprintf(f, ".SS \"autoneg %s%s%s\"\n.nf\n", e->cmd, e->sub ? " " : "", e->sub ? e->sub : "");
    for (const char *p = h->usage; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        fputs("\\fBautoneg\\fR ", f);
        esc(f, p, n);
        fputc('\n', f);
        p += n + (nl != NULL);
    }
    fputs(".fi\n", f);
    if (h->summary) {
        fputs(".PP\n", f);
        esc_s(f, h->summary);
        fputc('\n', f);
    }
    opts(f, h->opts);
    if (h->more && h->more->name) {
        fputs(".PP\n", f);
        esc_s(f, h->more_title ? h->more_title : "more options");
        fputs(":\n", f);
        opts(f, h->more);
    }
    if (h->example) {
        fputs(".PP\nExample:\n.RS\n.nf\nautoneg ", f);
        esc_s(f, h->example);
        fputs("\n.fi\n.RE\n", f);
    }
}

void cli_man_print(FILE *f, const char *version, const char *const *names, const char *const *summaries, size_t n) {
    fprintf(f, ".\\\" autoneg(1), made by `autoneg help man` from the option tables of cli/; do not edit\n"
               ".TH AUTONEG 1 \"\" \"autoneg %s\" \"User Commands\"\n"
               ".SH NAME\n"
               "autoneg \\- fine\\-tune language models on prompt pairs and write negative prompts\n"
               ".SH SYNOPSIS\n"
               ".B autoneg\n\\fICOMMAND\\fR [\\fIOPTIONS\\fR]\n.br\n"
               ".B autoneg\n\\fICOMMAND\\fR \\fB\\-\\-help\\fR\n.br\n"
               ".B autoneg \\-\\-version\n"
               ".SH DESCRIPTION\n"
               "autoneg fine\\-tunes transformer language models on Stable Diffusion prompt pairs (positive prompt\n"
               "to negative prompt) with full fine\\-tuning, LoRA or QLoRA, and writes negative prompts for new\n"
               "positive prompts from the same weights.\n"
               ".PP\n"
               "Results go to standard output; progress, warnings and errors go to standard error.\n"
               "Every command and subcommand answers \\fB\\-\\-help\\fR and \\fB\\-h\\fR.\n"
               ".SH COMMANDS\n", version);
    for (size_t i = 0; i < n; i++) {
        fputs(".TP\n.B ", f);
        esc_s(f, names[i]);
        fputc('\n', f);
        esc_s(f, summaries[i]);
        fputc('\n', f);
    }
    fputs(".SH OPTIONS OF EACH COMMAND\n", f);
    for (size_t i = 0; i < cli_n_entries; i++)
        if (cli_entries[i].h) command(f, &cli_entries[i]);
    fputs(".SH EXIT STATUS\n"
          ".TP\n.B 0\ndone (also for \\fB\\-\\-help\\fR and \\fB\\-\\-version\\fR)\n"
          ".TP\n.B 1\nthe command failed; standard error says why as \\fIautoneg: file: what is wrong\\fR\n"
          ".TP\n.B 2\nno command, or an unknown one\n"
          ".TP\n.B 130\n\\fBtrain\\fR stopped by Ctrl\\-C after writing a checkpoint (\\fB\\-\\-resume\\fR continues it)\n"
          ".SH ENVIRONMENT\n"
          ".TP\n.B OMP_WAIT_POLICY, GOMP_SPINCOUNT\n"
          "how idle OpenMP threads wait; when neither is set, autoneg runs with a short spin (GOMP_SPINCOUNT=10000)\n"
          ".SH SEE ALSO\n"
          "The documentation in the source tree: docs/training.md, docs/recipes.md, docs/generation.md,\n"
          "docs/cli.md. Bash completion: \\fBautoneg completion bash\\fR.\n",
          f);
}
