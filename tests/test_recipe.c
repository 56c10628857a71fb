/* Recipes: defaults, the shipped recipes, error messages, --set overrides and the JSON round trip. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/file.h"
#include "tests/test.h"
#include "train/recipe.h"

/* Writes text to a file in the test folder and returns its path (static buffer). */
static const char *write_tmp(const char *name, const char *text) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", test_tmpdir(), name);
    an_error err;
    if (an_write_file_atomic(path, text, strlen(text), &err)) test_fail_at(__FILE__, __LINE__, "%s", err.msg);
    return path;
}

/* Loads text as a recipe file; expects failure and returns the message (static buffer). */
static const char *load_error(const char *name, const char *text) {
    static an_error err;
    an_recipe r;
    const char *path = write_tmp(name, text);
    memset(&err, 0, sizeof err);
    if (an_recipe_load(&r, path, &err) == 0) {
        test_fail_at(__FILE__, __LINE__, "%s loaded without error", name);
        an_recipe_free(&r);
        return "";
    }
    an_recipe_free(&r);
    return err.msg;
}

static const char *set_error(const char *assignment) {
    static an_error err;
    an_recipe r;
    an_recipe_defaults(&r);
    memset(&err, 0, sizeof err);
    if (an_recipe_set(&r, assignment, &err) == 0) test_fail_at(__FILE__, __LINE__, "--set %s succeeded", assignment);
    an_recipe_free(&r);
    return err.msg;
}

/* The defaults written in docs/recipes.md, checked here by hand against the struct. */
static void test_defaults(void) {
    an_recipe r;
    an_recipe_defaults(&r);
    CHECK(r.model.method == AN_METHOD_LORA);
    CHECK(r.model.dtype == AN_RDTYPE_F32);
    CHECK(r.lora.r == 8);
    CHECK(r.lora.alpha == 16);
    CHECK(r.lora.dropout == 0.05);
    CHECK(r.lora.target_modules.n == 1);
    if (r.lora.target_modules.n == 1) CHECK_STR(r.lora.target_modules.v[0], "all-linear");
    CHECK(r.optim.lr == 2e-4);
    CHECK(r.optim.betas[0] == 0.9 && r.optim.betas[1] == 0.999);
    CHECK(r.optim.eps == 1e-8);
    CHECK(r.optim.clip == 1.0);
    CHECK(r.optim.accumulation == 1);
    CHECK(r.schedule.type == AN_SCHED_COSINE);
    CHECK(r.schedule.warmup_ratio == 0.03);
    CHECK(r.schedule.warmup_start_factor == 1e-5);
    CHECK(r.train.epochs == 1 && r.train.steps == 0);
    CHECK(r.train.seed == 1234);
    CHECK(r.train.loss_norm == AN_LOSS_NORM_TOKENS);
    CHECK(r.data.pack == AN_PACK_SEGMENTS);
    CHECK(r.data.format == AN_DATA_AUTO);
    CHECK(r.data.group_by == AN_GROUP_SOURCE);
    CHECK_STR(r.data.template_name, "default");
    CHECK(r.quant.block_size == 64 && r.quant.double_quant == 1);
    CHECK(r.checkpoint.keep == 2);
    CHECK_STR(r.output.dir, "runs/out");
    CHECK(r.model_config_json == NULL && r.model_config_preset[0] == 0);
    /* every default in the key table must itself pass the key's checks */
    for (int i = 0; i < an_recipe_key_count(); i++) {
        const char *path, *type, *def;
        an_recipe_key_info(i, &path, &type, &def);
        an_error err;
        an_recipe t;
        an_recipe_defaults(&t);
        CHECK_MSG(an_recipe_set_key(&t, path, def, "defaults", &err) == 0, "default of %s: %s", path, err.msg);
        char diff[64] = "";
        CHECK_MSG(an_recipe_equal(&t, &r, diff, sizeof diff), "setting %s to its default changed %s", path, diff);
        an_recipe_free(&t);
    }
    an_recipe_free(&r);
}

static void test_shipped_recipes_load_and_validate(void) {
    DIR *d = opendir("configs/recipes");
    CHECK(d != NULL);
    if (!d) return;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json")) continue;
        char path[512];
        snprintf(path, sizeof path, "configs/recipes/%s", e->d_name);
        an_recipe r;
        an_error err;
        int rc = an_recipe_load(&r, path, &err);
        CHECK_MSG(rc == 0, "%s", err.msg);
        if (rc == 0) CHECK_MSG(an_recipe_validate(&r, path, &err) == 0, "%s", err.msg);
        an_recipe_free(&r);
        n++;
    }
    closedir(d);
    CHECK(n >= 3);
}

/* XTuner internlm2_7b_qlora_alpaca_e3.py, as listed in ../shared/reference/anchor-xtuner-qlora.md 1.1. */
static void test_internlm2_recipe_is_xtuner(void) {
    an_recipe r;
    an_error err;
    CHECK_MSG(an_recipe_load(&r, "configs/recipes/internlm2-7b-qlora.json", &err) == 0, "%s", err.msg);
    CHECK(r.model.method == AN_METHOD_QLORA);
    CHECK(r.quant.type == AN_QUANT_NF4 && r.quant.block_size == 64 && r.quant.double_quant);
    CHECK(r.lora.r == 64 && r.lora.alpha == 16 && r.lora.dropout == 0.1 && !r.lora.use_rslora);
    CHECK_NEAR(an_recipe_lora_scaling(&r), 0.25, 0); /* 16/64 exactly in binary */
    static const char *const targets[] = {"wqkv", "wo", "w1", "w2", "w3", "output"};
    CHECK(r.lora.target_modules.n == 6);
    for (int i = 0; i < 6 && i < r.lora.target_modules.n; i++) CHECK_STR(r.lora.target_modules.v[i], targets[i]);
    CHECK(r.optim.lr == 2e-4 && r.optim.betas[0] == 0.9 && r.optim.betas[1] == 0.999 && r.optim.eps == 1e-8);
    CHECK(r.optim.weight_decay == 0 && r.optim.clip == 1.0 && r.optim.accumulation == 16);
    CHECK(r.schedule.type == AN_SCHED_COSINE && r.schedule.warmup_ratio == 0.03 && r.schedule.warmup_steps == 0);
    CHECK(r.schedule.warmup_start_factor == 1e-5 && r.schedule.min_lr_ratio == 0 && r.schedule.per_micro_batch);
    CHECK(r.train.batch_size == 1 && r.train.seq_len == 2048 && r.data.max_length == 2048);
    CHECK(r.train.epochs == 3 && r.train.steps == 0 && r.train.recompute);
    CHECK(r.train.loss_norm == AN_LOSS_NORM_MEAN_OF_MEANS);
    CHECK(r.data.pack == AN_PACK_XTUNER);
    CHECK_STR(r.data.template_name, "internlm2_chat");
    CHECK(r.checkpoint.every == 500 && r.checkpoint.keep == 2 && r.eval.every == 500);
    an_recipe_free(&r);
}

static void test_from_scratch_recipe_fits_the_demo(void) {
    an_recipe r;
    an_error err;
    CHECK_MSG(an_recipe_load(&r, "configs/recipes/tiny-from-scratch.json", &err) == 0, "%s", err.msg);
    CHECK(r.model.base[0] == 0 && r.model_config_json != NULL && r.model.method == AN_METHOD_FULL);
    CHECK(r.tokenizer.train_vocab == 2048);
    CHECK(r.model_config_json && strstr(r.model_config_json, "\"hidden_size\":128"));
    /* The budget from the task: at most ~8 minutes on 2 cores at ~50 GFLOP/s effective, by
     * 6 * params * tokens. Params by hand for dim 128, 4 layers, ffn 384, vocab 2048, tied head:
     * 4 * (4*128*128 + 3*128*384 + 2*128) + 2048*128 + 128 = 1,115,264. */
    double params = 1115264.0;
    double tokens = (double)r.train.steps * r.train.batch_size * r.train.seq_len;
    double seconds = 6.0 * params * tokens / 50e9;
    CHECK_MSG(seconds < 240, "from-scratch demo needs %.0f s of compute at 50 GFLOP/s", seconds);
    an_recipe_free(&r);
}

static void test_unknown_key_names_file_and_suggests(void) {
    const char *msg = load_error("typo.json", "{\"optim\": {\"lrr\": 0.001}}");
    CHECK_CONTAINS(msg, "typo.json");
    CHECK_CONTAINS(msg, "optim.lrr");
    CHECK_CONTAINS(msg, "unknown key");
    CHECK_CONTAINS(msg, "did you mean optim.lr?");
    /* a right key in the wrong section */
    msg = load_error("wrongsec.json", "{\"train\": {\"warmup_ratio\": 0.1}}");
    CHECK_CONTAINS(msg, "train.warmup_ratio");
    CHECK_CONTAINS(msg, "did you mean schedule.warmup_ratio?");
    msg = load_error("section.json", "{\"optimizer\": {}}");
    CHECK_CONTAINS(msg, "did you mean optim?");
    msg = load_error("far.json", "{\"zzzzzzzzzzzz\": 1}");
    CHECK_CONTAINS(msg, "far.json: zzzzzzzzzzzz: unknown key");
}

static void test_wrong_types(void) {
    const char *msg = load_error("type1.json", "{\"lora\": {\"r\": \"8\"}}");
    CHECK_CONTAINS(msg, "type1.json: lora.r: expected an integer, found a string");
    msg = load_error("type2.json", "{\"lora\": {\"r\": 8.5}}");
    CHECK_CONTAINS(msg, "lora.r: expected an integer, found 8.5");
    msg = load_error("type3.json", "{\"train\": {\"recompute\": 1}}");
    CHECK_CONTAINS(msg, "train.recompute: expected a boolean");
    CHECK_CONTAINS(msg, "found a number");
    msg = load_error("type4.json", "{\"optim\": {\"betas\": [0.9]}}");
    CHECK_CONTAINS(msg, "optim.betas: expected an array of 2 numbers");
    msg = load_error("type5.json", "{\"data\": {\"train\": [\"a.jsonl\", 3]}}");
    CHECK_CONTAINS(msg, "data.train[1]: expected a string, found a number");
    msg = load_error("type6.json", "{\"model\": {\"method\": \"qlorA\"}}");
    CHECK_CONTAINS(msg, "model.method: must be one of full, lora, qlora, found \"qlorA\"");
    msg = load_error("type7.json", "{\"lora\": 3}");
    CHECK_CONTAINS(msg, "lora: expected an object (a section), found a number");
    msg = load_error("type8.json", "[1, 2]");
    CHECK_CONTAINS(msg, "type8.json: expected a JSON object at the top, found an array");
    msg = load_error("type9.json", "{\"model_config\": 4}");
    CHECK_CONTAINS(msg, "model_config: expected a preset name (string) or a config.json object, found a number");
}

static void test_out_of_range(void) {
    const char *msg = load_error("range1.json", "{\"optim\": {\"lr\": -0.001}}");
    CHECK_CONTAINS(msg, "range1.json: optim.lr: must be > 0, found -0.001");
    msg = load_error("range2.json", "{\"lora\": {\"dropout\": 1}}");
    CHECK_CONTAINS(msg, "lora.dropout: must be < 1, found 1");
    msg = load_error("range3.json", "{\"lora\": {\"r\": 0}}");
    CHECK_CONTAINS(msg, "lora.r: must be >= 1, found 0");
    msg = load_error("range4.json", "{\"optim\": {\"betas\": [0.9, 1.0]}}");
    CHECK_CONTAINS(msg, "optim.betas[1]: must be < 1, found 1");
    msg = load_error("range5.json", "{\"tokenizer\": {\"train_vocab\": 100}}");
    CHECK_CONTAINS(msg, "tokenizer.train_vocab: must be 0 or >= 260, found 100");
    msg = load_error("range6.json", "{\"schedule\": {\"warmup_start_factor\": 0}}");
    CHECK_CONTAINS(msg, "schedule.warmup_start_factor: must be > 0, found 0");
    /* ZeRO stages: 0 (all-reduce) and 1 (sharded moments) are built, 2 and 3 are not */
    msg = load_error("range7.json", "{\"train\": {\"zero\": 2}}");
    CHECK_CONTAINS(msg, "range7.json: train.zero: must be <= 1, found 2");
    msg = load_error("range8.json", "{\"train\": {\"zero\": -1}}");
    CHECK_CONTAINS(msg, "train.zero: must be >= 0, found -1");
}

/* Every numeric key has an upper bound, checked with the key and the file in the message: before,
 * train.threads 65536 crashed inside libgomp and 512..32768 ended in "libgomp: Thread creation
 * failed", naming neither. One value just past each bound (the bounds as docs/recipes.md states them). */
static void test_upper_bounds(void) {
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"{\"train\": {\"threads\": 65536}}", "hi.json: train.threads: must be <= 1024, found 65536"},
        {"{\"train\": {\"threads\": 1025}}", "hi.json: train.threads: must be <= 1024, found 1025"},
        {"{\"train\": {\"batch_size\": 65537}}", "hi.json: train.batch_size: must be <= 65536, found 65537"},
        {"{\"train\": {\"seq_len\": 1048577}}", "hi.json: train.seq_len: must be <= 1048576, found 1048577"},
        {"{\"train\": {\"steps\": 1000000001}}", "hi.json: train.steps: must be <= 1000000000, found 1000000001"},
        {"{\"train\": {\"epochs\": 1000001}}", "hi.json: train.epochs: must be <= 1000000, found 1000001"},
        {"{\"train\": {\"log_every\": 1000000001}}", "hi.json: train.log_every: must be <= 1000000000"},
        {"{\"lora\": {\"r\": 4097}}", "hi.json: lora.r: must be <= 4096, found 4097"},
        {"{\"lora\": {\"alpha\": 65537}}", "hi.json: lora.alpha: must be <= 65536, found 65537"},
        {"{\"data\": {\"max_length\": 1048577}}", "hi.json: data.max_length: must be <= 1048576, found 1048577"},
        {"{\"data\": {\"subjects_per_pair\": 65}}", "hi.json: data.subjects_per_pair: must be <= 64, found 65"},
        {"{\"optim\": {\"lr\": 1.5}}", "hi.json: optim.lr: must be <= 1, found 1.5"},
        {"{\"optim\": {\"eps\": 2}}", "hi.json: optim.eps: must be <= 1, found 2"},
        {"{\"optim\": {\"weight_decay\": 11}}", "hi.json: optim.weight_decay: must be <= 10, found 11"},
        {"{\"optim\": {\"clip\": 1e7}}", "hi.json: optim.clip: must be <= 1000000, found 10000000"},
        {"{\"optim\": {\"accumulation\": 65537}}", "hi.json: optim.accumulation: must be <= 65536, found 65537"},
        {"{\"schedule\": {\"warmup_steps\": 1000000001}}", "hi.json: schedule.warmup_steps: must be <= 1000000000"},
        {"{\"eval\": {\"every\": 1000000001}}", "hi.json: eval.every: must be <= 1000000000"},
        {"{\"eval\": {\"samples\": 100001}}", "hi.json: eval.samples: must be <= 100000, found 100001"},
        {"{\"eval\": {\"max_new_tokens\": 65537}}", "hi.json: eval.max_new_tokens: must be <= 65536, found 65537"},
        {"{\"checkpoint\": {\"every\": 1000000001}}", "hi.json: checkpoint.every: must be <= 1000000000"},
        {"{\"checkpoint\": {\"keep\": 1001}}", "hi.json: checkpoint.keep: must be <= 1000, found 1001"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) CHECK_CONTAINS(load_error("hi.json", cases[i].json), cases[i].want);
    /* --set goes through the same table */
    CHECK_CONTAINS(set_error("train.threads=65536"), "train.threads: must be <= 1024, found 65536");
    /* within the table's bound but more threads than this machine can usefully run: 4 x its cores */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    an_recipe r;
    an_error err;
    char text[256], want[160];
    snprintf(text, sizeof text, "{\"model\": {\"base\": \"m\"}, \"data\": {\"train\": [\"x.jsonl\"]}, \"train\": {\"threads\": %ld}}",
             4 * cores + 1);
    const char *path = write_tmp("cores.json", text);
    CHECK_MSG(an_recipe_load(&r, path, &err) == 0, "%s", err.msg);
    CHECK(an_recipe_validate(&r, "cores.json", &err) != 0);
    snprintf(want, sizeof want, "cores.json: train.threads: %ld is more than 4 x the %ld cores of this machine", 4 * cores + 1,
             cores);
    CHECK_CONTAINS(err.msg, want);
    an_recipe_free(&r);
    /* the bounds themselves are accepted */
    snprintf(text, sizeof text, "{\"model\": {\"base\": \"m\"}, \"data\": {\"train\": [\"x.jsonl\"]}, \"train\": {\"threads\": %ld}}",
             4 * cores > 1024 ? 1024 : 4 * cores);
    path = write_tmp("cores2.json", text);
    CHECK_MSG(an_recipe_load(&r, path, &err) == 0, "%s", err.msg);
    CHECK_MSG(an_recipe_validate(&r, "cores2.json", &err) == 0, "%s", err.msg);
    an_recipe_free(&r);
}

static void test_bad_json_and_duplicates(void) {
    const char *msg = load_error("broken.json", "{\n  \"optim\": {\n    \"lr\": 0.001,\n  }\n}");
    CHECK_CONTAINS(msg, "broken.json: line 4");
    CHECK_CONTAINS(msg, "invalid JSON");
    msg = load_error("dup.json", "{\"optim\": {\"lr\": 0.001, \"lr\": 0.002}}");
    CHECK_CONTAINS(msg, "dup.json: optim.lr: key given twice");
    an_recipe r;
    an_error err;
    CHECK(an_recipe_load(&r, "/nonexistent/recipe.json", &err) != 0);
    CHECK_CONTAINS(err.msg, "/nonexistent/recipe.json");
    an_recipe_free(&r);
}

static void test_comments_are_ignored(void) {
    an_recipe r;
    an_error err;
    const char *path = write_tmp("comments.json", "{\"_note\": 1, \"optim\": {\"_why\": \"x\", \"lr\": 0.5}}");
    CHECK_MSG(an_recipe_load(&r, path, &err) == 0, "%s", err.msg);
    CHECK(r.optim.lr == 0.5);
    an_recipe_free(&r);
}

static void test_set_overrides(void) {
    an_recipe r;
    an_error err;
    an_recipe_defaults(&r);
    CHECK(an_recipe_set(&r, "optim.lr=1e-3", &err) == 0);
    CHECK(r.optim.lr == 1e-3);
    CHECK(an_recipe_set(&r, "lora.target_modules=q_proj,v_proj", &err) == 0);
    CHECK(r.lora.target_modules.n == 2);
    if (r.lora.target_modules.n == 2) CHECK_STR(r.lora.target_modules.v[1], "v_proj");
    CHECK(an_recipe_set(&r, "lora.target_modules=[\"wqkv\"]", &err) == 0);
    CHECK(r.lora.target_modules.n == 1);
    CHECK(an_recipe_set(&r, "output.dir=2024", &err) == 0); /* bare text stays a string */
    CHECK_STR(r.output.dir, "2024");
    CHECK(an_recipe_set(&r, "data.system=a=b", &err) == 0); /* only the first '=' splits */
    CHECK_STR(r.data.system, "a=b");
    CHECK(an_recipe_set(&r, "model.method=qlora", &err) == 0);
    CHECK(r.model.method == AN_METHOD_QLORA);
    CHECK(an_recipe_set(&r, "train.recompute=true", &err) == 0);
    CHECK(r.train.recompute == 1);
    CHECK(an_recipe_set(&r, "optim.betas=[0.8,0.9]", &err) == 0);
    CHECK(r.optim.betas[0] == 0.8 && r.optim.betas[1] == 0.9);
    CHECK(an_recipe_set(&r, "lora={\"r\": 4, \"alpha\": 8}", &err) == 0);
    CHECK(r.lora.r == 4 && r.lora.alpha == 8);
    CHECK(an_recipe_set(&r, "model_config=llama-60m", &err) == 0);
    CHECK_STR(r.model_config_preset, "llama-60m");
    CHECK(an_recipe_set(&r, "model_config={\"hidden_size\": 64}", &err) == 0);
    CHECK(r.model_config_preset[0] == 0 && r.model_config_json && strstr(r.model_config_json, "64"));
    CHECK(an_recipe_set(&r, "model_config=null", &err) == 0);
    CHECK(r.model_config_json == NULL);
    CHECK(an_recipe_set(&r, "data.train=", &err) == 0);
    CHECK(r.data.train.n == 0);
    CHECK(an_recipe_list_append(&r, "data.train", "a.jsonl", &err) == 0);
    CHECK(an_recipe_list_append(&r, "data.train", "b.jsonl", &err) == 0);
    CHECK(r.data.train.n == 2);
    /* a failed override changes nothing, not even the keys before the bad one */
    CHECK(an_recipe_set(&r, "lora={\"r\": 32, \"dropout\": 2}", &err) != 0);
    CHECK_CONTAINS(err.msg, "lora.dropout: must be < 1, found 2");
    CHECK(r.lora.r == 4);
    CHECK(an_recipe_list_append(&r, "optim.lr", "x", &err) != 0);
    CHECK_CONTAINS(err.msg, "optim.lr: not a list-of-strings key");
    an_recipe_free(&r);

    const char *msg = set_error("train.steps=abc");
    CHECK_CONTAINS(msg, "--set train.steps=abc: train.steps: expected an integer, found a string");
    msg = set_error("optim.lrr=1");
    CHECK_CONTAINS(msg, "--set optim.lrr=1: optim.lrr: unknown key (did you mean optim.lr?)");
    msg = set_error("lora.dropout=1.5");
    CHECK_CONTAINS(msg, "lora.dropout: must be < 1, found 1.5");
    msg = set_error("optim.lr");
    CHECK_CONTAINS(msg, "--set optim.lr: expected key=value");
    msg = set_error("model.base=[1]");
    CHECK_CONTAINS(msg, "model.base: expected a string, found an array");
    msg = set_error("lora=5");
    CHECK_CONTAINS(msg, "lora: is a section, expected a JSON object");
}

/* Values whose decimal form is not short (1/3, 0.1, tiny, near a bound) must come back bit for bit. */
static void test_round_trip(void) {
    an_recipe a, b;
    an_error err;
    CHECK_MSG(an_recipe_load(&a, "configs/recipes/tiny-from-scratch.json", &err) == 0, "%s", err.msg);
    CHECK(an_recipe_set(&a, "optim.lr=0.00033333333333333332", &err) == 0);
    CHECK(an_recipe_set(&a, "optim.eps=1e-300", &err) == 0);
    /* the largest a key accepts now that every number is bounded (clip <= 1e6), one ulp-ish below */
    CHECK(an_recipe_set(&a, "optim.clip=999999.99999999988", &err) == 0);
    CHECK(an_recipe_set(&a, "data.system=quote \" backslash \\\\ tab \t unicode \xc3\xa9", &err) == 0);
    CHECK(an_recipe_set(&a, "eval.prompts=[\"one, two\", \"\"]", &err) == 0);
    char *json = an_recipe_to_json(&a, &err);
    CHECK(json != NULL);
    an_recipe_defaults(&b);
    CHECK_MSG(an_recipe_apply_json(&b, json, "round trip", &err) == 0, "%s", err.msg);
    char diff[64] = "";
    CHECK_MSG(an_recipe_equal(&a, &b, diff, sizeof diff), "round trip changed %s", diff);
    CHECK(b.optim.lr == 0.00033333333333333332 && b.optim.eps == 1e-300);
    CHECK(b.eval.prompts.n == 2);
    /* every key is written, defaults included: the text names each key's leaf */
    for (int i = 0; i < an_recipe_key_count(); i++) {
        const char *path;
        an_recipe_key_info(i, &path, NULL, NULL);
        const char *leaf = strrchr(path, '.');
        char quoted[80];
        snprintf(quoted, sizeof quoted, "\"%s\":", leaf ? leaf + 1 : path);
        CHECK_CONTAINS(json, quoted);
    }
    /* and the second write is the same text */
    char *json2 = an_recipe_to_json(&b, &err);
    CHECK_STR(json2, json);
    /* the equality itself must notice a change */
    b.optim.betas[1] = 0.998;
    CHECK(!an_recipe_equal(&a, &b, diff, sizeof diff));
    CHECK_STR(diff, "optim.betas");
    free(json);
    free(json2);
    an_recipe_free(&b);

    /* through a file, and through a copy */
    char path[512];
    snprintf(path, sizeof path, "%s/resolved.json", test_tmpdir());
    CHECK(an_recipe_save(&a, path, &err) == 0);
    CHECK_MSG(an_recipe_load(&b, path, &err) == 0, "%s", err.msg);
    CHECK_MSG(an_recipe_equal(&a, &b, diff, sizeof diff), "file round trip changed %s", diff);
    an_recipe_free(&b);
    CHECK(an_recipe_copy(&b, &a, &err) == 0);
    CHECK(an_recipe_equal(&a, &b, NULL, 0));
    CHECK(b.data.train.v != a.data.train.v); /* deep */
    an_recipe_free(&b);
    an_recipe_free(&a);
}

static void test_total_steps(void) {
    an_recipe r;
    an_error err;
    CHECK(an_recipe_load(&r, "configs/recipes/internlm2-7b-qlora.json", &err) == 0);
    /* 3 epochs of 1000 packed rows at 1 x 16 rows per step: 3000 / 16 = 187.5, so 188 */
    CHECK(an_recipe_total_steps(&r, 1000) == 188);
    CHECK(an_recipe_total_steps(&r, 1600) == 300); /* exactly 300, not 301 */
    CHECK(an_recipe_total_steps(&r, 0) == 1);
    CHECK(an_recipe_set(&r, "train.steps=42", &err) == 0);
    CHECK(an_recipe_total_steps(&r, 1000) == 42);
    an_recipe_free(&r);
}

static void test_validate(void) {
    an_recipe r;
    an_error err;
    CHECK(an_recipe_load(&r, "configs/recipes/tinystories-lora.json", &err) == 0);
    CHECK(an_recipe_set(&r, "model_config=llama-60m", &err) == 0);
    CHECK(an_recipe_validate(&r, "x.json", &err) != 0);
    CHECK_CONTAINS(err.msg, "x.json: both model.base and model_config are set");
    CHECK(an_recipe_set(&r, "model.base=", &err) == 0);
    CHECK(an_recipe_validate(&r, "x.json", &err) != 0);
    CHECK_CONTAINS(err.msg, "training from scratch needs \"full\"");
    CHECK(an_recipe_set(&r, "model.method=full", &err) == 0);
    CHECK(an_recipe_validate(&r, "x.json", &err) != 0);
    CHECK_CONTAINS(err.msg, "needs tokenizer.path or tokenizer.train_vocab");
    CHECK(an_recipe_set(&r, "tokenizer.train_vocab=512", &err) == 0);
    CHECK(an_recipe_validate(&r, "x.json", &err) == 0);
    CHECK(an_recipe_set(&r, "data.max_length=1024", &err) == 0);
    CHECK(an_recipe_validate(&r, "x.json", &err) != 0);
    CHECK_CONTAINS(err.msg, "data.max_length 1024 is longer than train.seq_len 256");
    CHECK(an_recipe_set(&r, "data.max_length=256", &err) == 0);
    CHECK(an_recipe_set(&r, "data.train=[]", &err) == 0);
    CHECK(an_recipe_validate(&r, "x.json", &err) != 0);
    CHECK_CONTAINS(err.msg, "data.train is empty");
    an_recipe_free(&r);
}

/* docs/recipes.md documents every key with its default: each key path appears in a table row that
 * also holds the default and, for a number, its upper bound. */
static void test_docs_list_every_key(void) {
    an_error err;
    char *doc = an_read_file("docs/recipes.md", NULL, &err);
    CHECK_MSG(doc != NULL, "%s", err.msg);
    if (!doc) return;
    for (int i = 0; i < an_recipe_key_count(); i++) {
        const char *path, *type, *def;
        an_recipe_key_info(i, &path, &type, &def);
        char needle[128];
        snprintf(needle, sizeof needle, "| `%s` |", path);
        const char *row = strstr(doc, needle);
        CHECK_MSG(row != NULL, "docs/recipes.md has no row for %s", path);
        if (!row) continue;
        const char *eol = strchr(row, '\n');
        char line[1024];
        snprintf(line, sizeof line, "%.*s", eol ? (int)(eol - row) : (int)strlen(row), row);
        snprintf(needle, sizeof needle, "`%s`", def);
        CHECK_MSG(strstr(line, needle) != NULL, "docs/recipes.md row for %s lacks its default %s", path, def);
        /* and every numeric key's upper bound, as "in [lo, HI]" or "in (lo, HI)" */
        double hi;
        if (an_recipe_key_upper_bound(i, &hi)) {
            char b1[64], b2[64];
            snprintf(b1, sizeof b1, ", %.15g]", hi);
            snprintf(b2, sizeof b2, ", %.15g)", hi);
            CHECK_MSG(strstr(line, b1) || strstr(line, b2), "docs/recipes.md row for %s lacks its upper bound %.15g", path, hi);
        }
    }
    free(doc);
}

/* Every truncation of a shipped recipe is rejected with a message naming the file, never a crash
 * (make asan runs this too), and r keeps its defaults. */
static void test_truncations(void) {
    an_error err;
    size_t n;
    char *text = an_read_file("configs/recipes/tiny-from-scratch.json", &n, &err);
    CHECK(text != NULL);
    if (!text) return;
    an_recipe def;
    an_recipe_defaults(&def);
    for (size_t len = 0; len < n - 2; len += 7) {
        char *cut = strndup(text, len);
        an_recipe r;
        an_recipe_defaults(&r);
        CHECK(an_recipe_apply_json(&r, cut, "cut.json", &err) != 0);
        CHECK_CONTAINS(err.msg, "cut.json: ");
        CHECK(an_recipe_equal(&r, &def, NULL, 0));
        an_recipe_free(&r);
        free(cut);
    }
    an_recipe_free(&def);
    free(text);
}

int main(void) {
    RUN(test_defaults);
    RUN(test_shipped_recipes_load_and_validate);
    RUN(test_internlm2_recipe_is_xtuner);
    RUN(test_from_scratch_recipe_fits_the_demo);
    RUN(test_unknown_key_names_file_and_suggests);
    RUN(test_wrong_types);
    RUN(test_out_of_range);
    RUN(test_upper_bounds);
    RUN(test_bad_json_and_duplicates);
    RUN(test_comments_are_ignored);
    RUN(test_set_overrides);
    RUN(test_round_trip);
    RUN(test_total_steps);
    RUN(test_validate);
    RUN(test_docs_list_every_key);
    RUN(test_truncations);
    return test_finish();
}
