#ifndef AN_BACKEND_H
#define AN_BACKEND_H
/* The registry of backends: what `--device NAME` and the recipe key `train.device` choose.
 *
 * A backend is an op table (kernels/ops.h) with its own context. The CPU backend is always built; a
 * CUDA backend registers under AN_CUDA (kernels/cuda/, make CUDA=1; docs/cuda.md). Opening a backend that
 * this binary does not have is an error that says which backends it has. */
#include "core/error.h"
#include "kernels/ops.h"

/* The backend called name ("cpu", "cuda"), ready to use; NULL with err set when there is none. */
const an_ops *an_backend_open(const char *name, an_error *err);
/* Releases what an_backend_open set up (nothing for the CPU). NULL is fine. */
void an_backend_close(const an_ops *o);
/* The names built into this binary, e.g. "cpu" or "cpu, cuda" (for messages and --version). */
const char *an_backend_names(void);

#endif
