/* Eight floats as one vector, for the hand-vectorised CPU kernels: GCC/clang vector extensions,
 * one AVX register with -march=native, two SSE halves elsewhere. The helpers are macros, not
 * functions: passing a 32-byte vector by value changes the ABI (and draws a warning) without AVX. */
#ifndef AN_KERNELS_CPU_VEC_H
#define AN_KERNELS_CPU_VEC_H

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

/* Sixteen floats: one AVX-512 register with -march=native where the CPU has it, two AVX (or four SSE)
 * halves elsewhere. Element-wise operations give the same bits at every width, so a kernel written
 * with it is exact across machines as long as its sums keep their order. */
typedef float v16f __attribute__((vector_size(64)));
typedef float v16fu __attribute__((vector_size(64), aligned(4), may_alias));

#define LD16(p) (*(const v16fu *)(const void *)(p))
#define ST16(p, v) (*(v16fu *)(void *)(p) = (v))
/* the halves added lane by lane, then HSUM8's order */
#define HSUM16(a)                                                                                                  \
    (((((a)[0] + (a)[8]) + ((a)[4] + (a)[12])) + (((a)[1] + (a)[9]) + ((a)[5] + (a)[13]))) +                      \
     ((((a)[2] + (a)[10]) + ((a)[6] + (a)[14])) + (((a)[3] + (a)[11]) + ((a)[7] + (a)[15]))))

#endif
