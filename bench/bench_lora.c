/* The fused LoRA ops (kernels/cpu_lora.c) against the same products through cblas_sgemm, on SmolLM2-135M's
 * shapes, alternating in one process: N = 1024 rows (4 x 256 tokens), rank 16, dropout 0 (the BLAS
 * version has no mask; the ops' own cost with dropout is printed beside). Built and run by
 * bench/lora_ops.sh. Per shape, the median of REPEATS calls of each side, GFLOP/s, the ratio
 * (BLAS time / ops time: above 1, the fused ops are faster), and the fraction of the sgemm probe
 * (kernels/machine.h, a 1024 cube) the ops reach. One JSON line per shape and pass, then a summary.
 *   bench_lora [REPEATS]   (default 15) */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/machine.h"
#include "kernels/ops.h"

enum { N = 1024, R = 16 };

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *filled(size_t n, unsigned seed) {
    float *p = malloc(n * sizeof *p);
    if (!p) {
        fprintf(stderr, "bench_lora: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (float)(seed >> 8) * 0x1.0p-24f - 0.5f;
    }
    return p;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

typedef struct buffers {
    float *x, *a, *bt, *out, *u, *du, *dout, *dx, *da, *dbt;
} buffers;

/* forward then backward, the fused ops; returns the two times */
static void run_ops(const an_ops *o, const buffers *b, int C, int OC, float p, double *tf, double *tb) {
    double t0 = now_s();
    o->lora_forward(o, b->out, b->u, b->x, b->a, b->bt, N, C, OC, R, 2.0f, p, 1, 0);
    double t1 = now_s();
    o->lora_backward(o, b->dx, b->da, b->dbt, b->du, b->dout, b->x, b->u, b->a, b->bt, N, C, OC, R, 2.0f, p, 1, 0);
    *tf = t1 - t0;
    *tb = now_s() - t1;
}

/* the same products through BLAS (no dropout): u = s x A^T, out += u Bt; du = s dout Bt^T,
 * dBt += u^T dout, dA += du^T x, dx += du A */
static void run_blas(const buffers *b, int C, int OC, double *tf, double *tb) {
    double t0 = now_s();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, R, C, 2.0f, b->x, C, b->a, C, 0.0f, b->u, R);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, OC, R, 1.0f, b->u, R, b->bt, OC, 1.0f, b->out, OC);
    double t1 = now_s();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, R, OC, 2.0f, b->dout, OC, b->bt, OC, 0.0f, b->du, R);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, R, OC, N, 1.0f, b->u, R, b->dout, OC, 1.0f, b->dbt, OC);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, R, C, N, 1.0f, b->du, R, b->x, C, 1.0f, b->da, C);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, R, 1.0f, b->du, R, b->a, C, 1.0f, b->dx, C);
    *tf = t1 - t0;
    *tb = now_s() - t1;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 15;
    if (reps < 1 || reps > 1000) {
        fprintf(stderr, "usage: bench_lora [REPEATS in 1..1000]\n");
        return 2;
    }
    static const int shapes[][2] = {{576, 576}, {576, 192}, {576, 1536}, {1536, 576}}; /* q/o, k/v, gate/up, down */
    const an_ops *o = an_ops_cpu();
    an_sgemm_probe probe;
    if (an_sgemm_probe_init(&probe, 1024)) {
        fprintf(stderr, "bench_lora: out of memory for the sgemm probe\n");
        return 1;
    }
    double peak = an_sgemm_probe_run(&probe, 5); /* GFLOP/s */
    double *t[6];
    for (int i = 0; i < 6; i++) t[i] = malloc((size_t)reps * sizeof(double));
    double sum_ops = 0, sum_blas = 0, sum_flop = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int C = shapes[s][0], OC = shapes[s][1];
        buffers b = {filled((size_t)N * C, 1), filled((size_t)R * C, 2), filled((size_t)R * OC, 3),
                     filled((size_t)N * OC, 4), filled((size_t)N * R, 5), filled((size_t)N * R, 6),
                     filled((size_t)N * OC, 7), filled((size_t)N * C, 8), filled((size_t)R * C, 9),
                     filled((size_t)R * OC, 10)};
        double flop_f = 2.0 * N * R * (C + OC), flop_b = 2.0 * flop_f;
        for (int i = 0; i < reps; i++) { /* alternating: ops, BLAS, ops with dropout, in turn */
            run_ops(o, &b, C, OC, 0.0f, &t[0][i], &t[1][i]);
            run_blas(&b, C, OC, &t[2][i], &t[3][i]);
            run_ops(o, &b, C, OC, 0.05f, &t[4][i], &t[5][i]);
        }
        double m[6];
        for (int i = 0; i < 6; i++) m[i] = median(t[i], reps);
        printf("{\"C\": %d, \"OC\": %d, \"N\": %d, \"r\": %d, \"ops_fwd_ms\": %.4f, \"ops_bwd_ms\": %.4f, "
               "\"blas_fwd_ms\": %.4f, \"blas_bwd_ms\": %.4f, \"ops_dropout_fwd_ms\": %.4f, \"ops_dropout_bwd_ms\": %.4f, "
               "\"ops_gflops\": %.1f, \"blas_gflops\": %.1f, \"ops_over_blas\": %.3f, \"fraction_of_sgemm_peak\": %.3f}\n",
               C, OC, N, R, m[0] * 1e3, m[1] * 1e3, m[2] * 1e3, m[3] * 1e3, m[4] * 1e3, m[5] * 1e3,
               (flop_f + flop_b) / (m[0] + m[1]) / 1e9, (flop_f + flop_b) / (m[2] + m[3]) / 1e9,
               (m[2] + m[3]) / (m[0] + m[1]), (flop_f + flop_b) / (m[0] + m[1]) / 1e9 / peak);
        sum_ops += m[0] + m[1];
        sum_blas += m[2] + m[3];
        sum_flop += flop_f + flop_b;
        free(b.x), free(b.a), free(b.bt), free(b.out), free(b.u), free(b.du), free(b.dout), free(b.dx), free(b.da),
            free(b.dbt);
    }
    printf("LoRA ops, SmolLM2's shapes, N %d, r %d, %d repeats: %.1f GFLOP/s (%.0f %% of the sgemm probe's %.1f); "
           "the same products through cblas_sgemm %.1f GFLOP/s; ops / BLAS speed %.2fx\n",
           N, R, reps, sum_flop / sum_ops / 1e9, 100.0 * sum_flop / sum_ops / 1e9 / peak, peak,
           sum_flop / sum_blas / 1e9, sum_blas / sum_ops);
    for (int i = 0; i < 6; i++) free(t[i]);
    an_sgemm_probe_free(&probe);
    return 0;
}
