/* Fuzz targets for what a run reads back: recipes, checkpoints (train/) and the retrieval index a run
 * folder carries (infer/retrieval.h). */
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz.h"
#include "infer/retrieval.h"
#include "train/checkpoint.h"
#include "train/recipe.h"

/* A recipe that applies and validates writes itself out and reads back as the same recipe. */
int an_fuzz_recipe(const uint8_t *data, size_t size) {
    char *text = an_fuzz_string(data, size);
    an_recipe r, back;
    an_error err;
    int bad = 0;
    an_recipe_defaults(&r);
    int ok = an_recipe_apply_json(&r, text, "fuzz.json", &err) == 0 && an_recipe_validate(&r, "fuzz.json", &err) == 0;
    if (ok) {
        char *json = an_recipe_to_json(&r, &err);
        if (json) {
            an_recipe_defaults(&back);
            char key[128];
            if (an_recipe_apply_json(&back, json, "written", &err) || !an_recipe_equal(&r, &back, key, sizeof key))
                bad = 1;
            an_recipe_free(&back);
            free(json);
        }
    }
    an_recipe_free(&r);
    free(text);
    return bad ? AN_FUZZ_BROKEN : ok ? AN_FUZZ_ACCEPTED : AN_FUZZ_REFUSED;
}

/* A checkpoint that reads (magic, sizes and checksum all good) lists tensors inside the file. */
int an_fuzz_checkpoint(const uint8_t *data, size_t size) {
    const char *path = an_fuzz_write("step.ckpt", data, size);
    if (!path) return AN_FUZZ_REFUSED;
    an_ckpt c;
    an_error err;
    if (an_ckpt_read(&c, path, &err)) return AN_FUZZ_REFUSED;
    int bad = c.size != size;
    for (int i = 0; i < c.n_tensors && !bad; i++) /* every tensor's data inside the file */
        bad = c.tensors[i].offset > size || c.tensors[i].numel * c.tensors[i].parts * 4 > size - c.tensors[i].offset;
    an_ckpt_free(&c);
    return bad ? AN_FUZZ_BROKEN : AN_FUZZ_ACCEPTED;
}

/* A retrieval index that loads answers a query with neighbours inside the index, best first. */
int an_fuzz_retrieval(const uint8_t *data, size_t size) {
    const char *path = an_fuzz_write("index.bin", data, size);
    if (!path) return AN_FUZZ_REFUSED;
    an_error err;
    an_tfidf *ix = an_tfidf_load(path, &err);
    if (!ix) return AN_FUZZ_REFUSED;
    long idx[8];
    double score[8];
    long n = an_tfidf_topk(ix, "a cat, masterpiece, blurry", NULL, 8, idx, score, &err);
    int bad = 0;
    for (long i = 0; i < n && !bad; i++) bad = idx[i] < 0 || (i > 0 && !(score[i] <= score[i - 1]));
    an_tfidf_free(ix);
    return bad ? AN_FUZZ_BROKEN : AN_FUZZ_ACCEPTED;
}
