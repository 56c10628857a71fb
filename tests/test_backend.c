/* The backend registry (kernels/backend.h) and the op table's self-description: names, devices,
 * supports(), and `--device` on the command line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/file.h"
#include "kernels/backend.h"
#include "test.h"

static void test_cpu_backend_describes_itself(void) {
    an_error e;
    const an_ops *o = an_backend_open("cpu", &e);
    CHECK_MSG(o != NULL, "%s", e.msg);
    if (!o) return;
    CHECK(o == an_ops_cpu());
    CHECK_STR(o->name, "cpu");
    CHECK(o->device == AN_DEVICE_CPU);
    CHECK(o->description && strncmp(o->description, "cpu (", 5) == 0);
    /* every op of the list has an entry in the table, and the CPU says it supports it on f32 */
#define HAS(name) CHECK_MSG(o->name != NULL, "cpu backend lacks %s", #name);
    AN_OP_LIST(HAS)
#undef HAS
    for (int op = 0; op < AN_OP_COUNT; op++)
        CHECK_MSG(o->supports(o, (an_op_id)op, AN_F32), "cpu does not support %s", an_op_name((an_op_id)op));
    CHECK(!o->supports(o, AN_OP_COUNT, AN_F32));
    an_backend_close(o);
}

static void test_op_names(void) {
    /* ids and names agree with the table's order and are unique */
    CHECK_STR(an_op_name(AN_OP_matmul_forward), "matmul_forward");
    CHECK_STR(an_op_name(AN_OP_attention_decode_forward), "attention_decode_forward");
    CHECK(an_op_name(AN_OP_COUNT) == NULL);
    CHECK(an_op_name((an_op_id)-1) == NULL);
    for (int a = 0; a < AN_OP_COUNT; a++)
        for (int b = a + 1; b < AN_OP_COUNT; b++) CHECK(strcmp(an_op_name((an_op_id)a), an_op_name((an_op_id)b)) != 0);
}

static void test_unknown_backends_are_refused(void) {
    an_error e;
    CHECK(an_backend_open("tpu", &e) == NULL);
    CHECK_CONTAINS(e.msg, "device \"tpu\": no such backend");
    CHECK_CONTAINS(e.msg, "cpu");
#if !AN_CUDA
    CHECK(an_backend_open("cuda", &e) == NULL);
    CHECK_CONTAINS(e.msg, "has no CUDA backend");
#else
    /* built with CUDA: the backend opens, or says there is no device (CI, this machine) */
    const an_ops *cuda = an_backend_open("cuda", &e);
    if (cuda) {
        CHECK_STR(cuda->name, "cuda");
        CHECK(cuda->device == AN_DEVICE_CUDA);
        an_backend_close(cuda);
    } else {
        CHECK_CONTAINS(e.msg, "device \"cuda\": no CUDA device available");
    }
#endif
    an_backend_close(NULL); /* allowed */
}

/* `autoneg CMD ARGS` with stderr captured; the exit status. */
static int run(const char *args, char **err_text) {
    const char *build = getenv("BUILD");
    char cmd[2048], errp[600];
    snprintf(errp, sizeof errp, "%s/stderr.txt", test_tmpdir());
    snprintf(cmd, sizeof cmd, "%s/autoneg %s > /dev/null 2> %s < /dev/null", build && *build ? build : "build", args,
             errp);
    int st = system(cmd);
    an_error e;
    *err_text = an_read_file(errp, NULL, &e);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_device_flag(void) {
    char args[1024], *e = NULL;
    const char *model = test_shared("models/TinyStories-656K");
    snprintf(args, sizeof args, "generate --model %s --prompt hello --device tpu", model);
    CHECK(run(args, &e) == 1);
    CHECK_CONTAINS(e, "device \"tpu\"");
    free(e);
    snprintf(args, sizeof args, "perplexity --model %s --file README.md --device tpu", model);
    CHECK(run(args, &e) == 1);
    CHECK_CONTAINS(e, "device \"tpu\"");
    free(e);
    snprintf(args, sizeof args, "train --base %s --data datasets/sdxl_styles_twri.json --out %s/run --steps 1 --device tpu",
             model, test_tmpdir());
    CHECK(run(args, &e) == 1);
    CHECK_CONTAINS(e, "device \"tpu\"");
    free(e);
    /* the recipe key says the same */
    snprintf(args, sizeof args, "train --base %s --data datasets/sdxl_styles_twri.json --out %s/run2 --steps 1 "
             "--set train.device=tpu", model, test_tmpdir());
    CHECK(run(args, &e) == 1);
    CHECK_CONTAINS(e, "device \"tpu\"");
    free(e);
    /* and the CPU by name works: two raw tokens from the tiny model */
    snprintf(args, sizeof args, "generate --model %s --raw --prompt Once --max-tokens 2 --device cpu", model);
    CHECK(run(args, &e) == 0);
    free(e);
}

int main(void) {
    RUN(test_cpu_backend_describes_itself);
    RUN(test_op_names);
    RUN(test_unknown_backends_are_refused);
    RUN(test_device_flag);
    return test_finish();
}
