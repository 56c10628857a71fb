/* Host memory for the CPU backend: aligned for vector loads, zeroed as the table promises; and how an
 * op shares a caller's workspace among its threads. */
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu.h"

void *an_cpu_alloc(size_t bytes) {
    size_t rounded = (bytes + 63) / 64 * 64;
    if (rounded < bytes) return NULL; /* overflow */
    if (rounded == 0) rounded = 64;
    void *p = aligned_alloc(64, rounded);
    if (p) memset(p, 0, rounded);
    return p;
}

void an_cpu_free(void *p) { free(p); }

/* The team an op can run with per_thread floats each: as many threads as the workspace holds, at
 * most OpenMP's; *base gets the aligned start. 0 when it holds none. */
int an_cpu_scratch_threads(void *work, size_t work_bytes, size_t per_thread, float **base) {
    uintptr_t a = ((uintptr_t)work + 63) & ~(uintptr_t)63;
    size_t skip = (size_t)(a - (uintptr_t)work);
    if (!work || work_bytes < skip || per_thread == 0) return 0;
    size_t fit = (work_bytes - skip) / (per_thread * sizeof(float));
    int nt = omp_get_max_threads();
    *base = (float *)a;
    return fit < (size_t)nt ? (int)fit : nt;
}
