/* The backend registry (kernels/backend.h) and the names of the ops. */
#include "kernels/backend.h"

#include <string.h>

static const char *const op_names[AN_OP_COUNT] = {
#define AN_OP_NAME(name) #name,
    AN_OP_LIST(AN_OP_NAME)
#undef AN_OP_NAME
};

const char *an_op_name(an_op_id op) { return op >= 0 && op < AN_OP_COUNT ? op_names[op] : NULL; }

typedef struct backend_entry {
    const char *name;
    const an_ops *(*open)(an_error *err);
    void (*close)(const an_ops *o);
} backend_entry;

static const an_ops *open_cpu(an_error *err) {
    (void)err;
    return an_ops_cpu();
}

#if AN_CUDA /* kernels/cuda/ (the CUDA issue) */
const an_ops *an_ops_cuda_open(an_error *err);
const an_ops *an_ops_cuda_open_bf16(an_error *err);
void an_ops_cuda_close(const an_ops *o);
#endif

static const backend_entry backends[] = {
    {"cpu", open_cpu, NULL},
#if AN_CUDA
    {"cuda", an_ops_cuda_open, an_ops_cuda_close},
    {"cuda-bf16", an_ops_cuda_open_bf16, an_ops_cuda_close},
#endif
};
#define N_BACKENDS (sizeof backends / sizeof backends[0])

const char *an_backend_names(void) {
#if AN_CUDA
    return "cpu, cuda, cuda-bf16";
#else
    return "cpu";
#endif
}

const an_ops *an_backend_open(const char *name, an_error *err) {
    for (size_t i = 0; i < N_BACKENDS; i++)
        if (strcmp(name, backends[i].name) == 0) return backends[i].open(err);
    if (strcmp(name, "cuda") == 0 || strcmp(name, "cuda-bf16") == 0)
        an_fail(err, "device \"%s\": this autoneg has no CUDA backend (devices built in: %s)", name, an_backend_names());
    else
        an_fail(err, "device \"%s\": no such backend (devices built in: %s)", name, an_backend_names());
    return NULL;
}

void an_backend_close(const an_ops *o) {
    if (!o) return;
    /* the first entry of that name only: close frees o (the CUDA table is its context), so o->name
     * must not be read again ("cuda" and "cuda-bf16" share one close) */
    for (size_t i = 0; i < N_BACKENDS; i++)
        if (strcmp(o->name, backends[i].name) == 0) {
            if (backends[i].close) backends[i].close(o);
            return;
        }
}
