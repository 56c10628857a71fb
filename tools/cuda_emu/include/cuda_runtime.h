/* Host emulation of the small part of the CUDA runtime and device language that kernels/cuda/ uses
 * (tools/cuda_emu/README.md): kernels run on the CPU, a block's threads as cooperative contexts that
 * switch at __syncthreads and at warp shuffles. For checking the kernels' logic without a GPU; it
 * says nothing about speed, memory-model races or the real libraries. */
#ifndef AN_CUDA_EMU_RUNTIME_H
#define AN_CUDA_EMU_RUNTIME_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorMemoryAllocation = 2, cudaErrorInvalidValue = 1, cudaErrorNotReady = 600 };
typedef struct emu_stream *cudaStream_t;
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
struct cudaDeviceProp {
    char name[256];
    int major, minor;
    size_t totalGlobalMem;
};

cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaStreamQuery(cudaStream_t s);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d);
cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaMalloc(void **p, size_t n);
cudaError_t cudaFree(void *p);
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s);
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t st);
cudaError_t cudaGetLastError(void);
const char *cudaGetErrorString(cudaError_t e);

#define __global__
#define __device__
#define __host__
#define __shared__ static /* one block runs at a time */

extern dim3 threadIdx, blockIdx, blockDim, gridDim;
void __syncthreads(void);
float __shfl_xor_sync(unsigned mask, float v, int lane_mask);
void emu_warp_sync(void);
static inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)mask, emu_warp_sync(); }
/* a block's threads switch only at its barriers, so a read-modify-write is atomic as it stands */
static inline int atomicAdd(int *p, int v) {
    int old = *p;
    *p = old + v;
    return old;
}
void *emu_dyn_shared(void);
void emu_run(dim3 grid, dim3 block, size_t shm, std::function<void()> body);

template <typename... P, typename... A>
static inline void emu_launch(void (*k)(P...), dim3 grid, dim3 block, size_t shm, cudaStream_t, A... args) {
    emu_run(grid, block, shm, [=]() { k(args...); });
}

/* the host compiles these with -ffp-contract=off: one IEEE rounding each, as on the device */
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline float __int_as_float(int i) {
    float f;
    memcpy(&f, &i, 4);
    return f;
}
static inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, sizeof u);
    return u;
}
static inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
#endif
