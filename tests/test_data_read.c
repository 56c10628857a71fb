/* The pair readers on small hand-made inputs in tests/data (expected values written by hand from those
 * files) and on the real files in ../shared/data (expected counts computed independently with
 * Python's json / csv / gzip modules, noted beside each check). */
#include <stdlib.h>
#include <string.h>

#include "data/pairs/pairs.h"
#include "tests/test.h"

static int read_ok(an_pairs *p, const char *path, const an_read_opts *o, an_read_report *rep) {
    an_error e = {{0}};
    int rc = an_pairs_read(p, path, o, rep, &e);
    CHECK_MSG(rc == 0, "%s: %s", path, e.msg);
    return rc;
}

static void test_jsonl_default_fields_and_alias(void) {
    an_pairs p = {0};
    an_read_report rep;
    if (read_ok(&p, "tests/data/pairs.jsonl", NULL, &rep)) return;
    CHECK(p.n == 3 && rep.pairs == 3 && rep.records == 3 && rep.skipped == 0); /* the blank line is no record */
    CHECK_STR(p.v[0].prompt, "a cat on a sofa, soft light");
    CHECK_STR(p.v[0].negative, "blurry, lowres");
    CHECK_STR(p.v[0].source, "alice");
    CHECK_STR(p.v[1].negative, "(worst quality:1.4), bad hands");
    CHECK_STR(p.v[2].prompt, "caf\xc3\xa9 at night \"neon\""); /* \u00e9 decoded to UTF-8 */
    CHECK_STR(p.v[2].negative, "text, watermark");             /* from "negativePrompt" */
    CHECK(p.v[2].source == NULL);
    an_pairs_free(&p);
}

static void test_jsonl_configured_fields(void) {
    an_pairs p = {0};
    an_read_opts o = {0};
    o.prompt_field = "negative_prompt"; /* swapped on purpose: only the named fields are used */
    o.negative_field = "prompt";
    o.source_field = "none";
    if (read_ok(&p, "tests/data/pairs.jsonl", &o, NULL)) return;
    /* line 4 has no "negative_prompt" (it says negativePrompt), so with explicit fields it is skipped */
    CHECK(p.n == 2);
    CHECK_STR(p.v[0].prompt, "blurry, lowres");
    CHECK_STR(p.v[0].negative, "a cat on a sofa, soft light");
    CHECK(p.v[0].source == NULL);
    an_pairs_free(&p);
}

static void test_xtuner_and_messages(void) {
    an_pairs p = {0};
    if (read_ok(&p, "tests/data/xtuner_single.jsonl", NULL, NULL)) return;
    CHECK(p.n == 2);
    CHECK_STR(p.v[1].prompt, "old lighthouse");
    CHECK_STR(p.v[1].negative, "oversaturated");
    an_pairs_free(&p);

    if (read_ok(&p, "tests/data/xtuner_conv.json", NULL, NULL)) return;
    CHECK(p.n == 2);
    CHECK_STR(p.v[0].prompt, "a castle");
    CHECK_STR(p.v[0].negative, "ugly, deformed");
    CHECK_STR(p.v[1].negative, "lowres"); /* first turn only */
    an_pairs_free(&p);

    if (read_ok(&p, "tests/data/messages.jsonl", NULL, NULL)) return;
    CHECK(p.n == 2);
    CHECK_STR(p.v[0].prompt, "a sunny beach"); /* the system message is not the prompt */
    CHECK_STR(p.v[0].negative, "overexposed, people");
    CHECK_STR(p.v[1].source, "carol");
    an_pairs_free(&p);
}

static void test_keyword_generator_rows(void) {
    an_pairs p = {0};
    an_read_report rep;
    if (read_ok(&p, "tests/data/keywords.json", NULL, &rep)) return;
    CHECK(p.n == 2 && rep.records == 3 && rep.skipped == 1);
    CHECK_STR(p.v[0].prompt, "cat, sat");
    CHECK_STR(p.v[0].negative, "dog, stood");
    CHECK_CONTAINS(rep.reasons[0], "keywords.json");
    CHECK_CONTAINS(rep.reasons[0], "element 3");
    an_pairs_free(&p);
}

static void test_csv_quoting_crlf_and_short_rows(void) {
    an_pairs p = {0};
    an_read_report rep;
    if (read_ok(&p, "tests/data/styles.csv", NULL, &rep)) return;
    CHECK(p.n == 2 && rep.skipped == 1);
    CHECK_STR(p.v[0].prompt, "photo of {prompt}, 35mm");
    CHECK_STR(p.v[0].negative, "cartoon, drawing");
    CHECK_STR(p.v[0].source, "Plain");
    CHECK_STR(p.v[1].prompt, "say \"cheese\"\nsecond line"); /* doubled quotes, embedded newline */
    CHECK_STR(p.v[1].negative, "a, \"b\"");
    /* the short row starts on line 6: header 1, Plain 2, Quoted 3-4, blank 5 */
    CHECK_CONTAINS(rep.reasons[0], "line 6");
    an_pairs_free(&p);

    if (read_ok(&p, "tests/data/negopt.csv", NULL, NULL)) return;
    CHECK(p.n == 2);
    CHECK_STR(p.v[0].prompt, "a cat, cute");
    CHECK_STR(p.v[1].negative, "blurry, low quality");
    CHECK(p.v[1].source == NULL);
    an_pairs_free(&p);
}

static void test_style_templates_and_subject(void) {
    an_pairs p = {0};
    if (read_ok(&p, "tests/data/styles.json", NULL, NULL)) return;
    CHECK(p.n == 4);
    CHECK_STR(p.v[1].prompt, "cinematic still {prompt} . film grain"); /* kept as written */
    CHECK_STR(p.v[1].source, "cinematic");
    CHECK_STR(p.v[2].negative, ""); /* NaN negative: none */
    CHECK_STR(p.v[3].prompt, "");   /* a style that only adds a negative */
    CHECK_STR(p.v[3].negative, "photo, realistic");
    an_pairs_free(&p);

    an_read_opts o = {0};
    o.subject = "a red car";
    if (read_ok(&p, "tests/data/styles.json", &o, NULL)) return;
    CHECK_STR(p.v[1].prompt, "cinematic still a red car . film grain");
    an_pairs_free(&p);
}

static void test_ai_horde_styles(void) {
    an_pairs p = {0};
    if (read_ok(&p, "tests/data/horde.json", NULL, NULL)) return;
    CHECK(p.n == 3);
    CHECK_STR(p.v[0].source, "raw");
    CHECK_STR(p.v[0].prompt, "{p}");
    CHECK_STR(p.v[0].negative, "");
    CHECK_STR(p.v[1].prompt, "neon {p} darkness");
    CHECK_STR(p.v[1].negative, "white, blank");
    CHECK_STR(p.v[2].negative, "colorful,realistic");
    an_pairs_free(&p);
    an_read_opts o = {0};
    o.subject = "";
    if (read_ok(&p, "tests/data/horde.json", &o, NULL)) return;
    CHECK_STR(p.v[2].prompt, ", (manga artwork:1.1)");
    an_pairs_free(&p);
}

static size_t count_nonempty_negatives(const an_pairs *p) {
    size_t k = 0;
    for (size_t i = 0; i < p->n; i++) k += p->v[i].negative[0] != 0;
    return k;
}

static void test_shared_files(void) {
    an_pairs p = {0};
    an_read_report rep;
    /* Python: 53093 rows (json.loads per line of gzip.open); last row's negative below */
    if (read_ok(&p, test_shared("data/real-pairs/civitai-sfw/train.jsonl.gz"), NULL, &rep)) return;
    CHECK(p.n == 53093 && rep.skipped == 0);
    CHECK_STR(p.v[p.n - 1].negative, "nude, naked, nsfw, agly, bad anatomy, pistol, gun, tatoo, DreamArtistBADHAND");
    CHECK(p.v[0].source && strstr(p.v[0].source, "dfanr/CivitaiModelList@"));
    an_pairs_free(&p);

    /* Python csv.DictReader: 577 rows, 293 with a non-empty negative_prompt (also SOURCES.md) */
    if (read_ok(&p, test_shared("data/a1111-styles-gaseousice/ref.csv"), NULL, NULL)) return;
    CHECK(p.n == 577 && count_nonempty_negatives(&p) == 293);
    an_pairs_free(&p);
    /* csv.DictReader: 10 rows, the last named "AI Tweet" */
    if (read_ok(&p, test_shared("data/a1111-styles-gaseousice/styles.csv"), NULL, NULL)) return;
    CHECK(p.n == 10);
    CHECK_STR(p.v[9].source, "AI Tweet");
    an_pairs_free(&p);

    /* json.load: 404 styles; 112 with a non-empty negative after "###" once {np} and the separators
     * around it are removed (our own Python, which agrees with SOURCES.md) */
    if (read_ok(&p, test_shared("data/ai-horde-styles/styles.json"), NULL, NULL)) return;
    CHECK(p.n == 404 && count_nonempty_negatives(&p) == 112);
    an_pairs_free(&p);

    /* json.load: 5014 entries, one of them a comment with neither prompt nor negative_prompt;
     * 3103 with a non-empty negative_prompt string */
    if (read_ok(&p, test_shared("data/comfyui-promptstylers/sdxl_styles_all.json"), NULL, &rep)) return;
    CHECK(p.n == 5013 && rep.skipped == 1 && count_nonempty_negatives(&p) == 3103);
    an_pairs_free(&p);
    /* 1413 entries, 16 bare NaN negatives (grep -c NaN), 1380 non-empty negatives */
    if (read_ok(&p, test_shared("data/comfyui-promptstylers/sdxl_styles_misc.json"), NULL, NULL)) return;
    CHECK(p.n == 1413 && count_nonempty_negatives(&p) == 1380);
    an_pairs_free(&p);

    /* 10 rows of [sentence, prompt, negative, score]; first prompt / negative as in the file */
    if (read_ok(&p, test_shared("data/sd-keyword-generator-gpt2/dataset.json"), NULL, NULL)) return;
    CHECK(p.n == 10);
    CHECK_STR(p.v[0].prompt, "quick, brown, fox, jumps, lazy, dog");
    CHECK_STR(p.v[0].negative, "slow, black, cat, falls, active, human");
    an_pairs_free(&p);
}

static void test_format_override(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/pairs.txt", test_tmpdir());
    FILE *f = fopen(path, "wb");
    fputs("{\"prompt\": \"p\", \"negative_prompt\": \"n\"}\n", f);
    fclose(f);
    an_pairs p = {0};
    an_error e;
    CHECK(an_pairs_read(&p, path, NULL, NULL, &e) == -1);
    CHECK_CONTAINS(e.msg, "pairs.txt");
    CHECK_CONTAINS(e.msg, "--format");
    an_read_opts o = {0};
    o.format = AN_FORMAT_JSONL;
    if (read_ok(&p, path, &o, NULL)) return;
    CHECK(p.n == 1);
    an_pairs_free(&p);
}

int main(void) {
    RUN(test_jsonl_default_fields_and_alias);
    RUN(test_jsonl_configured_fields);
    RUN(test_xtuner_and_messages);
    RUN(test_keyword_generator_rows);
    RUN(test_csv_quoting_crlf_and_short_rows);
    RUN(test_style_templates_and_subject);
    RUN(test_ai_horde_styles);
    RUN(test_shared_files);
    RUN(test_format_override);
    return test_finish();
}
