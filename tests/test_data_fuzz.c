/* Damaged input never crashes a reader and never fails without naming the file: every input in
 * tests/data is mutated many times (bytes flipped, JSON/CSV punctuation and invalid UTF-8 inserted,
 * the file cut short) and read back. Under `make asan` this also checks every bound the parsers use. */
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/rng.h"
#include "data/pairs/clean.h"
#include "data/pairs/pairs.h"
#include "tests/test.h"

static const char *const inputs[] = {
    "pairs.jsonl", "xtuner_single.jsonl", "xtuner_conv.json", "messages.jsonl", "keywords.json", "styles.csv",
    "negopt.csv",  "styles.json",         "horde.json",       "pairs.jsonl.gz", "pairs.zip",     "badcrc.zip",
    "zip64.zip"};

static void mutate(unsigned char *d, size_t *n, size_t cap, an_rng *r) {
    static const unsigned char special[] = {'"', '\n', ',', '{', '}', '[', ']', ':', '\\', 0xFF, 0xC3, 0x00, '#'};
    int edits = 1 + (int)an_rng_below(r, 4);
    for (int k = 0; k < edits && *n > 0; k++) {
        size_t at = (size_t)an_rng_below(r, *n);
        switch (an_rng_below(r, 4)) {
        case 0: d[at] ^= (unsigned char)(1u << an_rng_below(r, 8)); break;
        case 1: d[at] = special[an_rng_below(r, sizeof special)]; break;
        case 2:
            if (*n < cap) {
                memmove(d + at + 1, d + at, *n - at);
                d[at] = special[an_rng_below(r, sizeof special)];
                (*n)++;
            }
            break;
        default: *n = at; break; /* cut short */
        }
    }
}

static void test_mutated_inputs(void) {
    an_rng r;
    an_rng_seed(&r, 2024);
    size_t reads = 0, failures = 0;
    for (size_t f = 0; f < sizeof inputs / sizeof *inputs; f++) {
        char src[256], dst[512];
        snprintf(src, sizeof src, "tests/data/%s", inputs[f]);
        snprintf(dst, sizeof dst, "%s/m-%s", test_tmpdir(), inputs[f]);
        an_error e;
        size_t size;
        char *orig = an_read_file(src, &size, &e);
        CHECK_MSG(orig != NULL, "%s", e.msg);
        if (!orig) continue;
        size_t cap = size + 16;
        unsigned char *buf = malloc(cap);
        for (int it = 0; it < 150; it++) {
            size_t n = size;
            memcpy(buf, orig, size);
            mutate(buf, &n, cap, &r);
            remove(dst); /* a fresh inode: truncating a file that was just mapped is slow on some filesystems */
            FILE *out = fopen(dst, "wb"); /* no fsync: a test file need not survive a crash */
            if (!out || fwrite(buf, 1, n, out) != n || fclose(out) != 0) {
                CHECK_MSG(0, "cannot write %s", dst);
                break;
            }
            for (int mode = 0; mode < 3; mode++) {
                an_read_opts o = {0};
                o.strict = mode == 1;
                o.utf8_replace = mode == 2;
                an_pairs p = {0};
                an_read_report rep;
                e.msg[0] = 0;
                int rc = an_pairs_read(&p, dst, &o, &rep, &e);
                reads++;
                if (rc == 0) {
                    CHECK(p.n > 0 && p.n == rep.pairs);
                    for (size_t i = 0; i < p.n; i++) CHECK(p.v[i].prompt && p.v[i].negative);
                } else {
                    failures++;
                    CHECK_CONTAINS(e.msg, dst);
                }
                an_pairs_free(&p);
            }
        }
        free(buf);
        free(orig);
    }
    /* the mutations must actually break some reads, or this test tests nothing */
    CHECK(failures > reads / 10 && failures < reads);
}

/* Random texts from the characters the clean rules care about: normalising twice changes nothing
 * more, never leaves an empty item or a space beside a comma, and every cut and tag stays in bounds. */
static void test_clean_rules_on_random_text(void) {
    static const char alphabet[] = " ,,\n\t()[]{}:.1aB\xEF\xBC\x8C";
    static const char *const pieces[] = {"Steps: 20", ", Sampler: Euler", "Size: 5", "\nENSD: 1", "Negative prompt: ", "\""};
    an_rng r;
    an_rng_seed(&r, 7);
    char text[128], tag[128];
    for (int it = 0; it < 3000; it++) {
        size_t n = 0, len = an_rng_below(&r, 60);
        while (n < len) {
            if (an_rng_below(&r, 8) == 0) {
                const char *pc = pieces[an_rng_below(&r, sizeof pieces / sizeof *pieces)];
                size_t k = strlen(pc);
                if (n + k >= sizeof text - 1) break;
                memcpy(text + n, pc, k);
                n += k;
            } else {
                text[n++] = alphabet[an_rng_below(&r, sizeof alphabet - 1)];
            }
        }
        text[n] = 0;
        char *a = an_clean_normalise(text), *b = a ? an_clean_normalise(a) : NULL;
        CHECK(a && b && !strcmp(a, b));
        if (a) {
            CHECK_MSG(!strstr(a, ",,") && !strstr(a, " ,") && !strstr(a, ",  ") && !strstr(a, "  "), "\"%s\"", a);
            size_t al = strlen(a);
            CHECK(al == 0 || (a[0] != ' ' && a[0] != ',' && a[al - 1] != ' ' && a[al - 1] != ','));
        }
        free(a);
        free(b);
        CHECK(an_clean_infotext_start(text) <= n);
        for (const char *p = text; p;) {
            const char *next;
            size_t tl = an_simple_tag(p, tag, &next);
            CHECK(tl == strlen(tag) && tl <= n);
            p = next;
        }
    }
}

int main(void) {
    RUN(test_mutated_inputs);
    RUN(test_clean_rules_on_random_text);
    return test_finish();
}
