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
#endif
