/* The host emulation's runtime (tools/cuda_emu/README.md): memory is host memory, streams do nothing
 * (everything runs at once, in order), and a kernel launch runs its blocks one after another, each
 * block's threads as ucontext coroutines on this one OS thread, switched at __syncthreads (all the
 * block's live threads) and at every warp shuffle (the warp's 32 lanes). A barrier that can never
 * complete (a deadlock, or a shuffle some lanes of the warp skip) aborts with a message. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>

#include <vector>

#include "cublasLt.h"

dim3 threadIdx, blockIdx, blockDim, gridDim;

/* ---------------- runtime ---------------- */
/* CUDA_EMU_DEVICES=N: N devices (all the same host memory), so that N emulated GPU ranks of an MPI job
 * (tools/cuda_emu/nccl.sh) each find one of their own */
static int emu_device;
cudaError_t cudaGetDeviceCount(int *n) {
    const char *e = getenv("CUDA_EMU_DEVICES");
    *n = e && atoi(e) > 0 ? atoi(e) : 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
    int n;
    cudaGetDeviceCount(&n);
    if (d < 0 || d >= n) return cudaErrorInvalidValue;
    emu_device = d;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *d) { return *d = emu_device, cudaSuccess; }
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; } /* launches run to the end when made */
cudaError_t cudaStreamQuery(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int) {
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "host emulation (tools/cuda_emu)");
    p->major = 9, p->minor = 0, p->totalGlobalMem = (size_t)1 << 30;
    return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t *s) { return *s = (cudaStream_t)1, cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaMalloc(void **p, size_t n) {
    *p = malloc(n ? n : 1);
    if (*p) memset(*p, 0xFF, n); /* NaN floats: a read of memory nobody wrote shows */
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void *p) { return free(p), cudaSuccess; }
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t) { return memset(p, v, n), cudaSuccess; }
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind, cudaStream_t) {
    return memcpy(d, s, n), cudaSuccess; /* the backend never passes overlapping ranges (cuda_copy splits them) */
}
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
const char *cudaGetErrorString(cudaError_t e) { return e ? "emulated error" : "no error"; }

/* ---------------- kernels ---------------- */
enum { RUNNABLE, AT_BLOCK, AT_WARP, DONE };
struct emu_thread {
    ucontext_t ctx;
    char *stack;
    int state;
};
static std::vector<emu_thread> g_threads;
static std::vector<float> g_slots;
static ucontext_t g_main;
static int g_cur;
static std::function<void()> *g_body;
static std::vector<char> g_dyn_mem; /* the block's dynamic shared memory, from a 256-byte boundary */
static char *g_dyn;
enum { STACK = 128 * 1024 };

void *emu_dyn_shared(void) { return g_dyn; }

static void trampoline(void) {
    (*g_body)();
    g_threads[g_cur].state = DONE;
    swapcontext(&g_threads[g_cur].ctx, &g_main);
}

static void wait_as(int state) {
    g_threads[g_cur].state = state;
    swapcontext(&g_threads[g_cur].ctx, &g_main);
}

void __syncthreads(void) { wait_as(AT_BLOCK); }

float __shfl_xor_sync(unsigned, float v, int lane_mask) {
    int me = g_cur, base = me / 32 * 32;
    g_slots[me] = v;
    wait_as(AT_WARP);
    float r = g_slots[base + ((me - base) ^ lane_mask)];
    wait_as(AT_WARP); /* nobody overwrites a slot before every lane has read */
    return r;
}

/* a warp-wide barrier: __syncwarp and the wmma collectives (mma.h) */
void emu_warp_sync(void) { wait_as(AT_WARP); }

static void set_thread(int i) {
    threadIdx.x = (unsigned)i % blockDim.x;
    threadIdx.y = (unsigned)i / blockDim.x % blockDim.y;
    threadIdx.z = (unsigned)i / (blockDim.x * blockDim.y);
}

static void run_block(int n) {
    for (int i = 0; i < n; i++) {
        emu_thread &t = g_threads[i];
        getcontext(&t.ctx);
        t.ctx.uc_stack.ss_sp = t.stack;
        t.ctx.uc_stack.ss_size = STACK;
        t.ctx.uc_link = &g_main;
        makecontext(&t.ctx, trampoline, 0);
        t.state = RUNNABLE;
    }
    for (;;) {
        int ran = 0;
        for (int i = 0; i < n; i++)
            if (g_threads[i].state == RUNNABLE) {
                g_cur = i;
                set_thread(i);
                swapcontext(&g_main, &g_threads[i].ctx);
                ran = 1;
            }
        int live = 0, at_block = 0, released = 0;
        for (int i = 0; i < n; i++) live += g_threads[i].state != DONE, at_block += g_threads[i].state == AT_BLOCK;
        if (!live) return;
        for (int w = 0; w * 32 < n; w++) { /* a warp's shuffle completes when all 32 lanes are in it */
            int in = 0, lanes = n - w * 32 < 32 ? n - w * 32 : 32;
            for (int l = 0; l < lanes; l++) in += g_threads[w * 32 + l].state == AT_WARP;
            if (in == 32) {
                for (int l = 0; l < 32; l++) g_threads[w * 32 + l].state = RUNNABLE;
                released = 1;
            } else if (in > 0 && !ran) {
                fprintf(stderr, "cuda_emu: block (%u,%u,%u) warp %d: a shuffle that only %d of %d lanes reach\n", blockIdx.x,
                        blockIdx.y, blockIdx.z, w, in, lanes);
                abort();
            }
        }
        if (at_block == live) {
            for (int i = 0; i < n; i++)
                if (g_threads[i].state == AT_BLOCK) g_threads[i].state = RUNNABLE;
            released = 1;
        }
        if (!ran && !released) {
            fprintf(stderr, "cuda_emu: block (%u,%u,%u): deadlock (%d live threads, %d at __syncthreads)\n", blockIdx.x,
                    blockIdx.y, blockIdx.z, live, at_block);
            abort();
        }
    }
}

/* the coroutines' stacks, kept from launch to launch, given back at exit (a leak checker would report them) */
static void free_stacks(void) {
    for (emu_thread &t : g_threads) free(t.stack);
    g_threads.clear();
}

void emu_run(dim3 grid, dim3 block, size_t shm, std::function<void()> body) {
    static int registered;
    if (!registered) registered = 1, atexit(free_stacks);
    int n = (int)(block.x * block.y * block.z);
    if (n < 1 || n > 1024 || grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.y > 65535 || grid.z > 65535) {
        fprintf(stderr, "cuda_emu: bad launch: grid (%u,%u,%u) block (%u,%u,%u)\n", grid.x, grid.y, grid.z, block.x, block.y,
                block.z);
        abort();
    }
    if (shm > 48 * 1024) {
        fprintf(stderr, "cuda_emu: %zu bytes of dynamic shared memory: more than 48 KiB needs an opt-in\n", shm);
        abort();
    }
    while ((int)g_threads.size() < n) g_threads.push_back({ucontext_t(), (char *)malloc(STACK), RUNNABLE});
    g_slots.assign((size_t)n + 32, 0.0f);
    g_dyn_mem.assign((shm ? shm : 1) + 256, (char)0xFF);
    g_dyn = g_dyn_mem.data() + (256 - (uintptr_t)g_dyn_mem.data() % 256) % 256;
    g_body = &body;
    blockDim = block, gridDim = grid;
    /* last block first: a GPU runs blocks in no set order, so a kernel whose result depends on a lower
     * block running before a higher one (two blocks adding into one row) gives other bits here */
    for (unsigned z = grid.z; z-- > 0;)
        for (unsigned y = grid.y; y-- > 0;)
            for (unsigned x = grid.x; x-- > 0;) {
                blockIdx = dim3(x, y, z);
                run_block(n);
            }
}

/* ---------------- cuBLAS and cuBLASLt ---------------- */
cublasStatus_t cublasCreate(cublasHandle_t *h) { return *h = (cublasHandle_t)1, CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasDestroy(cublasHandle_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetWorkspace(cublasHandle_t, void *, size_t) { return CUBLAS_STATUS_SUCCESS; }

/* element i of a float32 or bf16 (the top half of a float32) matrix */
static double elem(const void *X, int bf16, size_t i) {
    if (!bf16) return ((const float *)X)[i];
    uint32_t u = (uint32_t)((const uint16_t *)X)[i] << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* column-major C = alpha op(A) op(B) + beta C, in double per element; A and B float32 or bf16 */
static void gemm(int ta, int tb, int m, int n, int k, float alpha, const void *A, int lda, const void *B, int ldb, float beta,
                 float *C, int ldc, const float *bias, int bf16 = 0) {
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double s = 0.0;
            for (int p = 0; p < k; p++) {
                double a = elem(A, bf16, ta ? p + (size_t)i * lda : i + (size_t)p * lda);
                double b = elem(B, bf16, tb ? j + (size_t)p * ldb : p + (size_t)j * ldb);
                s += a * b;
            }
            float *c = &C[i + (size_t)j * ldc];
            double v = alpha * s + (beta != 0.0f ? beta * (double)*c : 0.0);
            if (bias) v += bias[i];
            *c = (float)v;
        }
}

cublasStatus_t cublasSgemm(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float *alpha,
                           const float *A, int lda, const float *B, int ldb, const float *beta, float *C, int ldc) {
    if (lda < (ta ? k : m) || ldb < (tb ? n : k) || ldc < m) return CUBLAS_STATUS_INVALID_VALUE;
    gemm(ta, tb, m, n, k, *alpha, A, lda, B, ldb, *beta, C, ldc, NULL);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *alpha,
                            const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt, int ldb, const void *beta,
                            void *C, cudaDataType ct, int ldc, cublasComputeType_t compute, cublasGemmAlgo_t) {
    if (at != bt || ct != CUDA_R_32F || compute != CUBLAS_COMPUTE_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (lda < (ta ? k : m) || ldb < (tb ? n : k) || ldc < m) return CUBLAS_STATUS_INVALID_VALUE;
    gemm(ta, tb, m, n, k, *(const float *)alpha, A, lda, B, ldb, *(const float *)beta, (float *)C, ldc, NULL,
         at == CUDA_R_16BF);
    return CUBLAS_STATUS_SUCCESS;
}

struct emu_desc {
    int ta, tb, epi;
    const float *bias;
    float *aux;     /* GELU's input: stored by the GELU_AUX epilogues, read by DGELU */
    int64_t aux_ld; /* its leading dimension: cuBLASLt wants a multiple of 8, at least the rows */
};
struct emu_layout {
    uint64_t rows, cols;
    int64_t ld;
    cudaDataType type;
};
cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) { return *h = (cublasLtHandle_t)1, CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtDestroy(cublasLtHandle_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t c, cudaDataType s) {
    if (c != CUBLAS_COMPUTE_32F || s != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    *d = new emu_desc{0, 0, CUBLASLT_EPILOGUE_DEFAULT, NULL, NULL, 0};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) { return delete d, CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void *v, size_t n) {
    if (a == CUBLASLT_MATMUL_DESC_TRANSA && n == 4) d->ta = *(const int *)v == CUBLAS_OP_T;
    else if (a == CUBLASLT_MATMUL_DESC_TRANSB && n == 4) d->tb = *(const int *)v == CUBLAS_OP_T;
    else if (a == CUBLASLT_MATMUL_DESC_EPILOGUE && n == 4) d->epi = *(const int *)v;
    else if (a == CUBLASLT_MATMUL_DESC_BIAS_POINTER && n == sizeof(void *)) memcpy(&d->bias, v, n);
    else if (a == CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER && n == sizeof(void *)) memcpy(&d->aux, v, n);
    else if (a == CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD && n == sizeof(int64_t)) memcpy(&d->aux_ld, v, n);
    else return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType t, uint64_t rows, uint64_t cols, int64_t ld) {
    if (ld < (int64_t)rows || (t != CUDA_R_32F && t != CUDA_R_16BF)) return CUBLAS_STATUS_INVALID_VALUE;
    *l = new emu_layout{rows, cols, ld, t};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) { return delete l, CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    return *p = (cublasLtMatmulPreference_t)1, CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t a,
                                                    const void *v, size_t n) {
    if (a == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) return n == 8 ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
    if (n != 4) return CUBLAS_STATUS_INVALID_VALUE;
    uint32_t al = *(const uint32_t *)v; /* an alignment: a power of two from 4 */
    return al >= 4 && (al & (al - 1)) == 0 ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}
/* the shapes must agree: op(A) m x k, op(B) k x n, C and D m x n */
static int shapes(cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, int *m,
                  int *n, int *k) {
    uint64_t am = d->ta ? a->cols : a->rows, ak = d->ta ? a->rows : a->cols;
    uint64_t bk = d->tb ? b->cols : b->rows, bn = d->tb ? b->rows : b->cols;
    *m = (int)am, *n = (int)bn, *k = (int)ak;
    return ak == bk && c->rows == am && c->cols == bn;
}
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t,
                                              cublasLtMatmulPreference_t, int, cublasLtMatmulHeuristicResult_t *r,
                                              int *found) {
    int m, n, k;
    if (!shapes(d, a, b, c, &m, &n, &k)) {
        fprintf(stderr, "cuda_emu: cublasLt layouts disagree with the operation's shapes\n");
        abort();
    }
    memset(r, 0, sizeof *r);
    *found = getenv("CUDA_EMU_NO_LT") ? 0 : 1; /* CUDA_EMU_NO_LT=1: the backend's cublasSgemm fallback */
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t d, const void *alpha, const void *A, cublasLtMatrixLayout_t la,
                              const void *B, cublasLtMatrixLayout_t lb, const void *beta, const void *C, cublasLtMatrixLayout_t lc,
                              void *D, cublasLtMatrixLayout_t, const cublasLtMatmulAlgo_t *, void *, size_t, cudaStream_t) {
    int m, n, k;
    if (!shapes(d, la, lb, lc, &m, &n, &k) || C != D) return CUBLAS_STATUS_NOT_SUPPORTED;
    /* A and B of one type (float32 or bf16), C and D float32 */
    if (la->type != lb->type || lc->type != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    int with_bias = d->epi == CUBLASLT_EPILOGUE_BIAS || d->epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
    int gelu = d->epi == CUBLASLT_EPILOGUE_GELU_AUX || d->epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
    int dgelu = d->epi == CUBLASLT_EPILOGUE_DGELU;
    if (with_bias && !d->bias) return CUBLAS_STATUS_INVALID_VALUE;
    if ((gelu || dgelu) && (!d->aux || d->aux_ld % 8 != 0 || d->aux_ld < m)) return CUBLAS_STATUS_INVALID_VALUE;
    if (d->epi != CUBLASLT_EPILOGUE_DEFAULT && !with_bias && !gelu && !dgelu) return CUBLAS_STATUS_NOT_SUPPORTED;
    gemm(d->ta, d->tb, m, n, k, *(const float *)alpha, A, (int)la->ld, B, (int)lb->ld, *(const float *)beta, (float *)D,
         (int)lc->ld, with_bias ? d->bias : NULL, la->type == CUDA_R_16BF);
    if (gelu) /* the input to aux, D = GELU's tanh form of it (in double: the library's arithmetic is its own) */
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                float *x = (float *)D + i + (size_t)j * lc->ld;
                double v = *x, u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
                d->aux[i + (size_t)j * d->aux_ld] = *x;
                *x = (float)(0.5 * v * (1.0 + tanh(u)));
            }
    if (dgelu) /* D times GELU's slope at aux: 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx, t = tanh(u) */
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                float *y = (float *)D + i + (size_t)j * lc->ld;
                double x = d->aux[i + (size_t)j * d->aux_ld], t = tanh(0.7978845608028654 * (x + 0.044715 * x * x * x));
                double du = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x * x);
                *y = (float)(*y * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du));
            }
    return CUBLAS_STATUS_SUCCESS;
}
