#ifndef AN_MACHINE_H
#define AN_MACHINE_H
/* What this machine can do, measured, so benchmarks can report a fraction of its limits. */
#include <stddef.h>

/* The CPU backend's sgemm rate (OpenBLAS, or the plain-C GEMM with BLAS=0) on n x n matrices
 * (C = A B^T, as a linear layer's forward). The matrices are allocated once, so that a benchmark can
 * measure between its steps without its allocations touching the peak memory it reports. */
typedef struct an_sgemm_probe {
    int n;
    float *a, *b, *c;
} an_sgemm_probe;

int an_sgemm_probe_init(an_sgemm_probe *p, int n); /* 0, or -1 when memory cannot be had */
/* Best GFLOP/s over reps timed runs after one warm-up; 0 for a probe without memory. */
double an_sgemm_probe_run(const an_sgemm_probe *p, int reps);
void an_sgemm_probe_free(an_sgemm_probe *p);

/* The cores' multiply-add peak: the best GFLOP/s over reps runs (after one warm-up) of every thread
 * running 12 independent chains of multiply-adds on the widest vectors the build uses (kernels/cpu_vec.h),
 * in registers, touching no memory. No real kernel reaches it (loads, stores and horizontal work take
 * issue slots too); it is the ceiling a benchmark's FLOP rate is a fraction of. 0 if the chains did
 * not compute what they must (a compiler that dropped the work). */
double an_fma_peak_gflops(int reps);

/* STREAM-like read bandwidth: the best GB/s of summing a buffer of the given size with all threads.
 * Use a buffer well above the last-level cache (e.g. 256 MiB). Returns 0 when memory cannot be had. */
double an_measure_bandwidth_gbs(size_t bytes, int reps);

#endif
