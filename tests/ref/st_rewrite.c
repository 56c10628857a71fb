/* st_rewrite SRC_DIR DST_DIR [bf16]: reads a Hugging Face model folder (config.json + safetensors) with
 * autoneg's readers and writes it back with autoneg's writers (optionally converting F32 weights to BF16).
 * Built and driven by tests/ref/check_formats_compat.py; not part of `make test`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model/io/config.h"
#include "model/io/safetensors.h"
int main(int argc, char **argv) {
    an_model_config c; an_safetensors st; an_error e; char p[1024];
    int bf16 = argc > 3;
    snprintf(p, sizeof p, "%s/config.json", argv[1]);
    if (an_config_load(&c, p, &e)) { printf("ERR %s\n", e.msg); return 1; }
    if (an_st_open(&st, argv[1], &e)) { printf("ERR %s\n", e.msg); return 1; }
    if (bf16) snprintf(c.torch_dtype, sizeof c.torch_dtype, "bfloat16");
    snprintf(p, sizeof p, "%s/config.json", argv[2]);
    if (an_config_save(&c, p, &e)) { printf("ERR %s\n", e.msg); return 1; }
    an_st_writer w; an_st_writer_init(&w);
    void **bufs = calloc(st.n_tensors, sizeof *bufs);
    for (int i = 0; i < st.n_tensors; i++) {
        const an_st_tensor *t = &st.tensors[i];
        const void *d = t->data; an_dtype dt = t->dtype;
        if (bf16 && t->dtype == AN_F32) {
            size_t n = an_st_numel(t); float *f = malloc(n * 4 + 4); uint16_t *h = malloc(n * 2 + 2);
            an_st_to_f32(t, f, &e);
            for (size_t k = 0; k < n; k++) h[k] = an_f32_to_bf16(f[k]);
            free(f); bufs[i] = h; d = h; dt = AN_BF16;
        }
        if (an_st_writer_add(&w, t->name, dt, t->ndim, t->shape, d, &e)) { printf("ERR %s\n", e.msg); return 1; }
    }
    for (int i = 0; i < st.n_meta; i++) an_st_writer_meta(&w, st.meta_keys[i], st.meta_values[i], &e);
    snprintf(p, sizeof p, "%s/model.safetensors", argv[2]);
    if (an_st_write(&w, p, &e)) { printf("ERR %s\n", e.msg); return 1; }
    printf("ok %d tensors\n", st.n_tensors);
    return 0;
}
