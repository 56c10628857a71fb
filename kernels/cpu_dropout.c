/* Inverted dropout whose mask is a pure function of (seed, counter + i), so backward regenerates it
 * instead of storing an N x C mask (see kernels/ops.h and an_cpu_mask_row in kernels/cpu.h). */
#include "kernels/cpu.h"

void an_cpu_dropout(const an_ops *o, float *out, const float *inp, size_t n, float p, uint64_t seed, uint64_t counter) {
    (void)o;
    enum { CHUNK = 1024 };
    float keep = 1.0f / (1.0f - p);
    uint32_t thr = an_cpu_mask_threshold(p);
    size_t nchunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t ch = 0; ch < nchunks; ch++) {
        float scale[CHUNK];
        size_t i0 = ch * CHUNK;
        int len = n - i0 < CHUNK ? (int)(n - i0) : CHUNK;
        an_cpu_mask_row(scale, len, seed, counter + i0, thr, keep);
        for (int i = 0; i < len; i++) out[i0 + i] = inp[i0 + i] * scale[i];
    }
}
