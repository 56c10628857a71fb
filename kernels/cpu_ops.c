/* The CPU backend's op table. */
#include "kernels/cpu.h"
#include "kernels/ops.h"

/* Memory ops: host memory is the CPU backend's memory, so moving it is memcpy. */
static void *cpu_alloc(const an_ops *o, size_t bytes) {
    (void)o;
    return an_cpu_alloc(bytes);
}
static void cpu_free(const an_ops *o, void *p) {
    (void)o;
    an_cpu_free(p);
}
static void cpu_upload(const an_ops *o, void *dst, const void *src, size_t bytes) {
    (void)o;
    memcpy(dst, src, bytes);
}
static void cpu_download(const an_ops *o, void *dst, const void *src, size_t bytes) {
    (void)o;
    memcpy(dst, src, bytes);
}
static void cpu_copy(const an_ops *o, void *dst, const void *src, size_t bytes) {
    (void)o;
    memmove(dst, src, bytes);
}
static void cpu_zero(const an_ops *o, void *p, size_t bytes) {
    (void)o;
    memset(p, 0, bytes);
}

static const an_ops cpu_ops = {
    .name = "cpu",
#if AN_BLAS
    .description = "cpu (OpenBLAS)",
#else
    .description = "cpu (plain-C GEMM)",
#endif
    .device = AN_DEVICE_CPU,
    .ctx = NULL,
    .supports = an_cpu_supports,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_upload,
    .download = cpu_download,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .matmul_forward = an_cpu_matmul_forward,
    .matmul_backward = an_cpu_matmul_backward,
    .matmul_gelu_forward = an_cpu_matmul_gelu_forward,
    .matmul_backward_gelu = an_cpu_matmul_backward_gelu,
    .embedding_forward = an_cpu_embedding_forward,
    .embedding_backward = an_cpu_embedding_backward,
    .layernorm_forward = an_cpu_layernorm_forward,
    .layernorm_backward = an_cpu_layernorm_backward,
    .rmsnorm_forward = an_cpu_rmsnorm_forward,
    .rmsnorm_backward = an_cpu_rmsnorm_backward,
    .add_layernorm_forward = an_cpu_add_layernorm_forward,
    .add_rmsnorm_forward = an_cpu_add_rmsnorm_forward,
    .rope_table = an_cpu_rope_table,
    .rope_forward = an_cpu_rope_forward,
    .rope_backward = an_cpu_rope_backward,
    .attention_forward = an_cpu_attention_forward,
    .attention_backward = an_cpu_attention_backward,
    .attention_work_bytes = an_cpu_attention_work_bytes,
    .gelu_forward = an_cpu_gelu_forward,
    .gelu_backward = an_cpu_gelu_backward,
    .swiglu_forward = an_cpu_swiglu_forward,
    .swiglu_backward = an_cpu_swiglu_backward,
    .add = an_cpu_add,
    .axpy = an_cpu_axpy,
    .scale = an_cpu_scale,
    .cross_entropy_forward = an_cpu_cross_entropy_forward,
    .cross_entropy_backward = an_cpu_cross_entropy_backward,
    .adamw_update = an_cpu_adamw_update,
    .sum_squares = an_cpu_sum_squares,
    .gather_cols_forward = an_cpu_gather_cols_forward,
    .gather_cols_backward = an_cpu_gather_cols_backward,
    .attention_decode_forward = an_cpu_attention_decode_forward,
    .dropout = an_cpu_dropout,
    .lora_forward = an_cpu_lora_forward,
    .lora_backward = an_cpu_lora_backward,
    .lora_grouped_forward = an_cpu_lora_grouped_forward,
    .linear_work_bytes = an_cpu_linear_work_bytes,
    .linear_forward = an_cpu_linear_forward,
    .linear_backward_input = an_cpu_linear_backward_input,
    .embedding_lookup = an_cpu_embedding_lookup,
};

const an_ops *an_ops_cpu(void) { return &cpu_ops; }
