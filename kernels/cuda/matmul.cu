/* Linear layers on the GPU: out = inp w^T + bias through cuBLASLt (the bias, and in cuda-bf16 the MLP's
 * GELU and its slope, in its epilogue), the backward's two products, the bias gradient, and the
 * typed-weight ops (float32 weights, and bf16, NF4 and the GGUF block types through weights.cu).
 *
 * Row-major X[R, K] is column-major X^T with leading dimension K, so with w[OC, C] (nn.Linear):
 *   out^T [OC, N] = w (as op(A) = A^T of the column-major [C, OC])  x  inp^T [C, N]
 *   dinp^T [C, N] += w^T-in-column-major [C, OC]  x  dout^T [OC, N]
 *   dw^T [C, OC]  += inp^T [C, N]  x  (dout^T [OC, N])^T
 * A weight of any other dtype is widened a tile of rows at a time into the caller's workspace
 * (an_cuda_tile_work_floats) and the float32 GEMM runs on the tile, so no float copy of the whole weight
 * ever exists (cuda-bf16: typed_bf16 below); in inference, up to AN_CUDA_MATVEC_ROWS rows take
 * weights.cu's matrix-vector kernel. */
#include "kernels/cuda/cuda.h"

/* the largest power of two dividing the address, up to 256: cuBLASLt's heuristic must only offer
 * algorithms that work with how the pointers are actually aligned (its default assumes 256) */
static uint32_t alignment(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 4 && (a % al) != 0) al /= 2;
    return al;
}

__global__ static void add_bias_cols(float *C, const float *bias, int m, int n, int ldc) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (size_t)m * n; i += (size_t)gridDim.x * blockDim.x) {
        size_t col = i / (size_t)m, row = i % (size_t)m;
        C[col * (size_t)ldc + row] += bias[row];
    }
}

/* What the epilogue does besides the bias: nothing; C = GELU of the product (+ bias) with its input
 * stored to the auxiliary matrix; or C = the product times GELU's slope at the auxiliary matrix (the
 * GELU's input, read). The auxiliary matrix has C's shape and leading dimension, which cuBLASLt wants a
 * multiple of 8. */
enum { EPI_PLAIN, EPI_GELU, EPI_DGELU };

/* cuBLASLt, A and B of type ab (float32, or bf16 in "cuda-bf16"), C float32; returns 0 when it ran, -1
 * when it offers no algorithm for these shapes, alignments and epilogue. */
static int lt_gemm(an_cuda_ctx *c, int trans_a, int trans_b, int m, int n, int k, float alpha, const void *A, int lda,
                   const void *B, int ldb, float beta, float *C, int ldc, const float *bias, int epilogue, const float *aux,
                   cudaDataType ab) {
    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    int ok = 0;
    cublasOperation_t ta = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    /* float32 compute, not CUBLAS_COMPUTE_32F_FAST_TF32: the test mode */
    if (cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS) goto done;
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    if (bias || epilogue != EPI_PLAIN) {
        cublasLtEpilogue_t epi = epilogue == EPI_DGELU ? CUBLASLT_EPILOGUE_DGELU
                                 : epilogue == EPI_GELU ? (bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX)
                                                        : CUBLASLT_EPILOGUE_BIAS;
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
        if (bias) cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
    }
    if (epilogue != EPI_PLAIN) {
        int64_t ld = ldc; /* gemm() sends only widths that are a multiple of 8 */
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux);
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof ld);
    }
    /* stored shapes: op(A) is m x k, so A is m x k (N) or k x m (T); likewise B */
    if (cublasLtMatrixLayoutCreate(&la, ab, trans_a ? k : m, trans_a ? m : k, lda) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutCreate(&lb, ab, trans_b ? n : k, trans_b ? k : n, ldb) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, m, n, ldc) != CUBLAS_STATUS_SUCCESS)
        goto done;
    if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS) goto done;
    {
        size_t ws = c->lt_work_bytes;
        uint32_t aa = alignment(A), ab = alignment(B), ac = alignment(C);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof aa);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab, sizeof ab);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, sizeof ac);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac, sizeof ac);
        cublasLtMatmulHeuristicResult_t heur;
        int found = 0;
        if (cublasLtMatmulAlgoGetHeuristic(c->lt, desc, la, lb, lc, lc, pref, 1, &heur, &found) != CUBLAS_STATUS_SUCCESS ||
            found < 1)
            goto done;
        cublasStatus_t st = cublasLtMatmul(c->lt, desc, &alpha, A, la, B, lb, &beta, C, lc, C, lc, &heur.algo, c->lt_work,
                                           c->lt_work_bytes, c->stream);
        ok = st == CUBLAS_STATUS_SUCCESS;
    }
done:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (desc) cublasLtMatmulDescDestroy(desc);
    return ok ? 0 : -1;
}

/* The product on the stream: cuBLASLt, or when it has no algorithm the classic GEMM (CUBLAS_DEFAULT_MATH:
 * float32, or bf16 inputs on tensor cores) and the bias apart. */
static void enqueue_gemm(an_cuda_ctx *c, int trans_a, int trans_b, int m, int n, int k, float alpha, const void *A, int lda,
                         const void *B, int ldb, float beta, float *C, int ldc, const float *bias, cudaDataType ab,
                         const char *what) {
    if (lt_gemm(c, trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, bias, EPI_PLAIN, NULL, ab) == 0) return;
    cublasStatus_t st = cublasGemmEx(c->blas, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, m, n,
                                     k, &alpha, A, ab, lda, B, ab, ldb, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS) {
        an_cuda_report(what, "cublasGemmEx failed");
        return;
    }
    if (bias) {
        add_bias_cols<<<an_cuda_blocks((size_t)m * n), AN_CUDA_THREADS, 0, c->stream>>>(C, bias, m, n, ldc);
        AN_CUDA_LAUNCHED(what);
    }
}

/* dst[rows, cols] (column-major, leading dimension rows) = src (leading dimension ld) rounded to bf16 */
__global__ static void round_cols(uint16_t *dst, const float *src, int rows, int cols, int ld) {
    size_t n = (size_t)rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = an_cuda_round_bf16(__float_as_uint(src[i % (size_t)rows + i / (size_t)rows * (size_t)ld]));
}

/* The product of an_cuda_gemm; with a GELU epilogue (EPI_GELU, EPI_DGELU: aux its matrix, ldc a multiple
 * of 8) in cuda-bf16 only, where it returns -1 with nothing enqueued when the float32 test mode keeps the
 * pointwise kernels' own arithmetic or cuBLASLt has no such algorithm: the caller then runs the product
 * and the kernel apart. */
static int gemm(const an_ops *o, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc, const float *bias, int epilogue, const float *aux,
                const char *what) {
    an_cuda_ctx *c = an_cuda(o);
    if (epilogue != EPI_PLAIN && (!c->bf16 || m <= 0 || n <= 0 || k <= 0 || ldc % 8 != 0 || (epilogue == EPI_DGELU && bias)))
        return -1;
    if (m <= 0 || n <= 0) return 0;
    if (k <= 0) { /* an empty sum: C = beta C (+ bias); cuBLAS would reject k = 0 */
        if (beta == 0.0f)
            for (int j = 0; j < n; j++) an_cuda_check(cudaMemsetAsync(C + (size_t)j * ldc, 0, (size_t)m * sizeof(float), c->stream), what);
        if (bias) {
            add_bias_cols<<<an_cuda_blocks((size_t)m * n), AN_CUDA_THREADS, 0, c->stream>>>(C, bias, m, n, ldc);
            AN_CUDA_LAUNCHED(what);
        }
        return 0;
    }
    if (!c->bf16) {
        enqueue_gemm(c, trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, bias, CUDA_R_32F, what);
        return 0;
    }
    /* both inputs rounded to bf16, packed (leading dimension = stored rows) */
    int ar = trans_a ? k : m, ac = trans_a ? m : k, br = trans_b ? n : k, bc = trans_b ? k : n, rc = 0;
    size_t na = (size_t)ar * ac, nb = (size_t)br * bc, boff = (na + 127) / 128 * 128; /* B on 256 bytes */
    uint16_t *s = (uint16_t *)an_cuda_scratch_take(o, (boff + nb) * sizeof(uint16_t)); /* until the product is enqueued */
    if (s) {
        round_cols<<<an_cuda_blocks(na), AN_CUDA_THREADS, 0, c->stream>>>(s, A, ar, ac, lda);
        round_cols<<<an_cuda_blocks(nb), AN_CUDA_THREADS, 0, c->stream>>>(s + boff, B, br, bc, ldb);
        AN_CUDA_LAUNCHED(what);
        if (epilogue == EPI_PLAIN)
            enqueue_gemm(c, trans_a, trans_b, m, n, k, alpha, s, ar, s + boff, br, beta, C, ldc, bias, CUDA_R_16BF, what);
        else
            rc = lt_gemm(c, trans_a, trans_b, m, n, k, alpha, s, ar, s + boff, br, beta, C, ldc, bias, epilogue, aux,
                         CUDA_R_16BF);
    }
    an_cuda_scratch_release(o);
    if (s) return rc;
    if (epilogue != EPI_PLAIN) return -1;
    an_cuda_report(what, "no device memory for the bf16 copies of the GEMM's inputs");
    return 0;
}

void an_cuda_gemm(const an_ops *o, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc, const float *bias, const char *what) {
    (void)gemm(o, trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, bias, EPI_PLAIN, NULL, what);
}

void an_cuda_gemm_f32(const an_ops *o, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc, const char *what) {
    an_cuda_ctx *c = an_cuda(o);
    if (m <= 0 || n <= 0) return;
    if (k <= 0) { /* an empty sum: C = beta C; cuBLAS would reject k = 0 */
        if (beta == 0.0f)
            for (int j = 0; j < n; j++) an_cuda_check(cudaMemsetAsync(C + (size_t)j * ldc, 0, (size_t)m * sizeof(float), c->stream), what);
        return;
    }
    enqueue_gemm(c, trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, NULL, CUDA_R_32F, what);
}

void an_cuda_matmul_forward(const an_ops *o, float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC) {
    an_cuda_gemm(o, 1, 0, OC, N, C, 1.0f, w, C, inp, C, 0.0f, out, OC, bias, "matmul_forward");
}

void an_cuda_matmul_gelu_forward(const an_ops *o, float *out, float *pre, const float *inp, const float *w, const float *bias,
                                 int N, int C, int OC) {
    /* cuda-bf16: the GELU in cuBLASLt's epilogue as the tile is stored, pre^T kept as its auxiliary matrix
     * (the separate op's read and write of N x OC saved); else the product, then gelu_forward */
    if (gemm(o, 1, 0, OC, N, C, 1.0f, w, C, inp, C, 0.0f, out, OC, bias, EPI_GELU, pre, "matmul_gelu_forward") == 0)
        return;
    an_cuda_matmul_forward(o, pre, inp, w, bias, N, C, OC);
    an_cuda_gelu_forward(o, out, pre, (size_t)N * OC);
}

void an_cuda_matmul_backward_gelu(const an_ops *o, float *dpre, float *dw, float *dbias, const float *dout, const float *h,
                                  const float *pre, const float *w, int N, int C, int OC) {
    /* dpre^T [C, N] = (w [C, OC] column-major x dout^T [OC, N]) * gelu'(pre^T): the slope in cuBLASLt's
     * epilogue in cuda-bf16, else the product written and scaled in place */
    if (gemm(o, 0, 0, C, N, OC, 1.0f, w, C, dout, OC, 0.0f, dpre, C, NULL, EPI_DGELU, pre, "matmul_backward_gelu")) {
        an_cuda_gemm(o, 0, 0, C, N, OC, 1.0f, w, C, dout, OC, 0.0f, dpre, C, NULL, "matmul_backward_gelu");
        an_cuda_gelu_scale(o, dpre, pre, (size_t)N * C);
    }
    an_cuda_matmul_backward(o, NULL, dw, dbias, dout, h, w, N, C, OC);
}

/* dbias[j] += sum over rows of dout[:, j]: column j's sum over the rows of slice blockIdx.y (R rows a
 * slice, colsum.cu), coalesced across the threads of a warp */
__global__ static void bias_grad(float *out, size_t ld, int add, const float *dout, int N, int OC, int R) {
    int j = blockIdx.x * blockDim.x + threadIdx.x, s = blockIdx.y;
    if (j >= OC) return;
    int n1 = (s + 1) * R < N ? (s + 1) * R : N;
    float acc = 0.0f;
    for (int n = s * R; n < n1; n++) acc += dout[(size_t)n * OC + j];
    an_cuda_colsum_put(out, ld, add, s, j, acc);
}

void an_cuda_matmul_backward(const an_ops *o, float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                             const float *w, int N, int C, int OC) {
    if (dinp) an_cuda_gemm(o, 0, 0, C, N, OC, 1.0f, w, C, dout, OC, 1.0f, dinp, C, NULL, "matmul_backward (dinp)");
    if (dw) an_cuda_gemm(o, 0, 1, C, OC, N, 1.0f, inp, C, dout, OC, 1.0f, dw, C, NULL, "matmul_backward (dw)");
    if (dbias && OC > 0 && N > 0) {
        an_cuda_colsum cs = an_cuda_colsum_begin(o, N, (size_t)OC);
        dim3 grid((OC + AN_CUDA_THREADS - 1) / AN_CUDA_THREADS, (unsigned)cs.slices);
        bias_grad<<<grid, AN_CUDA_THREADS, 0, an_cuda(o)->stream>>>(cs.parts ? cs.parts : dbias, cs.ld, !cs.parts, dout, N,
                                                                   OC, cs.rows);
        AN_CUDA_LAUNCHED("matmul_backward (dbias)");
        an_cuda_colsum_add(o, &cs, dbias, 0, OC, "matmul_backward (dbias)");
        an_cuda_colsum_end(o);
    }
}

/* ---- typed weights ---- */

size_t an_cuda_linear_work_bytes(const an_ops *o, const an_weight *w, int N) {
    (void)o, (void)N;
    /* float32 runs the GEMM directly; the other dtypes widen a tile of rows */
    return w->dtype == AN_F32 ? 0 : an_cuda_tile_work_floats((size_t)w->cols) * sizeof(float);
}

/* rows of a weight per tile that fit the workspace; 0 when not even one row does */
static int tile_rows(size_t work_bytes, int C, int OC) {
    size_t rows = work_bytes / sizeof(float) / (size_t)(C > 0 ? C : 1);
    return rows > (size_t)OC ? OC : (int)rows;
}

/* cuda-bf16 with a weight stored in another type than float32 (bf16, NF4, the GGUF blocks): the GEMMs'
 * bf16 inputs made once a call, not once a tile: x (inp, or dout for the input gradient) rounded into
 * the context's scratch, the weight's rows written as bf16 straight into the workspace a tile at a
 * time (twice the rows of a float32 tile), a bf16 weight multiplied where it lies. Each input holds
 * what the float32 path's rounding would give (the widened value rounded to nearest even once; a bf16
 * weight is its own rounding), so the products are the same. backward 0: y[N, OC] = x[N, C] w^T + bias;
 * 1: y[N, C] += x[N, OC] w. -1 (nothing enqueued) when it cannot run here: float32 mode, no scratch,
 * no room for a row, or a dtype the kernels cannot read; the caller's float32-tile path then runs. */
static int typed_bf16(const an_ops *o, int backward, float *y, const float *x, const an_weight *w, const float *bias,
                      int N, void *work, size_t work_bytes, const char *what) {
    an_cuda_ctx *c = an_cuda(o);
    int C = (int)w->cols, OC = (int)w->rows, K = backward ? OC : C; /* x's columns */
    int direct = w->dtype == AN_BF16;
    size_t R = direct ? (size_t)OC : work_bytes / sizeof(uint16_t) / (size_t)(C > 0 ? C : 1);
    if (!c->bf16 || !an_cuda_weight_readable(w->dtype) || R < 1 || (!direct && !work) || N <= 0 || OC <= 0 || C <= 0)
        return -1;
    if (R > (size_t)OC) R = (size_t)OC;
    uint16_t *xb = (uint16_t *)an_cuda_scratch_take(o, (size_t)N * K * sizeof(uint16_t)); /* until the last GEMM */
    if (!xb) {
        an_cuda_scratch_release(o);
        return -1;
    }
    round_cols<<<an_cuda_blocks((size_t)N * K), AN_CUDA_THREADS, 0, c->stream>>>(xb, x, K, N, K);
    AN_CUDA_LAUNCHED(what);
    for (int o0 = 0; o0 < OC; o0 += (int)R) {
        int rows = OC - o0 < (int)R ? OC - o0 : (int)R;
        const uint16_t *tile = direct ? (const uint16_t *)w->data + (size_t)o0 * C : (const uint16_t *)work;
        if (!direct) an_cuda_widen_rows_bf16(o, (uint16_t *)work, w, o0, rows, what);
        if (backward) /* y += x[:, o0 : o0 + rows] tile */
            enqueue_gemm(c, 0, 0, C, N, rows, 1.0f, tile, C, xb + o0, OC, 1.0f, y, C, NULL, CUDA_R_16BF, what);
        else /* y[:, o0 : o0 + rows] = x tile^T + bias[o0 ...] */
            enqueue_gemm(c, 1, 0, rows, N, C, 1.0f, tile, C, xb, C, 0.0f, y + o0, OC, bias ? bias + o0 : NULL,
                         CUDA_R_16BF, what);
    }
    an_cuda_scratch_release(o);
    return 0;
}

void an_cuda_linear_forward(const an_ops *o, float *out, const float *inp, const an_weight *w, const float *bias, int N,
                            void *work, size_t work_bytes, int mode) {
    /* every CUDA kernel here is exact (no activation rounding); inference takes the matrix-vector
     * kernel for a decode step's few rows, training keeps the GEMM's order for any batch */
    int C = (int)w->cols, OC = (int)w->rows;
    if (w->dtype == AN_F32) {
        an_cuda_matmul_forward(o, out, inp, (const float *)w->data, bias, N, C, OC);
        return;
    }
    if (mode == AN_LINEAR_INFER && N <= AN_CUDA_MATVEC_ROWS && an_cuda_typed_matvec(o, out, inp, w, bias, N) == 0) return;
    if (typed_bf16(o, 0, out, inp, w, bias, N, work, work_bytes, "linear_forward (bf16)") == 0) return;
    int R = tile_rows(work_bytes, C, OC);
    float *tile = (float *)work;
    for (int o0 = 0; o0 < OC; o0 += R > 0 ? R : OC) {
        int rows = OC - o0 < R ? OC - o0 : R;
        if (R < 1 || !work || an_cuda_widen_rows(o, tile, w, o0, rows, "linear_forward (widen)")) {
            /* an unreadable dtype or no workspace: NaN, never stale */
            an_cuda_fill_nan(o, out, (size_t)N * OC);
            return;
        }
        /* out[:, o0 : o0 + rows] = inp tile^T + bias[o0 ...] */
        an_cuda_gemm(o, 1, 0, rows, N, C, 1.0f, tile, C, inp, C, 0.0f, out + o0, OC, bias ? bias + o0 : NULL,
                     "linear_forward (typed)");
    }
}

void an_cuda_linear_backward_input(const an_ops *o, float *dinp, const float *dout, const an_weight *w, int N, void *work,
                                   size_t work_bytes) {
    int C = (int)w->cols, OC = (int)w->rows;
    if (w->dtype == AN_F32) {
        an_cuda_matmul_backward(o, dinp, NULL, NULL, dout, NULL, (const float *)w->data, N, C, OC);
        return;
    }
    if (typed_bf16(o, 1, dinp, dout, w, NULL, N, work, work_bytes, "linear_backward_input (bf16)") == 0) return;
    int R = tile_rows(work_bytes, C, OC);
    float *tile = (float *)work;
    for (int o0 = 0; o0 < OC; o0 += R > 0 ? R : OC) {
        int rows = OC - o0 < R ? OC - o0 : R;
        if (R < 1 || !work || an_cuda_widen_rows(o, tile, w, o0, rows, "linear_backward_input (widen)")) {
            an_cuda_fill_nan(o, dinp, (size_t)N * C);
            return;
        }
        /* dinp += dout[:, o0 : o0 + rows] tile */
        an_cuda_gemm(o, 0, 0, C, N, rows, 1.0f, tile, C, dout + o0, OC, 1.0f, dinp, C, NULL,
                     "linear_backward_input (typed)");
    }
}
