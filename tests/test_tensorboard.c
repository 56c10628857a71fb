/* CRC-32C and TensorBoard event files: published check values, a bit-by-bit CRC, PyTorch's
 * SummaryWriter output (tests/ref/torch_events.tfevents) decoded and matched byte for byte. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/file.h"
#include "tests/test.h"
#include "train/crc32c.h"
#include "train/tensorboard.h"

#define TORCH_FIXTURE "tests/ref/torch_events.tfevents"

/* Published values: the CRC catalogue's check value for CRC-32C, and the iSCSI vectors of
 * RFC 3720 B.4 (32 zero bytes, 32 0xFF bytes, bytes 0..31). */
static void test_crc32c_published_values(void) {
    CHECK(an_crc32c("123456789", 9) == 0xE3069283u);
    unsigned char b[32];
    memset(b, 0, 32);
    CHECK(an_crc32c(b, 32) == 0x8A9136AAu);
    memset(b, 0xff, 32);
    CHECK(an_crc32c(b, 32) == 0x62A8AB43u);
    for (int i = 0; i < 32; i++) b[i] = (unsigned char)i;
    CHECK(an_crc32c(b, 32) == 0x46DD794Eu);
    CHECK(an_crc32c("", 0) == 0);
    /* in pieces */
    CHECK(an_crc32c_update(an_crc32c("1234", 4), "56789", 5) == 0xE3069283u);
}

/* The table against the definition: shift each bit through the reflected polynomial. */
static uint32_t crc_bitwise(const unsigned char *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

static void test_crc32c_matches_bitwise(void) {
    unsigned char buf[1000];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof buf; i++) {
        x = x * 1664525u + 1013904223u;
        buf[i] = (unsigned char)(x >> 24);
    }
    for (size_t n = 0; n <= sizeof buf; n += 37) CHECK(an_crc32c(buf, n) == crc_bitwise(buf, n));
}

/* PyTorch's file: a version record (with an extra source_metadata field we must skip), then the
 * scalars fixed in tests/ref/make_tensorboard_fixture.py. */
static void test_reads_pytorch_file(void) {
    an_tb_entries e;
    an_error err;
    CHECK_MSG(an_tb_read(TORCH_FIXTURE, &e, &err) == 0, "%s", err.msg);
    CHECK(e.n == 12);
    if (e.n != 12) return;
    CHECK_STR(e.v[0].file_version, "brain.Event:2");
    CHECK(!e.v[0].has_value && e.v[0].wall_time > 1.7e9);
    for (int i = 0; i < 5; i++) {
        const an_tb_entry *l = &e.v[1 + 2 * i], *r = &e.v[2 + 2 * i];
        CHECK_STR(l->tag, "train/loss");
        CHECK(l->has_value && l->step == i && l->value == (float)(2.5 - 0.25 * i));
        CHECK(l->wall_time == 1700000000.5 + i);
        CHECK_STR(r->tag, "train/lr");
        CHECK(r->has_value && r->step == i && r->value == (float)(1e-4 * (i + 1)));
    }
    CHECK_STR(e.v[11].tag, "eval/loss");
    CHECK(e.v[11].step == 4 && e.v[11].value == 1.75f && e.v[11].wall_time == 1700000010.25);
    an_tb_entries_free(&e);
}

/* Our writer, given the same scalars, must produce the same bytes as PyTorch's from the second record
 * on (the first holds PyTorch's own metadata and its clock). */
static void test_bytes_match_pytorch(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/ours.tfevents", test_tmpdir());
    an_tb_writer w;
    an_error err;
    CHECK_MSG(an_tb_open_path(&w, path, 1700000000.0, &err) == 0, "%s", err.msg);
    for (int i = 0; i < 5; i++) {
        CHECK(an_tb_scalar(&w, AN_TB_TRAIN_LOSS, i, (float)(2.5 - 0.25 * i), 1700000000.5 + i, &err) == 0);
        CHECK(an_tb_scalar(&w, AN_TB_TRAIN_LR, i, (float)(1e-4 * (i + 1)), 1700000000.5 + i, &err) == 0);
    }
    CHECK(an_tb_scalar(&w, AN_TB_EVAL_LOSS, 4, 1.75f, 1700000010.25, &err) == 0);
    CHECK(an_tb_close(&w, &err) == 0);
    size_t na, nb;
    unsigned char *a = (unsigned char *)an_read_file(path, &na, &err);
    unsigned char *b = (unsigned char *)an_read_file(TORCH_FIXTURE, &nb, &err);
    CHECK(a && b);
    if (a && b) {
        /* skip each file's first record: 8 + 4 + length + 4 bytes */
        size_t la = 16 + (size_t)a[0] + ((size_t)a[1] << 8), lb = 16 + (size_t)b[0] + ((size_t)b[1] << 8);
        CHECK(na - la == nb - lb);
        CHECK(na - la == nb - lb && !memcmp(a + la, b + lb, na - la));
        /* our version record is: wall_time, then file_version */
        static const unsigned char version_event[] = {0x09, 0, 0, 0, 0x40, 0xfc, 0x54, 0xd9, 0x41, 0x1a, 13,
                                                      'b', 'r', 'a', 'i', 'n', '.', 'E', 'v', 'e', 'n', 't', ':', '2'};
        CHECK(la == 16 + sizeof version_event && !memcmp(a + 12, version_event, sizeof version_event));
        /* and the record framing of PyTorch's version record checks out with our masked CRC */
        uint32_t c = an_crc32c_masked(b, 8);
        CHECK(b[8] == (c & 0xff) && b[9] == ((c >> 8) & 0xff) && b[10] == ((c >> 16) & 0xff) && b[11] == (c >> 24));
    }
    free(a);
    free(b);
}

static void test_round_trip_and_name(void) {
    an_tb_writer w;
    an_error err;
    CHECK_MSG(an_tb_open(&w, test_tmpdir(), 1731234567.75, &err) == 0, "%s", err.msg);
    char host[256] = "";
    gethostname(host, sizeof host);
    char expect[512];
    snprintf(expect, sizeof expect, "%s/events.out.tfevents.1731234567.%s", test_tmpdir(), host);
    CHECK_STR(w.path, expect);
    CHECK(an_tb_scalar(&w, AN_TB_TRAIN_GRAD_NORM, 0, 0.5f, 1731234568.0, &err) == 0);
    CHECK(an_tb_scalar(&w, AN_TB_TRAIN_LOSS, 1LL << 40, -3.25f, 1731234569.0, &err) == 0);
    CHECK(an_tb_scalar(&w, AN_TB_TRAIN_LOSS, 7, NAN, 1731234570.0, &err) == 0);
    CHECK(an_tb_close(&w, &err) == 0);
    an_tb_entries e;
    CHECK_MSG(an_tb_read(expect, &e, &err) == 0, "%s", err.msg);
    CHECK(e.n == 4);
    if (e.n == 4) {
        CHECK(e.v[0].wall_time == 1731234567.75);
        CHECK(e.v[1].step == 0 && e.v[1].value == 0.5f);
        CHECK_STR(e.v[1].tag, "train/grad_norm");
        CHECK(e.v[2].step == (1LL << 40) && e.v[2].value == -3.25f);
        CHECK(e.v[3].has_value && isnan(e.v[3].value));
    }
    an_tb_entries_free(&e);
}

/* Corrupted files: each CRC and bound is checked, and the message names file, offset and problem. */
static void test_corruption(void) {
    an_error err;
    size_t n;
    unsigned char *good = (unsigned char *)an_read_file(TORCH_FIXTURE, &n, &err);
    CHECK(good != NULL);
    if (!good) return;
    size_t first = 16 + (size_t)good[0]; /* offset of the second record: 16 + 72 */
    char path[512];
    snprintf(path, sizeof path, "%s/bad.tfevents", test_tmpdir());
    an_tb_entries e;
    struct {
        size_t flip;  /* byte to change, or (size_t)-1 */
        size_t keep;  /* bytes kept */
        const char *expect;
    } cases[] = {
        {first + 20, n, "offset 88: record data CRC mismatch"},
        {first + 0, n, "offset 88: record length CRC mismatch"},
        {(size_t)-1, n - 3, /* the last record, eval/loss at step 4 */ "record of 31 bytes runs past the end of the file"},
        {(size_t)-1, first + 5, "offset 88: truncated record header"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unsigned char *copy = malloc(n);
        memcpy(copy, good, n);
        if (cases[i].flip != (size_t)-1) copy[cases[i].flip] ^= 0x40;
        CHECK(an_write_file_atomic(path, copy, cases[i].keep, &err) == 0);
        CHECK(an_tb_read(path, &e, &err) != 0);
        CHECK_CONTAINS(err.msg, path);
        CHECK_CONTAINS(err.msg, cases[i].expect);
        free(copy);
    }
    /* a record whose CRCs are right but whose Event is not protobuf */
    unsigned char rec[12 + 3 + 4] = {3, 0, 0, 0, 0, 0, 0, 0};
    uint32_t c = an_crc32c_masked(rec, 8);
    memcpy(rec + 8, &c, 4); /* the test runs on little-endian machines only, like the format */
    rec[12] = 0x0a, rec[13] = 0x7f, rec[14] = 'x'; /* field 1, length 127, 1 byte present */
    c = an_crc32c_masked(rec + 12, 3);
    memcpy(rec + 15, &c, 4);
    CHECK(an_write_file_atomic(path, rec, sizeof rec, &err) == 0);
    CHECK(an_tb_read(path, &e, &err) != 0);
    CHECK_CONTAINS(err.msg, "offset 0: bad Event: length runs past the end of the record");
    free(good);
}

/* Plain write without an_write_file_atomic's fsync: this loop writes a thousand files. Unlinking
 * first avoids ext4 flushing a file rewritten through truncation on every close. */
static int write_plain(const char *path, const void *data, size_t n) {
    unlink(path);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

/* Every single-byte corruption and every truncation of a real file is either read or rejected with a
 * message, never a crash (run under ASan by make asan). A flipped byte inside a record must be caught
 * by its CRC. */
static void test_every_corruption_is_caught(void) {
    an_error err;
    size_t n;
    unsigned char *good = (unsigned char *)an_read_file(TORCH_FIXTURE, &n, &err);
    CHECK(good != NULL);
    if (!good) return;
    char path[512];
    snprintf(path, sizeof path, "%s/flip.tfevents", test_tmpdir());
    int accepted = 0;
    for (size_t i = 0; i < n; i++) {
        good[i] ^= 0x01;
        an_tb_entries e;
        CHECK(write_plain(path, good, n) == 0);
        if (an_tb_read(path, &e, &err) == 0) {
            accepted++;
            an_tb_entries_free(&e);
        }
        good[i] ^= 0x01;
        CHECK(write_plain(path, good, i) == 0); /* the first i bytes */
        if (an_tb_read(path, &e, &err) == 0) an_tb_entries_free(&e);
    }
    CHECK(accepted == 0);
    free(good);
}

int main(void) {
    RUN(test_crc32c_published_values);
    RUN(test_crc32c_matches_bitwise);
    RUN(test_reads_pytorch_file);
    RUN(test_bytes_match_pytorch);
    RUN(test_round_trip_and_name);
    RUN(test_corruption);
    RUN(test_every_corruption_is_caught);
    return test_finish();
}
