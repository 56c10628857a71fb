/* The pair list and its JSONL writer: exact bytes for escaping (written by hand from RFC 8259), and a
 * round trip through the reader. */
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "data/pairs/pairs.h"
#include "tests/test.h"

static void test_add_copies_and_free(void) {
    an_pairs p = {0};
    char buf[8] = "abc";
    CHECK(an_pairs_add(&p, buf, "neg", NULL) == 0);
    buf[0] = 'X';
    CHECK_STR(p.v[0].prompt, "abc");
    CHECK(p.v[0].source == NULL);
    for (int i = 0; i < 1000; i++) CHECK(an_pairs_add(&p, "p", "n", "s") == 0);
    CHECK(p.n == 1001 && p.cap >= 1001);
    an_pairs_free(&p);
    CHECK(p.n == 0 && p.v == NULL);
}

static void test_write_jsonl_escapes_and_round_trips(void) {
    an_pairs p = {0};
    an_pairs_add(&p, "say \"hi\"\\ now", "line\nbreak\ttab\x01", "src");
    an_pairs_add(&p, "caf\xC3\xA9", "", NULL);
    char path[512];
    snprintf(path, sizeof path, "%s/out.jsonl", test_tmpdir());
    an_error e;
    CHECK(an_pairs_write_jsonl(&p, path, &e) == 0);
    size_t n;
    char *text = an_read_file(path, &n, &e);
    CHECK_STR(text, "{\"prompt\": \"say \\\"hi\\\"\\\\ now\", \"negative_prompt\": \"line\\nbreak\\ttab\\u0001\", "
                    "\"source\": \"src\"}\n"
                    "{\"prompt\": \"caf\xC3\xA9\", \"negative_prompt\": \"\"}\n");
    free(text);
    an_pairs back = {0};
    an_read_report rep;
    CHECK_MSG(an_pairs_read(&back, path, NULL, &rep, &e) == 0, "%s", e.msg);
    CHECK(back.n == 2);
    if (back.n == 2) {
        CHECK_STR(back.v[0].prompt, p.v[0].prompt);
        CHECK_STR(back.v[0].negative, p.v[0].negative);
        CHECK_STR(back.v[0].source, "src");
        CHECK_STR(back.v[1].prompt, "caf\xC3\xA9");
        CHECK(back.v[1].source == NULL);
    }
    an_pairs_free(&back);
    an_pairs_free(&p);
}

int main(void) {
    RUN(test_add_copies_and_free);
    RUN(test_write_jsonl_escapes_and_round_trips);
    return test_finish();
}
