/* Scratch files for the fuzz targets (fuzz/fuzz.h). The folder is per process: libFuzzer runs one
 * input at a time, and parallel fuzzing jobs are separate processes. Its name is fuzzing state, the
 * one global here; this is test tooling, not the library. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz/fuzz.h"

static char scratch_dir[512];

static void remove_scratch(void) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch_dir);
    if (system(cmd) != 0) fprintf(stderr, "fuzz: could not remove %s\n", scratch_dir);
}

const char *an_fuzz_path(const char *name) {
    static char slots[4][700];
    static int next;
    if (!scratch_dir[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(scratch_dir, sizeof scratch_dir, "%s/an-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(scratch_dir)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(remove_scratch);
    }
    char *s = slots[next++ & 3];
    snprintf(s, sizeof slots[0], "%s/%s", scratch_dir, name);
    return s;
}

const char *an_fuzz_write(const char *name, const uint8_t *data, size_t size) {
    const char *path = an_fuzz_path(name);
    FILE *f = fopen(path, "wb");
    if (!f) return NULL;
    size_t w = size ? fwrite(data, 1, size, f) : 0;
    int bad = fclose(f) != 0 || w != size;
    return bad ? NULL : path;
}

char *an_fuzz_string(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) abort();
    if (size) memcpy(s, data, size);
    s[size] = 0;
    return s;
}

void an_fuzz_split(const uint8_t *data, size_t size, const uint8_t **a, size_t *na, const uint8_t **b, size_t *nb) {
    const uint8_t *z = size ? memchr(data, 0, size) : NULL;
    *a = data;
    *na = z ? (size_t)(z - data) : size;
    *b = z ? z + 1 : data + size;
    *nb = z ? size - *na - 1 : 0;
}
