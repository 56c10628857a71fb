/* .gz and .zip inputs read through zlib without unpacking: the archives in tests/data were made by
 * tests/data/make_archives.py with Python's gzip and zipfile modules. */
#include <stdlib.h>
#include <string.h>

#include "data/pairs/pairs.h"
#include "tests/test.h"

static void test_gz_reads_like_the_plain_file(void) {
    an_pairs a = {0}, b = {0};
    an_error e = {{0}};
    CHECK_MSG(an_pairs_read(&a, "tests/data/pairs.jsonl", NULL, NULL, &e) == 0, "%s", e.msg);
    CHECK_MSG(an_pairs_read(&b, "tests/data/pairs.jsonl.gz", NULL, NULL, &e) == 0, "%s", e.msg);
    CHECK(a.n == 3 && b.n == 3);
    for (size_t i = 0; i < a.n && i < b.n; i++) {
        CHECK_STR(b.v[i].prompt, a.v[i].prompt);
        CHECK_STR(b.v[i].negative, a.v[i].negative);
    }
    an_pairs_free(&a);
    an_pairs_free(&b);
}

static void test_truncated_gz(void) {
    an_pairs p = {0};
    an_error e = {{0}};
    CHECK(an_pairs_read(&p, "tests/data/truncated.jsonl.gz", NULL, NULL, &e) == -1);
    CHECK_CONTAINS(e.msg, "truncated.jsonl.gz: gzip error");
    CHECK_CONTAINS(e.msg, "unexpected end of file");
    an_pairs_free(&p);
}

static void test_zip_members(void) {
    an_pairs p = {0};
    an_error e = {{0}};
    /* members: README.txt (ignored: unknown extension), data/pairs.jsonl (deflate), negopt.csv (stored) */
    CHECK_MSG(an_pairs_read(&p, "tests/data/pairs.zip", NULL, NULL, &e) == 0, "%s", e.msg);
    CHECK(p.n == 3 + 2);
    if (p.n == 5) {
        CHECK_STR(p.v[0].prompt, "a cat on a sofa, soft light");
        CHECK_STR(p.v[2].negative, "text, watermark");
        CHECK_STR(p.v[3].prompt, "a cat, cute");
        CHECK_STR(p.v[4].negative, "blurry, low quality");
    }
    an_pairs_free(&p);
}

static void test_zip64_records(void) {
    /* tests/data/zip64.zip has a ZIP64 end record and 0xFFFFFFFF sizes in its central directory */
    an_pairs p = {0};
    an_error e = {{0}};
    CHECK_MSG(an_pairs_read(&p, "tests/data/zip64.zip", NULL, NULL, &e) == 0, "%s", e.msg);
    CHECK(p.n == 3);
    if (p.n == 3) CHECK_STR(p.v[1].negative, "(worst quality:1.4), bad hands");
    an_pairs_free(&p);
}

static void test_corrupt_zip(void) {
    an_pairs p = {0};
    an_error e = {{0}};
    CHECK(an_pairs_read(&p, "tests/data/corrupt.zip", NULL, NULL, &e) == -1);
    CHECK_CONTAINS(e.msg, "corrupt.zip:pairs.jsonl");
    CHECK_CONTAINS(e.msg, "corrupt zip");
    an_pairs_free(&p);
    CHECK(an_pairs_read(&p, "tests/data/cut.zip", NULL, NULL, &e) == -1);
    CHECK_CONTAINS(e.msg, "cut.zip: not a zip archive or truncated");
    an_pairs_free(&p);
    CHECK(an_pairs_read(&p, "tests/data/badcrc.zip", NULL, NULL, &e) == -1);
    CHECK_CONTAINS(e.msg, "badcrc.zip:negopt.csv: CRC-32 mismatch");
    an_pairs_free(&p);
}

int main(void) {
    RUN(test_gz_reads_like_the_plain_file);
    RUN(test_truncated_gz);
    RUN(test_zip_members);
    RUN(test_zip64_records);
    RUN(test_corrupt_zip);
    return test_finish();
}
