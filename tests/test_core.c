/* core/: errors, files, random numbers. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/file.h"
#include "core/rng.h"
#include "tests/test.h"

static void test_error_formats_and_prefixes(void) {
    an_error e;
    CHECK(an_fail(&e, "%s: bad %d", "x.json", 3) == -1);
    CHECK_STR(e.msg, "x.json: bad 3");
    an_fail_prefix(&e, "loading %s", "m");
    CHECK_STR(e.msg, "loading m: x.json: bad 3");
    CHECK(an_fail(NULL, "ignored") == -1);
}

/* an_quote: short text whole in quotes; long text cut at 80 bytes (never inside a UTF-8 sequence)
 * with "..." and the total length; control bytes escaped so a message stays one line. */
static void test_quote(void) {
    char q[AN_QUOTE_CAP];
    CHECK_STR(an_quote(q, sizeof q, "abc", 3), "\"abc\"");
    CHECK_STR(an_quote(q, sizeof q, "a\nb\tc\x01", 6), "\"a\\nb\\tc\\x01\"");
    CHECK_STR(an_quote(q, sizeof q, NULL, 0), "\"\"");
    enum { N = 100000 };
    char *big = malloc(N);
    memset(big, 'z', N);
    char want[200];
    snprintf(want, sizeof want, "\"%.80s...\" (100000 bytes)", big);
    CHECK_STR(an_quote(q, sizeof q, big, N), want);
    /* exactly 80 bytes: whole */
    snprintf(want, sizeof want, "\"%.80s\"", big);
    CHECK_STR(an_quote(q, sizeof q, big, 80), want);
    /* a 2-byte character straddling byte 80 is left out whole: 79 z then "\xc3\xa9" */
    big[79] = (char)0xc3;
    big[80] = (char)0xa9;
    snprintf(want, sizeof want, "\"%.79s...\" (100000 bytes)", big);
    CHECK_STR(an_quote(q, sizeof q, big, N), want);
    /* a small buffer still gets a terminated, shortened result */
    char small[16];
    an_quote(small, sizeof small, big, N);
    CHECK(strlen(small) < sizeof small);
    free(big);
}

static void test_atomic_write_and_read_back(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/a.txt", test_tmpdir());
    an_error e;
    CHECK(an_write_file_atomic(path, "hello", 5, &e) == 0);
    size_t n = 0;
    char *s = an_read_file(path, &n, &e);
    CHECK(s && n == 5 && strcmp(s, "hello") == 0);
    free(s);
    an_mapped_file m;
    CHECK(an_map_file(&m, path, &e) == 0 && m.size == 5 && memcmp(m.data, "hello", 5) == 0);
    an_unmap_file(&m);
    CHECK(an_read_file("/nonexistent/zz", NULL, &e) == NULL);
    CHECK_CONTAINS(e.msg, "/nonexistent/zz");
}

static void test_rng_is_repeatable_and_uniform(void) {
    an_rng a, b;
    an_rng_seed(&a, 42);
    an_rng_seed(&b, 42);
    double sum = 0;
    for (int i = 0; i < 100000; i++) {
        float x = an_rng_uniform(&a);
        CHECK(x == an_rng_uniform(&b));
        CHECK(x >= 0 && x < 1);
        sum += x;
    }
    /* mean of 1e5 U(0,1): standard error 0.0009, so 0.005 is over 5 sigma */
    CHECK_NEAR(sum / 100000, 0.5, 0.005);
    /* splitmix64 from state 0: first output is 0xE220A8397B1DCDAF (published test vector) */
    an_rng_seed(&a, 0);
    CHECK(an_rng_u64(&a) == 0xE220A8397B1DCDAFull);
}

/* an_hash_uniform against values not computed by it. (0, 0) is splitmix64 from state 0 again: the top
 * 24 bits of 0xE220A8397B1DCDAF. The others were computed by a separate Python transcription of
 * rng.h's definition (the splitmix64 output for state seed ^ (counter * 0xD1B54A32D192ED03), top 24
 * bits / 2^24); each is a 24-bit integer over 2^24, exact in a float, so the comparison is exact. And
 * the definition itself: the first an_rng_uniform after seeding with seed ^ (counter * constant). */
static void test_hash_uniform_matches_splitmix64(void) {
    static const struct {
        uint64_t seed, counter;
        uint32_t top24;
    } cases[] = {{0, 0, 0xE220A8},        {7, 3, 0xDCFA14}, {7, 4, 0x53E35D}, {42, 1000000, 0x23D793},
                 {UINT64_MAX, 12345, 0xDDE19F}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float got = an_hash_uniform(cases[i].seed, cases[i].counter), want = (float)cases[i].top24 / 16777216.0f;
        CHECK_MSG(got == want, "an_hash_uniform(%llu, %llu) = %.9g, splitmix64 gives %.9g",
                  (unsigned long long)cases[i].seed, (unsigned long long)cases[i].counter, got, want);
        an_rng r;
        an_rng_seed(&r, cases[i].seed ^ (cases[i].counter * 0xD1B54A32D192ED03ull));
        CHECK(an_rng_uniform(&r) == got);
    }
}

int main(void) {
    RUN(test_error_formats_and_prefixes);
    RUN(test_quote);
    RUN(test_atomic_write_and_read_back);
    RUN(test_rng_is_repeatable_and_uniform);
    RUN(test_hash_uniform_matches_splitmix64);
    return test_finish();
}
