/* Templates on real tokenizers against XTuner's encode_fn: tests/ref/xtuner_cases.txt was made by
 * tests/ref/xtuner_encode.py (sentencepiece / HF tokenizers, the rules of XTuner's template_map_fn and
 * encode_fn) for the cases of tests/ref/template_cases.json. Ids and labels must match exactly. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/file.h"
#include "data/prompts/template.h"
#include "data/tokenizers/tokenizer.h"
#include "tests/test.h"

/* InternLM2 ships tokenizer_config.json beside the model, naming ids 92538..92543; ../shared has
 * only the .model, so the test puts the two together as they are in the model folder. */
static const char *internlm2_folder(void) {
    static char dir[512];
    char path[600];
    snprintf(dir, sizeof dir, "%s/internlm2", test_tmpdir());
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/tokenizer_internlm2.model", dir);
    char *model = realpath(test_shared("data/tokenizers/internlm2/tokenizer_internlm2.model"), NULL);
    int bad = !model || (!an_file_exists(path) && symlink(model, path));
    free(model);
    if (bad) return NULL;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return NULL;
    static const char *names[] = {"<|plugin|>", "<|interpreter|>", "<|action_end|>", "<|action_start|>", "<|im_end|>",
                                  "<|im_start|>"};
    fprintf(f, "{\"bos_token\":\"<s>\",\"eos_token\":\"</s>\",\"added_tokens_decoder\":{");
    for (int i = 0; i < 6; i++)
        fprintf(f, "%s\"%d\":{\"content\":\"%s\",\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true}",
                i ? "," : "", 92538 + i, names[i]);
    fprintf(f, "}}");
    fclose(f);
    return dir;
}

static int parse_ints(char *s, int32_t *out, int cap) {
    int n = 0;
    for (char *t = strtok(s, " "); t && n < cap; t = strtok(NULL, " ")) out[n++] = (int32_t)atoi(t);
    return n;
}

static void test_against_xtuner_rules(void) {
    an_error err;
    char *cases_text = an_read_file("tests/ref/template_cases.json", NULL, &err);
    char *fixture = an_read_file("tests/ref/xtuner_cases.txt", NULL, &err);
    CHECK(cases_text && fixture);
    if (!cases_text || !fixture) return;
    cJSON *cases = cJSON_Parse(cases_text);
    CHECK(cJSON_IsArray(cases));
    const char *paths[3] = {internlm2_folder(), test_shared("data/tokenizers/gpt2"),
                            test_shared("models/TinyStories-656K")};
    const char *tok_names[3] = {"internlm2", "gpt2", "tinystories"};
    an_tokenizer *toks[3];
    for (int i = 0; i < 3; i++) {
        toks[i] = paths[i] ? an_tokenizer_load(paths[i], &err) : NULL;
        CHECK_MSG(toks[i] != NULL, "%s: %s", tok_names[i], err.msg);
        if (!toks[i]) return;
    }
    int n_lines = 0;
    static int32_t want_ids[4096], want_labels[4096];
    char *save = NULL;
    for (char *line = strtok_r(fixture, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[5];
        int nf = 0;
        for (char *p = line; nf < 5; nf++) {
            f[nf] = p;
            char *tab = strchr(p, '\t');
            if (!tab) {
                nf++;
                break;
            }
            *tab = 0;
            p = tab + 1;
        }
        CHECK(nf == 5);
        if (nf != 5) continue;
        int ti = !strcmp(f[0], "internlm2") ? 0 : !strcmp(f[0], "gpt2") ? 1 : 2;
        an_template t;
        CHECK(an_template_builtin(f[1], &t, &err) == 0);
        const cJSON *c = cJSON_GetArrayItem(cases, atoi(f[2]));
        const cJSON *sys = cJSON_GetObjectItem(c, "system"), *ml = cJSON_GetObjectItem(c, "max_len");
        int nw = parse_ints(f[3], want_ids, 4096), nl = parse_ints(f[4], want_labels, 4096);
        an_encoder enc = an_encoder_of(toks[ti]);
        an_ids ids = {0}, labels = {0};
        CHECK(an_template_encode_sample(&t, &enc, cJSON_GetObjectItem(c, "prompt")->valuestring,
                                        cJSON_GetObjectItem(c, "negative")->valuestring,
                                        sys ? sys->valuestring : NULL, ml ? (size_t)ml->valueint : 0, &ids, &labels,
                                        &err) == 0);
        int same = (int)ids.n == nw && (int)labels.n == nl;
        for (int k = 0; same && k < nw; k++) same = ids.v[k] == want_ids[k] && labels.v[k] == want_labels[k];
        CHECK_MSG(same, "%s %s case %s: %zu tokens, reference %d", f[0], f[1], f[2], ids.n, nw);
        if (!same) {
            for (int k = 0; k < nw && k < (int)ids.n; k++)
                if (ids.v[k] != want_ids[k] || labels.v[k] != want_labels[k]) {
                    fprintf(stderr, "  first difference at %d: id %d label %d, reference id %d label %d\n", k,
                            ids.v[k], labels.v[k], want_ids[k], want_labels[k]);
                    break;
                }
        }
        /* the generation input is the masked prefix of the sample */
        an_ids in = {0};
        CHECK(an_template_encode_input(&t, &enc, cJSON_GetObjectItem(c, "prompt")->valuestring,
                                       sys ? sys->valuestring : NULL, &in, &err) == 0);
        int n_masked = 0;
        while (n_masked < nl && want_labels[n_masked] == -100) n_masked++;
        if (!ml) CHECK((int)in.n == n_masked && !memcmp(in.v, want_ids, in.n * 4));
        an_ids_free(&in);
        an_ids_free(&ids);
        an_ids_free(&labels);
        an_template_free(&t);
        n_lines++;
    }
    CHECK(n_lines == 3 * 3 * cJSON_GetArraySize(cases));

    /* stop ids: internlm2_chat stops on </s> and <|im_end|> */
    an_template t;
    an_encoder enc = an_encoder_of(toks[0]);
    an_ids stop = {0};
    CHECK(an_template_builtin("internlm2_chat", &t, &err) == 0);
    CHECK(an_template_stop_ids(&t, &enc, &stop, &err) == 0);
    CHECK(stop.n == 2 && stop.v[0] == 2 && stop.v[1] == 92542);
    an_ids_free(&stop);
    an_template_free(&t);
    for (int i = 0; i < 3; i++) an_tokenizer_free(toks[i]);
    cJSON_Delete(cases);
    free(cases_text);
    free(fixture);
}

int main(void) {
    RUN(test_against_xtuner_rules);
    return test_finish();
}
