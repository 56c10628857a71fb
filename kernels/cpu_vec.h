/* Eight floats as one vector, for the hand-vectorised CPU kernels: GCC/clang vector extensions,
 * one AVX register with -march=native, two SSE halves elsewhere. The helpers are macros, not
 * functions: passing a 32-byte vector by value changes the ABI (and draws a warning) without AVX. */
#ifndef AN_KERNELS_CPU_VEC_H
#define AN_KERNELS_CPU_VEC_H

#include <stdint.h>
#include <string.h>

typedef float v8f __attribute__((vector_size(32)));
/* the same with the alignment of a float, allowed to alias floats: loads and stores straight from
 * tensors at any float offset */
typedef float v8fu __attribute__((vector_size(32), aligned(4), may_alias));

#define LD8(p) (*(const v8fu *)(const void *)(p))
#define ST8(p, v) (*(v8fu *)(void *)(p) = (v))
#define LOAD8(dst, p) memcpy(&(dst), (p), sizeof(v8f))
/* the horizontal sum in a fixed order of pairs, so every kernel that uses it rounds alike */
#define HSUM8(a) ((((a)[0] + (a)[4]) + ((a)[1] + (a)[5])) + (((a)[2] + (a)[6]) + ((a)[3] + (a)[7])))

/* Sixteen floats, for the kernels below that pick their width with AN_VL. */
typedef float v16f __attribute__((vector_size(64)));
typedef float v16fu __attribute__((vector_size(64), aligned(4), may_alias));

#define LD16(p) (*(const v16fu *)(const void *)(p))
#define ST16(p, v) (*(v16fu *)(void *)(p) = (v))
/* the halves added lane by lane, then HSUM8's order */
#define HSUM16(a)                                                                                                  \
    (((((a)[0] + (a)[8]) + ((a)[4] + (a)[12])) + (((a)[1] + (a)[9]) + ((a)[5] + (a)[13]))) +                      \
     ((((a)[2] + (a)[10]) + ((a)[6] + (a)[14])) + (((a)[3] + (a)[11]) + ((a)[7] + (a)[15]))))

/* The machine's own width (vnf, AN_VL lanes): one AVX-512 register where the build targets it, else
 * eight lanes. Not sixteen everywhere: without AVX-512 gcc lowers some 64-byte vector code to scalar
 * operations (a LoRA kernel ran 10-15x slower so), and a register tile sized for 32 registers spills
 * from 16. Element-wise results are the same at either width; a horizontal sum (HSUMN) is not. */
#if defined(__AVX512F__)
#define AN_VL 16
typedef v16f vnf;
#define LDN(p) LD16(p)
#define STN(p, v) ST16(p, v)
#define HSUMN(a) HSUM16(a)
#else
#define AN_VL 8
typedef v8f vnf;
#define LDN(p) LD8(p)
#define STN(p, v) ST8(p, v)
#define HSUMN(a) HSUM8(a)
#endif
/* Lanes of int32 and uint32 as wide as vnf, for masks (a comparison of two vnf gives a vni of 0 / -1) and
 * the exponent bits of AN_EXPN. */
typedef int32_t vni __attribute__((vector_size(sizeof(vnf))));
typedef uint32_t vnu __attribute__((vector_size(sizeof(vnf))));
/* every lane a (a vector plus a scalar broadcasts it) */
#define SPLATN(a) ((vnf){0} + (float)(a))
/* lanes of a where mask is -1, of b where it is 0 */
#define SELECTN(mask, a, b) ((vnf)(((vni)(a) & (mask)) | ((vni)(b) & ~(mask))))

/* exp of every lane of x into y: the steps of an_expf (kernels/cpu.h) lane by lane, so a lane gets the
 * bits an_expf gives it when both are compiled alike (the same fusing of multiply-adds). A macro, as
 * above. */
#define AN_EXPN(y, x)                                                                                            \
    do {                                                                                                         \
        vnf x_ = (x);                                                                                            \
        x_ = SELECTN(x_ < SPLATN(-87.3f), SPLATN(-87.3f), x_);                                                   \
        x_ = SELECTN(x_ > SPLATN(88.3f), SPLATN(88.3f), x_);                                                     \
        vnf t_ = x_ * 1.44269504088896341f + 12582912.0f;                                                      \
        vnf n_ = t_ - 12582912.0f;                                                                               \
        vnf r_ = x_ - n_ * 0.693145751953125f;                                                                   \
        r_ = r_ - n_ * 1.428606765330187045e-06f;                                                                \
        vnf p_ = SPLATN(1.9875691500e-4f);                                                                       \
        p_ = p_ * r_ + 1.3981999507e-3f;                                                                         \
        p_ = p_ * r_ + 8.3334519073e-3f;                                                                         \
        p_ = p_ * r_ + 4.1665795894e-2f;                                                                         \
        p_ = p_ * r_ + 1.6666665459e-1f;                                                                         \
        p_ = p_ * r_ + 5.0000001201e-1f;                                                                         \
        p_ = p_ * r_ * r_ + r_ + 1.0f;                                                                           \
        vnu e_ = ((vnu)t_ - (vnu)SPLATN(12582912.0f) + 127u) << 23;                                              \
        (y) = p_ * (vnf)e_;                                                                                      \
    } while (0)
/* The largest lane of a into the float out (a max is exact, so the order does not matter): the halves
 * folded together with vector maxima down to four lanes (__builtin_shufflevector: GCC 12 and clang),
 * then those four. NaN lanes are not expected (callers take maxima of finite scores). */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
typedef int32_t v8i __attribute__((vector_size(32)));
#define VMAX_(I, a, b) ((__typeof__(a))(((I)(a) & (I)((a) > (b))) | ((I)(b) & ~(I)((a) > (b)))))
#define HMAX8_(out, h)                                                                                           \
    do {                                                                                                         \
        v8f h8_ = (h);                                                                                           \
        v4f q_ = VMAX_(v4i, __builtin_shufflevector(h8_, h8_, 0, 1, 2, 3),                                       \
                       __builtin_shufflevector(h8_, h8_, 4, 5, 6, 7));                                           \
        float m01_ = q_[0] > q_[1] ? q_[0] : q_[1], m23_ = q_[2] > q_[3] ? q_[2] : q_[3];                        \
        (out) = m01_ > m23_ ? m01_ : m23_;                                                                       \
    } while (0)
#if AN_VL == 16
#define HMAXN(out, a)                                                                                            \
    do {                                                                                                         \
        v16f a16_ = (a);                                                                                         \
        HMAX8_(out, VMAX_(v8i, __builtin_shufflevector(a16_, a16_, 0, 1, 2, 3, 4, 5, 6, 7),                      \
                          __builtin_shufflevector(a16_, a16_, 8, 9, 10, 11, 12, 13, 14, 15)));                   \
    } while (0)
#else
#define HMAXN(out, a) HMAX8_(out, a)
#endif
#endif
