/* Sample negatives during evaluation (see train/eval_samples.h). */
#include "train/eval_samples.h"

#include <stdlib.h>
#include <string.h>

#include "data/prompts/template.h"
#include "data/tokenizers/tokenizer.h"
#include "infer/generate.h"

int an_eval_samples(an_model *m, const an_tokenizer *tok, const an_template *t, const char *system,
                    const char *const *prompts, int n, int max_tokens, char **out, an_error *err) {
    for (int i = 0; i < n; i++) out[i] = NULL;
    if (n <= 0) return 0;
    an_encoder enc = an_encoder_of(tok);
    an_ids *ids = calloc((size_t)n, sizeof *ids), stop = {0};
    an_gen_prompt *pr = calloc((size_t)n, sizeof *pr);
    an_gen_output *go = calloc((size_t)n, sizeof *go);
    int rc = -1;
    if (!ids || !pr || !go) {
        an_fail(err, "eval: out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        if (an_template_encode_input(t, &enc, prompts[i], system, &ids[i], err)) goto done;
        pr[i].ids = ids[i].v;
        pr[i].n = (int)ids[i].n;
    }
    if (an_template_stop_ids(t, &enc, &stop, err)) goto done;
    an_gen_opts o = an_gen_defaults();
    o.sampling.temperature = 0; /* greedy: the same text for the same weights */
    o.max_tokens = max_tokens;
    o.batch = n;
    o.stop_ids = stop.v;
    o.n_stop_ids = (int)stop.n;
    if (an_generate(m, m->lora, pr, n, an_tokenizer_bos(tok), &o, go, err)) goto done;
    for (int i = 0; i < n; i++) {
        out[i] = an_tokenizer_decode(tok, go[i].ids, (size_t)go[i].n, err);
        if (!out[i]) {
            for (int k = 0; k < i; k++) free(out[k]), out[k] = NULL;
            goto done;
        }
    }
    rc = 0;
done:
    if (ids)
        for (int i = 0; i < n; i++) an_ids_free(&ids[i]);
    an_ids_free(&stop);
    if (go) an_gen_outputs_free(go, n);
    free(ids);
    free(pr);
    free(go);
    return rc;
}
