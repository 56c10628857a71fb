#ifndef AN_TESTS_TRAIN_FIXTURE_H
#define AN_TESTS_TRAIN_FIXTURE_H
/* What the training tests share: a tiny model and recipe, running `autoneg train`, and comparing the
 * files runs leave. */
#include "train/recipe.h"

/* A random 2-layer Llama of width 32 (4 heads, 2 key/value heads) over the TinyStories-656K
 * tokenizer's 2048 tokens, as a model_config JSON object. */
extern const char test_tiny_llama_config[];

/* an_recipe_set, failing the current test (with the key) when it is refused. */
void test_recipe_set(an_recipe *r, const char *kv);
/* Full fine-tuning of test_tiny_llama_config on data_path into out: 8 steps of 2 x 48 tokens, lr
 * 0.003 after 2 warm-up steps, an evaluation every 3 steps on a 20 % held-out split. */
void test_tiny_recipe(an_recipe *r, const char *out, const char *data_path);

/* Runs `$BUILD/autoneg train ARGS > /dev/null 2> (scratch)`; the exit status (-1 when it did not
 * exit), and the stderr text in *err_text (malloc'd, NULL when unreadable). */
int test_train_cli(const char *args, char **err_text);

/* 1 when both files exist and hold the same bytes. */
int test_same_file(const char *a, const char *b);
/* Complete lines of a file (0 when it is absent). */
int test_count_lines(const char *path);

#endif
