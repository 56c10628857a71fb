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

#endif
