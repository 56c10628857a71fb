/* metrics.jsonl, the loss-curve SVG, the progress line, and a run folder holding all three outputs
 * (metrics.jsonl, a TensorBoard event file, loss.svg) as the trainer will write them. */
#include <cjson/cJSON.h>
#include <float.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/file.h"
#include "tests/test.h"
#include "train/loss_svg.h"
#include "train/metrics.h"
#include "train/progress.h"
#include "train/tensorboard.h"

/* ---- metrics.jsonl ---- */

static void test_metrics_lines(void) {
    const char *path = test_tmp_path("metrics.jsonl");
    an_metrics m;
    an_error err;
    CHECK(an_metrics_open(&m, path, 0, &err) == 0);
    an_metrics_train t = {1, 2.5, 0.0002, 0.75, 2048, 1534.5, 1.25};
    CHECK(an_metrics_log_train(&m, &t, &err) == 0);
    /* flushed at once: another reader sees the line before close (what a crash would leave) */
    char *text = an_read_file(path, NULL, &err);
    /* written by hand from the field list in docs/metrics.md */
    CHECK_STR(text, "{\"step\":1,\"loss\":2.5,\"lr\":0.0002,\"grad_norm\":0.75,\"tokens\":2048,\"tokens_per_s\":1534.5,\"elapsed_s\":1.25}\n");
    free(text);
    an_metrics_train t2 = {2, 0.1 + 0.2, 1.0 / 3.0, NAN, 4096, INFINITY, 2.5};
    CHECK(an_metrics_log_train(&m, &t2, &err) == 0);
    an_metrics_eval e = {2, 2.125, 8192, 3.0};
    CHECK(an_metrics_log_eval(&m, &e, &err) == 0);
    CHECK(an_metrics_close(&m, &err) == 0);

    text = an_read_file(path, NULL, &err);
    CHECK_CONTAINS(text, "\"loss\":0.30000000000000004,\"lr\":0.3333333333333333,\"grad_norm\":null");
    CHECK_CONTAINS(text, "\"tokens_per_s\":null");
    CHECK_CONTAINS(text, "{\"step\":2,\"eval_loss\":2.125,\"eval_tokens\":8192,\"elapsed_s\":3}\n");
    /* every line is a JSON object by cJSON's reading */
    int lines = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        cJSON *o = cJSON_Parse(line);
        CHECK(cJSON_IsObject(o));
        cJSON_Delete(o);
    }
    CHECK(lines == 3);
    free(text);

    an_metrics_series s;
    CHECK_MSG(an_metrics_read(path, &s, &err) == 0, "%s", err.msg);
    CHECK(s.n_train == 2 && s.n_eval == 1);
    if (s.n_train == 2 && s.n_eval == 1) {
        CHECK(s.train_step[0] == 1 && s.train_loss[0] == 2.5);
        CHECK(s.train_loss[1] == 0.1 + 0.2); /* bit for bit */
        CHECK(s.eval_step[0] == 2 && s.eval_loss[0] == 2.125);
    }
    an_metrics_series_free(&s);
}

static void test_metrics_read_errors_and_crash_tail(void) {
    an_error err;
    an_metrics_series s;
    const char *path = test_tmp_path("bad.jsonl");
    const char *bad = "{\"step\":1,\"loss\":2}\n{\"step\":2,\"loss\":\n";
    CHECK(an_write_file_atomic(path, bad, strlen(bad), &err) == 0);
    CHECK(an_metrics_read(path, &s, &err) != 0);
    CHECK_CONTAINS(err.msg, path);
    CHECK_CONTAINS(err.msg, "line 2: not a JSON object");
    const char *nostep = "{\"loss\":2}\n";
    CHECK(an_write_file_atomic(path, nostep, strlen(nostep), &err) == 0);
    CHECK(an_metrics_read(path, &s, &err) != 0);
    CHECK_CONTAINS(err.msg, "line 1: \"step\" is missing or not a non-negative integer");
    const char *strloss = "{\"step\":1,\"loss\":\"2\"}\n";
    CHECK(an_write_file_atomic(path, strloss, strlen(strloss), &err) == 0);
    CHECK(an_metrics_read(path, &s, &err) != 0);
    CHECK_CONTAINS(err.msg, "line 1: \"loss\" is not a number");
    /* a crash in the middle of a line: the cut line is skipped, the rest is read */
    const char *cut = "{\"step\":1,\"loss\":2}\n{\"step\":2,\"lo";
    CHECK(an_write_file_atomic(path, cut, strlen(cut), &err) == 0);
    CHECK_MSG(an_metrics_read(path, &s, &err) == 0, "%s", err.msg);
    CHECK(s.n_train == 1);
    an_metrics_series_free(&s);
}

static void test_metrics_resume(void) {
    const char *path = test_tmp_path("resume.jsonl");
    an_metrics m;
    an_error err;
    CHECK(an_metrics_open(&m, path, 0, &err) == 0);
    for (long step = 1; step <= 5; step++) {
        an_metrics_train t = {step, 3.0 - 0.1 * (double)step, 1e-3, 1, step * 100, 100, (double)step};
        CHECK(an_metrics_log_train(&m, &t, &err) == 0);
        if (step % 2 == 0) {
            an_metrics_eval e = {step, 2.0, 10, (double)step};
            CHECK(an_metrics_log_eval(&m, &e, &err) == 0);
        }
    }
    CHECK(an_metrics_close(&m, &err) == 0);
    /* resume from the checkpoint of step 3: steps 4 and 5 will be logged again */
    long torn = -1;
    CHECK_MSG(an_metrics_truncate_after(path, 3, &torn, &err) == 0, "%s", err.msg);
    CHECK(torn == 0);
    CHECK(an_metrics_open(&m, path, 1, &err) == 0);
    an_metrics_train t = {4, 9.0, 1e-3, 1, 400, 100, 4};
    CHECK(an_metrics_log_train(&m, &t, &err) == 0);
    CHECK(an_metrics_close(&m, &err) == 0);
    an_metrics_series s;
    CHECK(an_metrics_read(path, &s, &err) == 0);
    CHECK(s.n_train == 4 && s.n_eval == 1); /* steps 1, 2, 3, new 4; eval at 2 */
    if (s.n_train == 4) CHECK(s.train_step[3] == 4 && s.train_loss[3] == 9.0 && s.train_step[2] == 3);
    an_metrics_series_free(&s);
    CHECK(an_metrics_truncate_after(test_tmp_path("absent.jsonl"), 3, &torn, &err) == 0 && torn == 0);
    /* a torn last line (a full disk mid-write) is dropped and its number reported; the rest is kept */
    const char *cut = "{\"step\":1,\"loss\":2}\n{\"step\":2,\"loss\":1}\n{\"step\":3,\"los";
    CHECK(an_write_file_atomic(path, cut, strlen(cut), &err) == 0);
    CHECK_MSG(an_metrics_truncate_after(path, 5, &torn, &err) == 0, "%s", err.msg);
    CHECK(torn == 3);
    size_t n;
    char *back = an_read_file(path, &n, &err);
    CHECK_STR(back, "{\"step\":1,\"loss\":2}\n{\"step\":2,\"loss\":1}\n");
    free(back);
}

/* ---- SVG ---- */

/* A small XML well-formedness check: tags nest and close, attributes are quoted, text holds no raw
 * '<' and every '&' starts an entity. Returns NULL or what is wrong. */
static const char *xml_problem(const char *s) {
    const char *stack[64];
    size_t lens[64];
    int depth = 0, roots = 0;
    while (*s) {
        if (*s == '&') {
            if (strncmp(s, "&amp;", 5) && strncmp(s, "&lt;", 4) && strncmp(s, "&gt;", 4) && strncmp(s, "&quot;", 6))
                return "bare &";
            s++;
            continue;
        }
        if (*s != '<') {
            s++;
            continue;
        }
        if (s[1] == '?') {
            s = strstr(s, "?>");
            if (!s) return "unclosed <?";
            s += 2;
            continue;
        }
        int closing = s[1] == '/';
        const char *name = s + 1 + closing;
        size_t n = strcspn(name, " \t\n/>");
        if (n == 0) return "empty tag name";
        const char *p = name + n;
        int quote = 0;
        while (*p && (quote || (*p != '>'))) {
            if (*p == '"') quote = !quote;
            else if (!quote && *p == '=' && p[1] != '"') return "unquoted attribute";
            else if (!quote && *p == '<') return "< inside a tag";
            p++;
        }
        if (!*p) return "unclosed tag";
        int self = p[-1] == '/';
        if (closing) {
            if (depth == 0 || lens[depth - 1] != n || strncmp(stack[depth - 1], name, n)) return "mismatched closing tag";
            depth--;
        } else if (!self) {
            if (depth == 64) return "too deep";
            if (depth == 0) roots++;
            stack[depth] = name, lens[depth] = n, depth++;
        } else if (depth == 0) {
            roots++;
        }
        s = p + 1;
    }
    if (depth) return "unclosed element";
    if (roots != 1) return "not exactly one root element";
    return NULL;
}

static void test_nice_axis(void) {
    double a, b, t;
    an_svg_nice_axis(1, 3, 6, &a, &b, &t);
    CHECK(a == 1 && b == 3 && t == 0.5);
    an_svg_nice_axis(0, 100, 8, &a, &b, &t);
    CHECK(a == 0 && b == 100 && t == 20);
    an_svg_nice_axis(0.123, 0.987, 5, &a, &b, &t);
    CHECK_NEAR(a, 0, 1e-12);
    CHECK_NEAR(b, 1, 1e-12);
    CHECK_NEAR(t, 0.2, 1e-12);
    an_svg_nice_axis(7, 7, 6, &a, &b, &t); /* one value: a unit around it, 0.2 ticks */
    CHECK(a <= 6.5 && b >= 7.5 && (b - a) / t <= 6 + 1e-9);
    an_svg_nice_axis(2.31, 2.37, 6, &a, &b, &t);
    CHECK_NEAR(t, 0.01, 1e-12);
    CHECK_NEAR(a, 2.31, 1e-9);
    CHECK_NEAR(b, 2.37, 1e-9);
}

/* Degenerate ranges once looped forever (a zero tick never grew), and the hang sat at the end of
 * training where SIGTERM could not reach it. The alarm turns a hang into a failed run instead of a
 * stuck test binary. */
static int axis_sane(double lo, double hi, int max_ticks, double a, double b, double t) {
    return isfinite(a) && isfinite(b) && isfinite(t) && t > 0 && a <= b && (b - a) / t <= max_ticks + 1e-9 &&
           (!isfinite(lo) || a <= fmax(lo, -1e300)) && (!isfinite(hi) || b >= fmin(hi, 1e300)); /* clamped there */
}

static void test_nice_axis_degenerate(void) {
    alarm(20);
    double a, b, t;
    /* constant 2.5: widened to [2, 3], range 1 / 6 ticks = 0.167 -> 0.2; 2 / 0.2 = 10 and 3 / 0.2 = 15
     * are whole, so the ends stay at 2 and 3 */
    an_svg_nice_axis(2.5, 2.5, 6, &a, &b, &t);
    CHECK_NEAR(a, 2, 1e-12);
    CHECK_NEAR(b, 3, 1e-12);
    CHECK_NEAR(t, 0.2, 1e-12);
    /* constant 1e17: +-0.5 is below its float spacing (16), so widening by a unit gives range 0; the
     * widening must scale with the value: 1e17 * (1 +- 1e-6) ... any sane axis around it */
    const double vals[] = {1e17, -3e20, 1e38, -1e38, 1e300, DBL_MAX, 1e-300, 0};
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
        an_svg_nice_axis(vals[i], vals[i], 6, &a, &b, &t);
        CHECK_MSG(axis_sane(vals[i], vals[i], 6, a, b, t), "constant %g: axis [%g, %g] tick %g", vals[i], a, b, t);
    }
    /* a range wider than DBL_MAX (hi - lo overflows) */
    an_svg_nice_axis(-DBL_MAX, DBL_MAX, 6, &a, &b, &t);
    CHECK_MSG(isfinite(a) && isfinite(b) && isfinite(t) && t > 0 && a < b, "[-max, max]: [%g, %g] tick %g", a, b, t);
    an_svg_nice_axis(-1e38, 1e38, 6, &a, &b, &t);
    CHECK_MSG(axis_sane(-1e38, 1e38, 6, a, b, t), "[-1e38, 1e38]: [%g, %g] tick %g", a, b, t);
    /* not numbers: the unit axis [0, 1] with 0.2 ticks (nothing to cover) */
    const double bad[][2] = {{NAN, NAN}, {NAN, 1}, {0, NAN}, {INFINITY, INFINITY}, {-INFINITY, INFINITY}, {1, INFINITY}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        an_svg_nice_axis(bad[i][0], bad[i][1], 6, &a, &b, &t);
        CHECK_MSG(isfinite(a) && isfinite(b) && t > 0 && (b - a) / t <= 6 + 1e-9, "[%g, %g]: [%g, %g] tick %g",
                  bad[i][0], bad[i][1], a, b, t);
    }
    an_svg_nice_axis(NAN, NAN, 6, &a, &b, &t);
    CHECK(a == 0 && b == 1 && fabs(t - 0.2) <= 1e-12);
    alarm(0);
}

/* The whole writer on constant, huge and non-finite series: it ends, and writes well-formed XML. */
static void test_svg_degenerate_series(void) {
    alarm(30);
    long st[4] = {5, 6, 7, 8}, one[4] = {3, 3, 3, 3};
    const double cases[][4] = {{2, 2, 2, 2}, {1e38, 1e38, 1e38, 1e38}, {1e17, 1e17, 1e17, 1e17},
                               {NAN, 2, INFINITY, 2}, {-1e38, 1e38, NAN, -INFINITY}, {DBL_MAX, -DBL_MAX, 0, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        for (int same = 0; same < 2; same++) {
            an_metrics_series s = {same ? one : st, (double *)cases[c], 4, same ? one : st, (double *)cases[c], 4};
            an_error err;
            char *svg = an_loss_svg_render(&s, NULL, &err);
            CHECK_MSG(svg != NULL, "case %zu: %s", c, err.msg);
            const char *why = svg ? xml_problem(svg) : NULL;
            CHECK_MSG(why == NULL, "case %zu: %s", c, why);
            CHECK_MSG(!svg || (!strstr(svg, "nan") && !strstr(svg, "inf")), "case %zu: a non-number in the SVG", c);
            CHECK_MSG(!svg || strlen(svg) < 100000, "case %zu: %zu bytes", c, svg ? strlen(svg) : 0);
            free(svg);
        }
    }
    /* all NaN / Inf: nothing to plot, an error */
    double allbad[4] = {NAN, INFINITY, -INFINITY, NAN};
    an_metrics_series s = {st, allbad, 4, NULL, NULL, 0};
    an_error err;
    CHECK(an_loss_svg_render(&s, NULL, &err) == NULL);
    CHECK_CONTAINS(err.msg, "no finite loss");
    alarm(0);
}

static void test_svg_points_and_form(void) {
    long ts[] = {0, 25, 50, 75, 100};
    double tl[] = {3, 2.5, 2, 1.5, 1};
    long es[] = {50, 100};
    double el[] = {2.25, 1.25};
    an_metrics_series s = {ts, tl, 5, es, el, 2};
    an_error err;
    char *svg = an_loss_svg_render(&s, "run <a & b>", &err);
    CHECK(svg != NULL);
    if (!svg) return;
    const char *why = xml_problem(svg);
    CHECK_MSG(why == NULL, "SVG not well-formed: %s", why);
    /* Axes 0..100 (ticks 20) and 1..3 (ticks 0.5); plot box x 70..700, y 40..370, so by hand
     * x = 70 + step / 100 * 630 and y = 40 + (3 - loss) / 2 * 330. */
    CHECK_CONTAINS(svg, "points=\"70.00,40.00 227.50,122.50 385.00,205.00 542.50,287.50 700.00,370.00\"");
    CHECK_CONTAINS(svg, "points=\"385.00,163.75 700.00,328.75\"");
    CHECK_CONTAINS(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\"");
    CHECK_CONTAINS(svg, "run &lt;a &amp; b&gt;");
    CHECK_CONTAINS(svg, ">1.5</text>");
    CHECK_CONTAINS(svg, ">80</text>");
    CHECK_CONTAINS(svg, ">step</text>");
    CHECK_CONTAINS(svg, ">train loss</text>");
    CHECK_CONTAINS(svg, ">eval loss</text>");
    free(svg);
}

static void test_svg_gaps_caps_and_errors(void) {
    long ts[] = {1, 2, 3, 4};
    double tl[] = {2, NAN, 1.5, 1};
    an_metrics_series s = {ts, tl, 4, NULL, NULL, 0};
    an_error err;
    char *svg = an_loss_svg_render(&s, NULL, &err);
    CHECK(svg != NULL);
    int lines = 0;
    for (const char *p = svg; (p = strstr(p, "class=\"train\"")); p++) lines++;
    CHECK(lines == 2); /* the NaN splits the curve */
    CHECK(svg && !strstr(svg, "eval loss"));
    free(svg);

    enum { N = 5000 };
    long *st = malloc(N * sizeof *st);
    double *lo = malloc(N * sizeof *lo);
    for (int i = 0; i < N; i++) st[i] = i + 1, lo[i] = 10.0 / (i + 1);
    an_metrics_series big = {st, lo, N, NULL, NULL, 0};
    svg = an_loss_svg_render(&big, NULL, &err);
    CHECK(svg != NULL);
    const char *pts = svg ? strstr(svg, "points=\"") : NULL;
    int n = 0;
    for (const char *p = pts; p && *p != '/'; p++) n += *p == ',';
    CHECK(n == 1667); /* runs of 3 points: ceil(5000 / 3) */
    CHECK(svg && xml_problem(svg) == NULL);
    free(svg);
    free(st);
    free(lo);

    double nan1[] = {NAN};
    an_metrics_series none = {ts, nan1, 1, NULL, NULL, 0};
    CHECK(an_loss_svg_render(&none, NULL, &err) == NULL);
    CHECK_CONTAINS(err.msg, "no finite loss to plot");
    CHECK(an_loss_svg_write(test_tmp_path("none.svg"), &none, NULL, &err) != 0);
    CHECK_CONTAINS(err.msg, "none.svg: loss curve: no finite loss to plot");
}

/* ---- progress ---- */

static void test_progress_format(void) {
    char buf[256];
    an_progress_info p = {120, 2000, 2.34561, 1.2e-4, 1534.4, 192};
    CHECK(an_progress_format(buf, sizeof buf, &p) > 0);
    CHECK_STR(buf, "step 120/2000 | loss 2.3456 | lr 1.2e-04 | 1534 tok/s | ETA 3m12s");
    an_progress_info q = {7, 0, 10, 0.5, 0, -1};
    CHECK(an_progress_format(buf, sizeof buf, &q) > 0);
    CHECK_STR(buf, "step 7 | loss 10.0000 | lr 5.0e-01 | 0 tok/s");
    CHECK(an_progress_format(buf, 20, &p) == -1);
    an_progress_format_duration(buf, sizeof buf, 45);
    CHECK_STR(buf, "45s");
    an_progress_format_duration(buf, sizeof buf, 59.6);
    CHECK_STR(buf, "1m00s");
    an_progress_format_duration(buf, sizeof buf, 3725);
    CHECK_STR(buf, "1h02m");
    an_progress_format_duration(buf, sizeof buf, NAN);
    CHECK_STR(buf, "--");
    CHECK_NEAR(an_progress_eta(60, 100, 1100, 0), 600, 1e-9);
    CHECK_NEAR(an_progress_eta(60, 150, 1100, 100), 1140, 1e-9); /* resumed at step 100: 50 steps per minute */
    CHECK(an_progress_eta(0, 0, 100, 0) < 0);
}

static char *slurp(FILE *f) {
    long n = ftell(f);
    rewind(f);
    char *s = calloc((size_t)n + 1, 1);
    if (fread(s, 1, (size_t)n, f) != (size_t)n) s[0] = 0;
    return s;
}

static void test_progress_plain_is_rate_limited(void) {
    FILE *f = tmpfile();
    an_progress p;
    an_progress_init(&p, f, AN_PROGRESS_AUTO, 10.0, 0); /* a file: plain lines, one per 10 s */
    CHECK(p.tty == 0);
    int printed = 0;
    for (long step = 1; step <= 31; step++) {
        an_progress_info info = {step, 31, 2.0, 1e-3, 100, 31 - step};
        printed += an_progress_update(&p, &info, (double)(step - 1));
    }
    an_progress_finish(&p);
    CHECK(printed == 4); /* t = 0 (first), 10, 20, 30 (also the last step) */
    char *s = slurp(f);
    CHECK(strchr(s, '\r') == NULL);
    CHECK_STR(s, "step 1/31 | loss 2.0000 | lr 1.0e-03 | 100 tok/s | ETA 30s\n"
                 "step 11/31 | loss 2.0000 | lr 1.0e-03 | 100 tok/s | ETA 20s\n"
                 "step 21/31 | loss 2.0000 | lr 1.0e-03 | 100 tok/s | ETA 10s\n"
                 "step 31/31 | loss 2.0000 | lr 1.0e-03 | 100 tok/s | ETA 0s\n");
    free(s);
    fclose(f);

    f = tmpfile();
    an_progress_init(&p, f, AN_PROGRESS_PLAIN, 0, 5); /* every 5 steps */
    printed = 0;
    for (long step = 1; step <= 12; step++) {
        an_progress_info info = {step, 12, 2.0, 1e-3, 100, 1};
        printed += an_progress_update(&p, &info, 0);
    }
    CHECK(printed == 4); /* 1, 6, 11, 12 (last) */
    fclose(f);
}

static void test_progress_tty_redraws(void) {
    FILE *f = tmpfile();
    an_progress p;
    an_progress_init(&p, f, AN_PROGRESS_TTY, 0, 0);
    an_progress_info a = {1, 2, 12.5, 1e-3, 100, 5}, b = {2, 2, 1.5, 1e-3, 100, 0};
    an_progress_update(&p, &a, 0);
    an_progress_update(&p, &b, 1);
    an_progress_finish(&p);
    char *s = slurp(f);
    /* the second line is one character shorter (loss 1.5000 vs 12.5000) and ETA 5s vs 0s are equal
     * in width, so one space pads it over the first */
    CHECK_STR(s, "\rstep 1/2 | loss 12.5000 | lr 1.0e-03 | 100 tok/s | ETA 5s"
                 "\rstep 2/2 | loss 1.5000 | lr 1.0e-03 | 100 tok/s | ETA 0s \n");
    free(s);
    fclose(f);
}

/* ---- a run folder ---- */

/* What the trainer will leave in its output folder for 40 steps with an eval every 10: every value
 * TensorBoard holds must be the metrics.jsonl value at float32, and loss.svg must plot every step.
 * tests/ref/check_tensorboard.py runs the same checks with TensorBoard's own reader on this folder
 * (printed with AN_TEST_VERBOSE=1). */
static void test_run_folder(void) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/run", test_tmpdir());
    mkdir(dir, 0755);
    char mpath[600], svgpath[600];
    snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", dir);
    snprintf(svgpath, sizeof svgpath, "%s/loss.svg", dir);
    an_error err;
    an_metrics m;
    an_tb_writer tb;
    CHECK(an_metrics_open(&m, mpath, 0, &err) == 0);
    CHECK_MSG(an_tb_open(&tb, dir, 1731000000.0, &err) == 0, "%s", err.msg);
    for (long step = 1; step <= 40; step++) {
        double t = 1731000000.0 + (double)step;
        an_metrics_train r = {step, 4.0 / (1.0 + 0.1 * (double)step), 1e-3 * (double)step / 40, 1.0 / (double)step,
                              step * 2048, 2048, (double)step};
        CHECK(an_metrics_log_train(&m, &r, &err) == 0);
        CHECK(an_tb_scalar(&tb, AN_TB_TRAIN_LOSS, step, (float)r.loss, t, &err) == 0);
        CHECK(an_tb_scalar(&tb, AN_TB_TRAIN_LR, step, (float)r.lr, t, &err) == 0);
        CHECK(an_tb_scalar(&tb, AN_TB_TRAIN_GRAD_NORM, step, (float)r.grad_norm, t, &err) == 0);
        if (step % 10 == 0) {
            an_metrics_eval e = {step, 4.2 / (1.0 + 0.1 * (double)step), 4096, (double)step};
            CHECK(an_metrics_log_eval(&m, &e, &err) == 0);
            CHECK(an_tb_scalar(&tb, AN_TB_EVAL_LOSS, step, (float)e.eval_loss, t, &err) == 0);
        }
    }
    CHECK(an_metrics_close(&m, &err) == 0);
    CHECK(an_tb_close(&tb, &err) == 0);
    an_metrics_series s;
    CHECK(an_metrics_read(mpath, &s, &err) == 0);
    CHECK(an_loss_svg_write(svgpath, &s, "run", &err) == 0);

    an_tb_entries e;
    CHECK_MSG(an_tb_read(tb.path, &e, &err) == 0, "%s", err.msg);
    CHECK(e.n == 1 + 40 * 3 + 4);
    size_t losses = 0, evals = 0;
    for (size_t i = 0; i < e.n; i++) {
        if (!strcmp(e.v[i].tag, AN_TB_TRAIN_LOSS)) {
            long st = (long)e.v[i].step;
            CHECK(st >= 1 && st <= 40 && e.v[i].value == (float)s.train_loss[st - 1]);
            losses++;
        } else if (!strcmp(e.v[i].tag, AN_TB_EVAL_LOSS)) {
            CHECK(e.v[i].step == s.eval_step[evals] && e.v[i].value == (float)s.eval_loss[evals]);
            evals++;
        }
    }
    CHECK(losses == 40 && evals == 4);
    an_tb_entries_free(&e);
    char *svg = an_read_file(svgpath, NULL, &err);
    CHECK(svg && xml_problem(svg) == NULL);
    const char *pts = svg ? strstr(svg, "class=\"train\"") : NULL;
    pts = pts ? strstr(pts, "points=\"") : NULL;
    int n = 0;
    for (const char *p = pts; p && *p != '/'; p++) n += *p == ',';
    CHECK(n == 40);
    free(svg);
    an_metrics_series_free(&s);
    if (getenv("AN_TEST_VERBOSE")) fprintf(stderr, "  run folder: %s\n", dir);
}

int main(void) {
    RUN(test_metrics_lines);
    RUN(test_metrics_read_errors_and_crash_tail);
    RUN(test_metrics_resume);
    RUN(test_nice_axis);
    RUN(test_nice_axis_degenerate);
    RUN(test_svg_degenerate_series);
    RUN(test_svg_points_and_form);
    RUN(test_svg_gaps_caps_and_errors);
    RUN(test_progress_format);
    RUN(test_progress_plain_is_rate_limited);
    RUN(test_progress_tty_redraws);
    RUN(test_run_folder);
    return test_finish();
}
