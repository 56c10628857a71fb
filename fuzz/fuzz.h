#ifndef AN_FUZZ_H
#define AN_FUZZ_H
/* Fuzz targets for every parser: each takes one input, feeds it to a reader the way a user's file
 * would reach it (most readers take a path, so the input is written to a scratch file first), and
 * returns 0, or 1 when a parse that succeeded broke an invariant its caller relies on (the fuzzer
 * and the replay test both report that). A crash, an out-of-bounds access (under the sanitizers) or
 * a hang is what the fuzzer looks for.
 *
 *   make fuzz [FUZZ_SECONDS=30]   every target under libFuzzer + ASan + UBSan (fuzz/run.sh)
 *   tests/test_fuzz_replay.c      replays fuzz/corpus/NAME/ and fuzz/regressions/NAME/ in make test
 *
 * A crash libFuzzer finds becomes a file in fuzz/regressions/NAME/ once fixed, so make test replays
 * it for good. The targets live in fuzz/targets_*.c, by area. */
#include <stddef.h>
#include <stdint.h>

#define AN_FUZZ_TARGETS(X)                                                                                             \
    X(safetensors) X(config) X(tokenizer) X(bpe_files) X(llama2c) X(pairs) X(recipe) X(prompt) X(template)          \
    X(checkpoint) X(peft) X(gguf) X(retrieval) X(serve_request)

enum { AN_FUZZ_REFUSED = 0, AN_FUZZ_ACCEPTED = 1, AN_FUZZ_BROKEN = -1 };

#define AN_FUZZ_DECLARE(name) int an_fuzz_##name(const uint8_t *data, size_t size);
AN_FUZZ_TARGETS(AN_FUZZ_DECLARE)
#undef AN_FUZZ_DECLARE

/* ---- fuzz/scratch.c ---- */
/* The path of `name` inside this process's scratch folder (created on first use under $TMPDIR or
 * /tmp, removed at exit), in a static buffer per call slot 0..3. */
const char *an_fuzz_path(const char *name);
/* Writes data to an_fuzz_path(name); returns that path, or NULL when the disk refuses. */
const char *an_fuzz_write(const char *name, const uint8_t *data, size_t size);
/* A NUL-terminated copy of data (malloc'd). */
char *an_fuzz_string(const uint8_t *data, size_t size);
/* Splits data at its first byte 0 into two parts (the second empty when there is none). */
void an_fuzz_split(const uint8_t *data, size_t size, const uint8_t **a, size_t *na, const uint8_t **b, size_t *nb);

#endif
