#ifndef AN_CUDA_DEVICE_H
#define AN_CUDA_DEVICE_H
/* The CUDA runtime as C code outside the backend needs it (train/comm_nccl.c): which GPU this thread
 * uses, a stream of its own, and waits. kernels/cuda/device.cu; built with CUDA=1 only. */
#ifdef __cplusplus
extern "C" {
#endif
#include "core/error.h"

/* The CUDA devices this process sees; 0 when none (or the driver fails). */
int an_cuda_device_count(void);
/* Makes device d the calling thread's; the CUDA backend opened afterwards runs on it. */
int an_cuda_select_device(int d, an_error *err);
/* A stream of the current device (a cudaStream_t), or NULL with err set. */
void *an_cuda_stream_create(an_error *err);
void an_cuda_stream_destroy(void *stream);
/* 1 when the stream's queued work is done, 0 while it runs, -1 (err set) when it failed. */
int an_cuda_stream_done(void *stream, an_error *err);
/* Waits for all queued work of the current device; -1 (err set) when some of it failed. */
int an_cuda_device_sync(an_error *err);

#ifdef __cplusplus
}
#endif
#endif
