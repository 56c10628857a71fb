/* Lane groups for the warp-per-row attention kernels (attention.cu, decode.cu): a warp's 32 lanes as
 * G = 32 / LG groups of LG lanes, each group working on a different key (or query) of the row at a time,
 * a lane holding dimensions u, u + LG, ... (u = lane % LG, at most AN_CUDA_DL of them). LG is the
 * smallest power of two from 2 to 32 with hd <= AN_CUDA_DL LG: 8 lanes for a 64-wide head, so four keys
 * at once and a dot product of log2(8) = 3 shuffles, where a key for the whole warp took 5 shuffles a
 * key. Every butterfly here combines its two halves with commutative operations, so all the lanes it
 * spans end with the same bits. */
#ifndef AN_KERNELS_CUDA_LANE_GROUPS_H
#define AN_KERNELS_CUDA_LANE_GROUPS_H

#include <math.h>

#define AN_CUDA_DL 8 /* dimensions a lane holds at most: hd <= AN_CUDA_DL LG */

/* lanes a group for a head of hd dimensions */
static inline int an_cuda_group_lanes(int hd) {
    int lg = 2;
    while (lg < 32 && AN_CUDA_DL * lg < hd) lg *= 2;
    return lg;
}

/* r[i] = row[u + LG i] (0 past hd) */
template <int LG>
__device__ static inline void an_cuda_load_part(float (&r)[AN_CUDA_DL], const float *row, int hd, int u) {
#pragma unroll
    for (int i = 0; i < AN_CUDA_DL; i++) {
        int dd = u + LG * i;
        r[i] = dd < hd ? row[dd] : 0.0f;
    }
}

/* the dot product of the group's row (r) with row: every lane of the group gets it; all 32 lanes of
 * the warp must call it together (each group with its own row) */
template <int LG>
__device__ static inline float an_cuda_group_dot(const float (&r)[AN_CUDA_DL], const float *row, int hd, int u) {
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < AN_CUDA_DL; i++) {
        int dd = u + LG * i;
        if (dd < hd) s += r[i] * row[dd];
    }
#pragma unroll
    for (int mask = LG / 2; mask > 0; mask /= 2) s += __shfl_xor_sync(0xffffffffu, s, mask);
    return s;
}

/* v summed over the warp's groups (every lane gets the sum of its position's values) */
template <int LG>
__device__ static inline float an_cuda_across_groups(float v) {
#pragma unroll
    for (int mask = LG; mask < 32; mask *= 2) v += __shfl_xor_sync(0xffffffffu, v, mask);
    return v;
}

/* The online-softmax states (running max m, sum l, output accumulator acc) of the warp's groups,
 * each over its own keys, merged into every lane: the larger max, each side's sums rescaled to it (a
 * group that saw no key has m = -inf and adds 0). */
template <int LG>
__device__ static inline void an_cuda_merge_softmax_groups(float &m, float &l, float (&acc)[AN_CUDA_DL]) {
#pragma unroll
    for (int mask = LG; mask < 32; mask *= 2) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, mask), l2 = __shfl_xor_sync(0xffffffffu, l, mask);
        float mn = m > m2 ? m : m2;
        float c1 = m == -INFINITY ? 0.0f : expf(m - mn), c2 = m2 == -INFINITY ? 0.0f : expf(m2 - mn);
        l = l * c1 + l2 * c2;
#pragma unroll
        for (int i = 0; i < AN_CUDA_DL; i++) {
            float a2 = __shfl_xor_sync(0xffffffffu, acc[i], mask);
            acc[i] = acc[i] * c1 + a2 * c2;
        }
        m = mn;
    }
}

/* The kernel instance for hd's group width (kernel<2>, <4>, ..., <32>: AN_CUDA_LANE_INSTANCES), launched
 * through the pointer, which CUDA allows and the host emulation's launch rewriting reads as a name. */
template <typename K> static K an_cuda_pick_lanes(int hd, K lg2, K lg4, K lg8, K lg16, K lg32) {
    switch (an_cuda_group_lanes(hd)) {
    case 2: return lg2;
    case 4: return lg4;
    case 8: return lg8;
    case 16: return lg16;
    default: return lg32;
    }
}
#define AN_CUDA_LANE_INSTANCES(kernel) kernel<2>, kernel<4>, kernel<8>, kernel<16>, kernel<32>

#endif
