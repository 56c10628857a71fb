/* Fuzz targets for the model file formats (model/io/): safetensors, config.json, llama2.c .bin, PEFT
 * adapter folders and GGUF. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz.h"
#include "kernels/ops.h"
#include "model/io/config.h"
#include "model/io/gguf.h"
#include "model/io/safetensors.h"
#include "model/lora.h"
#include "model/model.h"

/* A header that opened must describe tensors inside the mapped file, of the size their dtype and
 * shape imply; reading each one as float32 (when it is a float type) must not read past it. */
int an_fuzz_safetensors(const uint8_t *data, size_t size) {
    const char *path = an_fuzz_write("model.safetensors", data, size);
    if (!path) return AN_FUZZ_REFUSED;
    an_safetensors st;
    an_error err;
    if (an_st_open(&st, path, &err)) return AN_FUZZ_REFUSED;
    int bad = 0;
    for (int i = 0; i < st.n_tensors && !bad; i++) {
        const an_st_tensor *t = &st.tensors[i];
        int64_t n = an_st_numel(t);
        size_t esz = an_dtype_size(t->dtype);
        if (n < 0 || (esz && (size_t)n * esz != t->nbytes)) bad = 1;
        if (!bad && n > 0 && n <= (1 << 20)) {
            float *f = malloc((size_t)n * sizeof(float));
            if (f) (void)an_st_to_f32(t, f, &err); /* integer dtypes are refused, which is fine */
            free(f);
        }
    }
    an_st_close(&st);
    return bad ? AN_FUZZ_BROKEN : AN_FUZZ_ACCEPTED;
}

/* A config that loads must validate or be refused by validation, never crash it. */
int an_fuzz_config(const uint8_t *data, size_t size) {
    const char *path = an_fuzz_write("config.json", data, size);
    if (!path) return AN_FUZZ_REFUSED;
    an_model_config cfg;
    an_error err;
    if (an_config_load(&cfg, path, &err)) return AN_FUZZ_REFUSED;
    return an_config_validate(&cfg, path, &err) ? AN_FUZZ_REFUSED : AN_FUZZ_ACCEPTED;
}

/* A llama2.c checkpoint: the header's sizes must be checked against the file before anything is
 * allocated for them. */
int an_fuzz_llama2c(const uint8_t *data, size_t size) {
    const char *path = an_fuzz_write("model.bin", data, size);
    if (!path) return AN_FUZZ_REFUSED;
    an_error err;
    an_model *m = an_model_load(path, an_ops_cpu(), &err);
    an_model_free(m);
    return m ? AN_FUZZ_ACCEPTED : AN_FUZZ_REFUSED;
}

/* A PEFT adapter folder for the llama fixture model: the input is adapter_config.json, a byte 0,
 * then adapter_model.safetensors. The base is loaded once (fuzzing state). */
int an_fuzz_peft(const uint8_t *data, size_t size) {
    static an_model *base;
    an_error err;
    if (!base && !(base = an_model_load("tests/ref/models/llama", an_ops_cpu(), &err))) {
        fprintf(stderr, "fuzz peft: %s (run from the repository root)\n", err.msg);
        abort();
    }
    const uint8_t *a, *b;
    size_t na, nb;
    an_fuzz_split(data, size, &a, &na, &b, &nb);
    if (!an_fuzz_write("adapter_config.json", a, na) || !an_fuzz_write("adapter_model.safetensors", b, nb))
        return AN_FUZZ_REFUSED;
    char dir[700];
    snprintf(dir, sizeof dir, "%s", an_fuzz_path("."));
    an_lora *l = an_lora_open(base, dir, &err);
    int bad = l && base->lora != NULL; /* opening must leave the base as it was */
    an_lora_free(l);
    return bad ? AN_FUZZ_BROKEN : l ? AN_FUZZ_ACCEPTED : AN_FUZZ_REFUSED;
}

/* A GGUF file that opens lists tensors inside its mapping; each (up to a size) converts to float32 or
 * is refused by type, and every metadata key is found by its name. */
int an_fuzz_gguf(const uint8_t *data, size_t size) {
    const char *path = an_fuzz_write("model.gguf", data, size);
    if (!path) return AN_FUZZ_REFUSED;
    an_gguf g;
    an_error err;
    if (an_gguf_open(&g, path, &err)) return AN_FUZZ_REFUSED;
    int bad = 0;
    const unsigned char *lo = g.file.data, *hi = g.file.data + g.file.size;
    for (int64_t i = 0; i < g.n_tensors && !bad; i++) {
        const an_gguf_tensor *t = &g.tensors[i];
        const unsigned char *d = t->data;
        if (d < lo || d > hi || t->nbytes > (size_t)(hi - d)) bad = 1;
        else if (t->numel > 0 && t->numel <= (1 << 20)) {
            float *f = malloc((size_t)t->numel * sizeof(float));
            if (f) (void)an_gguf_tensor_to_f32(&g, t, f, &err);
            free(f);
        }
    }
    for (int64_t i = 0; i < g.n_kv && !bad; i++) bad = an_gguf_find_key(&g, g.kvs[i].key) == NULL;
    an_gguf_close(&g);
    return bad ? AN_FUZZ_BROKEN : AN_FUZZ_ACCEPTED;
}
