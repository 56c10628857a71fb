/* Subjects for style templates (data/prompts/subjects.h): the list file, the placeholder filling, and the
 * trainer and `data` paths that apply it. Expected texts are written out by hand. */
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "data/prompts/subjects.h"
#include "tests/test.h"
#include "train/data_pipeline.h"
#include "train/recipe.h"

static const char *write_tmp(const char *name, const char *text) {
    const char *path = test_tmp_path(name);
    an_error err;
    if (an_write_file_atomic(path, text, strlen(text), &err)) test_fail_at(__FILE__, __LINE__, "%s", err.msg);
    return path;
}

static void test_read_list(void) {
    an_subjects s;
    an_error err;
    const char *path = write_tmp("subj.txt", "# a comment\n\n  a red fox  \r\nan old boat\n\t\n# another\nthe moon");
    CHECK_MSG(an_subjects_read(&s, path, &err) == 0, "%s", err.msg);
    CHECK(s.n == 3);
    if (s.n == 3) {
        CHECK_STR(s.v[0], "a red fox");
        CHECK_STR(s.v[1], "an old boat");
        CHECK_STR(s.v[2], "the moon");
    }
    an_subjects_free(&s);
}

static void test_bad_lists(void) {
    an_subjects s;
    an_error err;
    const char *path = write_tmp("empty.txt", "# only comments\n\n");
    CHECK(an_subjects_read(&s, path, &err) != 0);
    CHECK_CONTAINS(err.msg, "empty.txt: no subject in the file");
    path = write_tmp("ph.txt", "a cat\na {prompt} again\n");
    CHECK(an_subjects_read(&s, path, &err) != 0);
    CHECK_CONTAINS(err.msg, "ph.txt: line 2: a subject must not hold a placeholder");
    path = write_tmp("utf.txt", "a cat\na dog\nbad \xff byte\n");
    CHECK(an_subjects_read(&s, path, &err) != 0);
    CHECK_CONTAINS(err.msg, "utf.txt: line 3: invalid UTF-8");
    CHECK(an_subjects_read(&s, test_tmp_path("missing.txt"), &err) != 0);
    CHECK_CONTAINS(err.msg, "missing.txt");
}

/* Whether text is prefix + one of the subjects + middle + the same subject + suffix (middle NULL: one
 * placeholder); returns the subject's index or -1. */
static int filled_with(const char *text, const char *prefix, const char *middle, const char *suffix,
                       const an_subjects *s) {
    for (size_t i = 0; i < s->n; i++) {
        char want[512];
        if (middle) snprintf(want, sizeof want, "%s%s%s%s%s", prefix, s->v[i], middle, s->v[i], suffix);
        else snprintf(want, sizeof want, "%s%s%s", prefix, s->v[i], suffix);
        if (!strcmp(text, want)) return (int)i;
    }
    return -1;
}

static void make_list(an_subjects *s, size_t n) {
    s->n = n;
    s->v = calloc(n, sizeof *s->v);
    for (size_t i = 0; i < n; i++) {
        char b[32];
        snprintf(b, sizeof b, "subject %zu", i);
        s->v[i] = strdup(b);
    }
}

static void add3(an_pairs *p) {
    an_pairs_add(p, "cinematic still {prompt} . film grain, {prompt}", "anime, cartoon", "cinematic");
    an_pairs_add(p, "a plain prompt", "blurry", NULL);
    an_pairs_add(p, "horde style {p}, detailed", "lowres", "horde");
}

static void test_fill(void) {
    an_subjects s;
    make_list(&s, 50);
    an_pairs p = {0};
    an_error err;
    add3(&p);
    CHECK_MSG(an_pairs_fill_subjects(&p, &s, 3, 7, &err) == 0, "%s", err.msg);
    CHECK(p.n == 7); /* 3 + 1 + 3 */
    if (p.n != 7) return;
    for (int k = 0; k < 3; k++) {
        int idx = filled_with(p.v[k].prompt, "cinematic still ", " . film grain, ", "", &s);
        CHECK(idx >= 0);
        for (int j = 0; j < k; j++) CHECK(strcmp(p.v[j].prompt, p.v[k].prompt) != 0); /* copies differ */
        CHECK_STR(p.v[k].negative, "anime, cartoon");
        CHECK(p.v[k].source && !strcmp(p.v[k].source, "cinematic"));
        CHECK(filled_with(p.v[4 + k].prompt, "horde style ", NULL, ", detailed", &s) >= 0);
        CHECK(p.v[4 + k].source && !strcmp(p.v[4 + k].source, "horde"));
    }
    CHECK_STR(p.v[3].prompt, "a plain prompt");
    CHECK(p.v[3].source == NULL);

    /* The picks depend on the pair and the seed only: the same pairs in another order, among other
     * pairs, get the same subjects; another seed gets others (50^6 to one against a full match). */
    an_pairs q = {0};
    an_pairs_add(&q, "horde style {p}, detailed", "lowres", "horde");
    an_pairs_add(&q, "another {prompt}", "x", "other");
    an_pairs_add(&q, "cinematic still {prompt} . film grain, {prompt}", "anime, cartoon", "cinematic");
    CHECK(an_pairs_fill_subjects(&q, &s, 3, 7, &err) == 0);
    CHECK(q.n == 9);
    for (int k = 0; k < 3 && q.n == 9; k++) {
        CHECK_STR(q.v[k].prompt, p.v[4 + k].prompt);
        CHECK_STR(q.v[6 + k].prompt, p.v[k].prompt);
    }
    an_pairs r = {0};
    add3(&r);
    CHECK(an_pairs_fill_subjects(&r, &s, 3, 8, &err) == 0);
    int same = 0;
    for (size_t i = 0; i < r.n && i < p.n; i++) same += !strcmp(r.v[i].prompt, p.v[i].prompt);
    CHECK(same < 7);
    an_pairs_free(&p);
    an_pairs_free(&q);
    an_pairs_free(&r);

    CHECK(an_pairs_fill_subjects(&p, &s, 0, 7, &err) != 0);
    CHECK_CONTAINS(err.msg, "must be >= 1");
    an_subjects_free(&s);
}

/* Every subject is drawn about equally often: 4000 templates over 10 subjects, each count within
 * 5 standard deviations (binomial: mean 400, sd sqrt(4000 * 0.1 * 0.9) = 19) of 400. */
static void test_fill_is_uniform(void) {
    an_subjects s;
    make_list(&s, 10);
    an_pairs p = {0};
    an_error err;
    for (int i = 0; i < 4000; i++) {
        char b[64];
        snprintf(b, sizeof b, "style %d {prompt}", i);
        an_pairs_add(&p, b, "neg", "src");
    }
    CHECK(an_pairs_fill_subjects(&p, &s, 1, 1, &err) == 0);
    int count[10] = {0};
    for (size_t i = 0; i < p.n; i++) {
        const char *sub = strstr(p.v[i].prompt, "subject ");
        if (sub) count[atoi(sub + 8)]++;
    }
    for (int i = 0; i < 10; i++) CHECK_MSG(count[i] > 400 - 95 && count[i] < 400 + 95, "subject %d: %d", i, count[i]);
    an_pairs_free(&p);
    an_subjects_free(&s);
}

/* The trainer fills the templates before it trains the tokenizer and splits: the texts it loads
 * hold the subjects, 2 copies of each template, and no placeholder. */
static void test_trainer_fills(void) {
    const char *data = write_tmp("styles.json",
                                 "[{\"name\": \"a\", \"prompt\": \"ink drawing of {prompt}\", \"negative_prompt\": \"photo\"},"
                                 " {\"name\": \"b\", \"prompt\": \"plain\", \"negative_prompt\": \"blurry\"}]");
    const char *subj = write_tmp("few.txt", "a red fox\na tall ship\n");
    an_recipe r;
    an_error err;
    an_recipe_defaults(&r);
    char set[1100];
    snprintf(set, sizeof set, "data.train=%s", data);
    CHECK(an_recipe_set(&r, set, &err) == 0);
    snprintf(set, sizeof set, "data.subjects=%s", subj);
    CHECK(an_recipe_set(&r, set, &err) == 0);
    CHECK(an_recipe_set(&r, "data.subjects_per_pair=2", &err) == 0);
    an_train_texts t;
    CHECK_MSG(an_train_texts_load(&r, &t, &err) == 0, "%s", err.msg);
    int filled = 0, placeholder = 0;
    for (size_t i = 0; i < t.n; i++) {
        filled += !strcmp(t.text[i], "ink drawing of a red fox") || !strcmp(t.text[i], "ink drawing of a tall ship");
        placeholder += strstr(t.text[i], "{prompt}") != NULL;
    }
    CHECK(filled == 2);
    int fox = 0;
    for (size_t i = 0; i < t.n; i++) fox += !strcmp(t.text[i], "ink drawing of a red fox");
    CHECK(fox == 1); /* two copies, two subjects: one each */
    CHECK(placeholder == 0);
    an_train_texts_free(&t);
    an_recipe_free(&r);

    /* copies without a list is a recipe error naming both keys */
    an_recipe_defaults(&r);
    CHECK(an_recipe_set(&r, "data.subjects_per_pair=3", &err) == 0);
    snprintf(set, sizeof set, "data.train=%s", data);
    CHECK(an_recipe_set(&r, set, &err) == 0);
    CHECK(an_recipe_set(&r, "model.base=some/model", &err) == 0);
    CHECK(an_recipe_validate(&r, "t.json", &err) != 0);
    CHECK_CONTAINS(err.msg, "t.json: data.subjects_per_pair is 3 but data.subjects names no subject list");
    an_recipe_free(&r);
}

int main(void) {
    RUN(test_read_list);
    RUN(test_bad_lists);
    RUN(test_fill);
    RUN(test_fill_is_uniform);
    RUN(test_trainer_fills);
    return test_finish();
}
