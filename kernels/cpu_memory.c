/* Host memory for the CPU backend: aligned for vector loads, zeroed as the table promises. */
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
