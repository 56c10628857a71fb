/* Llama 3 and Qwen2 pre-tokenization (an_llama3_piece_end, data/tokenizers/bpe_pretok_llama3.c)
 * against Hugging Face tokenizers' Split pre-tokenizer with the regexes those models' tokenizer.json
 * carry (tests/ref/make_pretok_fixture.py): every piece of 230 texts -- the bundled style prompts and
 * negatives, and hand-made hard cases (contractions in any case, long numbers, runs of whitespace and
 * newlines, non-Latin scripts and digits, emoji, no-break and em spaces) -- must be the same bytes. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "data/tokenizers/tokenizer_impl.h"
#include "tests/test.h"

static void check_pieces(const char *text, const cJSON *want, int max_digits, const char *what) {
    const unsigned char *s = (const unsigned char *)text;
    size_t n = strlen(text), i = 0;
    int k = 0, n_want = cJSON_GetArraySize(want);
    while (i < n && k < n_want) {
        size_t j = an_llama3_piece_end(s, n, i, max_digits);
        const char *w = cJSON_GetArrayItem(want, k)->valuestring;
        size_t wl = strlen(w);
        if (j - i != wl || memcmp(s + i, w, wl) != 0) {
            CHECK_MSG(0, "%s: \"%s\": piece %d is \"%.*s\", want \"%s\"", what, text, k, (int)(j - i), text + i, w);
            return;
        }
        CHECK(j > i); /* progress */
        i = j;
        k++;
    }
    CHECK_MSG(i == n && k == n_want, "%s: \"%s\": %d pieces up to byte %zu, want %d pieces of %zu bytes", what, text, k,
              i, n_want, n);
}

static void test_against_hf(void) {
    an_error err;
    char *json = an_read_file("tests/ref/pretok/pieces.json", NULL, &err);
    CHECK_MSG(json, "%s", err.msg);
    cJSON *all = json ? cJSON_Parse(json) : NULL;
    CHECK(cJSON_IsArray(all) && cJSON_GetArraySize(all) == 230);
    int texts = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, all) {
        const char *text = cJSON_GetObjectItem(e, "text")->valuestring;
        check_pieces(text, cJSON_GetObjectItem(e, "llama3"), 3, "llama3");
        check_pieces(text, cJSON_GetObjectItem(e, "qwen2"), 1, "qwen2");
        texts++;
    }
    printf("  %d texts, Llama 3 and Qwen2 pieces identical to tokenizers' Split\n", texts);
    cJSON_Delete(all);
    free(json);
}

/* Bytes that are not UTF-8 decode as one U+FFFD character each (an_utf8_decode), which the regex
 * classes as "other": the split still covers every byte and always advances. */
static void test_invalid_utf8(void) {
    const unsigned char s[] = {'a', 0xff, 0xfe, ' ', 0xc3, '\n', 0x80, '1', '2', '3', '4'};
    size_t n = sizeof s, i = 0, pieces = 0;
    while (i < n) {
        size_t j = an_llama3_piece_end(s, n, i, 3);
        CHECK(j > i && j <= n);
        if (j <= i) break;
        i = j;
        pieces++;
    }
    CHECK(i == n && pieces >= 4);
}

int main(void) {
    RUN(test_against_hf);
    RUN(test_invalid_utf8);
    return test_finish();
}
