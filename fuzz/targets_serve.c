/* The HTTP request handler of `autoneg serve` (serve/serve.h), the way a client's request reaches it:
 * the input's first line is "METHOD PATH [AUTHORIZATION]", the rest the body. The server runs a tiny
 * random Llama (the tests' fixture config, its vocabulary widened to the trained-prefix tokenizer) and
 * an engine this target steps itself, so a request that generates runs to its end (the server's
 * limits keep that short). Invariants: a status from 200 to 599; a JSON response parses, and an
 * error one has OpenAI's error object; a stream is server-sent events ending in [DONE]. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz.h"
#include "infer/engine.h"
#include "infer/session.h"
#include "model/io/config.h"
#include "serve/serve.h"

typedef struct serve_fixture {
    an_session s;
    an_engine *e;
    an_server *sv;
} serve_fixture;

static serve_fixture *fixture(void) {
    static serve_fixture *f; /* fuzzing state: made once */
    if (f) return f;
    an_error err;
    f = calloc(1, sizeof *f);
    an_model_config c;
    if (!f || an_config_load(&c, "tests/ref/models/llama/config.json", &err)) goto fail;
    if (!(f->s.tok = an_tokenizer_load("tests/ref/tokenizers/trained-prefix", &err))) goto fail;
    c.vocab_size = an_tokenizer_vocab_size(f->s.tok);
    if (!(f->s.model = an_model_init_random(&c, an_ops_cpu(), 1, &err))) goto fail;
    if (an_template_builtin("infotext", &f->s.tpl, &err)) goto fail;
    f->s.has_tpl = 1;
    f->s.enc = an_encoder_of(f->s.tok);
    if (an_template_stop_ids(&f->s.tpl, &f->s.enc, &f->s.stop_ids, &err)) goto fail;
    an_engine_config ec = an_engine_config_default();
    ec.slots = 4;
    if (!(f->e = an_engine_create(f->s.model, &ec, &err))) goto fail;
    an_serve_config sc = an_serve_config_default();
    sc.model_id = "tiny";
    sc.api_key = "key";
    sc.limits.max_tokens = 6;
    sc.limits.max_n = 3;
    sc.limits.max_prompts = 4;
    sc.limits.max_prompt_tokens = 48;
    sc.limits.max_body = 8192;
    if (!(f->sv = an_server_create(&sc, &err))) goto fail;
    an_server_attach(f->sv, &f->s, f->e);
    return f;
fail:
    fprintf(stderr, "fuzz serve_request: %s (run from the repository root)\n", err.msg);
    abort();
}

static int check_error_object(const char *body) {
    cJSON *o = cJSON_Parse(body);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
    int ok = o && (!e || (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "message")) &&
                          cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "type"))));
    cJSON_Delete(o);
    return ok;
}

static int check_sse(const char *body, size_t n) {
    static const char done[] = "data: [DONE]\n\n";
    if (n < sizeof done - 1 || memcmp(body + n - (sizeof done - 1), done, sizeof done - 1)) return 0;
    for (const char *ev = body; ev < body + n;) {
        const char *end = strstr(ev, "\n\n");
        if (!end || strncmp(ev, "data: ", 6)) return 0;
        ev = end + 2;
    }
    return 1;
}

int an_fuzz_serve_request(const uint8_t *data, size_t size) {
    serve_fixture *f = fixture();
    char *text = an_fuzz_string(data, size);
    if (!text) return AN_FUZZ_REFUSED;
    size_t line_len = strcspn(text, "\n");
    const char *body = text + line_len + (text[line_len] == '\n');
    size_t body_len = size - (size_t)(body - text);
    if (body_len > size) body_len = 0;
    text[line_len] = 0;
    char *method = text, *path = strchr(method, ' '), *auth = NULL;
    if (path) {
        *path++ = 0;
        if ((auth = strchr(path, ' '))) *auth++ = 0;
    }
    an_http_header h = {"Authorization", auth};
    an_http_request req = {method, path ? path : "", &h, auth ? 1 : 0, body, body_len};
    an_http_response resp;
    an_serve_handle(f->sv, &req, &resp);
    int bad = resp.status < 200 || resp.status > 599;
    if (resp.job) {
        an_error err;
        /* step the engine here until the job ends (each step decodes a token for every request) */
        for (int steps = 0; !an_serve_job_wait(resp.job, 0) && steps < 10000; steps++) an_engine_step(f->e, &err);
        bad |= !an_serve_job_wait(resp.job, 0);
        char *out = malloc(1 << 20);
        size_t n = 0;
        long k;
        while (out && n < (1 << 20) - 1 && (k = an_serve_job_read(resp.job, out + n, (1 << 20) - 1 - n, 0)) > 0) n += (size_t)k;
        if (out) {
            out[n] = 0;
            if (an_serve_job_streaming(resp.job)) bad |= !check_sse(out, n);
            else bad |= !check_error_object(out);
        }
        free(out);
    } else if (resp.content_type && !strcmp(resp.content_type, "application/json")) {
        bad |= !resp.body || !check_error_object(resp.body);
        bad |= resp.status >= 400 && !strstr(resp.body ? resp.body : "", "\"error\"");
    }
    int accepted = resp.status == 200;
    an_http_response_free(&resp);
    /* a freed job leaves the server at once; the engine ends its requests within a step */
    bad |= an_server_jobs(f->sv) != 0;
    an_error err;
    for (int steps = 0; steps < 1000 && an_engine_step(f->e, &err) > 0; steps++) {
    }
    free(text);
    return bad ? AN_FUZZ_BROKEN : accepted ? AN_FUZZ_ACCEPTED : AN_FUZZ_REFUSED;
}
