/* Layout ops for the CPU backend: block-column gathers that split a fused q/k/v projection. */
#include <string.h>

#include "kernels/cpu.h"
#include "kernels/ops.h"

void an_cpu_gather_cols_forward(const an_ops *o, float *dst, const float *src, int N, const an_col_map *map) {
    (void)o;
#pragma omp parallel for if ((long)N * map->nblk * map->len > 65536)
    for (int n = 0; n < N; n++) {
        float *d = dst + (size_t)n * map->dst_ld + map->dst_off;
        const float *s = src + (size_t)n * map->src_ld + map->src_off;
        for (int j = 0; j < map->nblk; j++)
            memcpy(d + (size_t)j * map->dst_step, s + (size_t)j * map->src_step, (size_t)map->len * sizeof(float));
    }
}

void an_cpu_gather_cols_backward(const an_ops *o, float *dsrc, const float *ddst, int N, const an_col_map *map) {
    (void)o;
#pragma omp parallel for if ((long)N * map->nblk * map->len > 65536)
    for (int n = 0; n < N; n++) {
        const float *d = ddst + (size_t)n * map->dst_ld + map->dst_off;
        float *s = dsrc + (size_t)n * map->src_ld + map->src_off;
        for (int j = 0; j < map->nblk; j++) {
            const float *dj = d + (size_t)j * map->dst_step;
            float *sj = s + (size_t)j * map->src_step;
            for (int i = 0; i < map->len; i++) sj[i] += dj[i];
        }
    }
}
