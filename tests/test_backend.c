/* The backend registry (kernels/backend.h) and the op table's self-description: names, devices,
 * supports(), and `--device` on the command line; the CPU backend's host buffers (kernels/cpu.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/file.h"
#include "kernels/backend.h"
#include "kernels/cpu.h"
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
    /* every op of the list but the device-only ones has an entry in the table, and the CPU says it
     * supports it on f32 (and not the device-only ones) */
#define HAS(name) CHECK_MSG(o->name != NULL || AN_OP_DEVICE_ONLY(AN_OP_##name), "cpu backend lacks %s", #name);
    AN_OP_LIST(HAS)
#undef HAS
    for (int op = 0; op < AN_OP_COUNT; op++)
        CHECK_MSG(o->supports(o, (an_op_id)op, AN_F32) == !AN_OP_DEVICE_ONLY(op), "cpu %s %s", AN_OP_DEVICE_ONLY(op) ? "supports the device-only" : "does not support", an_op_name((an_op_id)op));
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

/* The VmFlags line of /proc/self/smaps for the mapping that holds p (into flags); 0 when not found. */
static int mapping_flags(const void *p, char *flags, size_t size) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return 0;
    char line[512];
    int inside = 0, found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            inside = (uintptr_t)p >= lo && (uintptr_t)p < hi;
        else if (inside && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(flags, size, "%s", line + 8);
            found = 1;
        }
    }
    fclose(f);
    return found;
}

static int all_zero(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

/* an_cpu_alloc: aligned and zeroed (the padding to 64 bytes too); from 2 MiB up on a 2 MiB boundary
 * and advised for huge pages (kernels/cpu_memory.c: decoding's weights stream 13-18 % faster). */
static void test_host_buffers(void) {
    unsigned char *small = an_cpu_alloc(100), *big = an_cpu_alloc((3u << 20) + 5);
    CHECK(small && big);
    if (!small || !big) return;
    CHECK((uintptr_t)small % 64 == 0);
    CHECK(all_zero(small, 128));
    CHECK((uintptr_t)big % (2u << 20) == 0);
    CHECK(all_zero(big, (3u << 20) + 64));
    big[(3u << 20) + 4] = 1; /* the last byte asked for is writable */
    unsigned char *raw = an_cpu_alloc_uninit(5u << 20);
    CHECK(raw && (uintptr_t)raw % (2u << 20) == 0);
    /* the advice shows in the mapping's flags ("hg") wherever the kernel has transparent huge pages */
    FILE *thp = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    char flags[512] = "";
    if (thp) {
        fclose(thp);
        CHECK_MSG(mapping_flags(big, flags, sizeof flags), "no mapping of %p in /proc/self/smaps", (void *)big);
        CHECK_MSG(strstr(flags, " hg") != NULL, "2 MiB buffer not advised for huge pages, VmFlags:%s", flags);
        CHECK(raw && mapping_flags(raw, flags, sizeof flags) && strstr(flags, " hg") != NULL);
        CHECK(mapping_flags(small, flags, sizeof flags) && strstr(flags, " hg") == NULL);
    } else {
        printf("  (no transparent huge pages here: the mapping flags are not checked)\n");
    }
    CHECK(an_cpu_alloc(SIZE_MAX - 10) == NULL); /* overflow of the rounding, not a tiny buffer */
    an_cpu_free(small);
    an_cpu_free(big);
    an_cpu_free(raw);
}

int main(void) {
    RUN(test_cpu_backend_describes_itself);
    RUN(test_op_names);
    RUN(test_unknown_backends_are_refused);
    RUN(test_device_flag);
    RUN(test_host_buffers);
    return test_finish();
}
