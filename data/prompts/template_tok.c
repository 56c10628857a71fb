/* an_encoder over an an_tokenizer (kept apart from template.c so templates build and test without a
 * tokenizer implementation). */
#include "data/prompts/template.h"
#include "data/tokenizers/tokenizer.h"

static int tok_encode(const void *ctx, const char *text, size_t len, an_ids *out, an_error *err) {
    return an_tokenizer_encode((const an_tokenizer *)ctx, text, len, out, err);
}

static int32_t tok_id(const void *ctx, const char *piece) {
    return an_tokenizer_token_id((const an_tokenizer *)ctx, piece);
}

an_encoder an_encoder_of(const an_tokenizer *t) {
    an_encoder e = {tok_encode, tok_id, t, an_tokenizer_template_bos(t), an_tokenizer_eos(t)};
    return e;
}
