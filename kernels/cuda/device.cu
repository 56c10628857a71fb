/* The CUDA runtime for C callers outside the backend (kernels/cuda/device.h). */
#include "kernels/cuda/cuda.h"
#include "kernels/cuda/device.h"

extern "C" int an_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" int an_cuda_select_device(int d, an_error *err) {
    cudaError_t e = cudaSetDevice(d);
    return e == cudaSuccess ? 0 : an_fail(err, "CUDA device %d: %s", d, cudaGetErrorString(e));
}

extern "C" void *an_cuda_stream_create(an_error *err) {
    cudaStream_t s = NULL;
    cudaError_t e = cudaStreamCreate(&s);
    if (e != cudaSuccess) {
        an_fail(err, "cudaStreamCreate: %s", cudaGetErrorString(e));
        return NULL;
    }
    return (void *)s;
}

extern "C" void an_cuda_stream_destroy(void *stream) {
    if (stream) cudaStreamDestroy((cudaStream_t)stream);
}

extern "C" int an_cuda_stream_done(void *stream, an_error *err) {
    cudaError_t e = cudaStreamQuery((cudaStream_t)stream);
    if (e == cudaSuccess) return 1;
    if (e == cudaErrorNotReady) return 0;
    an_fail(err, "%s", cudaGetErrorString(e));
    return -1;
}

extern "C" int an_cuda_device_sync(an_error *err) {
    cudaError_t e = cudaDeviceSynchronize();
    return e == cudaSuccess ? 0 : an_fail(err, "%s", cudaGetErrorString(e));
}
