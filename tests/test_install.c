/* make install PREFIX=tmp puts the binary, the man page autoneg(1) and the bash completion where they
 * belong; the man page (autoneg help man, from the option tables of cli/) renders with man -l without a
 * warning, and holds every command's options. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/file.h"
#include "test.h"

static const char *build_dir(void) {
    const char *b = getenv("BUILD");
    return b && *b ? b : "build";
}

static char *read_text(const char *path) {
    an_error e;
    return an_file_exists(path) ? an_read_file(path, NULL, &e) : NULL;
}

static void test_make_install(void) {
    char prefix[600], cmd[4000], p[800], log[700];
    snprintf(prefix, sizeof prefix, "%s/prefix", test_tmpdir());
    snprintf(log, sizeof log, "%s/install.log", test_tmpdir());
    /* a make of its own: not the jobserver of a `make test` this may run under */
    snprintf(cmd, sizeof cmd, "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s install PREFIX=%s BUILD=%s > %s 2>&1",
             prefix, build_dir(), log);
    int st = system(cmd);
    char *l = read_text(log);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "make install: %s", l ? l : "");
    free(l);

    snprintf(p, sizeof p, "%s/bin/autoneg", prefix);
    CHECK_MSG(access(p, X_OK) == 0, "%s is not an executable", p);
    snprintf(cmd, sizeof cmd, "%s --version | grep -q '^autoneg '", p);
    CHECK(system(cmd) == 0);

    snprintf(p, sizeof p, "%s/share/bash-completion/completions/autoneg", prefix);
    char *comp = read_text(p);
    CHECK_MSG(comp != NULL, "%s missing", p);
    if (comp) {
        CHECK_CONTAINS(comp, "complete -o default -F _autoneg autoneg");
        CHECK_CONTAINS(comp, "--resume");
    }
    free(comp);

    char man[800];
    snprintf(man, sizeof man, "%s/share/man/man1/autoneg.1", prefix);
    char *page = read_text(man);
    CHECK_MSG(page != NULL, "%s missing", man);
    if (!page) return;
    /* the roff header lines, and a section per command from its table */
    CHECK_CONTAINS(page, "\n.TH AUTONEG 1 ");
    CHECK_CONTAINS(page, "\n.SH NAME\nautoneg \\- ");
    CHECK_CONTAINS(page, "\n.SH SYNOPSIS\n");
    const char *sections[] = {".SS \"autoneg train\"", ".SS \"autoneg generate\"", ".SS \"autoneg data clean\"",
                              ".SS \"autoneg bench nf4\"", ".SS \"autoneg tags step\""};
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) CHECK_CONTAINS(page, sections[i]);
    CHECK_CONTAINS(page, "\\fB\\-\\-resume\\fR \\fIDIR|auto\\fR");
    CHECK_CONTAINS(page, "\\fB\\-\\-top\\-k\\fR");
    /* no text line starts with a control character that roff would take for a request */
    for (const char *q = page; (q = strchr(q, '\n')); q++)
        if (q[1] == '\'') CHECK_MSG(0, "a line starts with ': %.40s", q + 1);
    free(page);

    if (system("command -v man > /dev/null 2>&1") != 0) {
        printf("  note: man is not installed; checked the roff header lines only\n");
        return;
    }
    char out[700], err[700];
    snprintf(out, sizeof out, "%s/man.txt", test_tmpdir());
    snprintf(err, sizeof err, "%s/man.err", test_tmpdir());
    snprintf(cmd, sizeof cmd, "MANWIDTH=100 man --warnings -l %s > %s 2> %s", man, out, err);
    st = system(cmd);
    char *text = read_text(out), *warn = read_text(err);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "man -l: %s", warn ? warn : "");
    CHECK_MSG(!warn || !*warn, "man -l warns: %s", warn);
    if (text) {
        CHECK_CONTAINS(text, "AUTONEG(1)");
        CHECK_CONTAINS(text, "--resume DIR|auto");
        CHECK_CONTAINS(text, "EXIT STATUS");
    }
    CHECK(text != NULL);
    free(text);
    free(warn);
}

int main(void) {
    RUN(test_make_install);
    return test_finish();
}
