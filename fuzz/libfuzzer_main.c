/* The libFuzzer entry for one target, chosen at compile time: -DAN_FUZZ_TARGET=name (fuzz/run.sh). */
#include "fuzz/fuzz.h"

#define AN_FUZZ_CAT(a, b) a##b
#define AN_FUZZ_FN(name) AN_FUZZ_CAT(an_fuzz_, name)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (AN_FUZZ_FN(AN_FUZZ_TARGET)(data, size) == AN_FUZZ_BROKEN) __builtin_trap(); /* an invariant broke */
    return 0;
}
