/* Help text and option screening from each command's table (cli/help.h). */
#include "cli/help.h"

#include <stdarg.h>
#include <string.h>

int cli_help_asked(int argc, char **argv, int from) {
    for (int i = from; i < argc; i++) {
        if (!strcmp(argv[i], "--")) return 0;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
    }
    return 0;
}

static void print_lines(FILE *f, const char *first, const char *rest, const char *text) {
    const char *p = text;
    int line = 0;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        fprintf(f, "%s%.*s\n", line++ ? rest : first, (int)n, p);
        p += n + (e != NULL);
    }
}

void cli_help_usage(const cli_help *h, FILE *f) {
    /* every usage line names the program, so each one can be copied as it is */
    const char *p = h->usage;
    int line = 0;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        fprintf(f, "%s%.*s\n", line++ ? "       autoneg " : "usage: autoneg ", (int)n, p);
        p += n + (e != NULL);
    }
}

static void print_opts(FILE *f, const cli_opt *o) {
    for (; o && o->name; o++) {
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        /* a name too long for the column gets the text on the same line after two spaces */
        fprintf(f, "  %-24s  %s\n", left, o->help);
    }
}

int cli_help_print(const cli_help *h) {
    cli_help_usage(h, stdout);
    if (h->summary) {
        putchar('\n');
        print_lines(stdout, "", "", h->summary);
    }
    if (h->opts && h->opts->name) {
        printf("\noptions:\n");
        print_opts(stdout, h->opts);
    }
    if (h->more && h->more->name) {
        printf("\n%s:\n", h->more_title ? h->more_title : "more options");
        print_opts(stdout, h->more);
    }
    if (!(h->opts && h->opts->name) && !(h->more && h->more->name)) printf("\noptions:\n");
    printf("  %-24s  %s\n", "-h, --help", "this help");
    if (h->example) printf("\nexample:\n  autoneg %s\n", h->example);
    fflush(stdout);
    return 0;
}

int cli_help_fail(const cli_help *h, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("autoneg: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    cli_help_usage(h, stderr);
    /* The usage's first word names the command; a lower-case second word is its subcommand when every
     * usage line has it (a group's lines name different subcommands: the pointer goes to the group). */
    const char *u = h->usage;
    size_t n = strcspn(u, " \n[");
    if (u[n] == ' ' && u[n + 1] >= 'a' && u[n + 1] <= 'z') {
        size_t n2 = n + 1 + strcspn(u + n + 1, " \n[");
        int same = 1;
        for (const char *l = strchr(u, '\n'); l && same; l = strchr(l + 1, '\n'))
            same = !strncmp(l + 1, u, n2) && (l[1 + n2] == ' ' || l[1 + n2] == '\n' || !l[1 + n2]);
        if (same) n = n2;
    }
    fprintf(stderr, "try 'autoneg %.*s --help'\n", (int)n, u);
    return 1;
}

static const cli_opt *find(const cli_opt *o, const char *name) {
    for (; o && o->name; o++)
        if (!strcmp(o->name, name)) return o;
    return NULL;
}

int cli_help_check(const cli_help *h, int argc, char **argv, int from, int *rc) {
    if (cli_help_asked(argc, argv, from)) {
        *rc = cli_help_print(h);
        return 1;
    }
    for (int i = from; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) break;
        if (strncmp(a, "--", 2) != 0) continue;
        const cli_opt *o = find(h->opts, a);
        if (!o) o = find(h->more, a);
        if (!o) {
            *rc = cli_help_fail(h, "unknown option '%s'", a);
            return 1;
        }
        if (o->arg) {
            if (i + 1 >= argc) {
                *rc = cli_help_fail(h, "%s needs a value (%s)", a, o->arg);
                return 1;
            }
            i++; /* the value may itself start with "--" only by accident; it is not an option */
        }
    }
    return 0;
}
