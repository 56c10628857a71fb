/* What the training tests share (tests/train_fixture.h). */
#include "tests/train_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/file.h"
#include "tests/test.h"

const char test_tiny_llama_config[] =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"vocab_size\":2048,\"hidden_size\":32,"
    "\"intermediate_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
    "\"max_position_embeddings\":64,\"rms_norm_eps\":1e-5,\"rope_theta\":10000.0,\"tie_word_embeddings\":true,"
    "\"bos_token_id\":1,\"eos_token_id\":2}";

void test_recipe_set(an_recipe *r, const char *kv) {
    an_error err;
    if (an_recipe_set(r, kv, &err)) test_fail_at(__FILE__, __LINE__, "%s: %s", kv, err.msg);
}

void test_tiny_recipe(an_recipe *r, const char *out, const char *data_path) {
    an_error err;
    an_recipe_defaults(r);
    if (an_recipe_apply_json(r, "{\"model\":{\"method\":\"full\"}}", "test", &err)) CHECK_MSG(0, "%s", err.msg);
    char kv[1200];
    snprintf(kv, sizeof kv, "model_config=%s", test_tiny_llama_config);
    test_recipe_set(r, kv);
    snprintf(kv, sizeof kv, "tokenizer.path=%s", test_shared("models/TinyStories-656K"));
    test_recipe_set(r, kv);
    if (an_recipe_list_append(r, "data.train", data_path, &err)) CHECK_MSG(0, "%s", err.msg);
    snprintf(kv, sizeof kv, "output.dir=%s", out);
    test_recipe_set(r, kv);
    test_recipe_set(r, "data.template=default");
    test_recipe_set(r, "data.max_length=48");
    test_recipe_set(r, "data.val_fraction=0.2");
    test_recipe_set(r, "train.seq_len=48");
    test_recipe_set(r, "train.batch_size=2");
    test_recipe_set(r, "train.steps=8");
    test_recipe_set(r, "optim.lr=0.003");
    test_recipe_set(r, "schedule.warmup_steps=2");
    test_recipe_set(r, "eval.every=3");
    /* on the backend AN_TEST_DEVICE names (tools/gpu_check.sh, the emulation in CI), as the fixture
     * models (tests/test_model_util.h) */
    const char *dev = getenv("AN_TEST_DEVICE");
    if (dev && *dev) {
        snprintf(kv, sizeof kv, "train.device=%s", dev);
        test_recipe_set(r, kv);
    }
}

int test_train_cli(const char *args, char **err_text) {
    const char *build = getenv("BUILD");
    size_t n = strlen(args) + 2048;
    char *cmd = malloc(n), errp[600];
    if (!cmd) return -1;
    snprintf(errp, sizeof errp, "%s/stderr.txt", test_tmpdir());
    snprintf(cmd, n, "%s/autoneg train %s > /dev/null 2> %s", build && *build ? build : "build", args, errp);
    int st = system(cmd);
    free(cmd);
    an_error e;
    *err_text = an_read_file(errp, NULL, &e);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int test_same_file(const char *a, const char *b) {
    an_error err;
    size_t na = 0, nb = 0;
    char *x = an_read_file(a, &na, &err), *y = an_read_file(b, &nb, &err);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

int test_count_lines(const char *path) {
    an_error e;
    size_t n = 0;
    char *m = an_file_exists(path) ? an_read_file(path, &n, &e) : NULL;
    int lines = 0;
    for (size_t k = 0; m && k < n; k++) lines += m[k] == '\n';
    free(m);
    return lines;
}
