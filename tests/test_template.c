/* Templates and loss masks with a toy encoder whose ids can be written down by hand: the special
 * strings <|im_start|> = 3 and <|im_end|> = 4, every other byte b = b + 10, BOS 1, EOS 2. Expected
 * sequences follow XTuner's encode_fn rules (anchor-xtuner-qlora.md 1.2), written out token by token.
 * tests/test_template_xtuner.c compares with XTuner's rules on real tokenizers. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "data/batching/sample.h"
#include "data/prompts/template.h"
#include "tests/test.h"

static int toy_encode(const void *ctx, const char *text, size_t len, an_ids *out, an_error *err) {
    (void)ctx;
    (void)err;
    for (size_t i = 0; i < len;) {
        if (len - i >= 12 && !memcmp(text + i, "<|im_start|>", 12)) {
            an_ids_push(out, 3);
            i += 12;
        } else if (len - i >= 10 && !memcmp(text + i, "<|im_end|>", 10)) {
            an_ids_push(out, 4);
            i += 10;
        } else {
            an_ids_push(out, (unsigned char)text[i++] + 10);
        }
    }
    return 0;
}

static int32_t toy_token_id(const void *ctx, const char *piece) {
    (void)ctx;
    return !strcmp(piece, "<|im_start|>") ? 3 : !strcmp(piece, "<|im_end|>") ? 4 : -1;
}

static const an_encoder toy = {toy_encode, toy_token_id, NULL, 1, 2};

#define C(ch) ((ch) + 10)
#define M (-100)

static void check_seq(const an_ids *got, const int32_t *want, size_t n, const char *what) {
    CHECK_MSG(got->n == n, "%s: %zu tokens, expected %zu", what, got->n, n);
    for (size_t i = 0; i < n && i < got->n; i++)
        CHECK_MSG(got->v[i] == want[i], "%s[%zu] = %d, expected %d", what, i, got->v[i], want[i]);
}

static void test_internlm2_chat(void) {
    an_template t;
    an_error err;
    CHECK(an_template_builtin("internlm2_chat", &t, &err) == 0);
    an_ids ids = {0}, labels = {0};
    CHECK(an_template_encode_sample(&t, &toy, "cat", "ugly", NULL, 0, &ids, &labels, &err) == 0);
    /* <s> <|im_start|>user\ncat<|im_end|>\n<|im_start|>assistant\n | ugly<|im_end|> | \n */
    const int32_t want_ids[] = {1, 3, C('u'), C('s'), C('e'), C('r'), C('\n'), C('c'), C('a'), C('t'), 4, C('\n'), 3,
                                C('a'), C('s'), C('s'), C('i'), C('s'), C('t'), C('a'), C('n'), C('t'), C('\n'),
                                C('u'), C('g'), C('l'), C('y'), 4, C('\n')};
    const int32_t want_labels[] = {M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
                                   C('u'), C('g'), C('l'), C('y'), 4, M};
    check_seq(&ids, want_ids, sizeof want_ids / 4, "ids");
    check_seq(&labels, want_labels, sizeof want_labels / 4, "labels");

    /* with a system text, and the input the generator feeds: the same first 23 + system tokens */
    CHECK(an_template_encode_sample(&t, &toy, "x", "y", "S", 0, &ids, &labels, &err) == 0);
    const int32_t want2[] = {1, 3, C('s'), C('y'), C('s'), C('t'), C('e'), C('m'), C('\n'), C('S'), 4, C('\n'), 3,
                             C('u'), C('s'), C('e'), C('r'), C('\n'), C('x'), 4, C('\n'), 3, C('a'), C('s'), C('s'),
                             C('i'), C('s'), C('t'), C('a'), C('n'), C('t'), C('\n'), C('y'), 4, C('\n')};
    check_seq(&ids, want2, sizeof want2 / 4, "ids with system");
    an_ids in = {0};
    CHECK(an_template_encode_input(&t, &toy, "x", "S", &in, &err) == 0);
    check_seq(&in, want2, 32, "generation input");
    an_ids stop = {0};
    CHECK(an_template_stop_ids(&t, &toy, &stop, &err) == 0);
    const int32_t want_stop[] = {2, 4};
    check_seq(&stop, want_stop, 2, "stop ids");

    /* truncation keeps the first max_len tokens, labels alike */
    CHECK(an_template_encode_sample(&t, &toy, "cat", "ugly", NULL, 25, &ids, &labels, &err) == 0);
    check_seq(&ids, want_ids, 25, "truncated ids");
    check_seq(&labels, want_labels, 25, "truncated labels");
    an_ids_free(&ids);
    an_ids_free(&labels);
    an_ids_free(&in);
    an_ids_free(&stop);
    an_template_free(&t);
}

static void test_default_and_infotext(void) {
    an_template t;
    an_error err;
    an_ids ids = {0}, labels = {0};
    CHECK(an_template_builtin("default", &t, &err) == 0);
    CHECK(an_template_encode_sample(&t, &toy, "a", "b", "s", 0, &ids, &labels, &err) == 0);
    /* <s> <|System|>:s\n<|User|>:a\n<|Bot|>: | b </s> (trained: SUFFIX_AS_EOS is false) | \n */
    const char *in = "<|System|>:s\n<|User|>:a\n<|Bot|>:";
    size_t nin = strlen(in);
    CHECK(ids.n == 1 + nin + 1 + 1 + 1);
    CHECK(ids.v[0] == 1 && labels.v[0] == M);
    for (size_t i = 0; i < nin && 1 + i < ids.n; i++) CHECK(ids.v[1 + i] == C(in[i]) && labels.v[1 + i] == M);
    if (ids.n == nin + 4) {
        CHECK(ids.v[nin + 1] == C('b') && labels.v[nin + 1] == C('b'));
        CHECK(ids.v[nin + 2] == 2 && labels.v[nin + 2] == 2);
        CHECK(ids.v[nin + 3] == C('\n') && labels.v[nin + 3] == M);
    }
    an_ids stop = {0};
    CHECK(an_template_stop_ids(&t, &toy, &stop, &err) == 0);
    CHECK(stop.n == 1 && stop.v[0] == 2);
    an_ids_free(&stop);
    an_template_free(&t);

    CHECK(an_template_builtin("infotext", &t, &err) == 0);
    CHECK(an_template_encode_sample(&t, &toy, "1girl", "bad", NULL, 0, &ids, &labels, &err) == 0);
    char *text = an_template_render_input(&t, "1girl", NULL, &err);
    CHECK_STR(text, "1girl\nNegative prompt: ");
    free(text);
    size_t n_in = strlen("1girl\nNegative prompt: ");
    CHECK(ids.n == 1 + n_in + 3 + 1); /* BOS, input, "bad", EOS; no SEP */
    if (ids.n == 1 + n_in + 4) {
        for (size_t i = 0; i <= n_in; i++) CHECK(labels.v[i] == M);
        CHECK(labels.v[n_in + 1] == C('b') && labels.v[n_in + 3] == C('d') && ids.v[n_in + 4] == 2 &&
              labels.v[n_in + 4] == 2);
    }
    an_template_free(&t);
    an_ids_free(&ids);
    an_ids_free(&labels);

    CHECK(an_template_builtin("nope", &t, &err) == -1);
    CHECK_CONTAINS(err.msg, "nope");
}

static void test_no_bos_tokenizer(void) {
    /* a tokenizer without BOS: nothing is prepended; EOS still ends the answer */
    an_encoder e = toy;
    e.bos = -1;
    an_template t;
    an_error err;
    an_ids ids = {0}, labels = {0};
    CHECK(an_template_builtin("infotext", &t, &err) == 0);
    CHECK(an_template_encode_sample(&t, &e, "p", "n", NULL, 0, &ids, &labels, &err) == 0);
    CHECK(ids.n > 0 && ids.v[0] == C('p'));
    CHECK(ids.n > 0 && ids.v[ids.n - 1] == 2 && labels.v[ids.n - 1] == 2);
    an_ids_free(&ids);
    an_ids_free(&labels);
    an_template_free(&t);
}

static void test_json(void) {
    an_template t;
    an_error err;
    cJSON *j = cJSON_Parse("{\"name\":\"mine\",\"SYSTEM\":\"[{system}]\",\"INSTRUCTION\":\"Q{{{input}}}A\","
                           "\"SUFFIX\":\"</a>\",\"SUFFIX_AS_EOS\":true,\"SEP\":\"\",\"STOP_WORDS\":[\"</a>\"]}");
    CHECK(an_template_from_json(j, "r.json: template", &t, &err) == 0);
    char *s = an_template_render_input(&t, "x", "sys", &err);
    CHECK_STR(s, "[sys]Q{x}A");
    free(s);
    s = an_template_render_output(&t, "neg", &err);
    CHECK_STR(s, "neg</a>");
    free(s);
    CHECK(t.suffix_as_eos == 1 && t.n_stop_words == 1);
    an_ids ids = {0}, labels = {0};
    CHECK(an_template_encode_sample(&t, &toy, "x", "n", NULL, 0, &ids, &labels, &err) == 0);
    /* BOS Q{x}A | n</a> (no EOS: the suffix is the EOS) */
    CHECK(ids.n == 1 + 5 + 5);
    CHECK(ids.n == 11 && labels.v[5] == M && labels.v[6] == C('n') && labels.v[10] == C('>'));
    an_ids_free(&ids);
    an_ids_free(&labels);
    uint64_t h1 = an_template_hash(&t);
    an_template_free(&t);
    cJSON_Delete(j);

    /* base + override */
    j = cJSON_Parse("{\"base\":\"internlm2_chat\",\"sep\":\"\"}");
    CHECK(an_template_from_json(j, "r.json: template", &t, &err) == 0);
    CHECK(t.suffix_as_eos == 1 && !strcmp(t.sep, "") && !strcmp(t.suffix, "<|im_end|>"));
    CHECK(an_template_hash(&t) != h1);
    an_template t2;
    CHECK(an_template_builtin("internlm2_chat", &t2, &err) == 0);
    CHECK(an_template_hash(&t) != an_template_hash(&t2));
    an_template_free(&t2);
    an_template_free(&t);
    cJSON_Delete(j);

    static const struct {
        const char *json, *msg;
    } bad[] = {
        {"{\"INSTRUCTION\":\"{input}\",\"SUFIX\":\"x\"}", "unknown template field \"SUFIX\""},
        {"{\"SYSTEM\":\"{system}\"}", "no INSTRUCTION"},
        {"{\"INSTRUCTION\":\"no input\"}", "no {input}"},
        {"{\"INSTRUCTION\":\"{input} {prompt}\"}", "bad placeholder {prompt}"},
        {"{\"INSTRUCTION\":\"{input} }\"}", "bad placeholder"},
        {"{\"INSTRUCTION\":5}", "INSTRUCTION must be a string"},
        {"{\"INSTRUCTION\":\"{input}\",\"SUFFIX_AS_EOS\":1}", "true or false"},
        {"{\"INSTRUCTION\":\"{input}\",\"STOP_WORDS\":\"x\"}", "list of strings"},
        {"{\"base\":\"chatgpt\"}", "no such built-in"},
        {"[1]", "must be a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        j = cJSON_Parse(bad[i].json);
        CHECK(an_template_from_json(j, "r.json: template", &t, &err) == -1);
        CHECK_CONTAINS(err.msg, "r.json: template");
        CHECK_CONTAINS(err.msg, bad[i].msg);
        cJSON_Delete(j);
    }
}

static void test_samples_from_pairs(void) {
    an_pair pv[4] = {{"aa", "bb", NULL}, {"a", "", NULL}, {"long prompt here", "n", NULL}, {"aaa", "bbbb", NULL}};
    an_pairs pairs = {pv, 4, 4};
    an_template t;
    an_error err;
    CHECK(an_template_builtin("infotext", &t, &err) == 0);
    an_samples s = {0};
    size_t dropped = 99;
    /* "\nNegative prompt: " is 18 tokens. max_len 24:
     *   pair 1: 1 + 2 + 18 + 2 + 1 = 24, whole;
     *   pair 2: 1 + 1 + 18 + 0 + 1 = 21, only EOS trained, kept;
     *   pair 3: its input alone is 1 + 16 + 18 = 35, nothing trained is left: dropped;
     *   pair 4: 1 + 3 + 18 + 4 + 1 = 27, cut to 24 ending in "bb". */
    CHECK(an_samples_from_pairs(&t, &toy, &pairs, NULL, 24, &s, &dropped, &err) == 0);
    CHECK(s.n == 3 && dropped == 1);
    if (s.n == 3) {
        CHECK(an_sample_len(&s, 0) == 24 && s.labels[23] == 2);
        CHECK(an_sample_len(&s, 1) == 21 && s.labels[s.off[1] + 20] == 2 && s.labels[s.off[1] + 19] == M);
        CHECK(an_sample_len(&s, 2) == 24 && s.labels[s.off[2] + 23] == C('b') && s.labels[s.off[2] + 21] == M);
    }
    an_samples_free(&s);
    an_template_free(&t);
}

/* Chat templates as Hugging Face configs and GGUF files carry them (abridged to their markers, which
 * are all the recognition looks at). */
static void test_from_chat_template(void) {
    static const struct {
        const char *jinja, *name;
    } cases[] = {
        {"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
         "'<|im_end|>' + '\\n'}}{% endfor %}",
         "chatml"},
        {"{{ bos_token }}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
         "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}",
         "internlm2_chat"},
        {"{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
         "message['content'] | trim + '<|eot_id|>' %}",
         "llama3_chat"},
        {"{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% if system %}<<SYS>>{% endif %}", "llama2_chat"},
        {"<|User|>:{{ message }}<eoh>\\n<|Bot|>:{{ reply }}<eoa>", "internlm_chat"},
    };
    an_template t;
    an_error err = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_MSG(an_template_from_chat_template(cases[i].jinja, &t, &err) == 0, "%s", err.msg);
        CHECK_STR(t.name, cases[i].name);
        an_template_free(&t);
    }
    /* the chatml built-in: ChatML's turn layout, a system turn only when a system text is given */
    CHECK(an_template_builtin("chatml", &t, &err) == 0);
    char *in = an_template_render_input(&t, "a cat", NULL, &err);
    CHECK_STR(in, "<|im_start|>user\na cat<|im_end|>\n<|im_start|>assistant\n");
    free(in);
    in = an_template_render_input(&t, "a cat", "Be brief.", &err);
    CHECK_STR(in, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\na cat<|im_end|>\n<|im_start|>assistant\n");
    free(in);
    CHECK(t.n_stop_words == 1 && !strcmp(t.stop_words[0], "<|im_end|>") && t.suffix_as_eos);
    an_template_free(&t);

    CHECK(an_template_from_chat_template("{{ messages[0]['content'] }}<|assistant|>", &t, &err) == -1);
    CHECK_CONTAINS(err.msg, "not a kind autoneg recognises");
    CHECK_CONTAINS(err.msg, "data.template");
    CHECK(an_template_from_chat_template("", &t, &err) == -1);
    CHECK_CONTAINS(err.msg, "data.template");
}

int main(void) {
    RUN(test_internlm2_chat);
    RUN(test_from_chat_template);
    RUN(test_default_and_infotext);
    RUN(test_no_bos_tokenizer);
    RUN(test_json);
    RUN(test_samples_from_pairs);
    return test_finish();
}
