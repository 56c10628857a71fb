/* Host memory for the CPU backend: aligned for vector loads, zeroed as the table promises; and how an
 * op shares a caller's workspace among its threads. */
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "kernels/cpu.h"

enum { HUGE_PAGE = 2 << 20 };

/* A buffer of 2 MiB and more starts on a 2 MiB boundary and asks Linux for 2 MiB pages (transparent
 * huge pages: Debian's default mode, "madvise", gives them only to regions that ask). Decoding streams
 * every weight once per token, and through 4 KiB pages the same read was 13-18 % slower on this
 * machine (one 536 MiB buffer, 2 threads: 26.7-27.6 against 30.3-32.2 GB/s, three pairs): each 4 KiB
 * costs a page walk. Where the kernel says no (THP off, not Linux) the buffer just has small pages. */
void *an_cpu_alloc_uninit(size_t bytes) {
    size_t align = bytes >= HUGE_PAGE ? HUGE_PAGE : 64;
    size_t rounded = (bytes + align - 1) / align * align;
    if (rounded < bytes) return NULL; /* overflow */
    if (rounded == 0) rounded = 64;
    void *p = aligned_alloc(align, rounded);
#ifdef MADV_HUGEPAGE
    if (p && align == HUGE_PAGE) (void)madvise(p, rounded, MADV_HUGEPAGE); /* advice: failure changes nothing */
#endif
    return p;
}

void *an_cpu_alloc(size_t bytes) {
    void *p = an_cpu_alloc_uninit(bytes);
    if (p) memset(p, 0, bytes ? (bytes + 63) / 64 * 64 : 64); /* the padding too, as before */
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
