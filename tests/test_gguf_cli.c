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

/* A GGUF base is a whole model: `train --base F.gguf` takes its tokenizer from the same file (no
 * tokenizer.path), trains a LoRA adapter on it with its weights kept quantized, and the adapter's loss falls over a few steps on
 * one repeated pair. Needs the SmolLM2 file of `make model`; skipped with a note without it. */
static void test_train_lora_on_gguf_base(void) {
    char model[1024];
    const char *cache = getenv("AN_CACHE"), *home = getenv("HOME");
    snprintf(model, sizeof model, "%s%s/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
             cache && *cache ? cache : home ? home : "", cache && *cache ? "" : "/.cache/autoneg");
    if (!an_file_exists(model)) {
        printf("  (skipped: %s is absent; `make model` fetches it)\n", model);
        return;
    }
    char data[512], out[512], err[512], args[4096];
    snprintf(data, sizeof data, "%s", test_tmp_path("one.jsonl"));
    FILE *f = fopen(data, "w");
    for (int i = 0; i < 4; i++)
        fprintf(f, "{\"prompt\":\"a red fox in snow\",\"negative_prompt\":\"blurry, lowres, watermark\"}\n");
    fclose(f);
    snprintf(out, sizeof out, "%s", test_tmp_path("train.out"));
    snprintf(err, sizeof err, "%s", test_tmp_path("train.err"));
    snprintf(args, sizeof args,
             "train --base %s --method lora --data %s --out %s/gguf-lora --steps 6 --set data.template=chatml "
             "--set lora.r=2 --set lora.target_modules=q_proj,v_proj --set train.seq_len=48 --set data.max_length=48 "
             "--set train.batch_size=1 --set optim.lr=0.01 --set schedule.warmup_steps=0 --set train.threads=2",
             model, data, test_tmpdir());
    int rc = test_autoneg(NULL, args, out, err);
    char *e = test_slurp(err);
    CHECK_MSG(rc == 0, "train on the GGUF base exited %d: %s", rc, e);
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "%s/gguf-lora/final/adapter_config.json", test_tmpdir());
    CHECK(an_file_exists(cfg));
    /* the base stays in its GGUF blocks (quant.gguf "keep", the default), and the log says so */
    CHECK_MSG(strstr(e, "GGUF base: 1 Q8_0, 210 Q4_1 kept quantized"), "%s", e);
    /* the loss of the last step below the first's: "step 1/6 | loss X" ... "step 6/6 | loss Y" */
    const char *a = strstr(e, "step 1/6 | loss "), *b = strstr(e, "step 6/6 | loss ");
    double first = a ? atof(a + 16) : 0, last = b ? atof(b + 16) : 1e9;
    CHECK_MSG(a && b && last < first, "loss %g at step 1, %g at step 6", first, last);
    free(e);
}

int main(void) {
    RUN(test_info_prints_metadata_and_tensors);
    RUN(test_train_lora_on_gguf_base);
    RUN(test_info_errors);
    return test_finish();
}
