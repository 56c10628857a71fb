/* `autoneg tags step|aspect`: every verified run listed in ../shared/reference/seed-repos.md (section
 * 1.4), then more cases from tests/ref/step_cases.txt, which tests/ref/step_ref.js made with node (real
 * parseFloat, Number(), localeCompare and number printing). String results must match exactly. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "data/prompts/tags.h"
#include "tests/test.h"

static const char *const script_list[] = {"bad, comic, cropped, error, extra, worst, lowres, speech, low"};

static void check_step(const char *ratio, int each, const char *expect) {
    an_error err;
    size_t n = 0;
    char *s = an_tags_step(script_list, 1, ratio, each, &n, &err);
    CHECK_STR(s, expect);
    CHECK(n == 9);
    free(s);
}

static void test_step_seed_examples(void) {
    const char *T = "bad, comic, cropped, error, extra, low, lowres, speech, worst";
    char buf[512];
    snprintf(buf, sizeof buf, "(%s:1)", T);
    check_step(NULL, 0, buf);
    check_step("abc", 0, buf);
    snprintf(buf, sizeof buf, "(%s:0.9)", T);
    check_step("0.9", 0, buf);
    check_step("0", 1, "(bad:0), (comic:0), (cropped:0), (error:0), (extra:0), (low:0), (lowres:0), (speech:0), "
                       "(worst:0)");
    snprintf(buf, sizeof buf, "[[%s]]", T);
    check_step("-2", 0, buf);
    check_step("-2", 1, "[[bad]], [[comic]], [[cropped]], [[error]], [[extra]], [[low]], [[lowres]], [[speech]], "
                        "[[worst]]");
    snprintf(buf, sizeof buf, "[%s]", T);
    check_step("-1.7", 0, buf);
    snprintf(buf, sizeof buf, "{{{%s}}}", T);
    check_step("3", 0, buf);
    check_step("3", 1, "{{{bad}}}, {{{comic}}}, {{{cropped}}}, {{{error}}}, {{{extra}}}, {{{low}}}, {{{lowres}}}, "
                       "{{{speech}}}, {{{worst}}}");
    check_step("2.0", 1, "{{bad}}, {{comic}}, {{cropped}}, {{error}}, {{extra}}, {{low}}, {{lowres}}, {{speech}}, "
                         "{{worst}}");
    check_step("1.5", 1, "(bad:1.5), (comic:1.5), (cropped:1.5), (error:1.5), (extra:1.5), (low:1.5), (lowres:1.5), "
                         "(speech:1.5), (worst:1.5)");
    check_step("0.0000001", 1, "(bad:0.0000001), (comic:0.0000001), (cropped:0.0000001), (error:0.0000001), "
                               "(extra:0.0000001), (low:0.0000001), (lowres:0.0000001), (speech:0.0000001), "
                               "(worst:0.0000001)");
}

static void test_step_errors(void) {
    an_error err;
    CHECK(an_tags_step(script_list, 1, "Infinity", 0, NULL, &err) == NULL);
    CHECK_CONTAINS(err.msg, "not finite");
    CHECK(an_tags_step(script_list, 1, "-20000", 0, NULL, &err) == NULL);
    CHECK_CONTAINS(err.msg, "too many");
}

static void test_aspect_seed_examples(void) {
    static const struct {
        const char *w, *h;
        long W, H;
    } cases[] = {
        {NULL, NULL, 512, 512}, {"1", "1", 512, 512},  {"4", "3", 591, 443},  {"3", "4", 443, 591},
        {"16", "9", 682, 384},  {"9", "16", 384, 682}, {"3", "2", 627, 418},  {"1.5", "1", 627, 418},
        {"21", "9", 782, 335},  {"1", "4", 256, 1024},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        long W = 0, H = 0;
        an_error err;
        CHECK(an_tags_aspect(cases[i].w, cases[i].h, 0, &W, &H, &err) == 0);
        CHECK_MSG(W == cases[i].W && H == cases[i].H, "%s/%s: %ld %ld, expected %ld %ld", cases[i].w, cases[i].h, W,
                  H, cases[i].W, cases[i].H);
    }
    /* the documented numbers of ch99/925997e9.md: the script's output floored to multiples of 64 */
    long W, H;
    an_error err;
    CHECK(an_tags_aspect("4", "3", 64, &W, &H, &err) == 0 && W == 576 && H == 384);
    CHECK(an_tags_aspect("16", "9", 64, &W, &H, &err) == 0 && W == 640 && H == 384);
    /* the script prints NaN for these; autoneg reports an error */
    const char *bad[][2] = {{"0", "1"}, {"1", "0"}, {"[4]", "[3]"}, {"-4", "3"}};
    for (size_t i = 0; i < 4; i++) {
        CHECK(an_tags_aspect(bad[i][0], bad[i][1], 0, &W, &H, &err) == -1);
        CHECK_CONTAINS(err.msg, "not a positive aspect ratio");
    }
}

static void test_js_numbers(void) {
    CHECK_NEAR(an_js_parse_float("  2.5x"), 2.5, 0);
    CHECK_NEAR(an_js_parse_float(".5"), 0.5, 0);
    CHECK_NEAR(an_js_parse_float("1e-7"), 1e-7, 0);
    CHECK(an_js_parse_float("-Infinity") == -INFINITY);
    CHECK(isnan(an_js_parse_float("abc")));
    CHECK(isnan(an_js_parse_float("")));
    CHECK(isnan(an_js_parse_float(".")));
    CHECK_NEAR(an_js_number(" 0x10 "), 16, 0);
    CHECK_NEAR(an_js_number(""), 0, 0);
    CHECK(isnan(an_js_number("4px")));
    CHECK(isnan(an_js_number("[4]")));
    CHECK(an_js_locale_compare("a b", "a_b") < 0);
    CHECK(an_js_locale_compare("a_b", "a-b") < 0);
    CHECK(an_js_locale_compare("aB", "Ab") < 0);
    CHECK(an_js_locale_compare("Ab", "b") < 0);
    CHECK(an_js_locale_compare("x\x01y", "xy") == 0);
}

/* Every case of the node fixture. */
static void test_step_node_fixture(void) {
    an_error err;
    char *text = an_read_file("tests/ref/step_cases.txt", NULL, &err);
    CHECK_MSG(text != NULL, "%s", err.msg);
    if (!text) return;
    int n_step = 0, n_aspect = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char *f[5] = {0};
        int nf = 0;
        for (char *p = line; nf < 5;) {
            f[nf++] = p;
            char *tab = strchr(p, '\t');
            if (!tab) break;
            *tab = 0;
            p = tab + 1;
        }
        if (!strcmp(f[0], "step") && nf == 5) {
            cJSON *arr = cJSON_Parse(f[3]);
            CHECK(cJSON_IsArray(arr));
            const char *inputs[8];
            size_t n = 0;
            cJSON *it;
            cJSON_ArrayForEach(it, arr) if (n < 8) inputs[n++] = it->valuestring;
            char *s = an_tags_step(inputs, n, *f[1] ? f[1] : NULL, atoi(f[2]), NULL, &err);
            CHECK_MSG(s && !strcmp(s, f[4]), "step %s %s %s: got \"%s\", node \"%s\"", f[1], f[2], f[3],
                      s ? s : err.msg, f[4]);
            free(s);
            cJSON_Delete(arr);
            n_step++;
        } else if (!strcmp(f[0], "aspect") && nf == 4) {
            long W, H;
            char got[64];
            int rc = an_tags_aspect(f[1], f[2], 0, &W, &H, &err);
            snprintf(got, sizeof got, "%ld %ld", W, H);
            CHECK_MSG(rc == 0 && !strcmp(got, f[3]), "aspect '%s' '%s': %s, node %s", f[1], f[2], got, f[3]);
            n_aspect++;
        }
    }
    CHECK(n_step == 176 && n_aspect == 15);
    free(text);
}

/* ---------- the CLI, through $BUILD/autoneg (tests/run.sh sets BUILD) ---------- */

static char *run_cli(const char *args, const char *stdin_text, int *status) {
    char out[512], in[512], cmd[4096];
    snprintf(out, sizeof out, "%s/cli.out", test_tmpdir());
    snprintf(in, sizeof in, "%s/cli.in", test_tmpdir());
    FILE *f = fopen(in, "w");
    if (f) {
        fputs(stdin_text ? stdin_text : "", f);
        fclose(f);
    }
    const char *build = getenv("BUILD");
    snprintf(cmd, sizeof cmd, "%s/autoneg %s < %s > %s 2>&1", build && *build ? build : "build", args, in, out);
    int st = system(cmd);
    *status = st == -1 ? -1 : (st >> 8) & 0xff;
    an_error err;
    char *s = an_read_file(out, NULL, &err);
    return s ? s : strdup("");
}

static void test_cli(void) {
    int st;
    char *s = run_cli("tags aspect 4 3", NULL, &st);
    CHECK(st == 0);
    CHECK_STR(s, "591 443\n");
    free(s);
    s = run_cli("tags aspect 4 3 --snap 64", NULL, &st);
    CHECK(st == 0);
    CHECK_STR(s, "576 384\n");
    free(s);
    s = run_cli("tags aspect 0 1", NULL, &st);
    CHECK(st == 1);
    CHECK_CONTAINS(s, "not a positive aspect ratio");
    free(s);
    s = run_cli("tags step -2 --each 'bad, comic' 'low, bad'", NULL, &st);
    CHECK(st == 0);
    CHECK_STR(s, "[[bad]], [[comic]], [[low]]\n");
    free(s);
    /* tags from standard input, one string per line */
    s = run_cli("tags step 3", "worst, low\r\nbad\n\n", &st);
    CHECK(st == 0);
    CHECK_STR(s, "{{{bad, low, worst}}}\n");
    free(s);
    /* --out writes what step.js wrote to step.txt: no final newline */
    char path[600], args[800];
    snprintf(path, sizeof path, "%s/step.txt", test_tmpdir());
    snprintf(args, sizeof args, "tags step 0.9 --out %s 'b, a'", path);
    s = run_cli(args, NULL, &st);
    CHECK(st == 0);
    free(s);
    an_error err;
    s = an_read_file(path, NULL, &err);
    CHECK_STR(s, "(a, b:0.9)");
    free(s);
    s = run_cli("tags norm --underscores '((Long_Hair)), EasyNegative, <lora:x:1>, long hair'", NULL, &st);
    CHECK(st == 0);
    CHECK_STR(s, "long hair, easynegative\n");
    free(s);
    s = run_cli("tags frobnicate", NULL, &st);
    CHECK(st != 0);
    CHECK_CONTAINS(s, "unknown subcommand 'frobnicate'");
    free(s);
}

int main(void) {
    RUN(test_cli);
    RUN(test_step_seed_examples);
    RUN(test_step_errors);
    RUN(test_aspect_seed_examples);
    RUN(test_js_numbers);
    RUN(test_step_node_fixture);
    return test_finish();
}
