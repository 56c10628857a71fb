/* Bad input to the pair readers: each case gets a message that names the file and the problem (and
 * the line, where there is one), and lenient reading skips what strict reading refuses. */
#include <stdlib.h>
#include <string.h>

#include "data/pairs/pairs.h"
#include "tests/test.h"

static void test_bad_json_line_and_missing_field(void) {
    an_pairs p = {0};
    an_read_report rep;
    an_error e = {{0}};
    CHECK(an_pairs_read(&p, "tests/data/bad_lines.jsonl", NULL, &rep, &e) == 0);
    CHECK(p.n == 2 && rep.skipped == 2 && rep.n_reasons == 2);
    CHECK_CONTAINS(rep.reasons[0], "bad_lines.jsonl: line 3: not valid JSON");
    CHECK_CONTAINS(rep.reasons[1], "bad_lines.jsonl: line 4: no \"negative_prompt\" field");
    an_pairs_free(&p);

    an_read_opts o = {0};
    o.strict = 1;
    CHECK(an_pairs_read(&p, "tests/data/bad_lines.jsonl", &o, &rep, &e) == -1);
    CHECK_CONTAINS(e.msg, "bad_lines.jsonl: line 3: not valid JSON");
    an_pairs_free(&p);
}

static void test_invalid_utf8_rejected_or_replaced(void) {
    an_pairs p = {0};
    an_read_report rep;
    an_error e = {{0}};
    CHECK(an_pairs_read(&p, "tests/data/bad_utf8.jsonl", NULL, &rep, &e) == 0);
    CHECK(p.n == 1 && rep.skipped == 1);
    /* "caf" then byte 0xE9: {"prompt": "caf is 15 bytes, so the bad byte is byte 16 */
    CHECK_CONTAINS(rep.reasons[0], "bad_utf8.jsonl: line 2: invalid UTF-8 at byte 16 (byte 0xe9)");
    an_pairs_free(&p);

    an_read_opts o = {0};
    o.utf8_replace = 1;
    CHECK(an_pairs_read(&p, "tests/data/bad_utf8.jsonl", &o, &rep, &e) == 0);
    CHECK(p.n == 2 && rep.utf8_replaced == 1);
    CHECK_STR(p.v[1].prompt, "caf\xEF\xBF\xBD latin-1");
    an_pairs_free(&p);

    o.utf8_replace = 0;
    o.strict = 1;
    CHECK(an_pairs_read(&p, "tests/data/bad_utf8.jsonl", &o, &rep, &e) == -1);
    CHECK_CONTAINS(e.msg, "bad_utf8.jsonl: line 2: invalid UTF-8");
    an_pairs_free(&p);
}

static void test_unterminated_csv_quote_names_its_line(void) {
    an_pairs p = {0};
    an_error e = {{0}};
    CHECK(an_pairs_read(&p, "tests/data/unterminated.csv", NULL, NULL, &e) == -1);
    /* the quote opens on line 3 and runs to the end of the file */
    CHECK_CONTAINS(e.msg, "unterminated.csv: line 3: quoted field is never closed");
    an_pairs_free(&p);
}

static void test_empty_file(void) {
    an_pairs p = {0};
    an_error e = {{0}};
    CHECK(an_pairs_read(&p, "tests/data/empty.jsonl", NULL, NULL, &e) == -1);
    CHECK_CONTAINS(e.msg, "empty.jsonl: file is empty");
    CHECK(an_pairs_read(&p, "tests/data/missing-file.jsonl", NULL, NULL, &e) == -1);
    CHECK_CONTAINS(e.msg, "missing-file.jsonl: cannot open");
}

static void write_long_line_file(const char *path, size_t pad) {
    FILE *f = fopen(path, "wb");
    fputs("{\"prompt\": \"short\", \"negative_prompt\": \"x\"}\n{\"prompt\": \"", f);
    char chunk[4096];
    memset(chunk, 'a', sizeof chunk);
    for (size_t n = 0; n < pad; n += sizeof chunk) fwrite(chunk, 1, sizeof chunk, f);
    fputs("\", \"negative_prompt\": \"long\"}\n", f);
    fclose(f);
}

static void test_ten_megabyte_line(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/long.jsonl", test_tmpdir());
    size_t pad = (size_t)10 << 20;
    write_long_line_file(path, pad);
    an_pairs p = {0};
    an_error e = {{0}};
    CHECK_MSG(an_pairs_read(&p, path, NULL, NULL, &e) == 0, "%s", e.msg);
    CHECK(p.n == 2 && strlen(p.v[1].prompt) == pad && !strcmp(p.v[1].negative, "long"));
    an_pairs_free(&p);
    /* with a limit below the line's length the reader refuses it by name and line */
    an_read_opts o = {0};
    o.max_record = 1 << 20;
    CHECK(an_pairs_read(&p, path, &o, NULL, &e) == -1);
    CHECK_CONTAINS(e.msg, "long.jsonl: line 2 is longer than the limit of 1048576 bytes");
    an_pairs_free(&p);
}

static void test_bad_json_document(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/broken.json", test_tmpdir());
    FILE *f = fopen(path, "wb");
    fputs("[\n  {\"name\": \"a\", \"prompt\": \"x\", \"negative_prompt\": \"y\"},\n  {\"name\": \"b\" \"prompt\": 1}\n]\n", f);
    fclose(f);
    an_pairs p = {0};
    an_error e = {{0}};
    CHECK(an_pairs_read(&p, path, NULL, NULL, &e) == -1);
    CHECK_CONTAINS(e.msg, "broken.json: line 3");
    CHECK_CONTAINS(e.msg, "not valid JSON");
    an_pairs_free(&p);
}

static void test_csv_without_columns(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/cols.csv", test_tmpdir());
    FILE *f = fopen(path, "wb");
    fputs("text,label\nhello,1\n", f);
    fclose(f);
    an_pairs p = {0};
    an_error e = {{0}};
    CHECK(an_pairs_read(&p, path, NULL, NULL, &e) == -1);
    CHECK_CONTAINS(e.msg, "cols.csv: line 1: the header has no \"prompt\" column");
}

static void test_no_pairs_at_all(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/nopairs.jsonl", test_tmpdir());
    FILE *f = fopen(path, "wb");
    fputs("{\"text\": \"hello\"}\n[1, 2]\n", f);
    fclose(f);
    an_pairs p = {0};
    an_error e = {{0}};
    CHECK(an_pairs_read(&p, path, NULL, NULL, &e) == -1);
    CHECK_CONTAINS(e.msg, "nopairs.jsonl: no prompt pairs found (2 records skipped");
    CHECK_CONTAINS(e.msg, "line 1: no \"prompt\" field");
}

int main(void) {
    RUN(test_bad_json_line_and_missing_field);
    RUN(test_invalid_utf8_rejected_or_replaced);
    RUN(test_unterminated_csv_quote_names_its_line);
    RUN(test_empty_file);
    RUN(test_ten_megabyte_line);
    RUN(test_bad_json_document);
    RUN(test_csv_without_columns);
    RUN(test_no_pairs_at_all);
    return test_finish();
}
