/* The host emulation's mma.h (tools/cuda_emu/README.md): the warp matrix functions (nvcuda::wmma) for
 * the 16 x 16 x 16 shape, float32 accumulators and bf16 or float32 inputs. The API leaves which lane
 * holds which element of a fragment unspecified, so here every lane holds the whole tile: each
 * load, product and store is then the whole warp's result, computed by each lane. Each collective call
 * first waits for the warp's 32 lanes (as a shuffle does: a lane that skips it aborts the run), and
 * checks what the hardware requires of its pointer (256-bit aligned) and leading dimension (a multiple
 * of 16 bytes). Products are summed in double and rounded once: the hardware's order and internal
 * precision are its own, so only tolerances can compare them. */
#ifndef AN_CUDA_EMU_MMA_H
#define AN_CUDA_EMU_MMA_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>

#include "cuda_bf16.h"

void emu_warp_sync(void);

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void> struct fragment {
    static_assert(M == 16 && N == 16 && K == 16, "cuda_emu: only the 16 x 16 x 16 shape");
    enum { num_elements = 256 };
    float x[256]; /* element (i, j) at 16 i + j, in every lane */
};

static inline float emu_value(const __nv_bfloat16 *p) {
    uint32_t u = (uint32_t)p->x << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static inline float emu_value(const float *p) { return *p; }

static inline void emu_check(const void *p, unsigned ldm, size_t elem, const char *what) {
    if ((uintptr_t)p % 32 != 0 || ldm * elem % 16 != 0) {
        fprintf(stderr, "cuda_emu: wmma::%s at %p with ldm %u: the pointer must be 256-bit aligned and ldm a multiple of %zu\n",
                what, p, ldm, 16 / elem);
        abort();
    }
}

template <typename Use, typename T, typename Layout>
static inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout> &f, const T *p, unsigned ldm) {
    emu_warp_sync();
    emu_check(p, ldm, sizeof(T), "load_matrix_sync");
    const bool row = std::is_same<Layout, row_major>::value;
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) f.x[16 * i + j] = emu_value(row ? p + (size_t)i * ldm + j : p + i + (size_t)j * ldm);
}

static inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &f, const float *p, unsigned ldm, layout_t l) {
    emu_warp_sync();
    emu_check(p, ldm, sizeof(float), "load_matrix_sync");
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) f.x[16 * i + j] = l == mem_row_major ? p[(size_t)i * ldm + j] : p[i + (size_t)j * ldm];
}

static inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f, unsigned ldm, layout_t l) {
    emu_warp_sync();
    emu_check(p, ldm, sizeof(float), "store_matrix_sync");
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) (l == mem_row_major ? p[(size_t)i * ldm + j] : p[i + (size_t)j * ldm]) = f.x[16 * i + j];
}

template <typename Use, typename T, typename Layout>
static inline void fill_fragment(fragment<Use, 16, 16, 16, T, Layout> &f, float v) {
    for (int e = 0; e < 256; e++) f.x[e] = v;
}

template <typename T, typename LA, typename LB>
static inline void mma_sync(fragment<accumulator, 16, 16, 16, float> &d, const fragment<matrix_a, 16, 16, 16, T, LA> &a,
                            const fragment<matrix_b, 16, 16, 16, T, LB> &b, const fragment<accumulator, 16, 16, 16, float> &c) {
    emu_warp_sync();
    float r[256];
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            double s = c.x[16 * i + j];
            for (int k = 0; k < 16; k++) s += (double)a.x[16 * i + k] * (double)b.x[16 * k + j];
            r[16 * i + j] = (float)s;
        }
    memcpy(d.x, r, sizeof r);
}
} // namespace wmma
} // namespace nvcuda
#endif
