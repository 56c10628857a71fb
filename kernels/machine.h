#ifndef AN_MACHINE_H
#define AN_MACHINE_H
/* What this machine can do, measured, so benchmarks can report a fraction of its limits. */
#include <stddef.h>

/* Best GFLOP/s of the CPU backend's sgemm (OpenBLAS, or the plain-C GEMM with BLAS=0) on n x n
 * matrices (C = A B^T, as a linear layer's forward) over reps timed runs after one warm-up.
 * Returns 0 when memory cannot be had. */
double an_measure_sgemm_gflops(int n, int reps);

/* STREAM-like read bandwidth: the best GB/s of summing a buffer of the given size with all threads.
 * Use a buffer well above the last-level cache (e.g. 256 MiB). Returns 0 when memory cannot be had. */
double an_measure_bandwidth_gbs(size_t bytes, int reps);

#endif
