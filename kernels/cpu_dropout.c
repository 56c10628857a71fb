/* Inverted dropout whose mask is a pure function of (seed, counter + i), so backward regenerates it
 * instead of storing an N x C mask (see kernels/ops.h). */
#include "core/rng.h"
#include "kernels/cpu.h"

void an_cpu_dropout(float *out, const float *inp, size_t n, float p, uint64_t seed, uint64_t counter) {
    float keep = 1.0f / (1.0f - p);
#pragma omp parallel for schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) out[i] = an_hash_uniform(seed, counter + i) >= p ? inp[i] * keep : 0.0f;
}
