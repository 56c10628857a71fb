/* The sgemm behind every matmul: OpenBLAS when built with AN_BLAS, the plain-C GEMM otherwise. */
#include "kernels/cpu.h"

#if AN_BLAS
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* OpenBLAS picks its kernels by CPU model when it loads. Some virtual CPUs it does not recognise (this
 * project's AVX-512 Xeon VM with OpenBLAS 0.3.21) get "Prescott", its SSE3 fallback, and every sgemm
 * runs about 4x slower than the AVX-512 kernels the CPU can run. The only way to choose is
 * OPENBLAS_CORETYPE, read when the library loads, before main: so when it is not set and OpenBLAS fell
 * back while the CPU has AVX-512 or AVX2, the process restarts itself once with it set (glibc passes
 * argv to constructors). Every autoneg process does the same, so the CLI and the tests that compare
 * their results run the same kernels. A user's own OPENBLAS_CORETYPE is always left alone. */
__attribute__((constructor)) static void an_blas_core_fix(int argc, char **argv, char **envp) {
    (void)argc;
    (void)envp;
    if (getenv("OPENBLAS_CORETYPE") || !argv || !argv[0]) return;
    const char *core = openblas_get_corename();
    if (!core || strcasecmp(core, "prescott") != 0) return;
    __builtin_cpu_init();
    const char *want = __builtin_cpu_supports("avx512f") ? "SkylakeX" : __builtin_cpu_supports("avx2") ? "Haswell" : NULL;
    if (!want || setenv("OPENBLAS_CORETYPE", want, 1)) return;
    execv("/proc/self/exe", argv); /* returns only on failure: go on with the slow kernels */
}
#endif

void an_cpu_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* nothing to multiply; BLAS would reject lda = 0 with a message on stderr */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
        return;
    }
#if AN_BLAS
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K,
                alpha, A, lda, B, ldb, beta, C, ldc);
#else
    an_cpu_sgemm_fallback(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}
