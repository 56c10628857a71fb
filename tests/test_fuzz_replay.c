/* Replays every fuzz target's seed corpus (fuzz/corpus/NAME/) and its regression inputs
 * (fuzz/regressions/NAME/: what `make fuzz` once found, fixed since), each whole and cut at eight
 * points (truncated files are the commonest real damage), through the same target functions libFuzzer
 * drives (fuzz/fuzz.h). A target returns non-zero when a parse that succeeded broke an invariant; a
 * crash or, under `make asan`, an out-of-bounds access fails the binary. Every target must have
 * seeds, so a target without any cannot pass unnoticed. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "fuzz/fuzz.h"
#include "tests/test.h"

typedef int (*target_fn)(const uint8_t *, size_t);

/* Runs every file of dir through fn, whole and truncated; returns the number of files. must_accept:
 * each whole file must parse (the seeds are valid inputs, so the targets' success paths run). */
static int replay_dir(const char *name, target_fn fn, const char *dir, int must_accept) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int files = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        an_error err;
        size_t len = 0;
        char *data = an_read_file(path, &len, &err);
        CHECK_MSG(data != NULL, "%s", err.msg);
        if (!data) continue;
        files++;
        int r = fn((const uint8_t *)data, len);
        CHECK_MSG(r != AN_FUZZ_BROKEN, "fuzz target %s: %s broke an invariant", name, path);
        CHECK_MSG(!must_accept || r == AN_FUZZ_ACCEPTED, "fuzz target %s: seed %s is refused", name, path);
        for (int k = 0; k < 8 && len > 1; k++) {
            size_t cut = len * (size_t)k / 8;
            CHECK_MSG(fn((const uint8_t *)data, cut) != AN_FUZZ_BROKEN, "fuzz target %s: %s cut at %zu broke an invariant",
                      name, path, cut);
        }
        free(data);
    }
    closedir(d);
    return files;
}

static void replay(const char *name, target_fn fn) {
    char dir[256];
    snprintf(dir, sizeof dir, "fuzz/corpus/%s", name);
    int seeds = replay_dir(name, fn, dir, 1);
    snprintf(dir, sizeof dir, "fuzz/regressions/%s", name);
    int found = replay_dir(name, fn, dir, 0);
    CHECK_MSG(seeds > 0, "fuzz target %s has no seed in fuzz/corpus/%s", name, name);
    printf("  %-12s %d seeds, %d regression inputs\n", name, seeds, found);
}

static void test_replay_every_target(void) {
#define AN_FUZZ_REPLAY(name) replay(#name, an_fuzz_##name);
    AN_FUZZ_TARGETS(AN_FUZZ_REPLAY)
#undef AN_FUZZ_REPLAY
}

int main(void) {
    RUN(test_replay_every_target);
    return test_finish();
}
