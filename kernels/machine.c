/* Measurements of the machine's compute and memory limits (see machine.h). */
/* GCC under -std=c11 does not fuse a * b + c: the peak loop below must be multiply-adds */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
#endif

#include "kernels/machine.h"

#include <omp.h>
#include <time.h>

#include "kernels/cpu.h"
#include "kernels/cpu_vec.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int an_sgemm_probe_init(an_sgemm_probe *p, int n) {
    size_t nn = n > 0 ? (size_t)n * n : 0;
    p->n = n;
    p->a = nn ? an_cpu_alloc(nn * sizeof(float)) : NULL;
    p->b = nn ? an_cpu_alloc(nn * sizeof(float)) : NULL;
    p->c = nn ? an_cpu_alloc(nn * sizeof(float)) : NULL;
    if (!p->a || !p->b || !p->c) {
        an_sgemm_probe_free(p);
        return -1;
    }
    for (size_t i = 0; i < nn; i++) {
        p->a[i] = (float)((i * 7) % 13) * 0.01f;
        p->b[i] = (float)((i * 5) % 11) * 0.01f;
    }
    return 0;
}

double an_sgemm_probe_run(const an_sgemm_probe *p, int reps) {
    if (!p->a) return 0.0;
    int n = p->n;
    double best = 0.0;
    for (int r = 0; r <= reps; r++) {
        double t = now_seconds();
        an_cpu_sgemm(0, 1, n, n, n, 1.0f, p->a, n, p->b, n, 0.0f, p->c, n);
        t = now_seconds() - t;
        double gf = 2.0 * (double)n * n * n / t * 1e-9;
        if (r > 0 && gf > best) best = gf; /* the first run warms caches and threads */
    }
    return best;
}

void an_sgemm_probe_free(an_sgemm_probe *p) {
    an_cpu_free(p->a);
    an_cpu_free(p->b);
    an_cpu_free(p->c);
    p->a = p->b = p->c = NULL;
}

/* One thread's chains: x = x * 1 + 0.5, from x = c, iters times, so every lane ends at c + iters / 2
 * exactly (all values below 2^24 are integers or halves in float32); 1 if they did. The multiplier
 * comes in through a volatile so the compiler cannot fold the multiply away. */
enum { FMA_CHAINS = 12 };
static int fma_chains(long iters, float one) {
    vnf x[FMA_CHAINS];
    for (int c = 0; c < FMA_CHAINS; c++) x[c] = SPLATN(c);
    vnf a = SPLATN(one), b = SPLATN(0.5f);
    for (long i = 0; i < iters; i++)
        for (int c = 0; c < FMA_CHAINS; c++) x[c] = x[c] * a + b;
    int ok = 1;
    for (int c = 0; c < FMA_CHAINS; c++)
        for (int l = 0; l < AN_VL; l++) ok &= x[c][l] == (float)c + 0.5f * (float)iters;
    return ok;
}

double an_fma_peak_gflops(int reps) {
    enum { ITERS = 1 << 22 }; /* 4M steps: about 15-50 ms a run; c + ITERS / 2 < 2^24 stays exact */
    volatile float one = 1.0f;
    double best = 0.0;
    int ok = 1;
    for (int r = 0; r <= reps; r++) {
        int threads = 1;
        double t = now_seconds();
#pragma omp parallel reduction(& : ok)
        {
            ok &= fma_chains(ITERS, one);
#pragma omp master
            threads = omp_get_num_threads();
        }
        t = now_seconds() - t;
        double gf = 2.0 * FMA_CHAINS * AN_VL * (double)ITERS * threads / t * 1e-9;
        if (r > 0 && gf > best) best = gf; /* the first run wakes the threads and the clocks */
    }
    return ok ? best : 0.0;
}

double an_measure_bandwidth_gbs(size_t bytes, int reps) {
    size_t n = bytes / sizeof(float);
    if (n == 0) return 0.0;
    float *x = an_cpu_alloc(n * sizeof(float));
    if (!x) return 0.0;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] = 1.0f; /* first touch by the threads that will read */
    double best = 0.0;
    volatile float sink = 0.0f;
    for (int r = 0; r <= reps; r++) {
        double t = now_seconds();
        float total = 0.0f;
#pragma omp parallel
        {
            float acc[16] = {0};
#pragma omp for schedule(static) nowait
            for (size_t i = 0; i < n / 16; i++)
                for (int l = 0; l < 16; l++) acc[l] += x[i * 16 + l];
            float s = 0.0f;
            for (int l = 0; l < 16; l++) s += acc[l];
#pragma omp critical
            total += s;
        }
        t = now_seconds() - t;
        sink = sink + total;
        double gbs = (double)(n / 16 * 16) * sizeof(float) / t * 1e-9;
        if (r > 0 && gbs > best) best = gbs;
    }
    (void)sink;
    an_cpu_free(x);
    return best;
}
