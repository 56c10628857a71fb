/* autoneg gguf info end to end through $BUILD/autoneg, on tests/ref/gguf/meta.gguf (written by the gguf
 * Python package; its values are listed in tests/ref/make_gguf_fixtures.py) and on files that are not
 * GGUF. */
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "tests/cli_run.h"
#include "tests/test.h"

static void test_info_prints_metadata_and_tensors(void) {
    char out[512], err[512];
    snprintf(out, sizeof out, "%s", test_tmp_path("info.out"));
    snprintf(err, sizeof err, "%s", test_tmp_path("info.err"));
    CHECK(test_autoneg(NULL, "gguf info tests/ref/gguf/meta.gguf", out, err) == 0);
    char *s = test_slurp(out);
    CHECK_CONTAINS(s, "tests/ref/gguf/meta.gguf: GGUF version 3, 30 metadata keys, 3 tensors, alignment 64");
    CHECK_CONTAINS(s, "  t.str                                    string         \"naïve ✓\"\n");
    CHECK_CONTAINS(s, "  t.f32                                    f32            0.1\n");
    CHECK_CONTAINS(s, "  t.u64                                    u64            18000000000000000000\n");
    CHECK_CONTAINS(s, "  a.float64                                f64[2]         [0.1, 1e+300]\n");
    CHECK_CONTAINS(s, "  a.string                                 string[4]      [\"a\", \"\", \"三\", \"longer string\"]\n");
    CHECK_CONTAINS(s, "  a.deep                                   array[2]       [[[1], [2, 3]], [[4]]]\n");
    CHECK_CONTAINS(s, "  four_d                           F32     [2, 2, 3, 2]                      128           96\n");
    CHECK_CONTAINS(s, "3 tensors, 35 elements, 140 bytes of data: 3 F32\n");
    free(s);
    s = test_slurp(err);
    CHECK_STR(s, "");
    free(s);
}

static void test_info_errors(void) {
    char out[512], err[512];
    snprintf(out, sizeof out, "%s", test_tmp_path("bad.out"));
    snprintf(err, sizeof err, "%s", test_tmp_path("bad.err"));
    CHECK(test_autoneg(NULL, "gguf info tests/ref/st_python.safetensors", out, err) == 1);
    char *s = test_slurp(err);
    CHECK_CONTAINS(s, "autoneg: tests/ref/st_python.safetensors: not a GGUF file");
    free(s);
    CHECK(test_autoneg(NULL, "gguf info", out, err) == 1);
    s = test_slurp(err);
    CHECK_CONTAINS(s, "usage: autoneg gguf info F.gguf");
    free(s);
    CHECK(test_autoneg(NULL, "gguf --help", out, err) == 0);
    s = test_slurp(out);
    CHECK_CONTAINS(s, "usage: autoneg gguf info F.gguf [--full]");
    free(s);
}

int main(void) {
    RUN(test_info_prints_metadata_and_tensors);
    RUN(test_info_errors);
    return test_finish();
}
