/* The CUDA backend object: opening device 0 (stream, cuBLAS and cuBLASLt handles, their workspace),
 * its memory ops, supports(), and the op table (kernels/cuda/cuda.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda.h"

void an_cuda_report(const char *what, const char *detail) { fprintf(stderr, "autoneg: cuda: %s: %s\n", what, detail); }

/* ---- memory: device memory, moved on the context's stream; transfers to and from the host wait
 * for it, so a host buffer may be reused (or read) as soon as they return ---- */

static void *cuda_alloc(const an_ops *o, size_t bytes) {
    an_cuda_ctx *c = an_cuda(o);
    size_t rounded = (bytes + 255) / 256 * 256; /* also makes 0 bytes a real allocation */
    if (rounded < bytes) return NULL;
    if (rounded == 0) rounded = 256;
    void *p = NULL;
    if (cudaMalloc(&p, rounded) != cudaSuccess) {
        (void)cudaGetLastError(); /* an out-of-memory is this call's answer (NULL), not a sticky error */
        return NULL;
    }
    an_cuda_check(cudaMemsetAsync(p, 0, rounded, c->stream), "alloc (zeroing)");
    an_cuda_check(cudaStreamSynchronize(c->stream), "alloc (zeroing)");
    pthread_mutex_lock(&c->lock);
    if (c->n_live == c->cap_live) {
        size_t cap = c->cap_live ? 2 * c->cap_live : 256;
        an_cuda_live *grown = (an_cuda_live *)realloc(c->live, cap * sizeof *grown);
        if (!grown) { /* no host memory to record it: give it back, as an out-of-memory */
            pthread_mutex_unlock(&c->lock);
            (void)cudaFree(p);
            return NULL;
        }
        c->live = grown;
        c->cap_live = cap;
    }
    c->live[c->n_live++] = {p, rounded};
    c->now += rounded;
    if (c->now > c->peak) c->peak = c->now;
    c->allocs++;
    pthread_mutex_unlock(&c->lock);
    return p;
}

static void cuda_free(const an_ops *o, void *p) {
    an_cuda_ctx *c = an_cuda(o);
    if (!p) return;
    an_cuda_check(cudaFree(p), "free");
    pthread_mutex_lock(&c->lock);
    for (size_t i = c->n_live; i-- > 0;) /* the latest first: scratch is freed soon after it is made */
        if (c->live[i].p == p) {
            c->now -= c->live[i].bytes;
            c->live[i] = c->live[--c->n_live];
            break;
        }
    pthread_mutex_unlock(&c->lock);
}

static void cuda_memory_counts(const an_ops *o, int reset, size_t *now, size_t *peak, size_t *allocs) {
    an_cuda_ctx *c = an_cuda(o);
    pthread_mutex_lock(&c->lock);
    if (reset) {
        c->peak = c->now;
        c->allocs = 0;
    }
    if (now) *now = c->now;
    if (peak) *peak = c->peak;
    if (allocs) *allocs = c->allocs;
    pthread_mutex_unlock(&c->lock);
}

void *an_cuda_scratch_take(const an_ops *o, size_t bytes) {
    an_cuda_ctx *c = an_cuda(o);
    pthread_mutex_lock(&c->scratch_lock);
    if (bytes <= c->scratch_bytes) return c->scratch;
    if (c->scratch) cuda_free(o, c->scratch); /* cudaFree waits for the kernels that use it */
    c->scratch = cuda_alloc(o, bytes);
    c->scratch_bytes = c->scratch ? bytes : 0;
    return c->scratch;
}

void an_cuda_scratch_release(const an_ops *o) { pthread_mutex_unlock(&an_cuda(o)->scratch_lock); }

static void cuda_upload(const an_ops *o, void *dst, const void *src, size_t bytes) {
    an_cuda_ctx *c = an_cuda(o);
    if (!bytes) return;
    an_cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream), "upload");
    an_cuda_check(cudaStreamSynchronize(c->stream), "upload");
}

static void cuda_download(const an_ops *o, void *dst, const void *src, size_t bytes) {
    an_cuda_ctx *c = an_cuda(o);
    if (!bytes) return;
    an_cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream), "download");
    an_cuda_check(cudaStreamSynchronize(c->stream), "download");
}

/* memmove semantics, as the CPU's copy: cudaMemcpy is undefined on overlapping ranges, so overlapping
 * ones move in pieces no longer than the distance, in the order that reads each piece before it is
 * overwritten */
static void cuda_copy(const an_ops *o, void *dst, const void *src, size_t bytes) {
    an_cuda_ctx *c = an_cuda(o);
    char *d = (char *)dst;
    const char *s = (const char *)src;
    if (!bytes || d == s) return;
    size_t dist = d > s ? (size_t)(d - s) : (size_t)(s - d);
    if (dist >= bytes) {
        an_cuda_check(cudaMemcpyAsync(d, s, bytes, cudaMemcpyDeviceToDevice, c->stream), "copy");
        return;
    }
    if (d < s)
        for (size_t off = 0; off < bytes; off += dist) {
            size_t len = bytes - off < dist ? bytes - off : dist;
            an_cuda_check(cudaMemcpyAsync(d + off, s + off, len, cudaMemcpyDeviceToDevice, c->stream), "copy");
        }
    else
        for (size_t end = bytes; end > 0;) {
            size_t len = end < dist ? end : dist;
            end -= len;
            an_cuda_check(cudaMemcpyAsync(d + end, s + end, len, cudaMemcpyDeviceToDevice, c->stream), "copy");
        }
}

static void cuda_zero(const an_ops *o, void *p, size_t bytes) {
    if (bytes) an_cuda_check(cudaMemsetAsync(p, 0, bytes, an_cuda(o)->stream), "zero");
}

__global__ static void fill_nan_kernel(float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = __int_as_float(0x7fc00000);
}

void an_cuda_fill_nan(const an_ops *o, float *x, size_t n) {
    if (!n) return;
    fill_nan_kernel<<<an_cuda_blocks(n), AN_CUDA_THREADS, 0, an_cuda(o)->stream>>>(x, n);
    AN_CUDA_LAUNCHED("fill_nan");
}

/* An op added to AN_OP_LIST (kernels/ops.h) needs its entry in the table below, or supports() would
 * promise a NULL function: this count stops the build until it has one. */
static_assert(AN_OP_COUNT == 39, "a new op in AN_OP_LIST: add it to the CUDA backend's table (kernels/cuda/)");

/* Every op of the table in float32; the typed-weight ops also on bf16, NF4 and the GGUF block types
 * (weights.cu). */
int an_cuda_supports(const an_ops *o, an_op_id op, an_dtype weight) {
    (void)o;
    if (op < 0 || op >= AN_OP_COUNT) return 0;
    switch (op) {
    case AN_OP_linear_forward:
    case AN_OP_linear_backward_input:
    case AN_OP_embedding_lookup: return weight == AN_F32 || an_cuda_weight_readable(weight);
    default: return weight == AN_F32;
    }
}

static void close_ctx(an_cuda_ctx *c) {
    if (!c) return;
    if (c->stream) (void)cudaStreamSynchronize(c->stream);
    if (c->partials) (void)cudaFree(c->partials);
    if (c->scratch) (void)cudaFree(c->scratch);
    if (c->lt_work) (void)cudaFree(c->lt_work);
    if (c->lt) (void)cublasLtDestroy(c->lt);
    if (c->blas) (void)cublasDestroy(c->blas);
    if (c->stream) (void)cudaStreamDestroy(c->stream);
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->scratch_lock);
    free(c->live);
    free(c);
}

extern "C" void an_ops_cuda_close(const an_ops *o) {
    if (o) close_ctx(an_cuda(o));
}

/* the workspace cuBLASLt may use per call: what its documentation recommends for Hopper */
#define LT_WORK_BYTES (32u << 20)

static const an_ops *open_ctx(int bf16, an_error *err) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count < 1) {
        const char *why = e != cudaSuccess ? cudaGetErrorString(e) : "the driver reports none";
        (void)cudaGetLastError();
        an_fail(err, "device \"cuda\": no CUDA device available (%s)", why);
        return NULL;
    }
    an_cuda_ctx *c = (an_cuda_ctx *)calloc(1, sizeof *c);
    if (!c) {
        an_fail(err, "device \"cuda\": out of host memory");
        return NULL;
    }
    /* the calling thread's device: 0, or the one an NCCL rank chose (train/comm_nccl.c) */
    if (cudaGetDevice(&c->device) != cudaSuccess) c->device = 0;
    c->bf16 = bf16;
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->scratch_lock, NULL);
    cudaDeviceProp prop;
    const char *step = "cudaSetDevice";
    if ((e = cudaSetDevice(c->device)) != cudaSuccess) goto fail;
    step = "cudaGetDeviceProperties";
    if ((e = cudaGetDeviceProperties(&prop, c->device)) != cudaSuccess) goto fail;
    step = "cudaStreamCreate";
    if ((e = cudaStreamCreate(&c->stream)) != cudaSuccess) goto fail;
    step = "cudaMalloc (workspace)";
    c->lt_work_bytes = LT_WORK_BYTES;
    if ((e = cudaMalloc(&c->lt_work, c->lt_work_bytes)) != cudaSuccess) goto fail;
    if ((e = cudaMalloc((void **)&c->partials, (AN_CUDA_SUMSQ_BLOCKS + 1) * sizeof(double))) != cudaSuccess) goto fail;
    if (cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS) {
        an_fail(err, "device \"cuda\": cublasCreate failed");
        close_ctx(c);
        return NULL;
    }
    /* test mode: plain float32 GEMMs (CUBLAS_DEFAULT_MATH allows no TF32), on our stream, with the
     * workspace of our own so cuBLAS allocates nothing during a step */
    if (cublasSetStream(c->blas, c->stream) != CUBLAS_STATUS_SUCCESS ||
        cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH) != CUBLAS_STATUS_SUCCESS ||
        cublasSetWorkspace(c->blas, c->lt_work, c->lt_work_bytes) != CUBLAS_STATUS_SUCCESS ||
        cublasLtCreate(&c->lt) != CUBLAS_STATUS_SUCCESS) {
        an_fail(err, "device \"cuda\": setting up cuBLAS / cuBLASLt failed");
        close_ctx(c);
        return NULL;
    }
    snprintf(c->description, sizeof c->description, "%s (%.256s, sm_%d%d, %.1f GiB; %s)", bf16 ? "cuda-bf16" : "cuda",
             prop.name, prop.major, prop.minor, (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0),
             bf16 ? "bf16 GEMM inputs, float32 accumulation and storage" : "float32, TF32 off");
    {
        an_ops *t = &c->table;
        t->name = bf16 ? "cuda-bf16" : "cuda";
        t->matmul_input_u = bf16 ? 1.0 / 256.0 : 0.0; /* bf16: 8 significant bits */
        t->description = c->description;
        t->device = AN_DEVICE_CUDA;
        t->ctx = c;
        t->supports = an_cuda_supports;
        t->alloc = cuda_alloc;
        t->free = cuda_free;
        t->upload = cuda_upload;
        t->download = cuda_download;
        t->copy = cuda_copy;
        t->zero = cuda_zero;
        t->memory_counts = cuda_memory_counts;
        t->matmul_forward = an_cuda_matmul_forward;
        t->matmul_backward = an_cuda_matmul_backward;
        t->matmul_gelu_forward = an_cuda_matmul_gelu_forward;
        t->matmul_backward_gelu = an_cuda_matmul_backward_gelu;
        t->embedding_forward = an_cuda_embedding_forward;
        t->embedding_backward = an_cuda_embedding_backward;
        t->layernorm_forward = an_cuda_layernorm_forward;
        t->layernorm_backward = an_cuda_layernorm_backward;
        t->rmsnorm_forward = an_cuda_rmsnorm_forward;
        t->rmsnorm_backward = an_cuda_rmsnorm_backward;
        t->add_layernorm_forward = an_cuda_add_layernorm_forward;
        t->add_rmsnorm_forward = an_cuda_add_rmsnorm_forward;
        t->rope_table = an_cuda_rope_table;
        t->rope_forward = an_cuda_rope_forward;
        t->rope_backward = an_cuda_rope_backward;
        t->attention_forward = an_cuda_attention_forward;
        t->attention_backward = an_cuda_attention_backward;
        t->attention_work_bytes = an_cuda_attention_work_bytes;
        t->gelu_forward = an_cuda_gelu_forward;
        t->gelu_backward = an_cuda_gelu_backward;
        t->swiglu_forward = an_cuda_swiglu_forward;
        t->swiglu_backward = an_cuda_swiglu_backward;
        t->add = an_cuda_add;
        t->axpy = an_cuda_axpy;
        t->scale = an_cuda_scale;
        t->cross_entropy_forward = an_cuda_cross_entropy_forward;
        t->cross_entropy_backward = an_cuda_cross_entropy_backward;
        t->adamw_update = an_cuda_adamw_update;
        t->sum_squares = an_cuda_sum_squares;
        t->gather_cols_forward = an_cuda_gather_cols_forward;
        t->gather_cols_backward = an_cuda_gather_cols_backward;
        t->attention_decode_forward = an_cuda_attention_decode_forward;
        t->dropout = an_cuda_dropout;
        t->lora_forward = an_cuda_lora_forward;
        t->lora_backward = an_cuda_lora_backward;
        t->linear_work_bytes = an_cuda_linear_work_bytes;
        t->linear_forward = an_cuda_linear_forward;
        t->linear_backward_input = an_cuda_linear_backward_input;
        t->embedding_lookup = an_cuda_embedding_lookup;
        t->lora_grouped_forward = an_cuda_lora_grouped_forward;
        t->sample_work_bytes = an_cuda_sample_work_bytes;
        t->sample_tokens = an_cuda_sample_tokens;
    }
    return &c->table;
fail:
    an_fail(err, "device \"cuda\": %s failed: %s", step, cudaGetErrorString(e));
    (void)cudaGetLastError();
    close_ctx(c);
    return NULL;
}

extern "C" const an_ops *an_ops_cuda_open(an_error *err) { return open_ctx(0, err); }
extern "C" const an_ops *an_ops_cuda_open_bf16(an_error *err) { return open_ctx(1, err); }
