/* Typed weights on the CPU (kernels/ops.h): the linear ops and the embedding lookup dispatch on the
 * weight's dtype to the kernels that hold it: float32 (GEMM, or the matrix-vector kernel for a few
 * rows), bf16 (cpu_bf16.c), NF4 (nf4_matmul.c), the GGUF block types (cpu_quant.c) and float32 in
 * 32-row panels (cpu_f32x32.c; its input gradient and lookup as the block types'). Scratch is always
 * the caller's. */
#include <math.h>

#include "kernels/cpu.h"
#include "kernels/f32x32.h"
#include "kernels/nf4.h"

size_t an_cpu_linear_work_bytes(const an_ops *o, const an_weight *w, int N) {
    (void)o;
    switch (w->dtype) {
    /* the matrix-vector kernel's packed rows; the GEMM needs none, but the size must not shrink with N */
    case AN_F32: return an_cpu_matvec_work_bytes(N < AN_CPU_MATVEC_MAX_ROWS ? N : AN_CPU_MATVEC_MAX_ROWS, (int)w->cols);
    case AN_BF16: return an_bf16_work_floats((size_t)w->cols) * sizeof(float);
    case AN_NF4: return an_nf4_matmul_work_bytes(w->data);
    default: return an_dtype_is_ggml(w->dtype) ? an_cpu_quant_work_bytes(w, N) : 0;
    }
}

static void fill_nan(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = NAN;
}

void an_cpu_linear_forward(const an_ops *o, float *out, const float *inp, const an_weight *w, const float *bias,
                           int N, void *work, size_t work_bytes, int mode) {
    int C = (int)w->cols, OC = (int)w->rows;
    switch (w->dtype) {
    case AN_F32:
        if (N <= AN_CPU_MATVEC_MAX_ROWS) an_cpu_matvec_forward(out, inp, w->data, bias, N, C, OC, work, work_bytes);
        else an_cpu_matmul_forward(o, out, inp, w->data, bias, N, C, OC);
        return;
    case AN_BF16:
        an_cpu_matmul_forward_bf16w(out, inp, w->data, bias, N, C, OC, work, work_bytes / sizeof(float));
        return;
    case AN_F32_X32: an_f32x32_forward(out, inp, w->data, bias, N, C, OC); return; /* training or not */
    case AN_NF4:
        /* fails only for want of scratch, which the caller sized with linear_work_bytes: NaN, not
         * silently wrong, if it did not */
        if (work_bytes < an_nf4_matmul_work_bytes(w->data) ||
            an_nf4_matmul_forward(out, inp, w->data, bias, N, work, work_bytes, NULL))
            fill_nan(out, (size_t)N * OC);
        return;
    default:
        if (an_dtype_is_ggml(w->dtype)) an_cpu_quant_forward(out, inp, w, bias, N, work, work_bytes, mode);
        else fill_nan(out, (size_t)N * OC); /* supports() said no */
    }
}

void an_cpu_linear_backward_input(const an_ops *o, float *dinp, const float *dout, const an_weight *w, int N,
                                  void *work, size_t work_bytes) {
    int C = (int)w->cols, OC = (int)w->rows;
    switch (w->dtype) {
    case AN_F32: an_cpu_matmul_backward(o, dinp, NULL, NULL, dout, NULL, w->data, N, C, OC); return;
    case AN_BF16:
        an_cpu_matmul_backward_input_bf16w(dinp, dout, w->data, N, C, OC, work, work_bytes / sizeof(float));
        return;
    case AN_NF4:
        if (work_bytes < an_nf4_matmul_work_bytes(w->data) ||
            an_nf4_matmul_backward_input(dinp, dout, w->data, N, work, work_bytes, NULL))
            fill_nan(dinp, (size_t)N * C);
        return;
    default:
        if (an_dtype_is_ggml(w->dtype)) an_cpu_quant_backward_input(dinp, dout, w, N, work, work_bytes);
        else fill_nan(dinp, (size_t)N * C);
    }
}

void an_cpu_embedding_lookup(const an_ops *o, float *out, const int32_t *ids, const an_weight *table, int N) {
    int C = (int)table->cols;
    switch (table->dtype) {
    case AN_F32: an_cpu_embedding_forward(o, out, ids, table->data, N, C); return;
    case AN_BF16: an_cpu_embedding_forward_bf16(out, ids, table->data, N, C); return;
    default:
        if (an_dtype_is_ggml(table->dtype)) an_cpu_quant_embedding(out, ids, table, N);
        else fill_nan(out, (size_t)N * C);
    }
}

int an_cpu_supports(const an_ops *o, an_op_id op, an_dtype weight) {
    (void)o;
    if (op < 0 || op >= AN_OP_COUNT || AN_OP_DEVICE_ONLY(op)) return 0;
    switch (op) {
    case AN_OP_linear_forward:
    case AN_OP_linear_backward_input:
        return weight == AN_F32 || weight == AN_BF16 || weight == AN_NF4 || an_dtype_is_ggml(weight);
    case AN_OP_embedding_lookup: return weight == AN_F32 || weight == AN_BF16 || an_dtype_is_ggml(weight);
    default: return weight == AN_F32;
    }
}
