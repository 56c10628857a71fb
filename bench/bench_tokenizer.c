/* Single-thread encode speed of autoneg tokenizers: bench_tokenizer TOKENIZER TEXTFILE REPS
 * prints one line per repetition: "autoneg MB/s". Texts are the lines of TEXTFILE. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/file.h"
#include "data/tokenizers/tokenizer.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); /* CPU time: robust on a shared machine */
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: bench_tokenizer TOKENIZER TEXTFILE REPS\n");
        return 2;
    }
    an_error err;
    an_tokenizer *t = an_tokenizer_load(argv[1], &err);
    if (!t) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    size_t n;
    char *s = an_read_file(argv[2], &n, &err);
    if (!s) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int reps = atoi(argv[3]);
    an_ids ids = {0};
    for (int r = 0; r < reps; r++) {
        size_t total = 0;
        double t0 = now();
        for (size_t i = 0; i < n;) {
            size_t e = i;
            while (e < n && s[e] != '\n') e++;
            ids.n = 0;
            if (an_tokenizer_encode(t, s + i, e - i, &ids, &err)) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            total += ids.n;
            i = e + 1;
        }
        double dt = now() - t0;
        printf("%.3f %zu\n", n / dt / 1e6, total);
    }
    an_ids_free(&ids);
    free(s);
    an_tokenizer_free(t);
    return 0;
}
